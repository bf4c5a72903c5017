"""Presence against a real redis-server (and an unreachable one): sockets, so not in tests/unit."""

from __future__ import annotations

import time

import pytest

from tests.support.backends import redis_server  # noqa: F401 - a fixture
from tests.unit.test_presence import _Session
from wsserver.runtime import presence
from wsserver.runtime.envelope import BrokerUnavailable, Names

pytestmark = pytest.mark.integration


def make(
    url: str, node: str, worker: str | None = None, ttl: float = 30, prefix: str = "wsserver", is_up=None
) -> presence.Presence:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return presence.Presence(
        client,
        Names(prefix),
        node,
        worker or node + "w",
        ttl,
        (redis.RedisError, OSError),
        is_up=is_up,
        where=url,
    )


def raw(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=2)


def ids(members: list[dict]) -> list[tuple[str, str]]:
    return [(m["node"], m["session"]) for m in members]


def test_unreachable_redis_raises_broker_unavailable_and_keeps_the_writes():
    from tests.support.server import free_port

    p = make(f"redis://127.0.0.1:{free_port()}/0", "n")
    s = _Session("s")
    p.changed(s, "g", True)
    with pytest.raises(BrokerUnavailable):
        p.members("g")
    with pytest.raises(BrokerUnavailable):
        p.flush()
    assert p._pending == {"g": {presence.member_text("nw", "s", None, "n"): True}}  # queued again
    assert p._full is True  # and the next write re-asserts everything


def test_two_nodes_see_each_others_members(redis_server):  # noqa: F811
    a, b = make(redis_server.url, "a"), make(redis_server.url, "b")
    s1, s2, s3 = _Session("1-1", "alice"), _Session("1-1", "bob"), _Session("1-2")  # same id on two nodes
    a.changed(s1, "room", True)
    b.changed(s2, "room", True)
    b.changed(s3, "room", True)
    b.changed(s3, "other", True)
    a.flush()
    b.flush()
    assert a._pending == {} and b._pending == {}
    expected = [
        {"session": "1-1", "user": "alice", "node": "a"},
        {"session": "1-1", "user": "bob", "node": "b"},
        {"session": "1-2", "user": None, "node": "b"},
    ]
    assert a.members("room") == expected
    assert b.members("room") == expected
    assert ids(a.members("other")) == [("b", "1-2")]
    assert a.members("empty") == []
    # One key per group, with a TTL a little above presence_ttl_s.
    r = raw(redis_server.url)
    assert r.zcard("wsserver:presence:room") == 3
    assert 30_000 < r.pttl("wsserver:presence:room") <= 31_000
    b.changed(s3, "room", False)
    b.flush()
    assert ids(a.members("room")) == [("a", "1-1"), ("b", "1-1")]
    a.changed(s1, "room", False)
    b.changed(s2, "room", False)
    a.flush()
    b.flush()
    assert a.members("room") == []
    assert r.exists("wsserver:presence:room") == 0  # the last one out removed the key


def test_a_read_carries_the_groups_queued_writes(redis_server):  # noqa: F811
    a, b = make(redis_server.url, "a"), make(redis_server.url, "b")
    s = _Session("s")
    a.changed(s, "g", True)
    a.changed(s, "h", True)
    assert b.members("g") == []  # nothing written yet: the join cost no round trip
    assert ids(a.members("g")) == [("a", "s")]  # written with the read
    assert list(a._pending) == ["h"]  # the other group's write waits for the writer
    a.changed(s, "g", False)
    assert a.members("g") == []
    assert b.members("g") == []


def test_members_expire_unless_refreshed(redis_server):  # noqa: F811
    live, dead = make(redis_server.url, "live", ttl=1), make(redis_server.url, "dead", ttl=1)
    live.changed(_Session("l"), "g", True)
    dead.changed(_Session("d"), "g", True)
    live.flush()
    dead.flush()
    assert ids(live.members("g")) == [("dead", "d"), ("live", "l")]
    r = raw(redis_server.url)
    assert 1000 < r.pttl("wsserver:presence:g") <= 2000
    deadline = time.monotonic() + 1.6
    while time.monotonic() < deadline:
        live.refresh()  # "dead" stopped refreshing
        time.sleep(0.2)
    assert ids(live.members("g")) == [("live", "l")]
    assert r.zcard("wsserver:presence:g") == 1  # the expired element was removed by a write
    time.sleep(2.2)  # nobody refreshes: the element expires, then the whole key
    assert live.members("g") == []
    assert r.exists("wsserver:presence:g") == 0


def test_prefix_and_redis_losing_its_data(redis_server):  # noqa: F811
    p = make(redis_server.url, "n", prefix="other")
    s = _Session("s", "u")
    p.changed(s, "g", True)
    p.flush()
    r = raw(redis_server.url)
    assert r.exists("other:presence:g") == 1 and r.exists("wsserver:presence:g") == 0
    r.flushall()
    r.script_flush()
    assert p.members("g") == []  # the scripts are loaded again (NOSCRIPT)
    p.flush()  # nothing queued, no refresh due: nothing written
    assert p.members("g") == []
    p.refresh()
    assert ids(p.members("g")) == [("n", "s")]


def test_redis_restart_then_the_next_write_reasserts_everything(redis_server):  # noqa: F811
    p = make(redis_server.url, "n")
    s1, s2 = _Session("1"), _Session("2")
    p.changed(s1, "g", True)
    p.flush()
    redis_server.stop()
    p.changed(s2, "g", True)
    with pytest.raises(BrokerUnavailable):
        p.flush()
    with pytest.raises(BrokerUnavailable):
        p.members("g")
    redis_server.start()  # without persistence: empty
    p.flush()  # after a failure: a full write
    assert ids(p.members("g")) == [("n", "1"), ("n", "2")]


def test_stop_removes_this_workers_members(redis_server):  # noqa: F811
    a, b = make(redis_server.url, "a"), make(redis_server.url, "b")
    a.changed(_Session("x"), "g", True)
    a.changed(_Session("y"), "h", True)
    b.changed(_Session("z"), "g", True)
    a.flush()
    b.flush()
    a.stop()
    assert ids(b.members("g")) == [("b", "z")]
    assert b.members("h") == []
    a.changed(_Session("late"), "g", True)  # after stop: ignored
    assert a._pending == {}


def test_the_writer_greenlet_batches_and_refreshes(redis_server):  # noqa: F811
    import gevent

    p = make(redis_server.url, "n", ttl=1.5)
    r = raw(redis_server.url)
    try:
        p.start()
        sessions = [_Session(str(n)) for n in range(50)]
        for s in sessions:
            p.changed(s, "g", True)
        gevent.sleep(0.1)
        assert r.zcard("wsserver:presence:g") == 50 and p._pending == {}
        p.changed(sessions[0], "g", False)
        gevent.sleep(0.1)
        assert r.zcard("wsserver:presence:g") == 49
        gevent.sleep(2.5)  # longer than the TTL: kept alive by the refreshes
        assert r.zcard("wsserver:presence:g") == 49
        assert 0 < r.pttl("wsserver:presence:g") <= 2500
    finally:
        p.stop()
    assert r.exists("wsserver:presence:g") == 0


def test_the_writer_reasserts_when_the_subscriber_comes_back(redis_server):  # noqa: F811
    import gevent

    up = [True]
    p = make(redis_server.url, "n", ttl=60, is_up=lambda: up[0])  # next periodic refresh: in 20 s
    r = raw(redis_server.url)
    try:
        p.start()
        p.changed(_Session("s"), "g", True)
        gevent.sleep(0.1)
        assert r.zcard("wsserver:presence:g") == 1
        r.delete("wsserver:presence:g")  # as if Redis restarted empty
        gevent.sleep(1.3)
        assert r.exists("wsserver:presence:g") == 0  # no reason to write yet
        up[0] = False
        gevent.sleep(1.1)
        up[0] = True
        gevent.sleep(1.3)
        assert r.zcard("wsserver:presence:g") == 1
    finally:
        p.stop()
