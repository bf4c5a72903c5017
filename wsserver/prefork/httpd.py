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
in the loop, so it must be quick (the metrics scrape reads a few small files).
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import h11

from wsserver.logs import log

logger = logging.getLogger("wsserver.httpd")

MAX_HEAD = 8192
REQUEST_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
KEEPALIVE_TIMEOUT = 60.0
RETRY_LISTEN = 10.0  # seconds between attempts to bind the address when it was taken
RECV_SIZE = 16384


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    peer: str


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Response]


class _Conn:
    __slots__ = ("deadline", "fd", "h11", "outbuf", "peer", "received", "request", "sock", "started")

    def __init__(self, sock: socket.socket, peer: str, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.outbuf = bytearray()
        self.request: h11.Request | None = None
        self.started: float | None = None  # first byte of the current request
        self.received = 0  # bytes fed to h11 in this request/response cycle
        self.deadline = now + REQUEST_TIMEOUT


class HTTPServer:
    """One listening socket and its connections, driven by the owner's poll loop."""

    def __init__(self, handler: Handler, name: str = "http", max_connections: int = 32,
                 allow: Callable[[str], bool] | None = None) -> None:
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
                log(logger, "error", f"{self.name} endpoint cannot listen; retrying every {RETRY_LISTEN:.0f}s",
                    address=_address_text(bind, port), error=exc.strerror or str(exc))
            return False
        self.listener = sock
        self.retry_at = None
        self._warned = False
        host, bound_port = sock.getsockname()[:2]
        log(logger, "info", f"{self.name} endpoint listening", address=_address_text(host, bound_port))
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
        conn.received += len(data)
        conn.h11.receive_data(data)
        self._process(conn)

    def _process(self, conn: _Conn) -> None:
        while self._alive(conn) and not conn.outbuf and not isinstance(conn.h11, _Closing):
            try:
                event = conn.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(conn, exc.error_status_hint)
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
                    conn.h11.start_next_cycle()
                    continue
                return
            if isinstance(event, h11.ConnectionClosed):
                self._drop(conn)
                return
            if isinstance(event, h11.Request):
                conn.request = event
                # h11 bounds incomplete heads only; one read may bring a whole oversized one.
                if conn.received - len(conn.h11.trailing_data[0]) > MAX_HEAD:
                    self._fail(conn, 431)
                    return
                if _has_body(event):
                    self._respond(conn, Response(413, b"request bodies are not accepted\n"), close=True)
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._respond(conn, self._handle(conn))

    def _handle(self, conn: _Conn) -> Response:
        request = conn.request
        assert request is not None
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        req = Request(request.method.decode("latin-1"), target, path, query, headers, conn.peer)
        try:
            return self.handler(req)
        except Exception:
            log(logger, "error", f"{self.name}: handler failed", exc_info=True, path=path)
            return Response(500, b"internal error\n")

    def _respond(self, conn: _Conn, response: Response, close: bool = False) -> None:
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
                   ("Cache-Control", "no-store"), *response.headers]
        if close:
            headers.append(("Connection", "close"))
        try:
            data = conn.h11.send(h11.Response(status_code=response.status, headers=headers,
                                              reason=_phrase(response.status)))
            if conn.request is not None and conn.request.method != b"HEAD":
                data += conn.h11.send(h11.Data(data=response.body))
            data += conn.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self._drop(conn)
            return
        self._queue(conn, data)

    def _fail(self, conn: _Conn, status: int) -> None:
        """A request h11 could not parse: answer it (if we still can) and close."""
        if conn.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            phrase = _phrase(status).decode() or "Bad Request"
            body = f"{phrase}\n".encode()
            self._queue(conn, (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body,
                        close=True)
        else:
            self._drop(conn)

    def _queue(self, conn: _Conn, data: bytes, close: bool = False) -> None:
        conn.outbuf += data
        conn.deadline = time.monotonic() + WRITE_TIMEOUT
        if close:
            conn.request = None
            conn.h11 = _Closing()  # type: ignore[assignment]
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        while conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            del conn.outbuf[:sent]
        # The response is out: close, or wait for the next request on this connection.
        h = conn.h11
        if isinstance(h, _Closing) or h.our_state is h11.MUST_CLOSE or h.their_state is h11.MUST_CLOSE:
            self._drop(conn)
            return
        conn.request = None
        conn.started = None
        conn.deadline = time.monotonic() + KEEPALIVE_TIMEOUT
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            conn.received = len(h.trailing_data[0])  # already here: the next request's bytes

    def _drop(self, conn: _Conn) -> None:
        if self.conns.get(conn.fd) is conn:
            del self.conns[conn.fd]
        try:
            conn.sock.close()
        except OSError:
            pass


class _Closing:
    """Stands in for the h11 state of a connection that closes once its buffer is out."""


def _has_body(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _address_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
