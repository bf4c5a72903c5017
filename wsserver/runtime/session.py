"""One WebSocket session: the read loop, timers, ordered delivery to the endpoint, send/close.

The session greenlet owns the socket's read side. Sends may come from any greenlet (the
endpoint, a broadcast); they are serialized by a lock so frames never interleave.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.lock import Semaphore

from wsserver.logs import log
from wsserver.protocol import (
    BinaryMessage,
    CloseReceived,
    Ping,
    Pong,
    ProtocolState,
    TextMessage,
    WebSocketProtocol,
)

if TYPE_CHECKING:
    from wsserver.config import PortConfig
    from wsserver.endpoints.base import Endpoint

logger = logging.getLogger("wsserver.session")

RECV_SIZE = 65536
_ids = itertools.count(1)


class _Wake(Exception):
    """Thrown into a reader parked in recv so it recomputes its deadlines (e.g. after close())."""


class Session:
    """A live WebSocket connection as an endpoint sees it (see ``wsserver.endpoints.SessionAPI``)."""

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        port: PortConfig,
        path: str,
        endpoint: Endpoint,
        proto: WebSocketProtocol,
        subprotocol: str | None = None,
        user: str | None = None,
        on_end: Callable[[Session], None] | None = None,
    ) -> None:
        self.id = f"{os.getpid():x}-{next(_ids)}"
        self.remote_address = peer
        self.user = user
        self.port_alias = port.alias
        self.path = path
        self.subprotocol = subprotocol
        self.started = time.monotonic()
        self.messages_in = 0
        self.messages_out = 0
        self.close_code: int | None = None
        self._sock = sock
        self._port = port
        self._endpoint = endpoint
        self._proto = proto
        self._on_end = on_end
        self._write_lock = Semaphore()
        self._reader: Any = None
        self._in_recv = False
        self._last_activity = self.started
        self._ping_sent_at: float | None = None
        self._ping_base = self.started
        self._close_started: float | None = None
        self._ended = False

    # ---- the API endpoints use -------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._proto.state is not ProtocolState.OPEN

    def send(self, message: str | bytes) -> None:
        """Send one message; text for ``str``, binary for ``bytes``. Ignored once closing."""
        if self._proto.state is not ProtocolState.OPEN:
            return
        if isinstance(message, str):
            self._proto.send_text(message)
        else:
            self._proto.send_binary(bytes(message))
        self.messages_out += 1
        self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the connection ends when the peer replies or on timeout."""
        if self._proto.state is not ProtocolState.OPEN:
            return
        self._proto.send_close(code, reason)
        self._close_started = time.monotonic()
        self._flush()
        self._wake_reader()

    # ---- the read loop ---------------------------------------------------------------------
    def run(self) -> None:
        self._reader = gevent.getcurrent()
        try:
            self._call(self._endpoint.on_connect)
            self._flush()
            while self._proto.state is not ProtocolState.CLOSED and not self._ended:
                data = self._recv()
                if data is None:
                    continue  # a timer fired or we were woken: re-evaluate
                self._proto.receive_data(data)
                self._handle_events()
                self._flush()
                if self._proto.failed:
                    break  # RFC 6455 §7.1.7: after failing, close the TCP connection at once
        finally:
            self._finish()

    def _recv(self) -> bytes | None:
        timeout = self._next_deadline()
        if timeout is not None and timeout <= 0:
            self._on_timer()
            return None
        self._sock.settimeout(timeout)
        self._in_recv = True
        try:
            return self._sock.recv(RECV_SIZE)
        except _Wake:
            return None
        except TimeoutError:
            self._on_timer()
            return None
        except OSError:
            return b""
        finally:
            self._in_recv = False

    def _handle_events(self) -> None:
        for event in self._proto.events():
            if isinstance(event, TextMessage):
                self._message_arrived()
                self._call(self._endpoint.on_text, event.data)
            elif isinstance(event, BinaryMessage):
                self._message_arrived()
                self._call(self._endpoint.on_binary, event.data)
            elif isinstance(event, Ping):
                self._last_activity = time.monotonic()
            elif isinstance(event, Pong):
                self._ping_sent_at = None
                self._ping_base = time.monotonic()
            elif isinstance(event, CloseReceived):
                self.close_code = event.code
                if self._close_started is None:
                    self._close_started = time.monotonic()
                if event.code in (1002, 1007, 1009):
                    log(logger, "info", "protocol error", port=self.port_alias, peer=self._peer_text(),
                        session=self.id, code=event.code, reason=event.reason)
            if self._proto.state is not ProtocolState.OPEN and isinstance(event, (TextMessage, BinaryMessage)):
                # The endpoint closed the session: later messages in this read are not delivered.
                break

    def _message_arrived(self) -> None:
        self.messages_in += 1
        self._last_activity = time.monotonic()

    # ---- timers ----------------------------------------------------------------------------
    def _next_deadline(self) -> float | None:
        now = time.monotonic()
        deadlines = []
        port = self._port
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
        now = time.monotonic()
        port = self._port
        if self._close_started is not None:
            if now >= self._close_started + port.close_timeout_ms / 1000:
                self._ended = True  # the peer never answered our close: drop the connection
            return
        if port.idle_timeout_ms and now >= self._last_activity + port.idle_timeout_ms / 1000:
            log(logger, "info", "idle timeout", port=self.port_alias, peer=self._peer_text(), session=self.id)
            self.close(1000, "idle timeout")
            return
        if port.ping_interval_ms:
            if self._ping_sent_at is None:
                if now >= self._ping_base + port.ping_interval_ms / 1000:
                    self._ping_sent_at = now
                    self._ping_base = now
                    self._proto.send_ping(b"")
                    self._flush()
            elif now >= self._ping_sent_at + port.ping_timeout_ms / 1000:
                log(logger, "info", "ping timeout", port=self.port_alias, peer=self._peer_text(),
                    session=self.id)
                self.close(1011, "ping timeout")

    # ---- plumbing --------------------------------------------------------------------------
    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        try:
            callback(self, *args)
        except Exception as exc:
            log(logger, "error", "endpoint error", exc_info=True, port=self.port_alias,
                peer=self._peer_text(), session=self.id, path=self.path)
            try:
                self._endpoint.on_error(self, exc)
            except Exception:
                log(logger, "error", "endpoint on_error failed", exc_info=True, session=self.id)
            self.close(1011, "internal error")

    def _flush(self) -> None:
        data = self._proto.data_to_send()
        if not data:
            return
        with self._write_lock:
            try:
                self._sock.sendall(data)
            except OSError:
                self._ended = True
                self._wake_reader()

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent() and self._in_recv:
            # Thrown from a hub callback, and only if the reader is still parked in recv by then:
            # an exception must never land inside an endpoint callback.
            gevent.get_hub().loop.run_callback(self._throw_wake)

    def _throw_wake(self) -> None:
        if self._in_recv and self._reader is not None and not self._reader.dead:
            self._reader.throw(_Wake())

    def _finish(self) -> None:
        if self.close_code is None:
            self.close_code = self._proto.close_code or 1006
        try:
            self._sock.close()
        except OSError:
            pass
        try:
            self._endpoint.on_close(self, self.close_code, "")
        except Exception:
            log(logger, "error", "endpoint on_close failed", exc_info=True, session=self.id)
        if self._on_end is not None:
            self._on_end(self)

    def _peer_text(self) -> str:
        host, port = self.remote_address[0], self.remote_address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
