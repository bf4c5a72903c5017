"""One WebSocket session after the handshake: reading, timers, ordered delivery, send and close.

No greenlet waits per connection: the socket is read in a hub callback (a read watcher), the
bytes go through the sans-IO protocol, and complete messages join the session's bounded
inbound queue. The queue is handed to the port's pool in batches, so the endpoint sees one
message at a time, in order. When the queue is full the session stops reading: TCP then
pushes back on the client and nothing is dropped.

Writes are gathered: what the endpoint sends while the hub works through one read (a whole
batch of pipelined messages) leaves in one ``send`` when that read is done; what it sends at
other times (after blocking, from another session, from a thread) leaves once per turn of the
event loop through the worker's ``_WriteFlusher``; a frame or a backlog of 64 KiB leaves at once.
What the socket does not take waits in a buffer drained by a write watcher. The buffer is
bounded by ``write_limit``: a sender then waits (cooperatively, or natively in a thread-mode
executor) or the session is closed with 1013, per ``write_limit_action``.

Why one long module: the per-message path (read callback, batch, send, flush) is kept in one
class so that each step is an attribute of the same object, not a call across objects: it is
the path every message takes (docs/benchmarks.md, "The hot path").
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import gevent
from gevent.event import Event
from gevent.monkey import get_original

from wsserver.logs import log
from wsserver.metrics import PortStats
from wsserver.protocol import (
    BinaryMessage,
    CloseCode,
    CloseReceived,
    Ping,
    Pong,
    ProtocolState,
    TextMessage,
    WebSocketProtocol,
)
from wsserver.protocol.address import format_peer
from wsserver.runtime.groups import Groups, JoinResult
from wsserver.runtime.transport import Transport, WantRead, WantWrite

if TYPE_CHECKING:
    from wsserver.config import PortConfig
    from wsserver.endpoints.base import Endpoint
    from wsserver.runtime.pool import ExecutorPool

logger = logging.getLogger("wsserver.session")

RECV_SIZE = 65536
MAX_RECV_SIZE = 1 << 20  # one read's size while a large frame arrives (protocol.bytes_wanted())
FLUSH_SIZE = 65536  # unsent bytes written at once, without waiting for the end of the turn
CLOSING_INPUT_LIMIT = 1 << 20  # bytes read after our close frame before the connection is dropped
# The codes the protocol layer fails a connection with (logged as a protocol error).
_FAILURE_CODES = (CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA, CloseCode.MESSAGE_TOO_BIG)
_ABNORMAL = int(CloseCode.ABNORMAL_CLOSURE)  # a plain int, like every code reported to endpoints
READ, WRITE = 1, 2
_ids = itertools.count(1)
_native_get_ident = get_original("_thread", "get_ident")
_allocate_lock = get_original("_thread", "allocate_lock")
# Guards every session's _thread_sends (held for an append or a swap: one lock is enough).
_thread_sends_lock = _allocate_lock()


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


# Inbound queue items: the protocol's TextMessage/BinaryMessage events themselves, this marker
# first, and a (code, reason) tuple last.
_CONNECT = _Marker("connect")


class _WriteFlusher:
    """Writes, once per turn of one event loop, what sessions sent outside their own read.

    An echo answers inside the read that brought the request and is flushed by it; but a
    broadcast reaches many sessions, and a handler that blocked resumes later: their sessions
    are marked here and written in one loop callback, one ``send`` each however many messages
    they got in that turn.
    """

    __slots__ = ("dirty", "loop", "scheduled")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.dirty: list[Session] = []
        self.scheduled = False

    def add(self, session: Session) -> None:
        self.dirty.append(session)
        if not self.scheduled:
            self.scheduled = True
            self.loop.run_callback(self.run)

    def run(self) -> None:
        self.scheduled = False
        dirty, self.dirty = self.dirty, []
        for session in dirty:
            session._dirty = False
            try:
                session._flush()
            except Exception:
                log(logger, "error", "flush failed", exc_info=True, session=session.id)


_flushers: dict[Any, _WriteFlusher] = {}


def _flusher_for(loop: Any) -> _WriteFlusher:
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _WriteFlusher(loop)
    return flusher


class Session:
    """A live WebSocket connection as an endpoint sees it (see ``wsserver.endpoints.SessionAPI``)."""

    # Slots: an idle connection's memory is mostly this object (a __dict__ would add ~1.5 KiB).
    __slots__ = (
        "_abort_timer",
        "_close_started",
        "_dirty",
        "_drained",
        "_ended",
        "_ended_event",
        "_endpoint",
        "_errored",
        "_fd",
        "_flusher",
        "_groups",
        "_hub_thread",
        "_in_flight",
        "_in_read",
        "_inbound",
        "_input_after_close",
        "_last_activity",
        "_loop",
        "_native_waiters",
        "_on_end",
        "_out",
        "_out_bytes",
        "_ping_base",
        "_ping_sent_at",
        "_pool",
        "_port",
        "_proto",
        "_reader",
        "_reading",
        "_scheduled",
        "_stats",
        "_terminated",
        "_thread_sends",
        "_thread_signalled",
        "_timer",
        "_transport",
        "_unflushed",
        "_writer",
        "close_code",
        "close_reason",
        "id",
        "messages_in",
        "messages_out",
        "path",
        "port_alias",
        "query",
        "remote_address",
        "started",
        "subprotocol",
        "user",
    )

    def __init__(
        self,
        transport: Transport,
        peer: tuple[str, int],
        port: PortConfig,
        path: str,
        endpoint: Endpoint,
        proto: WebSocketProtocol,
        pool: ExecutorPool,
        subprotocol: str | None = None,
        user: str | None = None,
        on_end: Callable[[Session], None] | None = None,
        query: str = "",
        stats: PortStats | None = None,
        groups: Groups | None = None,
    ) -> None:
        self.id = f"{os.getpid():x}-{next(_ids)}"
        # The worker's groups (join, leave, broadcast); a session outside a worker has its own.
        self._groups = groups if groups is not None else Groups()
        self.remote_address = peer
        self.user = user
        self.port_alias = port.alias
        self.path = path
        self.query = query
        self.subprotocol = subprotocol
        self.started = time.monotonic()
        self.messages_in = 0
        self.messages_out = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self._transport = transport
        self._port = port
        self._endpoint = endpoint
        self._proto = proto
        self._pool = pool
        self._on_end = on_end
        self._stats = stats if stats is not None else PortStats()  # the port's counts (wsserver.metrics)
        loop = gevent.get_hub().loop
        self._loop = loop
        self._hub_thread = _native_get_ident()
        fd = transport.fileno()
        self._reader = loop.io(fd, READ)
        self._fd = fd
        self._writer: Any = None  # created on the first short write
        self._timer: Any = None
        self._abort_timer: Any = None
        self._reading = False
        # Inbound: messages waiting for the endpoint, and the batch it is working through.
        self._inbound: list[Any] = []
        self._in_flight = 0
        self._scheduled = False
        self._errored = False
        # Outbound: bytes encoded but not written yet (the protocol holds them) and whether the
        # hub writes them at the end of this read (_in_read) or the flusher at the end of the turn.
        self._unflushed = 0
        self._in_read = False
        self._dirty = False
        self._flusher = _flusher_for(loop)
        # Messages sent from thread-mode executors, handed to the hub in one callback per burst.
        self._thread_sends: list[str | bytes] = []
        self._thread_signalled = False
        # Bytes the socket has not taken yet.
        self._out: list[memoryview] = []
        self._out_bytes = 0
        self._drained: Event | None = None  # created when a sender first waits for the client
        self._native_waiters: list[Any] = []
        self._last_activity = self.started
        self._ping_sent_at: float | None = None
        self._ping_base = self.started
        self._close_started: float | None = None
        self._input_after_close = 0
        self._terminated = False
        self._ended = False
        self._ended_event: Event | None = None  # created when someone waits for the end

    # ---- the API endpoints use -------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._proto.state is not ProtocolState.OPEN

    def send(self, message: str | bytes) -> None:
        """Send one message: text for ``str``, binary for ``bytes``. Ignored once closing.

        Waits while more than ``write_limit`` bytes are buffered for this client (or closes
        the session with 1013 when ``write_limit_action = "close"``).
        """
        if _native_get_ident() != self._hub_thread:
            self._send_from_thread(message)
            self._wait_for_room_natively()
            return
        if self._send_now(message) and self._port.write_limit_action == "wait":
            self._wait_for_room()

    def send_encoded(self, message: str | bytes, frame: bytes) -> None:
        """Send ``message`` whose uncompressed frame ``frame`` was built once for many sessions
        (``protocol.encode_message``); a compressing session encodes its own. On the hub only."""
        if self._send_now(message, frame) and self._port.write_limit_action == "wait":
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        hub = gevent.get_hub()
        # Only a greenlet can wait; the hub itself (a callback) must never block.
        while (
            self._out_bytes > self._port.write_limit
            and not self._terminated
            and gevent.getcurrent() is not hub
        ):
            if self._drained is None:
                self._drained = Event()
            self._drained.clear()
            self._drained.wait(1.0)

    def _send_now(self, message: str | bytes, frame: bytes | None = None) -> bool:
        """Encode on the hub thread; True when the sender should wait for the client.

        The limit judges what the client has not taken *before* this message: a single message
        larger than ``write_limit`` still goes out to a client that reads, and the buffer stays
        bounded by ``write_limit`` plus one message (and ``FLUSH_SIZE`` not yet written).
        """
        if self._proto.state is not ProtocolState.OPEN:
            return False
        if self._out_bytes > self._port.write_limit and self._port.write_limit_action == "close":
            log(
                logger,
                "warning",
                "write limit reached: closing",
                port=self.port_alias,
                peer=self.peer_text,
                session=self.id,
                buffered=self._out_bytes,
            )
            self.close(CloseCode.TRY_AGAIN_LATER, "try again later")
            return False
        if frame is not None and not self._proto.compression:
            self._unflushed += self._proto.send_encoded(frame)
        elif type(message) is str:
            self._unflushed += self._proto.send_text(message)
        else:
            # Not str, so bytes: mypy does not narrow the else of a `type() is` test, and a cast
            # would be a call per binary message on the hot path.
            self._unflushed += self._proto.send_binary(message)  # type: ignore[arg-type]
        self.messages_out += 1
        self._stats.messages_out += 1
        if self._unflushed >= FLUSH_SIZE:
            self._flush()
        elif not self._in_read and not self._dirty:
            self._dirty = True
            self._flusher.add(self)
        return self._out_bytes > self._port.write_limit

    def _send_from_thread(self, message: str | bytes) -> None:
        """From a thread-mode executor: queue for the hub, waking it once per burst of sends."""
        with _thread_sends_lock:
            self._thread_sends.append(message)
            if self._thread_signalled:
                return
            self._thread_signalled = True
        self._loop.run_callback_threadsafe(self._send_thread_messages)

    def _send_thread_messages(self) -> None:
        with _thread_sends_lock:
            messages, self._thread_sends = self._thread_sends, []
            self._thread_signalled = False
        for message in messages:
            self._send_now(message)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; the connection ends when the peer replies or on timeout."""
        if _native_get_ident() != self._hub_thread:
            # After this thread's queued sends: both go through the loop's callbacks in order.
            self._from_thread(self.close, code, reason)
            return
        if self._proto.state is not ProtocolState.OPEN:
            return
        self._proto.send_close(code, reason)
        self._close_started = time.monotonic()
        self._flush()
        self._arm_timer(self._port.close_timeout_ms / 1000)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the session ended and ``on_close`` ran (for shutdown)."""
        if self._ended:
            return True
        if self._ended_event is None:
            self._ended_event = Event()
        return self._ended_event.wait(timeout)

    # ---- groups (wsserver.runtime.groups) --------------------------------------------------
    def join(self, group: str, since: str | None = None, deliver: Any = None) -> JoinResult:
        """Receive what is broadcast to ``group`` (on any worker) until :meth:`leave` or the end.

        ``since``: an offset (``[cluster] history_size``): first receive, in order, what was
        broadcast after it; the result's ``recovered`` is False when the history no longer
        reaches back to it. ``deliver(group, message, offset)``: called for each of the group's
        messages instead of :meth:`send` (to learn offsets). See docs/cluster.md."""
        if _native_get_ident() != self._hub_thread:  # it may wait for Redis: on the hub
            return self._wait_on_hub(self._groups.join, self, group, since, deliver)
        return self._groups.join(self, group, since, deliver)

    def _wait_on_hub(self, fn: Callable[..., Any], *args: Any) -> Any:
        """From a thread-mode executor: run ``fn`` in a greenlet on the hub (it may talk to
        Redis) and wait for its result or exception. Sends this thread made before are
        handed to the hub first (its callbacks run in order), so they stay before."""
        lock = _allocate_lock()
        lock.acquire()
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(fn(*args))
            except BaseException as exc:
                outcome.append(exc)
            finally:
                lock.release()

        self._loop.run_callback_threadsafe(gevent.spawn, run)
        lock.acquire()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def leave(self, group: str) -> None:
        self._groups.leave(self, group)

    def broadcast(self, message: str | bytes, group: str) -> str | None:
        """Send ``message`` to every session in ``group`` on every worker (this one included).

        Returns the message's offset with ``[cluster] history_size``, else None; raises
        ``BrokerUnavailable`` when the cluster's broker did not take it (nobody got it). A
        thread-mode handler waits while the worker's loop publishes it."""
        if _native_get_ident() != self._hub_thread:
            return self._wait_on_hub(self._groups.broadcast, group, message)
        return self._groups.broadcast(group, message)

    def presence(self, group: str) -> list[dict[str, Any]]:
        """The members of ``group``: ``[{"session": ID, "user": USER, "node": NODE}, ...]``.

        With ``[cluster]`` (``presence_ttl_s > 0``) on every node, or ``BrokerUnavailable``
        when Redis cannot be read; without it only this worker's members. See docs/cluster.md."""
        if _native_get_ident() != self._hub_thread:
            return self._wait_on_hub(self._groups.presence, group)
        return self._groups.presence(group)

    # ---- start -----------------------------------------------------------------------------
    def start(self) -> None:
        """On the hub, right after the 101 response went out."""
        self._inbound.append(_CONNECT)
        # Frames the client sent right behind its request are already in the protocol.
        self._after_input()
        if not self._terminated:
            self._resume_reading()
            self._arm_timer(self._next_deadline())

    # ---- reading (hub callbacks) -------------------------------------------------------------
    def _on_readable(self) -> None:
        wanted = self._proto.bytes_wanted()
        try:
            data = self._transport.recv(RECV_SIZE if wanted <= RECV_SIZE else min(wanted, MAX_RECV_SIZE))
        except WantRead:
            return
        except WantWrite:
            return  # a TLS transport will retry its read once the write watcher fires
        except OSError:
            data = b""
        except Exception:
            log(logger, "error", "read failed", exc_info=True, session=self.id)
            data = b""
        self._stats.bytes_in += len(data)
        if self._close_started is not None:
            # We are closing (our close frame is out): only the peer's close is awaited. A peer
            # that keeps streaming instead is cut off rather than read until close_timeout.
            self._input_after_close += len(data)
            if self._input_after_close > CLOSING_INPUT_LIMIT:
                log(
                    logger,
                    "info",
                    "closing: peer kept sending, dropping the connection",
                    port=self.port_alias,
                    peer=self.peer_text,
                    session=self.id,
                    read=self._input_after_close,
                )
                self._terminate()
                return
        try:
            self._proto.receive_data(data)
            self._after_input()
        except Exception:
            log(logger, "error", "session failed", exc_info=True, session=self.id, port=self.port_alias)
            self._terminate()

    def _after_input(self) -> None:
        """On the hub, after input: queue the messages, run the endpoint, write its answers.

        While this runs, ``_in_read`` tells ``_send_now`` that the ``_flush`` at the end writes
        what is sent, so no flusher turn is needed.
        """
        self._in_read = True
        try:
            self._take_input()
        finally:
            self._in_read = False

    def _take_input(self) -> None:
        inbound = self._inbound
        arrived = len(inbound)
        for event in self._proto.events():
            kind = type(event)
            if kind is TextMessage or kind is BinaryMessage:
                if self._close_started is None:  # once closing, data is no longer delivered
                    inbound.append(event)
            elif kind is Ping:
                self._last_activity = time.monotonic()
            elif kind is Pong:
                self._ping_sent_at = None
                self._ping_base = time.monotonic()
            elif kind is CloseReceived:
                # mypy does not narrow `event` through `kind`; once per connection, not per message.
                self._close_received(cast(CloseReceived, event))
        if inbound:
            arrived = len(inbound) - arrived
            if arrived:
                self.messages_in += arrived
                self._stats.messages_in += arrived
                self._last_activity = time.monotonic()
            if not self._scheduled:
                # In greenlet mode the batch runs now, until done or blocked: what it sends is
                # written by the _flush below, in one send for the whole read.
                self._schedule()
            if len(self._inbound) + self._in_flight >= self._port.max_queue:
                self._pause_reading()
        self._flush()
        if self._proto.failed or self._proto.state is ProtocolState.CLOSED:
            # Closed by both sides, or failed (RFC 6455 §7.1.7): close TCP once flushed.
            self._terminate()

    def _close_received(self, event: CloseReceived) -> None:
        self.close_code = event.code
        self.close_reason = event.reason
        if event.code in _FAILURE_CODES:
            log(
                logger,
                "info",
                "protocol error",
                port=self.port_alias,
                peer=self.peer_text,
                session=self.id,
                code=event.code,
                reason=event.reason,
                detail=self._proto.error,
            )

    def _pause_reading(self) -> None:
        if self._reading:
            self._reader.stop()
            self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and not self._terminated:
            self._reading = True
            self._reader.start(self._on_readable)

    # ---- delivery to the endpoint (on the pool) --------------------------------------------
    def _schedule(self) -> None:
        batch = self._inbound
        self._inbound = []
        self._in_flight = len(batch)
        self._scheduled = True
        self._pool.submit(self._deliver, batch, done=self._delivered)

    def _deliver(self, batch: list[Any]) -> None:
        """On an executor: run the endpoint's callbacks for a batch, one at a time, in order."""
        endpoint = self._endpoint
        for item in batch:
            kind = type(item)
            if self._errored and kind is not tuple:
                continue  # a callback failed: the session is closing, later messages are dropped
            if kind is TextMessage:
                self._call(endpoint.on_text, item.data)
            elif kind is BinaryMessage:
                self._call(endpoint.on_binary, item.data)
            elif kind is tuple:
                self._call(endpoint.on_close, item[0], item[1])
            else:
                self._call(endpoint.on_connect)

    def _delivered(self, exc: BaseException | None) -> None:
        """On the hub, after a batch."""
        self._in_flight = 0
        if self._inbound:
            self._schedule()
        else:
            self._scheduled = False
        if self._unflushed and not self._in_read:
            self._flush()
        if self._terminated:
            if not self._scheduled and not self._ended:
                self._ended = True
                if self._ended_event is not None:
                    self._ended_event.set()
                if self._on_end is not None:
                    self._on_end(self)
        elif not self._reading and len(self._inbound) + self._in_flight < self._port.max_queue:
            self._resume_reading()

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        try:
            callback(self, *args)
        except Exception as exc:
            if callback == self._endpoint.on_close:
                log(logger, "error", "endpoint on_close failed", exc_info=True, session=self.id)
                return
            self._errored = True
            log(
                logger,
                "error",
                "endpoint error",
                exc_info=True,
                port=self.port_alias,
                peer=self.peer_text,
                session=self.id,
                path=self.path,
            )
            try:
                self._endpoint.on_error(self, exc)
            except Exception:
                log(logger, "error", "endpoint on_error failed", exc_info=True, session=self.id)
            self.close(CloseCode.INTERNAL_ERROR, "internal error")

    # ---- writing ---------------------------------------------------------------------------
    def _flush(self) -> None:
        self._unflushed = 0
        data = self._proto.data_to_send()
        if data:
            if self._out:
                self._out.append(memoryview(data))
                self._out_bytes += len(data)
            else:
                self._write_now(data)

    def _write_now(self, data: bytes) -> None:
        try:
            sent = self._transport.send(data)
        except (WantWrite, WantRead):
            sent = 0
        except OSError:
            self._terminate()
            return
        self._stats.bytes_out += sent
        if sent < len(data):
            self._out.append(memoryview(data)[sent:])
            self._out_bytes += len(data) - sent
            if self._writer is None:
                self._writer = self._loop.io(self._fd, WRITE)
            self._writer.start(self._on_writable)

    def _on_writable(self) -> None:
        out = self._out
        try:
            while out:
                chunk = out[0]
                sent = self._transport.send(chunk)
                self._out_bytes -= sent
                self._stats.bytes_out += sent
                if sent < len(chunk):
                    out[0] = chunk[sent:]
                    return
                del out[0]
        except (WantWrite, WantRead):
            return
        except OSError:
            self._terminate()
            return
        self._writer.stop()
        if self._drained is not None:
            self._drained.set()
        self._wake_native_waiters()
        if self._terminated:
            self._transport.close()

    def _wait_for_room_natively(self) -> None:
        """In a thread-mode executor: wait for the hub to drain the buffer below the limit."""
        if self._port.write_limit_action != "wait":
            return
        while self._out_bytes > self._port.write_limit and not self._terminated:
            lock = _allocate_lock()
            lock.acquire()
            self._loop.run_callback_threadsafe(self._native_waiters.append, lock)
            lock.acquire(True, 1.0)

    def _wake_native_waiters(self) -> None:
        waiters, self._native_waiters = self._native_waiters, []
        for lock in waiters:
            lock.release()

    def _from_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        self._loop.run_callback_threadsafe(fn, *args)

    # ---- timers ----------------------------------------------------------------------------
    def _arm_timer(self, delay: float | None) -> None:
        if self._timer is not None:
            self._timer.stop()
        if delay is None or self._terminated:
            return
        self._timer = self._loop.timer(max(delay, 0.0))
        self._timer.start(self._on_timer)

    def _next_deadline(self) -> float | None:
        """Seconds until the next timer matters (idle, ping, pong, close), or None."""
        now = time.monotonic()
        port = self._port
        deadlines = []
        if self._close_started is not None:
            deadlines.append(self._close_started + port.close_timeout_ms / 1000)
        else:
            if port.idle_timeout_ms:
                deadlines.append(self._last_activity + port.idle_timeout_ms / 1000)
            if port.ping_interval_ms:
                if self._ping_sent_at is None:
                    deadlines.append(self._ping_base + port.ping_interval_ms / 1000)
                else:
                    deadlines.append(self._ping_sent_at + port.ping_timeout_ms / 1000)
        return min(deadlines) - now if deadlines else None

    def _on_timer(self) -> None:
        # One timer per session, not re-armed on every message: when it fires we compare the
        # real deadlines with the clock and sleep again for what is left.
        try:
            self._timer_fired()
        except Exception:
            log(logger, "error", "session timer failed", exc_info=True, session=self.id)
            self._terminate()

    def _timer_fired(self) -> None:
        if self._terminated:
            return
        now = time.monotonic()
        port = self._port
        if self._close_started is not None:
            if now >= self._close_started + port.close_timeout_ms / 1000:
                self._terminate()  # the peer never answered our close
                return
        elif port.idle_timeout_ms and now >= self._last_activity + port.idle_timeout_ms / 1000:
            log(logger, "info", "idle timeout", port=self.port_alias, peer=self.peer_text, session=self.id)
            self.close(CloseCode.NORMAL, "idle timeout")
        elif port.ping_interval_ms:
            if self._ping_sent_at is None:
                if now >= self._ping_base + port.ping_interval_ms / 1000:
                    self._ping_sent_at = now
                    self._ping_base = now
                    self._proto.send_ping(b"")
                    self._flush()
            elif now >= self._ping_sent_at + port.ping_timeout_ms / 1000:
                log(
                    logger, "info", "ping timeout", port=self.port_alias, peer=self.peer_text, session=self.id
                )
                self.close(CloseCode.INTERNAL_ERROR, "ping timeout")
        self._arm_timer(self._next_deadline())

    # ---- the end ---------------------------------------------------------------------------
    def _terminate(self) -> None:
        """Close the connection (after the buffered bytes, if the socket takes them)."""
        if self._terminated:
            return
        self._terminated = True
        self._pause_reading()
        if self._timer is not None:
            self._timer.stop()
        if self.close_code is None:
            self.close_code = self._proto.close_code or _ABNORMAL
        if not self._out:
            if self._writer is not None:
                self._writer.stop()
            self._transport.close()
        else:
            # Give the last bytes (our close frame) a bounded chance to leave.
            self._abort_timer = self._loop.timer(self._port.close_timeout_ms / 1000)
            self._abort_timer.start(self._abort)
        if self._drained is not None:
            self._drained.set()
        self._wake_native_waiters()
        self._groups.leave_all(self)
        self._inbound.append((self.close_code, self.close_reason))
        if not self._scheduled:
            self._schedule()

    def _abort(self) -> None:
        if self._writer is not None:
            self._writer.stop()
        self._out.clear()
        self._out_bytes = 0
        self._transport.close()

    @property
    def peer_text(self) -> str:
        return format_peer(self.remote_address)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "port": self.port_alias,
            "path": self.path,
            "user": self.user,
            "remote_address": self.peer_text,
            "age_s": round(time.monotonic() - self.started, 3),
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
        }

    def abort(self) -> None:
        """Drop the connection now (shutdown past its graceful timeout)."""
        self._terminate()
        self._abort()
