"""[cluster] history and the PubSub endpoint: two servers (2 workers each) on one redis-server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.backends import redis_server  # noqa: F401 - a fixture
from tests.support.prefork import Client, PreforkServer
from tests.support.pubsub_client import offset_key, pubsub_server_config
from tests.support.server import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


class PsClient(Client):
    def send_json(self, **request) -> None:
        self.send_text(json.dumps(request))

    backlog: list[dict]

    def recv_json(self) -> dict:
        backlog = self.__dict__.setdefault("backlog", [])
        return backlog.pop(0) if backlog else json.loads(self.recv_text())

    def subscribe(self, group: str, since: str | None = None) -> tuple[list[dict], dict]:
        """(the messages before "subscribed", the "subscribed" reply)."""
        if since is None:
            self.send_json(op="subscribe", group=group)
        else:
            self.send_json(op="subscribe", group=group, since=since)
        before = []
        while True:
            reply = json.loads(self.recv_text())
            if reply["op"] == "subscribed":
                return before, reply
            before.append(reply)

    def publish(self, group: str, data, ref="r") -> dict:
        self.send_json(op="publish", group=group, data=data, ref=ref)
        kept = []
        while True:
            reply = json.loads(self.recv_text())
            if reply["op"] in ("published", "error") and reply.get("ref") == ref:
                self.__dict__.setdefault("backlog", []).extend(kept)
                return reply
            kept.append(reply)  # a message of a group it subscribed to: for recv_json

    def expect_silence(self, seconds: float = 0.5) -> None:
        self.sock.settimeout(seconds)
        with pytest.raises(TimeoutError):
            print("unexpected:", self.recv_text())
        self.sock.settimeout(5)


@pytest.fixture
def servers(tmp_path: Path, redis_server) -> Iterator[Callable[..., list[int]]]:  # noqa: F811
    """Start two masters (2 workers each) on the same Redis; returns their ports."""
    started: list[PreforkServer] = []

    def start(
        history_size: int = 1000, count: int = 2, cluster: bool = True, pool: str = "greenlet"
    ) -> list[int]:
        ports = []
        for n in range(count):
            port = free_port()
            workdir = tmp_path / f"server-{n}"
            workdir.mkdir()
            section = (
                (
                    f'[cluster]\nbroker = "{redis_server.url}"\nnode = "n{n}"\nconnect_timeout_ms = 1000\n'
                    f"history_size = {history_size}\n\n"
                )
                if cluster
                else ""
            )
            server = PreforkServer(workdir, pubsub_server_config(port, section, pool))
            started.append(server)
            server.start(wait_for=(HOST, port), timeout=20)
            server.wait_workers(2)
            ports.append(port)
        return ports

    yield start
    for server in started:
        server.stop()


def client(port: int) -> PsClient:
    return PsClient(HOST, port, "/ps")


def test_published_on_b_reaches_subscribers_on_a_once_and_in_order(servers):
    a, b = servers()
    publisher = client(b)
    start = publisher.publish("g", "start")["offset"]
    assert start is not None
    subscribers = [client(a) for _ in range(4)]
    for s in subscribers:
        before, reply = s.subscribe("g", since=start)  # waits for this worker's SUBSCRIBE
        assert before == [] and reply == {"op": "subscribed", "group": "g", "recovered": True}
    offsets = [publisher.publish("g", {"n": n})["offset"] for n in range(50)]
    assert offsets == sorted(offsets, key=offset_key) and len(set(offsets)) == 50
    for s in subscribers:
        got = [s.recv_json() for _ in range(50)]
        assert got == [
            {"op": "message", "group": "g", "offset": o, "data": {"n": n}} for n, o in enumerate(offsets)
        ]
    for s in subscribers:
        s.expect_silence(0.3)
    # The publisher, subscribed on its own server, gets its own messages through Redis once.
    publisher.subscribe("g", since=offsets[-1])
    last = publisher.publish("g", "mine")
    assert publisher.recv_json() == {"op": "message", "group": "g", "offset": last["offset"], "data": "mine"}
    publisher.expect_silence(0.3)
    for c in [publisher, *subscribers]:
        c.close()


def test_a_subscriber_rejoins_on_the_other_server_and_misses_nothing(servers, redis_server):  # noqa: F811
    import redis

    a, b = servers()
    publisher = client(a)
    start = publisher.publish("room", "start")["offset"]
    first = client(a)
    first.subscribe("room", since=start)
    offsets = [publisher.publish("room", f"m{n}")["offset"] for n in range(10)]
    seen = [first.recv_json() for _ in range(5)]
    assert [m["data"] for m in seen] == [f"m{n}" for n in range(5)]
    first.close()  # stops after m4

    # Meanwhile another client keeps publishing, also while the subscriber rejoins.
    stop = threading.Event()
    more = client(b)

    def keep_publishing() -> None:
        n = 10
        while not stop.is_set() and n < 400:
            more.publish("room", f"m{n}", ref=n)
            n += 1

    publishing = threading.Thread(target=keep_publishing)
    publishing.start()
    time.sleep(0.2)
    second = client(b)
    recovered, reply = second.subscribe("room", since=seen[-1]["offset"])
    assert reply["recovered"] is True
    time.sleep(0.3)
    stop.set()
    publishing.join(10)
    final = publisher.publish("room", "final")["offset"]
    got = list(recovered)
    while not got or got[-1]["data"] != "final":
        got.append(second.recv_json())
    second.expect_silence(0.3)
    # Exactly the stream after m4, in its order: no gap, no duplicate at the switch-over.
    stream = redis.Redis.from_url(redis_server.url).xrange(
        "wsserver:history:room", f"({seen[-1]['offset']}", "+"
    )
    assert [m["offset"] for m in got] == [i.decode() for i, _ in stream]
    assert got[-1]["offset"] == final
    assert [m["data"] for m in got[:5]] == [f"m{n}" for n in range(5, 10)]
    assert [m["offset"] for m in got[:5]] == offsets[5:]
    assert len(got) > 7  # some arrived live, after the recovery
    for c in (publisher, more, second):
        c.close()


def test_history_exceeded_is_reported(servers):
    a, b = servers(history_size=5)
    publisher = client(a)
    first = publisher.publish("h", "first")["offset"]
    for n in range(300):  # MAXLEN ~ trims whole stream nodes (100 entries)
        last = publisher.publish("h", n)["offset"]
    late = client(b)
    recovered, reply = late.subscribe("h", since=first)
    assert reply == {"op": "subscribed", "group": "h", "recovered": False}
    assert recovered and recovered[-1]["offset"] == last and len(recovered) < 300
    for c in (publisher, late):
        c.close()


def test_errors_and_single_server_without_cluster(servers):
    (port,) = servers(count=1, cluster=False)
    c, other = client(port), client(port)
    c.send_text("not json")
    assert c.recv_json()["op"] == "error"
    c.send_json(op="dance", ref=7)
    assert c.recv_json() == {"op": "error", "ref": 7, "error": "unknown op 'dance'"}
    c.send_json(op="subscribe", group="g", since="bogus", ref=8)
    reply = c.recv_json()
    assert reply["op"] == "error" and reply["ref"] == 8
    assert c.subscribe("g", since="1-0") == ([], {"op": "subscribed", "group": "g", "recovered": False})
    assert other.subscribe("g")[1]["recovered"] is True
    assert c.publish("g", [1, "two"], ref="x") == {
        "op": "published",
        "group": "g",
        "ref": "x",
        "offset": None,
    }
    for s in (c, other):
        assert s.recv_json() == {"op": "message", "group": "g", "offset": None, "data": [1, "two"]}
    c.send_json(op="unsubscribe", group="g")
    assert c.recv_json() == {"op": "unsubscribed", "group": "g"}
    other.publish("g", "after")
    assert other.recv_json()["data"] == "after"
    c.expect_silence(0.3)
    for s in (c, other):
        s.close()


def test_broker_down_answers_an_error(servers, redis_server):  # noqa: F811
    (port,) = servers(count=1)
    c = client(port)
    assert c.publish("g", 1)["op"] == "published"
    redis_server.stop()
    reply = c.publish("g", 2, ref="down")
    assert reply["op"] == "error" and reply["error"].startswith("broker unavailable")
    c.close()


def redis_offsets(server, group: str, at_least: int = 1) -> list[str]:
    """The group's stream ids, once it has ``at_least`` of them."""
    import redis

    deadline = time.monotonic() + 5
    while True:
        ids = [i.decode() for i, _ in redis.Redis.from_url(server.url).xrange(f"wsserver:history:{group}")]
        if len(ids) >= at_least or time.monotonic() > deadline:
            return ids
        time.sleep(0.02)


def test_thread_mode_pubsub_recovers_too(servers, redis_server):  # noqa: F811
    a, b = servers(pool="thread")
    publisher, watcher = client(a), client(a)
    # A thread-mode handler waits for its broadcast's offset like a greenlet one.
    reply = publisher.publish("t", "first")
    first = redis_offsets(redis_server, "t")[-1]
    assert reply == {"op": "published", "group": "t", "ref": "r", "offset": first}
    watcher.subscribe("t", since=first)
    for n in range(5):
        publisher.publish("t", n)
    offsets = [watcher.recv_json()["offset"] for _ in range(5)]
    assert offsets == redis_offsets(redis_server, "t", 6)[1:]
    late = client(b)
    recovered, reply = late.subscribe("t", since=offsets[1])
    assert reply["recovered"] is True
    assert [(m["offset"], m["data"]) for m in recovered] == [(offsets[n], n) for n in (2, 3, 4)]
    publisher.publish("t", "live")
    message = late.recv_json()
    assert message == {
        "op": "message",
        "group": "t",
        "offset": redis_offsets(redis_server, "t", 7)[-1],
        "data": "live",
    }
    late.expect_silence(0.3)
    redis_server.stop()  # the handler's thread sees BrokerUnavailable too
    reply = publisher.publish("t", "down", ref="down")
    assert (
        reply["op"] == "error" and reply["ref"] == "down" and reply["error"].startswith("broker unavailable")
    )
    for c in (publisher, watcher, late):
        c.close()


def test_a_worker_catches_up_from_history_after_its_subscriber_reconnects(servers, redis_server):  # noqa: F811
    import redis

    a, b = servers()
    publisher = client(a)
    subscribers = [client(b) for _ in range(4)]  # on both of b's workers, most likely
    start = publisher.publish("g", "start")["offset"]
    for s in subscribers:
        s.subscribe("g", since=start)
    assert publisher.publish("g", "before")["op"] == "published"
    for s in subscribers:
        assert s.recv_json()["data"] == "before"
    # Cut every subscriber connection (the publishing pools stay): the workers reconnect after
    # 0.1 s, and what is published meanwhile reaches them only through the history.
    assert redis.Redis.from_url(redis_server.url).client_kill_filter(_type="pubsub") >= 2
    offsets = [publisher.publish("g", n, ref=f"r{n}")["offset"] for n in range(30)]
    assert None not in offsets
    for s in subscribers:
        got = [s.recv_json() for _ in range(30)]
        assert [(m["offset"], m["data"]) for m in got] == list(zip(offsets, range(30), strict=True))
        s.expect_silence(0.3)  # and nothing twice
    for s in (publisher, *subscribers):
        s.close()
