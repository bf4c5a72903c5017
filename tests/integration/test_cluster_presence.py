"""[cluster] presence through the PubSub endpoint: two servers (2 workers each) on one
redis-server; a server killed with SIGKILL; Redis down and back."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.backends import redis_server  # noqa: F401 - a fixture
from tests.support.prefork import Client, PreforkServer, alive, children_of, wait_until
from tests.support.pubsub_client import pubsub_server_config
from tests.support.server import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


class PsClient(Client):
    def request(self, **request) -> dict:
        """Send a request and return its answer (the first reply that is not a group message)."""
        self.send_text(json.dumps(request))
        while True:
            reply = json.loads(self.recv_text())
            if reply["op"] != "message":
                return reply

    def join(self, group: str) -> None:
        assert self.request(op="subscribe", group=group) == {
            "op": "subscribed",
            "group": group,
            "recovered": True,
        }

    def presence(self, group: str) -> list[tuple[str, str]]:
        """(node, session) of every member, sorted."""
        reply = self.request(op="presence", group=group, ref="p")
        assert reply["op"] == "presence" and reply["group"] == group, reply
        assert all(set(m) == {"session", "user", "node"} and m["user"] is None for m in reply["members"])
        return sorted((m["node"], m["session"]) for m in reply["members"])


class Server:
    def __init__(self, process: PreforkServer, port: int, node: str) -> None:
        self.process, self.port, self.node = process, port, node

    def client(self) -> PsClient:
        return PsClient(HOST, self.port, "/ps")


@pytest.fixture
def servers(tmp_path: Path, redis_server) -> Iterator[Callable[..., list[Server]]]:  # noqa: F811
    started: list[PreforkServer] = []

    def start(
        count: int = 2, ttl: int = 2, pool: str = "greenlet", cluster: bool = True, workers: int = 2
    ) -> list[Server]:
        result = []
        for n in range(count):
            port = free_port()
            workdir = tmp_path / f"server-{n}"
            workdir.mkdir()
            section = (
                (
                    f'[cluster]\nbroker = "{redis_server.url}"\nnode = "n{n}"\nconnect_timeout_ms = 1000\n'
                    f"presence_ttl_s = {ttl}\n\n"
                )
                if cluster
                else ""
            )
            process = PreforkServer(workdir, pubsub_server_config(port, section, pool, workers))
            started.append(process)
            process.start(wait_for=(HOST, port), timeout=20)
            process.wait_workers(workers)
            result.append(Server(process, port, f"n{n}"))
        return result

    yield start
    for process in started:
        process.stop()


def eventually(predicate, timeout: float, what: str):
    return wait_until(predicate, timeout, interval=0.05, what=what)


def members_once(client: PsClient, group: str, count: int, timeout: float) -> list[tuple[str, str]]:
    """The group's members once there are ``count`` of them."""

    def counted():
        members = client.presence(group)
        return members if len(members) == count else None

    return eventually(counted, timeout, f"{count} members of {group}")


@pytest.mark.parametrize("pool", ["greenlet", "thread"])
def test_members_of_both_servers_are_listed_and_leaving_is_prompt(servers, redis_server, pool):  # noqa: F811
    import redis

    a, b = servers(ttl=30, pool=pool)  # a TTL far above what the test waits: removals are writes
    on_a = [a.client() for _ in range(3)]
    on_b = [b.client() for _ in range(3)]
    for c in on_a + on_b:
        c.join("room")
    outsider = b.client()
    outsider.join("elsewhere")

    members = members_once(on_a[0], "room", 6, 5)
    assert [node for node, _ in members] == ["n0"] * 3 + ["n1"] * 3
    assert len(set(members)) == 6
    assert on_b[1].presence("room") == members  # the same answer on the other server
    assert [node for node, _ in outsider.presence("elsewhere")] == ["n1"]
    assert outsider.presence("nobody") == []
    r = redis.Redis.from_url(redis_server.url)
    assert r.zcard("wsserver:presence:room") == 6
    assert 0 < r.ttl("wsserver:presence:room") <= 31

    # Unsubscribing: gone from both servers' answers at once, not after the TTL.
    assert on_a[0].request(op="unsubscribe", group="room") == {"op": "unsubscribed", "group": "room"}
    left = members_once(on_b[0], "room", 5, 2)
    assert set(left) < set(members)
    assert on_a[1].presence("room") == left  # the leaver's own worker too

    # Closing the connection ends the session: it leaves every group.
    on_b[2].close_normally()
    outsider.close()
    after = members_once(on_a[1], "room", 4, 2)
    assert set(after) < set(left)
    assert [node for node, _ in after] == ["n0", "n0", "n1", "n1"]
    assert eventually(lambda: on_a[1].presence("elsewhere") == [], 2, "the outsider's close")

    # A server stopping gracefully takes its members out at once too.
    b.process.stop()
    assert [node for node, _ in members_once(on_a[1], "room", 2, 3)] == ["n0", "n0"]
    for c in on_a + on_b[:2]:
        c.close()
    assert eventually(lambda: r.exists("wsserver:presence:room") == 0, 3, "the key to go")


def test_a_killed_server_disappears_within_the_ttl(servers):
    a, b = servers(ttl=2)
    on_a = [a.client() for _ in range(2)]
    on_b = [b.client() for _ in range(3)]
    for c in on_a + on_b:
        c.join("room")
    eventually(lambda: len(on_a[0].presence("room")) == 5, 5, "five members")

    # Kill server b, master and workers, without a chance to clean up: the master is frozen
    # first so it does not start new workers.
    master = b.process.pid
    workers = children_of(master)
    assert len(workers) == 2
    os.kill(master, signal.SIGSTOP)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    os.kill(master, signal.SIGKILL)
    killed = time.monotonic()
    eventually(lambda: not any(alive(pid) for pid in [master, *workers]), 5, "server b to die")
    for c in on_b:
        c.close()
    # Its members are still listed for a while: only the TTL removes them.
    assert [node for node, _ in on_a[0].presence("room")] == ["n0", "n0", "n1", "n1", "n1"]
    eventually(lambda: [n for n, _ in on_a[0].presence("room")] == ["n0", "n0"], 4, "b's members to expire")
    assert time.monotonic() - killed <= 2 + 1.0  # presence_ttl_s, and the polling
    # The live server's members stay, refreshed, well past the TTL.
    time.sleep(3)
    assert [n for n, _ in on_a[1].presence("room")] == ["n0", "n0"]
    for c in on_a:
        c.close()


def test_redis_down_is_an_error_and_presence_comes_back(servers, redis_server):  # noqa: F811
    (a,) = servers(count=1, ttl=3)
    first, second = a.client(), a.client()
    first.join("g")
    second.join("g")
    members = members_once(first, "g", 2, 5)
    redis_server.stop()
    reply = first.request(op="presence", group="g", ref=9)
    assert reply["op"] == "error" and reply["ref"] == 9
    assert reply["error"].startswith("broker unavailable")
    second.close_normally()  # leaving while Redis is down
    redis_server.start()  # without persistence: Redis came back empty
    # The workers re-assert their members (the subscriber reconnected, or the next refresh).
    eventually(lambda: len(first.presence("g")) == 1, 8, "the member to be re-asserted")
    assert first.presence("g") == [m for m in members if m in first.presence("g")]
    first.close()


def test_without_a_cluster_presence_lists_the_workers_own_members(servers):
    (a,) = servers(count=1, cluster=False, workers=1)
    c1, c2, c3 = a.client(), a.client(), a.client()
    c1.join("g")
    c2.join("g")
    c3.join("h")
    reply = c3.request(op="presence", group="g")
    host = socket.gethostname()
    assert reply["op"] == "presence" and [m["node"] for m in reply["members"]] == [host, host]
    assert len({m["session"] for m in reply["members"]}) == 2
    c1.close_normally()
    eventually(lambda: len(c3.presence("g")) == 1, 2, "the close")
    reply = c3.request(op="presence", group="", ref="bad")
    assert reply["op"] == "error" and reply["ref"] == "bad"
    for c in (c2, c3):
        c.close()
