"""[cluster] history: the Lua publish and the recovery by offset, against a real redis-server
(in this process, without the subscriber greenlet), and groups.join's switch-over to live."""

from __future__ import annotations

import pytest

from tests.support.backends import redis_server  # noqa: F401 - a fixture
from wsserver.runtime import broker
from wsserver.runtime.groups import JoinResult


def test_offset_envelope_round_trips_and_is_checked():
    origin = bytes(range(8))
    env = broker.encode_envelope(origin, "hi")
    with_offset = bytes([env[0] | broker.FLAG_OFFSET]) + origin + bytes([5]) + b"1-234"[:5] + env[9:]
    assert broker.decode_message(with_offset) == (origin, "hi", "1-234")
    assert broker.decode_envelope(with_offset) == (origin, "hi")
    assert broker.decode_message(env) == (origin, "hi", None)
    for bad in (
        bytes([env[0] | 2]) + origin,
        bytes([env[0] | 2]) + origin + b"\x09abc",
        bytes([env[0] | 2]) + origin + b"\x03a-b",
    ):
        with pytest.raises(broker.EnvelopeError):
            broker.decode_message(bad)
    assert broker.parse_offset("17-3") == (17, 3)
    for bad in ("", "17", "a-1", "1-", "-1", "1-2-3"):
        with pytest.raises(ValueError):
            broker.parse_offset(bad)


class _Session:
    id = "s"

    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)

    def send_encoded(self, message, frame):
        self.sent.append(message)


class _History:
    """Stands for the broker: while the history is read, live messages arrive (buffered)."""

    def __init__(self, groups, entries, complete=True, live=()):
        self.groups, self.entries, self.complete, self.live = groups, entries, complete, live

    def wait_subscribed(self, group, timeout=None, connected_only=False):
        return True

    def recover(self, group, since):
        for offset, message in self.live:  # published while the join reads the history
            self.groups.publish_local(group, message, offset)
        return self.complete, list(self.entries)


def test_join_since_delivers_history_then_live_without_gap_or_duplicate(groups):
    groups.set_history(_History(groups, [("1-2", "b"), ("1-3", "c")], live=[("1-3", "c"), ("1-4", "d")]))
    s = _Session()
    result = groups.join(s, "g", since="1-1")
    assert result == JoinResult(True, "1-4")
    assert s.sent == ["b", "c", "d"]
    # Read from the history while still unread on the subscriber connection: dropped.
    groups.publish_local("g", "c", "1-3")
    groups.publish_local("g", "d", "1-4")
    groups.publish_local("g", "e", "1-5")  # live now
    groups.publish_local("g", "f", "1-6")
    assert s.sent == ["b", "c", "d", "e", "f"]


def test_join_since_with_a_deliver_callback_and_lost_history(groups):
    groups.set_history(_History(groups, [("5-0", "x")], complete=False))
    s, got = _Session(), []
    result = groups.join(s, "g", since="1-1", deliver=lambda g, m, o: got.append((g, m, o)))
    assert result.recovered is False
    assert got == [("g", "x", "5-0")] and s.sent == []
    groups.publish_local("g", "y", "5-1")
    assert got[-1] == ("g", "y", "5-1")
    with pytest.raises(ValueError):
        groups.join(s, "h", since="nonsense")
    assert groups.join(s, "h").recovered is True  # a plain join still works


def test_join_since_without_history_is_not_recovered(groups):
    s = _Session()
    assert groups.join(s, "g", since="1-0") == JoinResult(False, "1-0")
    groups.publish_local("g", "live")
    assert s.sent == ["live"]


def test_broadcast_with_an_offset_leaves_local_delivery_to_the_broker(groups):
    s = _Session()
    groups.join(s, "g")
    groups.set_relay(lambda group, message: "7-0")
    assert groups.broadcast("g", "x") == "7-0"
    assert s.sent == []  # it comes back through the subscriber, in the group's order
    groups.set_relay(lambda group, message: None)
    assert groups.broadcast("g", "y") is None
    assert s.sent == ["y"]
