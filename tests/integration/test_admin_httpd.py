"""The admin process's HTTP server: keep-alive, bodies, limits and timeouts (gevent, no monkey-patching)."""

from __future__ import annotations

import socket

import gevent
import pytest
from gevent import socket as gsocket

from wsserver.admin import httpd
from wsserver.admin.httpd import HTTPServer, Response

pytestmark = pytest.mark.integration


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(httpd, "REQUEST_TIMEOUT", 0.3)
    monkeypatch.setattr(httpd, "MAX_BODY", 1000)
    seen = []

    def handler(req):
        seen.append(req)
        return Response(200, f"{req.method} {req.path} {len(req.body)} {req.query}".encode())

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    srv = HTTPServer(listener, handler)
    srv.start()
    yield port, seen
    srv.stop_accepting()


def exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    conn = gsocket.create_connection(("127.0.0.1", port))
    conn.settimeout(timeout)
    conn.sendall(data)
    chunks = []
    try:
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pass
    conn.close()
    return b"".join(chunks)


def test_keep_alive_and_bodies(server) -> None:
    port, seen = server
    out = exchange(
        port,
        b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert b"GET /a 0 {'x': '1'}" in out and b"POST /b 5 {}" in out
    assert seen[1].body == b"hello" and seen[0].headers["host"] == "h"


def test_body_too_large(server) -> None:
    port, seen = server
    out = exchange(port, b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413") and not seen
    out = exchange(
        port,
        b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"400\r\n"
        + b"x" * 1024
        + b"\r\n"
        + b"400\r\n"
        + b"x" * 1024
        + b"\r\n0\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 413") and not seen


def test_a_slow_request_is_dropped(server) -> None:
    port, seen = server
    conn = gsocket.create_connection(("127.0.0.1", port))
    conn.settimeout(3)
    started = gevent.get_hub().loop.now()
    for piece in (
        b"GET / HTTP/1.1\r\n",
        b"Host: h\r\n",
        b"X-Slow: 1\r\n",
    ):  # a byte every 0.2 s stays < 0.3 each
        conn.sendall(piece)
        gevent.sleep(0.2)
    assert conn.recv(100) == b""  # closed: the whole request must come within REQUEST_TIMEOUT
    assert gevent.get_hub().loop.now() - started < 1.5 and not seen
    conn.close()


def test_bad_request(server) -> None:
    port, _ = server
    assert exchange(port, b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400")
