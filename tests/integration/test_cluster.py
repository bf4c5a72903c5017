"""[cluster]: two independent servers broadcasting to each other through a real redis-server."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.backends import redis_server  # noqa: F401 - a fixture
from tests.support.prefork import Client, PreforkServer
from tests.support.server import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
CHAT = "wsserver.endpoints.chat:Chat"
SAFE_CHAT = "tests.support.cluster_endpoints:SafeChat"


def config(
    port: int,
    metrics_port: int,
    broker: str,
    node: str,
    handler: str = CHAT,
    pool: str = "greenlet",
    cluster_extra: str = "",
) -> str:
    return (
        f"[server]\nworkers = 2\ngraceful_timeout = 2\n\n"
        f"[metrics]\nport = {metrics_port}\n\n"
        f'[cluster]\nbroker = "{broker}"\nnode = "{node}"\nconnect_timeout_ms = 1000\n{cluster_extra}\n'
        f'[[endpoints]]\npath = "/chat"\nhandler = "{handler}"\n\n'
        f'[[ports]]\nalias = "main"\nport = {port}\nbind = "{HOST}"\n\n[ports.pool]\nmode = "{pool}"\n'
    )


class Node:
    def __init__(self, server: PreforkServer, node: str, port: int, metrics_port: int) -> None:
        self.server, self.node, self.port, self.metrics_port = server, node, port, metrics_port

    def client(self, room: str) -> Client:
        return Client(HOST, self.port, f"/chat?room={room}")

    def readyz(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/readyz", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str) -> float | None:
        """The value of ``name{node="..."}`` on this server's /metrics, or None."""
        with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        found = re.search(rf'^{name}{{node="{self.node}"}} ([0-9.e+-]+)$', text, re.M)
        return float(found[1]) if found else None


@pytest.fixture
def cluster(tmp_path: Path, redis_server) -> Iterator[Callable[..., list[Node]]]:  # noqa: F811
    """Start two masters (2 workers each) on the same Redis; stopped by PID afterwards."""
    started: list[PreforkServer] = []

    def start(
        handler: str = CHAT, pool: str = "greenlet", cluster_extra: tuple[str, str] = ("", "")
    ) -> list[Node]:
        nodes = []
        for name, extra in zip(("a", "b"), cluster_extra, strict=True):
            port, metrics_port = free_port(), free_port()
            workdir = tmp_path / f"server-{name}"
            workdir.mkdir()
            server = PreforkServer(
                workdir, config(port, metrics_port, redis_server.url, name, handler, pool, extra)
            )
            started.append(server)
            server.start(wait_for=(HOST, port), timeout=20)
            server.wait_workers(2)
            nodes.append(Node(server, name, port, metrics_port))
        return nodes

    yield start
    for server in started:
        server.stop()


def warm_up(sender: Client, receivers: list[Client], timeout: float = 10.0) -> None:
    """Until every client got a "warm" message from ``sender`` (their workers subscribed)."""
    pending = set(range(len(receivers)))
    deadline = time.monotonic() + timeout
    n = 0
    while pending:
        assert time.monotonic() < deadline, "the servers' subscriptions did not take effect"
        sender.send_text(f"warm-{n}")
        n += 1
        time.sleep(0.1)
        for i in list(pending):
            receivers[i].sock.settimeout(0.05)
            try:
                if receivers[i].recv_text().startswith("warm-"):
                    pending.discard(i)
            except TimeoutError:
                pass
            finally:
                receivers[i].sock.settimeout(5)


def next_real(client: Client) -> str:
    """The next message that is not a warm-up message."""
    while True:
        text = client.recv_text()
        if not text.startswith("warm-"):
            return text


def test_a_message_reaches_both_servers_exactly_once(cluster):
    a, b = cluster()
    on_a = [a.client("r1") for _ in range(3)]
    on_b = [b.client("r1") for _ in range(3)]
    other_room = b.client("r2")
    everyone = on_a + on_b
    warm_up(on_a[0], everyone)
    on_a[0].send_text("hello")
    on_a[0].send_text("end")
    # One publisher's messages arrive in order: a duplicate of "hello" would come before "end".
    for c in everyone:
        assert next_real(c) == "hello"
        assert c.recv_text() == "end"
    # And no copy arrives later either (nor in another room).
    on_b[0].send_text("from b")
    for c in everyone:
        assert c.recv_text() == "from b"
    other_room.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        other_room.recv_text()
    for c in [*everyone, other_room]:
        c.close()


def test_thread_mode_handlers_broadcast_cluster_wide(cluster):
    a, b = cluster(pool="thread")
    on_a, on_b = a.client("t"), b.client("t")
    warm_up(on_a, [on_a, on_b])
    on_b.send_text("from a thread")
    assert next_real(on_a) == "from a thread"
    assert next_real(on_b) == "from a thread"
    for c in (on_a, on_b):
        c.close()


def test_messages_of_one_client_arrive_in_order_on_the_other_server(cluster):
    a, b = cluster()
    sender = a.client("order")
    receivers = [b.client("order") for _ in range(2)]
    warm_up(sender, receivers)
    for n in range(200):
        sender.send_text(f"m{n}")
    for c in receivers:
        got = [next_real(c)] + [c.recv_text() for _ in range(199)]
        assert got == [f"m{n}" for n in range(200)]
    for c in [sender, *receivers]:
        c.close()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.1)


def test_redis_down_fails_the_broadcast_and_recovers_after_a_restart(cluster, redis_server):  # noqa: F811
    # Node a keeps the default ready_requires_broker = true, node b turns it off.
    a, b = cluster(SAFE_CHAT, cluster_extra=("", "ready_requires_broker = false\n"))
    sender = a.client("room")
    receiver = b.client("room")
    warm_up(sender, [receiver])
    assert a.metric("wsserver_broker_up") == 1
    wait_for(lambda: a.readyz() == (200, "ready: 2 workers\n"), "node a ready")
    assert b.readyz() == (200, "ready: 2 workers\n")

    redis_server.stop()
    deadline = time.monotonic() + 10
    while a.metric("wsserver_broker_up") != 0:
        assert time.monotonic() < deadline, "wsserver_broker_up did not drop to 0"
        time.sleep(0.1)
    wait_for(lambda: a.readyz() == (503, "2 of 2 workers not connected to the broker\n"), "node a unready")
    assert b.readyz()[0] == 200  # ready_requires_broker = false: it keeps taking connections
    sender.send_text("while down")
    assert next_real(sender) == "error"
    assert (a.metric("wsserver_broker_publish_errors_total") or 0) >= 1

    redis_server.start()  # the same port
    deadline = time.monotonic() + 10
    n = 0
    receiver.sock.settimeout(0.3)
    while True:
        assert time.monotonic() < deadline, "broadcasts did not flow again within 10 s of the restart"
        sender.send_text(f"again-{n}")
        n += 1
        try:
            text = next_real(receiver)
        except TimeoutError:
            continue
        assert text.startswith("again-")
        break
    assert (b.metric("wsserver_broker_reconnects_total") or 0) >= 1
    wait_for(lambda: a.readyz()[0] == 200, "node a ready again")
    for c in (sender, receiver):
        c.close()


def test_clusters_with_different_prefixes_share_a_redis_without_crosstalk(cluster):
    a, b = cluster(SAFE_CHAT, cluster_extra=('prefix = "blue"\n', 'prefix = "green"\n'))
    on_a, also_on_a, on_b = a.client("room"), a.client("room"), b.client("room")
    warm_up(on_a, [also_on_a])
    on_a.send_text("for blue only")
    assert next_real(also_on_a) == "for blue only"
    on_b.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        print("crosstalk:", on_b.recv_text())  # not even the warm-up messages
    for c in (on_a, also_on_a, on_b):
        c.close()
