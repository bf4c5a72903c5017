"""The admin process's HTTP/1.1 server: one greenlet per connection, h11 framing, optional TLS.

Bounded everywhere: a request head of at most :data:`MAX_HEAD` bytes (431), a body of at most
:data:`MAX_BODY` (413), :data:`REQUEST_TIMEOUT` to send a request, :data:`KEEPALIVE_TIMEOUT`
idle between requests, at most ``max_connections`` connections (more wait in the backlog).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import gevent
import h11
from gevent.pool import Pool

from wsserver.logs import log
from wsserver.prefork.httpd import Response, _phrase  # the metrics listener's own

logger = logging.getLogger("wsserver.admin")

MAX_HEAD = 16384
MAX_BODY = 1024 * 1024
REQUEST_TIMEOUT = 15.0
KEEPALIVE_TIMEOUT = 30.0
RECV_SIZE = 65536


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    peer: str
    scheme: str  # http | https
    user: str = ""  # set by the application once authenticated (for the logs)

    @property
    def host(self) -> str:
        return self.headers.get("host", "")

    @property
    def origin(self) -> str:
        """This listener's own origin, as a browser names it."""
        return f"{self.scheme}://{self.host}"


Handler = Callable[[Request], Response]


class HTTPServer:
    def __init__(self, sock: socket.socket, handler: Handler, tls_context: Any = None,
                 max_connections: int = 64) -> None:
        from gevent import socket as gsocket

        self.sock = gsocket.socket(sock.family, sock.type, fileno=sock.detach())
        self.sock.setblocking(True)
        self.handler = handler
        self.tls_context = tls_context
        self.pool = Pool(max_connections)
        self.stopping = False
        self.closing = False  # every answer closes its connection (see close_after_answers)
        self.busy = 0  # requests being received (a first byte is in), handled or answered now
        # Connections waiting for a request of which nothing has arrived yet: just accepted, or
        # kept alive between requests. A stopping server waits a moment for those rather than
        # resetting a request that was already on its way when it stopped.
        self.idle = 0
        self._acceptor: gevent.Greenlet | None = None

    def start(self) -> None:
        self._acceptor = gevent.spawn(self._accept_loop)

    def close_after_answers(self) -> None:
        """This process is about to be replaced: answer on, but close each connection after its
        answer, so that a client's next request opens a connection the next process accepts
        (rather than one that ends with this process)."""
        self.closing = True

    def stop_accepting(self) -> None:
        """Accept no more. The listening socket is the master's: closing this process's
        descriptor leaves it listening, and the connections arriving meanwhile wait in its
        backlog for the next admin process."""
        self.stopping = True
        self.closing = True
        if self._acceptor is not None:
            self._acceptor.kill(block=False)
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while True:
            self.pool.wait_available()
            try:
                conn, addr = self.sock.accept()
                self.idle += 1  # counted before the server greenlet first runs: a stop waits for it
            except OSError as exc:
                if self.stopping:
                    return
                log(logger, "warning", "admin: accept failed", error=str(exc))
                gevent.sleep(0.1)
                continue
            self.pool.spawn(self._serve, conn, addr)

    def _serve(self, conn: Any, addr: Any) -> None:
        state = ["idle"]  # idle | busy | "": which of self.idle and self.busy counts this connection
        try:
            self._serve_connection(conn, addr, state)
        finally:
            self._count(state, "")

    def _count(self, state: list[str], now: str) -> None:
        """Move a connection from one count to another (idle, busy, or neither: "")."""
        if state[0] == now:
            return
        if state[0] == "idle":
            self.idle -= 1
        elif state[0] == "busy":
            self.busy -= 1
        if now == "idle":
            self.idle += 1
        elif now == "busy":
            self.busy += 1
        state[0] = now

    def _serve_connection(self, conn: Any, addr: Any, state: list[str]) -> None:
        peer = addr[0] if isinstance(addr, tuple) else str(addr)
        scheme = "http"
        if self.tls_context is not None:
            from wsserver.runtime.tls import wrap_server_socket

            conn = wrap_server_socket(conn, self.tls_context, addr, "admin")
            scheme = "https"
        try:
            self._session(conn, peer, scheme, state)
        except (OSError, TimeoutError):
            pass
        except Exception:
            log(logger, "error", "admin: connection failed", exc_info=True, peer=peer)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _session(self, conn: Any, peer: str, scheme: str, state: list[str]) -> None:
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            conn.settimeout(KEEPALIVE_TIMEOUT)
            self._count(state, "idle")
            timer: list[gevent.Timeout] = []  # the whole request within REQUEST_TIMEOUT of its first byte
            try:
                got = self._read_request(conn, h, timer, state)
            finally:
                for t in timer:
                    t.cancel()
            if got is None:
                return
            self._count(state, "busy")  # until its answer is sent: a stop waits for both
            if not self._answer(conn, h, got, peer, scheme):
                return

    def _answer(self, conn: Any, h: h11.Connection, got: tuple[h11.Request, bytes], peer: str,
                scheme: str) -> bool:
        """Handle one request and send the response; False when the connection is to end."""
        request, body = got
        response = self._handle(request, bytes(body), peer, scheme)
        close = self.closing
        self._send(conn, h, request, response, close=close)
        if h.our_state is h11.MUST_CLOSE or h.their_state is h11.MUST_CLOSE or close:
            return False
        h.start_next_cycle()
        return True

    def _read_request(self, conn: Any, h: h11.Connection, timer: list,
                      state: list[str]) -> tuple[h11.Request, bytes] | None:
        """The next request and its body; None when the connection ends (or was answered 4xx)."""
        request, body = None, bytearray()
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(conn, h, exc.error_status_hint)
                return None
            if event is h11.NEED_DATA:
                data = conn.recv(RECV_SIZE)
                h.receive_data(data)
                if not data and h.their_state is h11.IDLE:
                    return None
                self._count(state, "busy")
                if not timer:
                    timer.append(gevent.Timeout.start_new(REQUEST_TIMEOUT, TimeoutError))
                    conn.settimeout(REQUEST_TIMEOUT)
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                request = event
                length = dict(event.headers).get(b"content-length")
                if length is not None and length.isdigit() and int(length) > MAX_BODY:
                    self._fail(conn, h, 413)
                    return None
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    self._fail(conn, h, 413)
                    return None
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)

    def _handle(self, request: h11.Request, body: bytes, peer: str, scheme: str) -> Response:
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        req = Request(request.method.decode("latin-1"), path, params, headers, body, peer, scheme)
        try:
            return self.handler(req)
        except Exception:
            log(logger, "error", "admin: handler failed", exc_info=True, path=path, method=req.method)
            return Response(500, b"internal error\n")

    def _send(self, conn: Any, h: h11.Connection, request: h11.Request, response: Response, close: bool) -> None:
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
                   ("Cache-Control", "no-store"), *response.headers]
        if close:
            headers.append(("Connection", "close"))
        data = h.send(h11.Response(status_code=response.status, headers=headers, reason=_phrase(response.status)))
        if request.method != b"HEAD":
            data += h.send(h11.Data(data=response.body))
        data += h.send(h11.EndOfMessage())
        conn.sendall(data)

    def _fail(self, conn: Any, h: h11.Connection, status: int) -> None:
        if h.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            phrase = _phrase(status).decode() or "Bad Request"
            body = f"{phrase}\n".encode()
            try:
                conn.sendall((f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                              f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
            except OSError:
                pass
