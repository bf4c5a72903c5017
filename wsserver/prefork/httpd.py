"""A small non-blocking HTTP/1.1 server that lives inside the master's poll loop.

No thread and no child process: the arbiter registers :meth:`HTTPServer.registrations` in
its ``poll()``, hands the ready descriptors to :meth:`HTTPServer.on_event` and calls
:meth:`HTTPServer.tick` every turn. h11 parses and frames; every socket is non-blocking, so a
slow or silent client can never hold the loop:

- a request head is at most ``MAX_HEAD`` bytes (else 431) and must arrive within
  ``REQUEST_TIMEOUT`` of its first byte; a response must be taken within ``WRITE_TIMEOUT``;
  an idle keep-alive connection is closed after ``KEEPALIVE_TIMEOUT``;
- at most ``max_connections`` at once: beyond that the listening socket is not polled and
  new connections wait in the kernel backlog;
- while a response is being written the connection is not read (pipelining cannot pile up
  responses in memory); request bodies are refused (413).

The handler is a plain function of a :class:`Request` returning a :class:`Response`; it runs
in the loop, so it must be quick (the metrics scrape reads a few small files). Parsing, limits
and framing are :mod:`wsserver.protocol.httpcore`'s, shared with the admin API's server; this
module moves the bytes and keeps the clocks.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import time
from collections.abc import Callable

import h11

from wsserver.logs import log
from wsserver.protocol.address import format_address
from wsserver.protocol.httpcore import (
    CLOSED,
    NEED_DATA,
    Failure,
    Handler,
    Request,
    Response,
    ServerConnection,
)

__all__ = ["HTTPServer", "Handler", "Request", "Response"]

logger = logging.getLogger("wsserver.httpd")

MAX_HEAD = 8192
REQUEST_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
KEEPALIVE_TIMEOUT = 60.0
RETRY_LISTEN = 10.0  # seconds between attempts to bind the address when it was taken
RECV_SIZE = 16384


class _Conn:
    __slots__ = ("core", "deadline", "fd", "outbuf", "peer", "sock", "started")

    def __init__(self, sock: socket.socket, peer: str, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.core = ServerConnection(peer, max_head=MAX_HEAD, max_body=0)  # no request bodies
        self.outbuf = bytearray()
        self.started: float | None = None  # first byte of the current request
        self.deadline = now + REQUEST_TIMEOUT


class HTTPServer:
    """One listening socket and its connections, driven by the owner's poll loop."""

    def __init__(
        self,
        handler: Handler,
        name: str = "http",
        max_connections: int = 32,
        allow: Callable[[str], bool] | None = None,
    ) -> None:
        self.handler = handler
        self.name = name
        self.max_connections = max_connections
        self.allow = allow
        self.listener: socket.socket | None = None
        self.address: tuple[str, int] | None = None  # what to bind (kept for retries)
        self.retry_at: float | None = None
        self._warned = False
        self.conns: dict[int, _Conn] = {}

    # ---- the listening socket ------------------------------------------------------------
    def listen(self, bind: str, port: int) -> bool:
        """Bind and listen; on failure log it once and retry every RETRY_LISTEN seconds."""
        self.close()
        self.address = (bind, port)
        return self._try_listen()

    def _try_listen(self) -> bool:
        assert self.address is not None
        bind, port = self.address
        try:
            infos = socket.getaddrinfo(bind or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
                sock.listen(64)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            self.retry_at = time.monotonic() + RETRY_LISTEN
            if not self._warned:
                self._warned = True
                log(
                    logger,
                    "error",
                    f"{self.name} endpoint cannot listen; retrying every {RETRY_LISTEN:.0f}s",
                    address=format_address(bind, port),
                    error=exc.strerror or str(exc),
                )
            return False
        self.listener = sock
        self.retry_at = None
        self._warned = False
        host, bound_port = sock.getsockname()[:2]
        log(logger, "info", f"{self.name} endpoint listening", address=format_address(host, bound_port))
        return True

    @property
    def port(self) -> int | None:
        return self.listener.getsockname()[1] if self.listener is not None else None

    def close(self) -> None:
        """Stop listening and drop every connection."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for conn in list(self.conns.values()):
            self._drop(conn)
        self.address = None
        self.retry_at = None

    def close_in_child(self) -> None:
        """In a forked child: close the inherited descriptors without touching the connections."""
        if self.listener is not None:
            self.listener.close()
        for conn in self.conns.values():
            conn.sock.close()

    # ---- the poll loop ----------------------------------------------------------------------
    def registrations(self) -> list[tuple[int, int]]:
        regs = []
        if self.listener is not None and len(self.conns) < self.max_connections:
            regs.append((self.listener.fileno(), select.POLLIN))
        for fd, conn in self.conns.items():
            regs.append((fd, select.POLLOUT if conn.outbuf else select.POLLIN))
        return regs

    def owns(self, fd: int) -> bool:
        return fd in self.conns or (self.listener is not None and fd == self.listener.fileno())

    def next_deadline(self) -> float | None:
        times = [c.deadline for c in self.conns.values()]
        if self.retry_at is not None:
            times.append(self.retry_at)
        return min(times) if times else None

    def tick(self, now: float) -> None:
        """Close connections past their deadline; retry a failed bind."""
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            log(logger, "debug", f"{self.name}: closing a slow or idle connection", peer=conn.peer)
            self._drop(conn)
        if self.retry_at is not None and now >= self.retry_at and self.listener is None:
            self._try_listen()

    def on_event(self, fd: int, events: int) -> None:
        if self.listener is not None and fd == self.listener.fileno():
            self._accept()
            return
        conn = self.conns.get(fd)
        if conn is None:
            return
        try:
            if events & select.POLLOUT:
                self._write(conn)
                self._process(conn)  # a pipelined request may be buffered already
            elif events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                self._read(conn)
        except OSError:
            self._drop(conn)

    def _alive(self, conn: _Conn) -> bool:
        return self.conns.get(conn.fd) is conn

    # ---- connections --------------------------------------------------------------------
    def _accept(self) -> None:
        assert self.listener is not None
        now = time.monotonic()
        while len(self.conns) < self.max_connections:
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log(logger, "warning", f"{self.name}: accept failed", error=exc.strerror)
                return
            peer = addr[0] if isinstance(addr, tuple) else str(addr)
            if self.allow is not None and not self.allow(peer):
                log(logger, "debug", f"{self.name}: connection refused by the allow list", peer=peer)
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, peer, now)
            self.conns[conn.fd] = conn

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        if data and conn.started is None:
            conn.started = time.monotonic()
            conn.deadline = conn.started + REQUEST_TIMEOUT
        conn.core.receive_data(data)
        self._process(conn)

    def _process(self, conn: _Conn) -> None:
        while self._alive(conn) and not conn.outbuf and not conn.core.closing:
            got = conn.core.next_request()
            if got is NEED_DATA:
                return
            if got is CLOSED:
                self._drop(conn)
                return
            if isinstance(got, Failure):
                if got.data:
                    self._queue(conn, got.data)
                else:
                    self._drop(conn)
                return
            assert isinstance(got, Request)
            self._respond(conn, self._handle(got))

    def _handle(self, req: Request) -> Response:
        try:
            return self.handler(req)
        except Exception:
            log(logger, "error", f"{self.name}: handler failed", exc_info=True, path=req.path)
            return Response(500, b"internal error\n")

    def _respond(self, conn: _Conn, response: Response) -> None:
        try:
            data = conn.core.respond(response)
        except h11.LocalProtocolError:
            self._drop(conn)
            return
        self._queue(conn, data)

    def _queue(self, conn: _Conn, data: bytes) -> None:
        conn.outbuf += data
        conn.deadline = time.monotonic() + WRITE_TIMEOUT
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        while conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            del conn.outbuf[:sent]
        # The response is out: close, or wait for the next request on this connection.
        if not conn.core.next_cycle():
            self._drop(conn)
            return
        conn.started = None
        conn.deadline = time.monotonic() + KEEPALIVE_TIMEOUT

    def _drop(self, conn: _Conn) -> None:
        if self.conns.get(conn.fd) is conn:
            del self.conns[conn.fd]
        try:
            conn.sock.close()
        except OSError:
            pass
