"""Presence (``[cluster] presence_ttl_s > 0``): who is in a group, on every node.

Redis side: one sorted set per group (``PREFIX:presence:GROUP``, :meth:`Names.presence
<wsserver.runtime.broker.Names.presence>`) whose elements are the members, each a compact JSON
object ``{"w":WORKER,"session":ID,"user":USER,"node":NODE}`` (``w``, the worker's random origin
id, keeps the element unique across nodes and worker restarts; ``session`` ids are only unique
within a host's live processes), scored by the time it expires. One key per group, so a leave
is one ZREM of the element, expired elements go with one ZREMRANGEBYSCORE, and two groups'
keys can never collide.

Times are Redis's (``TIME`` inside :data:`WRITE_SCRIPT` and :data:`READ_SCRIPT`): nodes whose
clocks disagree still agree on what expired.

- A join or leave of a session (the groups presence hook, :meth:`Presence.changed`) costs the
  handler no round trip: it is noted in a per-group queue (a join then a leave before the
  write cancel out) and one greenlet per worker writes the queue in one pipeline (one EVALSHA
  of :data:`WRITE_SCRIPT` per group).
- Every ``presence_ttl_s / 3`` the same greenlet re-asserts every local member in one pipeline
  (new expiry = now + ``presence_ttl_s``), and drops the group's expired elements: a node that
  died (kill -9, power loss) stops refreshing and its members are gone from every read within
  ``presence_ttl_s``. Each key gets a PEXPIRE of ``presence_ttl_s + 1`` s at every write, so a
  group nobody refreshes vanishes.
- After a failed write (Redis down), and when the broker's subscriber comes back after having
  been disconnected (Redis may have restarted empty), the next write is a full refresh.
- :meth:`Presence.members` is one round trip (EVALSHA of :data:`READ_SCRIPT`, with the
  group's queued writes in the same pipeline so a session sees its own join), or
  :class:`~wsserver.runtime.broker.BrokerUnavailable`.
- A graceful stop removes this worker's members at once (:meth:`Presence.stop`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsserver.logs import log
from wsserver.runtime.envelope import BrokerUnavailable

if TYPE_CHECKING:
    from wsserver.runtime.envelope import Names

logger = logging.getLogger("wsserver.presence")

# KEYS[1] the group's sorted set; ARGV: ttl (seconds), the number of elements to add, the
# elements to add, then the elements to remove.
WRITE_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
local adds = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 3, 2 + adds do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
for i = 3 + adds, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000) + 1000) end
return 0
"""
# KEYS[1] the group's sorted set: the elements that have not expired.
READ_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.6f', now), '+inf')
"""
CHUNK = 1000  # elements per EVALSHA: a huge group is written in several commands
RETRY_S = 1.0  # after a failed write
UP_POLL_S = 1.0  # how often the writer looks whether the broker's subscriber came back
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def member_text(worker: str, session_id: str, user: str | None, node: str) -> str:
    """The sorted set element of one member."""
    return _compact({"w": worker, "session": session_id, "user": user, "node": node})


def decode_member(raw: bytes | str) -> dict[str, Any] | None:
    """``{"session", "user", "node"}`` of an element; None when it is not one of ours."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("session"), str):
        return None
    return {"session": value["session"], "user": value.get("user"), "node": value.get("node", "")}


class Presence:
    """One worker's presence writer and reader.

    ``client`` is a redis-py client (its pool's socket timeout bounds every round trip);
    ``errors`` the exceptions meaning Redis is unavailable; ``is_up`` tells whether the
    broker's subscriber is connected (a return from False to True forces a refresh).
    """

    def __init__(
        self,
        client: Any,
        names: Names,
        node: str,
        worker: str,
        ttl: float,
        errors: tuple[type[BaseException], ...],
        is_up: Callable[[], bool] | None = None,
        where: str = "redis",
        io_timeout: float = 5.0,
    ) -> None:
        self.client = client
        self.names = names
        self.node = node
        self.worker = worker
        self.ttl = float(ttl)
        self.interval = max(self.ttl / 3, 0.1)
        self.errors = errors
        self.where = where  # for error texts
        self.io_timeout = io_timeout  # the longest a round trip can take (the client's socket timeout)
        self._is_up = is_up
        self._write_sha = self._read_sha = ""
        # group -> {element: None}: this worker's members (what a refresh re-asserts)
        self._local: dict[str, dict[str, None]] = {}
        # group -> {element: True to add, False to remove}: written by the next flush
        self._pending: dict[str, dict[str, bool]] = {}
        self._texts: dict[Any, str] = {}  # session -> its element (built once per session)
        self._refs: dict[Any, int] = {}  # session -> in how many groups here
        self._full = True  # the next write re-asserts everything
        self._greenlet: Any = None
        self._wake: Any = None
        self._hub: Any = None
        self._hub_thread = 0
        self._native_get_ident: Any = None
        self._stopping = False
        self._failing = False
        self._busy = False  # the writer has a pipeline in flight
        # Writes go out one pipeline at a time: a read carrying a group's newer changes must
        # not overtake the writer's older ones for the same group on another connection.
        self._lock: Any = None

    # ---- life ------------------------------------------------------------------------------
    def start(self) -> None:
        import gevent
        from gevent.event import Event
        from gevent.monkey import get_original

        self._native_get_ident = get_original("_thread", "get_ident")
        self._hub_thread = self._native_get_ident()
        self._hub = gevent.get_hub()
        from gevent.lock import Semaphore

        self._wake = Event()
        self._lock = Semaphore()
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop writing and remove this worker's members from Redis (best effort, one round trip)."""
        self._stopping = True
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            if self._busy:
                # Killed mid-pipeline, it would leave its replies unread on a pooled connection.
                greenlet.join(self.io_timeout)
            greenlet.kill(block=False)
        for group, elements in self._local.items():
            pending = self._pending.setdefault(group, {})
            for element in elements:
                pending[element] = False
        self._local.clear()
        self._full = False
        try:
            self.flush()
        except BrokerUnavailable:
            pass  # they expire within the TTL

    # ---- the groups hook -------------------------------------------------------------------
    def changed(self, session: Any, group: str, joined: bool) -> None:
        """``session`` joined (or left) ``group`` in this worker: queue the write."""
        if self._hub is not None and self._native_get_ident() != self._hub_thread:
            # A thread-mode handler: the queues and the writer belong to the worker's hub.
            self._hub.loop.run_callback_threadsafe(self.changed, session, group, joined)
            return
        if self._stopping:
            return
        local = self._local.get(group)
        if joined:
            text = self._texts.get(session)
            if text is None:
                text = self._texts[session] = member_text(
                    self.worker, str(session.id), session.user, self.node
                )
            if local is None:
                local = self._local[group] = {}
            if text in local:
                return
            local[text] = None
            self._refs[session] = self._refs.get(session, 0) + 1
        else:
            text = self._texts.get(session)
            if text is None or local is None or text not in local:
                return
            del local[text]
            if not local:
                del self._local[group]
            count = self._refs.get(session, 0) - 1
            if count > 0:
                self._refs[session] = count
            else:
                self._refs.pop(session, None)
                self._texts.pop(session, None)
        self._pending.setdefault(group, {})[text] = joined
        if self._wake is not None:
            self._wake.set()

    # ---- reading ---------------------------------------------------------------------------
    def members(self, group: str) -> list[dict[str, Any]]:
        """The live members of ``group`` on every node, sorted by node then session;
        :class:`BrokerUnavailable` when Redis cannot be read. This worker's queued writes to
        the group go in the same round trip."""
        pending = self._pending.pop(group, None)
        key = self.names.presence(group)

        def commands(pipe: Any) -> None:
            if pending:
                self._write_commands(
                    pipe, key, [e for e, v in pending.items() if v], [e for e, v in pending.items() if not v]
                )
            pipe.evalsha(self._read_sha, 1, key)

        try:
            replies = self._execute(commands)
        except BrokerUnavailable:
            if pending:
                self._requeue({group: pending})
            raise
        found = [m for m in (decode_member(raw) for raw in replies[-1]) if m is not None]
        found.sort(key=lambda m: (m["node"] or "", m["session"]))
        return found

    # ---- writing ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Write what is queued (everything when a refresh is due): one pipeline.
        :class:`BrokerUnavailable` when it failed (the writes are queued again)."""
        full = self._full
        pending, self._pending = self._pending, {}
        self._full = False
        writes: dict[str, tuple[list[str], list[str]]] = {}
        for group, changes in pending.items():
            writes[group] = ([e for e, v in changes.items() if v], [e for e, v in changes.items() if not v])
        if full:
            for group, elements in self._local.items():
                writes.setdefault(group, ([], []))[0][:] = list(elements)
        if not writes:
            return

        def commands(pipe: Any) -> None:
            for group, (adds, removes) in writes.items():
                self._write_commands(pipe, self.names.presence(group), adds, removes)

        try:
            self._execute(commands)
        except BrokerUnavailable:
            self._requeue(pending)
            self._full = True
            raise

    def refresh(self) -> None:
        """Re-assert every local member now (one pipeline)."""
        self._full = True
        self.flush()

    def _write_commands(self, pipe: Any, key: str, adds: list[str], removes: list[str]) -> None:
        if not adds and not removes:
            pipe.evalsha(self._write_sha, 1, key, self.ttl, 0)
            return
        for start in range(0, max(len(adds), len(removes)), CHUNK):
            chunk_adds, chunk_removes = adds[start : start + CHUNK], removes[start : start + CHUNK]
            pipe.evalsha(self._write_sha, 1, key, self.ttl, len(chunk_adds), *chunk_adds, *chunk_removes)

    def _requeue(self, pending: dict[str, dict[str, bool]]) -> None:
        """Put back failed writes, unless a newer change of the same element was queued since."""
        for group, changes in pending.items():
            queued = self._pending.setdefault(group, {})
            for element, joined in changes.items():
                queued.setdefault(element, joined)

    def _execute(self, commands: Callable[[Any], None]) -> list[Any]:
        """One pipeline (loading the scripts first when Redis does not know them: after a
        restart or SCRIPT FLUSH); :class:`BrokerUnavailable` on failure."""
        for attempt in (1, 2):
            try:
                if self._lock is None:
                    return self._pipeline(commands)
                with self._lock:
                    return self._pipeline(commands)
            except self.errors as exc:
                if attempt == 1 and _no_script(exc):
                    self._write_sha = ""
                    continue
                raise BrokerUnavailable(f"cannot reach the presence at {self.where}: {exc}") from exc
        raise AssertionError("unreachable")

    def _pipeline(self, commands: Callable[[Any], None]) -> list[Any]:
        if not self._write_sha:
            self._load_scripts()
        pipe = self.client.pipeline(transaction=False)
        commands(pipe)
        return pipe.execute()

    def _load_scripts(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.script_load(WRITE_SCRIPT)
        pipe.script_load(READ_SCRIPT)
        write_sha, read_sha = pipe.execute()
        self._write_sha, self._read_sha = _text(write_sha), _text(read_sha)

    def _run(self) -> None:
        import gevent

        loop = gevent.get_hub().loop
        next_refresh = loop.now()
        was_up = True
        while not self._stopping:
            now = loop.now()
            if self._is_up is not None:
                up = self._is_up()
                if up and not was_up:
                    self._full = True  # the subscriber reconnected: Redis may have lost our members
                was_up = up
            if now >= next_refresh:
                self._full = True
            if self._full or self._pending:
                if self._full:
                    next_refresh = now + self.interval
                self._busy = True
                try:
                    self.flush()
                    if self._failing:
                        self._failing = False
                        log(logger, "info", "presence written again", node=self.node)
                except BrokerUnavailable as exc:
                    if not self._failing:
                        self._failing = True
                        log(logger, "warning", "presence write failed", node=self.node, error=str(exc))
                    self._retry_later()
                    continue
                except Exception:
                    log(logger, "error", "presence writer failed", exc_info=True)
                    self._retry_later()
                    continue
                finally:
                    self._busy = False
            self._wake.clear()
            if self._pending:
                continue  # queued while the pipeline was out
            self._wake.wait(max(0.0, min(next_refresh - loop.now(), UP_POLL_S)))

    def _retry_later(self) -> None:
        import gevent

        self._busy = False
        if not self._stopping:
            gevent.sleep(RETRY_S)


def _no_script(exc: BaseException) -> bool:
    from redis.exceptions import NoScriptError

    return isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
