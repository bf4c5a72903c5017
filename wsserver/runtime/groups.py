"""Groups of one worker: which sessions subscribed to which group, and publishing to them.

An endpoint publishes with ``session.broadcast(message, group)``: the message goes to the relay
hook, which the prefork worker installs to hand it to the master for every other worker (or,
with ``[cluster]``, to Redis: :mod:`wsserver.runtime.broker`), and then to every member in this
worker (:func:`publish_local`). A hook that raises (the broker is unavailable) fails the
broadcast before any member got it. In a single process there is no hook and a broadcast is
local only.

Membership hooks (:func:`set_membership_hooks`) hear when a group gets its first member in this
worker and when it loses its last: the broker subscribes and unsubscribes the group's channel.

Every call runs on this worker's hub, so the registry needs no lock. Members receive a
group's messages in the order they were published here, and (through the relay) in the order
each other worker published them.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsserver.logs import log
from wsserver.protocol import encode_message

if TYPE_CHECKING:
    from wsserver.runtime.session import Session

logger = logging.getLogger("wsserver.groups")

RelayHook = Callable[[str, "str | bytes"], None]
GroupHook = Callable[[str], None]

# group name -> its members, in joining order (a dict used as an ordered set)
_members: dict[str, dict[Session, None]] = {}
# session -> the groups it joined
_joined: dict[Session, set[str]] = {}
_relay: RelayHook | None = None
_on_first: GroupHook | None = None  # a group got its first member here
_on_last: GroupHook | None = None  # a group lost its last member here
# Broadcasts of thread-mode handlers waiting for the one greenlet that publishes them in order.
_soon: deque[tuple[str, str | bytes]] = deque()
_soon_runner: Any = None


def join(session: Session, group: str) -> None:
    members = _members.get(group)
    if members is None:
        members = _members[group] = {}
        if _on_first is not None:
            _on_first(group)
    members[session] = None
    _joined.setdefault(session, set()).add(group)


def leave(session: Session, group: str) -> None:
    members = _members.get(group)
    if members is not None:
        members.pop(session, None)
        if not members:
            del _members[group]
            if _on_last is not None:
                _on_last(group)
    groups = _joined.get(session)
    if groups is not None:
        groups.discard(group)
        if not groups:
            del _joined[session]


def leave_all(session: Session) -> None:
    """Called when a session ends."""
    for group in list(_joined.get(session, ())):
        leave(session, group)


def groups_of(session: Session) -> frozenset[str]:
    return frozenset(_joined.get(session, ()))


def members(group: str) -> list[Session]:
    return list(_members.get(group, ()))


def publish_local(group: str, message: str | bytes) -> int:
    """Send ``message`` to the members of ``group`` in this worker; returns how many.

    The frame is encoded once for all members (a compressing member encodes its own), and each
    member's bytes leave with its other writes of this turn of the loop, one ``send`` each.
    """
    members = _members.get(group)
    if not members:
        return 0
    frame = encode_message(message)
    sent = 0
    for session in list(members):
        try:
            session.send_encoded(message, frame)
            sent += 1
        except Exception:
            log(logger, "error", "broadcast send failed", exc_info=True, group=group, session=session.id)
    return sent


def publish(group: str, message: str | bytes) -> int:
    """Send to the group, through the relay hook in every other worker, and here.

    The hook goes first: when it raises (``BrokerUnavailable``), no member got the message.
    """
    if _relay is not None:
        _relay(group, message)
    return publish_local(group, message)


def publish_soon(group: str, message: str | bytes) -> None:
    """:func:`publish` from a callback on the hub, which must not block (broadcasts of
    thread-mode handlers): queued, and published in order by one greenlet. A failure is
    logged, not raised."""
    global _soon_runner
    _soon.append((group, message))
    if _soon_runner is None:
        import gevent

        _soon_runner = gevent.spawn(_publish_queued)


def _publish_queued() -> None:
    global _soon_runner
    try:
        while _soon:
            group, message = _soon.popleft()
            try:
                publish(group, message)
            except Exception as exc:
                log(logger, "warning", "broadcast failed", group=group, error=str(exc))
    finally:
        _soon_runner = None


def set_relay(hook: RelayHook | None) -> None:
    """Install (or with None remove) the hook that carries publishes to the other workers."""
    global _relay
    _relay = hook


def set_membership_hooks(on_first: GroupHook | None, on_last: GroupHook | None) -> None:
    """Install (or with None remove) the hooks called when a group gets its first member in
    this worker and when it loses its last one."""
    global _on_first, _on_last
    _on_first, _on_last = on_first, on_last


def local_groups() -> list[str]:
    """The groups that have members in this worker."""
    return list(_members)


def reset() -> None:
    """Forget every membership and the hooks (tests)."""
    global _relay, _on_first, _on_last
    _members.clear()
    _joined.clear()
    _soon.clear()
    _relay = _on_first = _on_last = None
