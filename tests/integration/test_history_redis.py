"""Group history in Redis streams against a real redis-server (and an unreachable one)."""

from __future__ import annotations

import time

import pytest

from tests.support.backends import redis_server  # noqa: F401 - a fixture
from wsserver.config.schema import ClusterConfig
from wsserver.runtime import broker, envelope
from wsserver.runtime.groups import Groups

pytestmark = pytest.mark.integration


def make_broker(url: str, size: int = 100, ttl: int = 0) -> broker.Broker:
    return broker.Broker(
        ClusterConfig(broker=url, node="t", connect_timeout_ms=2000, history_size=size, history_ttl_s=ttl),
        Groups(),
    )


def listen(b: broker.Broker, group: str):
    import redis

    pubsub = redis.Redis.from_url(b.cluster.broker).pubsub()
    pubsub.subscribe(envelope.channel_of(group))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    return pubsub


def test_publish_appends_to_the_stream_and_publishes_the_offset(redis_server):  # noqa: F811
    b = make_broker(redis_server.url, ttl=60)
    pubsub = listen(b, "g")
    offsets = [b.publish("g", f"m{n}") for n in range(3)] + [b.publish("g", b"\x00bin")]
    assert [envelope.parse_offset(o) for o in offsets] == sorted(envelope.parse_offset(o) for o in offsets)
    got = []
    for _ in range(4):
        message = pubsub.get_message(timeout=2)
        got.append(envelope.decode_message(message["data"]))
    assert got == [
        (b.origin, "m0", offsets[0]),
        (b.origin, "m1", offsets[1]),
        (b.origin, "m2", offsets[2]),
        (b.origin, b"\x00bin", offsets[3]),
    ]
    client = b._client
    assert client.xlen(envelope.history_key("g")) == 4
    assert 0 < client.ttl(envelope.history_key("g")) <= 60

    complete, entries = b.recover("g", offsets[0])
    assert complete is True
    assert entries == [(offsets[1], "m1"), (offsets[2], "m2"), (offsets[3], b"\x00bin")]
    assert b.recover("g", offsets[3]) == (True, [])
    assert b.recover("other", offsets[0]) == (False, [])  # no stream at all
    pubsub.close()


def test_recover_reports_a_trimmed_history(redis_server):  # noqa: F811
    b = make_broker(redis_server.url, size=5)
    first = b.publish("g", "old")
    for n in range(300):  # MAXLEN ~ trims whole nodes (100 entries): go well past them
        last = b.publish("g", f"m{n}")
    assert b._client.xlen(envelope.history_key("g")) < 300
    complete, entries = b.recover("g", first)
    assert complete is False
    assert entries and entries[-1] == (last, "m299")


def test_history_expires(redis_server):  # noqa: F811
    b = make_broker(redis_server.url, ttl=1)
    since = b.publish("g", "a")
    b.publish("g", "b")
    time.sleep(2.2)
    assert b.recover("g", since) == (False, [])


def test_publish_without_redis_raises_broker_unavailable():
    from tests.support.server import free_port

    b = make_broker(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(envelope.BrokerUnavailable):
        b.publish("g", "x")
    with pytest.raises(envelope.BrokerUnavailable):
        b.recover("g", "1-0")
