"""The admin process's HTTP/1.1 server: one greenlet per connection, h11 framing, optional TLS.

Bounded everywhere: a request head of at most :data:`MAX_HEAD` bytes (431), a body of at most
:data:`MAX_BODY` (413), :data:`REQUEST_TIMEOUT` to send a request, :data:`KEEPALIVE_TIMEOUT`
idle between requests, at most ``max_connections`` connections (more wait in the backlog).
Parsing, limits and framing are :mod:`wsserver.protocol.httpcore`'s, shared with the metrics
listener; this module moves the bytes, keeps the timers and counts the connections.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import gevent
from gevent.pool import Pool

from wsserver.logs import log
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

logger = logging.getLogger("wsserver.admin")

MAX_HEAD = 16384
MAX_BODY = 1024 * 1024
REQUEST_TIMEOUT = 15.0
KEEPALIVE_TIMEOUT = 30.0
RECV_SIZE = 65536


class HTTPServer:
    def __init__(
        self, sock: socket.socket, handler: Handler, tls_context: Any = None, max_connections: int = 64
    ) -> None:
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
        core = ServerConnection(peer, scheme, max_head=MAX_HEAD, max_body=MAX_BODY)
        while True:
            conn.settimeout(KEEPALIVE_TIMEOUT)
            self._count(state, "idle")
            timer: list[gevent.Timeout] = []  # the whole request within REQUEST_TIMEOUT of its first byte
            try:
                request = self._read_request(conn, core, timer, state)
            finally:
                for t in timer:
                    t.cancel()
            if request is None:
                return
            self._count(state, "busy")  # until its answer is sent: a stop waits for both
            if not self._answer(conn, core, request):
                return

    def _answer(self, conn: Any, core: ServerConnection, request: Request) -> bool:
        """Handle one request and send the response; False when the connection is to end."""
        response = self._handle(request)
        conn.sendall(core.respond(response, close=self.closing))
        return core.next_cycle()

    def _read_request(
        self, conn: Any, core: ServerConnection, timer: list, state: list[str]
    ) -> Request | None:
        """The next request and its body; None when the connection ends (or was answered 4xx)."""
        while True:
            got = core.next_request()
            if got is NEED_DATA:
                data = conn.recv(RECV_SIZE)
                if not data and core.between_requests:
                    return None
                core.receive_data(data)
                self._count(state, "busy")
                if not timer:
                    timer.append(gevent.Timeout.start_new(REQUEST_TIMEOUT, TimeoutError))
                    conn.settimeout(REQUEST_TIMEOUT)
                continue
            if got is CLOSED:
                return None
            if isinstance(got, Failure):
                if got.data:
                    try:
                        conn.sendall(got.data)
                    except OSError:
                        pass
                return None
            assert isinstance(got, Request)
            return got

    def _handle(self, req: Request) -> Response:
        try:
            return self.handler(req)
        except Exception:
            log(logger, "error", "admin: handler failed", exc_info=True, path=req.path, method=req.method)
            return Response(500, b"internal error\n")
