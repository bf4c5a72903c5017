"""[cluster] presence: the queue of writes, the groups hook, the fallback without a cluster,
and the sorted sets against a real redis-server (in this process; the writer greenlet too)."""

from __future__ import annotations

import json

from tests.support.backends import redis_server  # noqa: F401 - a fixture
from wsserver.runtime import presence
from wsserver.runtime.envelope import Names


class _Session:
    def __init__(self, sid: str, user: str | None = None) -> None:
        self.id = sid
        self.user = user
        self.sent: list = []

    def send(self, message) -> None:
        self.sent.append(message)

    def send_encoded(self, message, frame) -> None:
        self.sent.append(message)


# ---- without Redis ---------------------------------------------------------------------------


def test_member_text_round_trips_and_garbage_is_skipped():
    text = presence.member_text("ab" * 8, "1f-2", "alice", "n1")
    assert json.loads(text) == {"w": "ab" * 8, "session": "1f-2", "user": "alice", "node": "n1"}
    assert presence.decode_member(text.encode()) == {"session": "1f-2", "user": "alice", "node": "n1"}
    assert presence.decode_member(presence.member_text("w", "s", None, "n")) == {
        "session": "s",
        "user": None,
        "node": "n",
    }
    for bad in (b"\xff", b"not json", b"[1]", b'{"user":"x"}', b'{"session":3}'):
        assert presence.decode_member(bad) is None


def test_changes_are_queued_and_cancel_out():
    p = presence.Presence(None, Names(), "n", "w", 30, (OSError,))
    a, b = _Session("a", "alice"), _Session("b")
    p.changed(a, "g", True)
    p.changed(a, "g", True)  # a second join of the same group changes nothing
    p.changed(b, "g", True)
    p.changed(a, "h", True)
    ta, tb = presence.member_text("w", "a", "alice", "n"), presence.member_text("w", "b", None, "n")
    assert p._pending == {"g": {ta: True, tb: True}, "h": {ta: True}}
    assert p._local == {"g": {ta: None, tb: None}, "h": {ta: None}}
    p.changed(b, "g", False)
    p.changed(b, "g", False)  # not a member any more: nothing
    p.changed(b, "h", False)  # never was
    assert p._pending["g"] == {ta: True, tb: False}  # the last change of an element wins
    assert p._local == {"g": {ta: None}, "h": {ta: None}}
    assert b not in p._texts and p._refs[a] == 2
    p.changed(a, "g", False)
    p.changed(a, "h", False)
    assert p._local == {} and p._texts == {} and p._refs == {}


def test_groups_tell_the_presence_hook_once_per_change(groups):
    events = []

    class Hook:
        def changed(self, session, group, joined):
            events.append((session.id, group, joined))

        def members(self, group):
            return [{"group": group}]

    groups.set_presence(Hook())
    a, b = _Session("a"), _Session("b")
    groups.join(a, "g")
    groups.join(b, "g")
    groups.join(a, "h")
    groups.leave(b, "g")
    groups.leave(b, "g")  # no longer a member: not told again
    groups.leave(b, "zzz")
    groups.leave_all(a)
    assert events == [
        ("a", "g", True),
        ("b", "g", True),
        ("a", "h", True),
        ("b", "g", False),
        ("a", "g", False),
        ("a", "h", False),
    ] or events == [
        ("a", "g", True),
        ("b", "g", True),
        ("a", "h", True),
        ("b", "g", False),
        ("a", "h", False),
        ("a", "g", False),
    ]
    assert groups.presence("x") == [{"group": "x"}]


def test_without_a_cluster_presence_lists_this_workers_members(groups):
    import socket

    a, b, c = _Session("1-1", "alice"), _Session("1-2"), _Session("1-3")
    groups.join(a, "g")
    groups.join(b, "g")
    groups.join(c, "other")
    host = socket.gethostname()
    assert groups.presence("g") == [
        {"session": "1-1", "user": "alice", "node": host},
        {"session": "1-2", "user": None, "node": host},
    ]
    groups.leave(a, "g")
    assert groups.presence("g") == [{"session": "1-2", "user": None, "node": host}]
    assert groups.presence("nobody") == []


# ---- against redis-server --------------------------------------------------------------------
