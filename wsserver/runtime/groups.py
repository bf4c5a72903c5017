"""Groups of one worker: which sessions subscribed to which group, and publishing to them.

An endpoint publishes with ``session.broadcast(message, group)``: the message goes to the relay
hook, which the prefork worker installs to hand it to the master for every other worker (or,
with ``[cluster]``, to Redis: :mod:`wsserver.runtime.broker`), and then to every member in this
worker (:meth:`Groups.publish_local`). A hook that raises (the broker is unavailable) fails the
broadcast before any member got it. In a single process there is no hook and a broadcast is
local only.

Membership hooks (:meth:`Groups.set_membership_hooks`) hear when a group gets its first member in this
worker and when it loses its last: the broker subscribes and unsubscribes the group's channel.

Presence (:meth:`Groups.set_presence`, ``[cluster] presence_ttl_s > 0``): every join and leave of a
session is told to :class:`wsserver.runtime.presence.Presence`, which queues the Redis write;
:meth:`Groups.presence` lists a group's members on every node. Without it, :meth:`Groups.presence` lists
only this worker's members.

History (``[cluster] history_size > 0``, :meth:`Groups.set_history`): a broadcast gets an offset (the
relay hook returns it) and reaches this worker's members back through the broker, in the
group's one order. ``join(session, group, since=OFFSET)`` subscribes first and buffers what
arrives live, delivers what the history holds after ``since``, then the buffered messages whose
offset is greater than the last one delivered: no gap, no duplicate. A member may have a
``deliver(group, message, offset)`` callback instead of plain sends (the PubSub endpoint
formats each message with its offset).

Every call runs on this worker's hub, so the registry needs no lock. Members receive a
group's messages in the order they were published here, and (through the relay) in the order
each other worker published them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wsserver.logs import log
from wsserver.protocol import encode_message
from wsserver.runtime.envelope import parse_offset

logger = logging.getLogger("wsserver.groups")

RelayHook = Callable[[str, "str | bytes"], "str | None"]
GroupHook = Callable[[str], None]
Deliver = Callable[[str, "str | bytes", "str | None"], None]


class Session(Protocol):
    """What a group asks of its members (wsserver.runtime.session.Session is one); typed here so
    that groups need not import the session, which imports them."""

    id: str
    user: str | None

    def send(self, message: str | bytes) -> None: ...

    def send_encoded(self, message: str | bytes, frame: bytes) -> None: ...


@dataclass(frozen=True)
class JoinResult:
    """What :func:`join` reports: ``recovered`` is True when nothing was missed (always for a
    join without ``since``); ``offset`` is the last offset delivered by the recovery (else the
    ``since`` given, or None)."""

    recovered: bool = True
    offset: str | None = None


class _Member:
    """A member with a ``deliver`` callback, or one still recovering (``buffer`` not None), or
    one that recovered up to ``floor`` (messages at or below it may still be on their way from
    the broker: they were delivered from the history already)."""

    __slots__ = ("buffer", "deliver", "floor")

    def __init__(self, deliver: Deliver | None, buffer: list | None = None) -> None:
        self.deliver = deliver
        self.buffer = buffer
        self.floor: tuple[int, int] | None = None


class Groups:
    """One worker's groups: who joined what, and publishing to them (see the module's doc).

    The worker owns one (``WorkerRuntime.groups``) and hands it to its sessions and its broker;
    a test or a benchmark makes its own."""

    def __init__(self) -> None:
        # group name -> its members, in joining order (a dict used as an ordered set); the value
        # is None for a plain member
        self._members: dict[str, dict[Session, _Member | None]] = {}
        # session -> the groups it joined
        self._joined: dict[Session, set[str]] = {}
        self._relay: RelayHook | None = None
        self._on_first: GroupHook | None = None  # a group got its first member here
        self._on_last: GroupHook | None = None  # a group lost its last member here
        self._history: Any = None  # the broker with history: recover(group, since), wait_subscribed(group)
        self._presence: Any = None  # changed(session, group, joined) and members(group): see set_presence
        self._hostname = ""

    def join(
        self, session: Session, group: str, since: str | None = None, deliver: Deliver | None = None
    ) -> JoinResult:
        """Make ``session`` a member of ``group``; with ``since`` (an offset), first deliver what
        it missed after that offset (see the module's doc). ``deliver(group, message, offset)``,
        when given, receives the group's messages instead of ``session.send``; it runs on the hub
        (in the broker's greenlet or a publisher's) and should only send."""
        last = (
            parse_offset(since) if since is not None else (0, 0)
        )  # ValueError for a malformed offset, before joining
        member = (
            _Member(deliver, [] if since is not None else None) if (deliver or since is not None) else None
        )
        members = self._members.get(group)
        if members is None:
            members = self._members[group] = {}
            if self._on_first is not None:
                self._on_first(group)
        members[session] = member
        self._joined.setdefault(session, set()).add(group)
        if self._presence is not None:
            self._presence.changed(session, group, True)
        if since is None or member is None:
            if self._history is not None:
                # Return once Redis confirmed this worker's SUBSCRIBE (at once unless the first
                # member's is on its way), so that whatever is published after join() returns
                # reaches the session. Not while the broker is down (it subscribes on reconnecting).
                self._history.wait_subscribed(group, connected_only=True)
            return JoinResult()
        recovered, entries, offset = False, [], since
        try:
            if self._history is not None:
                self._history.wait_subscribed(group)
                recovered, entries = self._history.recover(group, since)
        except Exception as exc:  # BrokerUnavailable: report as not recovered, go on live
            log(logger, "warning", "history recovery failed", group=group, error=str(exc))
        for entry_offset, message in entries:
            self._deliver_one(session, member, group, message, entry_offset)
            offset, last = entry_offset, parse_offset(entry_offset)
        buffer = member.buffer or []
        while buffer:
            message, entry_offset = buffer.pop(0)
            if entry_offset is not None:
                at = parse_offset(entry_offset)
                if at <= last:
                    continue  # delivered from the history already
                offset, last = entry_offset, at
            self._deliver_one(session, member, group, message, entry_offset)
        member.floor = last  # what the history gave may still be unread on the subscriber connection
        member.buffer = None  # live from here: no yield since the buffer was found empty
        return JoinResult(recovered, offset)

    def _deliver_one(
        self, session: Session, member: _Member, group: str, message: str | bytes, offset: str | None
    ) -> None:
        try:
            if member.deliver is not None:
                member.deliver(group, message, offset)
            else:
                session.send(message)
        except Exception:
            log(logger, "error", "broadcast send failed", exc_info=True, group=group, session=session.id)

    def leave(self, session: Session, group: str) -> None:
        members = self._members.get(group)
        if members is not None:
            if session in members:
                del members[session]
                if self._presence is not None:
                    self._presence.changed(session, group, False)
            if not members:
                del self._members[group]
                if self._on_last is not None:
                    self._on_last(group)
        groups = self._joined.get(session)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._joined[session]

    def leave_all(self, session: Session) -> None:
        """Called when a session ends."""
        for group in list(self._joined.get(session, ())):
            self.leave(session, group)

    def groups_of(self, session: Session) -> frozenset[str]:
        return frozenset(self._joined.get(session, ()))

    def members(self, group: str) -> list[Session]:
        return list(self._members.get(group, ()))

    def publish_local(self, group: str, message: str | bytes, offset: str | None = None) -> int:
        """Send ``message`` to the members of ``group`` in this worker; returns how many.

        The frame is encoded once for all members (a compressing member encodes its own), and each
        member's bytes leave with its other writes of this turn of the loop, one ``send`` each.
        """
        members = self._members.get(group)
        if not members:
            return 0
        frame = encode_message(message)  # once per broadcast, shared by every plain member
        sent = 0
        for session, member in list(members.items()):
            try:
                if member is None:
                    session.send_encoded(message, frame)
                elif member.buffer is not None:
                    member.buffer.append((message, offset))
                else:
                    if member.floor is not None and offset is not None:
                        if parse_offset(offset) <= member.floor:
                            continue  # delivered from the history during the join
                        member.floor = None  # one order per group: the later ones are all greater
                    if member.deliver is not None:
                        member.deliver(group, message, offset)
                    else:
                        session.send_encoded(message, frame)
                sent += 1
            except Exception:
                log(logger, "error", "broadcast send failed", exc_info=True, group=group, session=session.id)
        return sent

    def broadcast(self, group: str, message: str | bytes) -> str | None:
        """Send to the group, through the relay hook in every other worker, and here; returns
        the message's offset (None without history).

        The hook goes first: when it raises (``BrokerUnavailable``), no member got the message.
        When it returns an offset, the message reaches this worker's members through the broker.
        """
        offset = self._relay(group, message) if self._relay is not None else None
        if offset is None:
            self.publish_local(group, message)
        return offset

    def publish(self, group: str, message: str | bytes) -> int:
        """:func:`broadcast`; returns how many members here got it now (0 when it comes back
        through the broker with an offset)."""
        offset = self._relay(group, message) if self._relay is not None else None
        return self.publish_local(group, message) if offset is None else 0

    def set_relay(self, hook: RelayHook | None) -> None:
        """Install (or with None remove) the hook that carries publishes to the other workers."""
        self._relay = hook

    def set_membership_hooks(self, on_first: GroupHook | None, on_last: GroupHook | None) -> None:
        """Install (or with None remove) the hooks called when a group gets its first member in
        this worker and when it loses its last one."""
        self._on_first, self._on_last = on_first, on_last

    def set_history(self, history: Any) -> None:
        """Install (or with None remove) the broker that keeps history: ``recover(group, since)``
        and ``wait_subscribed(group)``."""
        self._history = history

    def set_presence(self, presence: Any) -> None:
        """Install (or with None remove) the cluster presence: ``changed(session, group, joined)``
        hears every join and leave here, ``members(group)`` answers :meth:`Groups.presence`."""
        self._presence = presence

    def presence(self, group: str) -> list[dict[str, Any]]:
        """The members of ``group``: ``[{"session", "user", "node"}, ...]``. With the cluster
        presence, on every node (``BrokerUnavailable`` when Redis cannot be read); without it,
        only this worker's members, with the host name as their node."""
        if self._presence is not None:
            return self._presence.members(group)
        if not self._hostname:
            import socket

            self._hostname = socket.gethostname()
        return [
            {"session": str(s.id), "user": s.user, "node": self._hostname}
            for s in self._members.get(group, ())
        ]

    def local_groups(self) -> list[str]:
        """The groups that have members in this worker."""
        return list(self._members)
