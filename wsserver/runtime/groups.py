"""Groups of one worker: which sessions subscribed to which group, and publishing to them.

An endpoint publishes with ``session.broadcast(message, group)``: the message goes to every
member in this worker at once (:func:`publish_local`), and to the relay hook, which the
prefork worker installs to hand it to the master for every other worker. In a single process
there is no hook and a broadcast is local only.

Every call runs on this worker's hub, so the registry needs no lock. Members receive a
group's messages in the order they were published here, and (through the relay) in the order
each other worker published them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from wsserver.logs import log
from wsserver.protocol import encode_message

if TYPE_CHECKING:
    from wsserver.runtime.session import Session

logger = logging.getLogger("wsserver.groups")

RelayHook = Callable[[str, "str | bytes"], None]

# group name -> its members, in joining order (a dict used as an ordered set)
_members: dict[str, dict[Session, None]] = {}
# session -> the groups it joined
_joined: dict[Session, set[str]] = {}
_relay: RelayHook | None = None


def join(session: Session, group: str) -> None:
    _members.setdefault(group, {})[session] = None
    _joined.setdefault(session, set()).add(group)


def leave(session: Session, group: str) -> None:
    members = _members.get(group)
    if members is not None:
        members.pop(session, None)
        if not members:
            del _members[group]
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
    """Send to the group here and, through the relay hook, in every other worker."""
    sent = publish_local(group, message)
    if _relay is not None:
        _relay(group, message)
    return sent


def set_relay(hook: RelayHook | None) -> None:
    """Install (or with None remove) the hook that carries publishes to the other workers."""
    global _relay
    _relay = hook


def reset() -> None:
    """Forget every membership and the hook (tests)."""
    global _relay
    _members.clear()
    _joined.clear()
    _relay = None
