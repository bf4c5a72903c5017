"""A small HTTP/1.1 client on h11 for the HTTP and OCSP adapters.

One connection per request (``Connection: close``), separate connect and request time-outs,
a bounded response body. Sockets and ssl are looked up at call time, so gevent's monkey
patches apply: a request never blocks the hub.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from wsserver.adapters.balancer import Timeouts
from wsserver.adapters.tls import PinMismatch, wrap
from wsserver.protocol.address import format_address

RECV_SIZE = 65536
MAX_EVENTS = 100_000  # a bound on the read loop beyond the deadline and the body limit


class HTTPFailure(Exception):
    """The request did not produce an HTTP answer. ``kind``: connect, timeout, tls, protocol."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Response:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        raise HTTPFailure("connect", f"connect to {format_address(host, port)} timed out") from exc
    except OSError as exc:
        raise HTTPFailure(
            "connect", f"connect to {format_address(host, port)}: {exc.strerror or exc}"
        ) from exc


def request(
    url: str,
    method: str,
    headers: list[tuple[str, str]],
    body: bytes,
    timeouts: Timeouts,
    context: ssl.SSLContext | None = None,
    pins: tuple[str, ...] = (),
    max_body: int = 1 << 20,
) -> Response:
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sock = connect(host, port, timeouts.connect)
    try:
        if https:
            if context is None:
                raise HTTPFailure("tls", "https:// needs a TLS context")
            try:
                sock = wrap(sock, context, host, pins, timeouts.connect)
            except PinMismatch as exc:
                raise HTTPFailure("tls", str(exc)) from exc
            except TimeoutError as exc:
                raise HTTPFailure(
                    "connect", f"TLS handshake with {format_address(host, port)} timed out"
                ) from exc
            except (ssl.SSLError, OSError) as exc:
                raise HTTPFailure("tls", f"TLS handshake with {format_address(host, port)}: {exc}") from exc
        return _exchange(sock, host, port, method, target, headers, body, timeouts.request, max_body)
    finally:
        sock.close()


def _exchange(
    sock: socket.socket,
    host: str,
    port: int,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    timeout: float,
    max_body: int,
) -> Response:
    deadline = time.monotonic() + timeout
    conn = h11.Connection(h11.CLIENT)
    all_headers = [
        ("Host", format_address(host, port)),
        ("Connection", "close"),
        ("User-Agent", "wsserver"),
        ("Content-Length", str(len(body))),
        *headers,
    ]
    if method == "GET" and not body:
        all_headers = [h for h in all_headers if h[0] != "Content-Length"]
    try:
        out = conn.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        _settimeout(sock, deadline)
        sock.sendall(out)
        status, size = 0, 0
        response_headers: tuple[tuple[bytes, bytes], ...] = ()
        chunks: list[bytes] = []
        for _ in range(MAX_EVENTS):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                _settimeout(sock, deadline)
                conn.receive_data(sock.recv(RECV_SIZE))
            elif isinstance(event, h11.Response):
                status, response_headers = event.status_code, tuple(event.headers)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > max_body:
                    raise HTTPFailure("protocol", f"response body larger than {max_body} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                if not status:
                    raise HTTPFailure("protocol", "connection closed before a response")
                return Response(status, response_headers, b"".join(chunks))
        raise HTTPFailure("protocol", "response too fragmented")
    except TimeoutError as exc:
        raise HTTPFailure("timeout", f"no complete answer within {timeout:.3f}s") from exc
    except h11.RemoteProtocolError as exc:
        raise HTTPFailure("protocol", f"bad HTTP answer: {exc}") from exc
    except OSError as exc:
        raise HTTPFailure("connect", f"connection lost: {exc.strerror or exc}") from exc


def _settimeout(sock: socket.socket, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)
