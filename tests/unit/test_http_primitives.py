"""The shared HTTP primitives: Basic credentials, status phrases, address text and the sans-IO
server connection both small HTTP servers drive (pure: no sockets)."""

from __future__ import annotations

import base64

import pytest

from wsserver.protocol.address import format_address, format_host, format_peer
from wsserver.protocol.basic_auth import BasicAuthError, basic_authorization, parse_basic
from wsserver.protocol.httpcore import (
    CLOSED,
    NEED_DATA,
    Failure,
    Request,
    Response,
    ServerConnection,
    status_phrase,
)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# ---- HTTP Basic ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic " + b64(b"alice:secret"), ("alice", "secret")),
        ("basic " + b64(b"alice:secret"), ("alice", "secret")),  # the scheme is case-insensitive
        ("BASIC " + b64(b"alice:secret"), ("alice", "secret")),
        ("  Basic    " + b64(b"alice:secret") + "  ", ("alice", "secret")),  # 1*SP, outer space ignored
        ("Basic " + b64(b"alice:pa:ss:"), ("alice", "pa:ss:")),  # the user ends at the first colon
        ("Basic " + b64(b"alice:"), ("alice", "")),
        ("Basic " + b64(b":secret"), ("", "secret")),  # an empty user is well-formed
        ("Basic " + b64("jürgen:pässwörd".encode()), ("jürgen", "pässwörd")),  # UTF-8
    ],
)
def test_basic_credentials(header: str, expected: tuple[str, str]) -> None:
    assert parse_basic(header) == expected


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "scheme"),
        ("Bearer abc.def.ghi", "scheme"),
        ("Basicx " + b64(b"a:b"), "scheme"),
        (b64(b"a:b"), "scheme"),  # no scheme at all
        ("Basic", "malformed"),
        ("Basic    ", "malformed"),
        ("Basic !!!", "malformed"),  # not base64
        ("Basic YTo", "malformed"),  # "a:" without its padding: strict base64 only
        ("Basic YTpi\u00e9", "malformed"),  # a non-ASCII character in the token
        ("Basic " + b64(b"alice"), "malformed"),  # no colon
        ("Basic " + b64(b"\xffalice:secret"), "malformed"),  # not UTF-8 (we announce charset="UTF-8")
        ("Basic " + b64(b"alice:\xe9t\xe9"), "malformed"),
    ],
)
def test_basic_refusals(header: str, reason: str) -> None:
    with pytest.raises(BasicAuthError) as info:
        parse_basic(header)
    assert info.value.reason == reason


def test_basic_round_trip() -> None:
    header = basic_authorization("jürgen", "a:b c")
    assert header.startswith("Basic ") and parse_basic(header) == ("jürgen", "a:b c")


# ---- status phrases -------------------------------------------------------------------------------
def test_status_phrases() -> None:
    assert status_phrase(200) == "OK"
    assert status_phrase(401) == "Unauthorized"
    assert status_phrase(426) == "Upgrade Required"
    assert status_phrase(431) == "Request Header Fields Too Large"
    assert status_phrase(503) == "Service Unavailable"
    assert status_phrase(599) == ""


# ---- addresses --------------------------------------------------------------------------------
def test_addresses() -> None:
    assert format_host("example.com") == "example.com"
    assert format_host("::1") == "[::1]"
    assert format_address("127.0.0.1", 80) == "127.0.0.1:80"
    assert format_address("fe80::1%eth0", "443") == "[fe80::1%eth0]:443"
    assert format_address("", 9100) == "*:9100"  # bound to every address
    assert format_peer(("10.0.0.1", 5555)) == "10.0.0.1:5555"
    assert format_peer(("::ffff:10.0.0.1", 5555, 0, 0)) == "[::ffff:10.0.0.1]:5555"
    assert format_peer(None) == "?" and format_peer(()) == "?"
    assert format_peer("/run/wsserver.sock") == "/run/wsserver.sock"


# ---- the sans-IO server connection ------------------------------------------------------------------
def feed(conn: ServerConnection, data: bytes):
    conn.receive_data(data)
    return conn.next_request()


def test_request_with_query_headers_and_body() -> None:
    conn = ServerConnection("192.0.2.1", "https", max_body=100)
    got = feed(
        conn,
        b"POST /api/x?a=1&a=2&b= HTTP/1.1\r\nHost: h:9\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 5\r\n\r\nhello",
    )
    assert isinstance(got, Request)
    assert (got.method, got.path, got.target, got.query) == (
        "POST",
        "/api/x",
        "/api/x?a=1&a=2&b=",
        {"a": "2", "b": ""},
    )
    assert got.headers["x-a"] == "1, 2" and got.body == b"hello" and got.peer == "192.0.2.1"
    assert got.origin == "https://h:9"


def test_keep_alive_then_close() -> None:
    conn = ServerConnection("p")
    assert feed(conn, b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n").path == "/1"
    assert conn.next_request() is NEED_DATA  # the first answer is not out yet
    data = conn.respond(Response(200, b"one"))
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"cache-control: no-store" in data.lower()
    assert data.endswith(b"one") and conn.next_cycle()
    assert conn.next_request().path == "/2"
    data = conn.respond(Response(204), close=True)
    assert b"connection: close" in data.lower() and not conn.next_cycle()


def test_head_has_no_body() -> None:
    conn = ServerConnection("p")
    feed(conn, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = conn.respond(Response(200, b"abc"))
    assert b"content-length: 3" in data.lower() and data.endswith(b"\r\n\r\n")


def test_clean_close_between_requests() -> None:
    conn = ServerConnection("p")
    assert conn.between_requests
    assert feed(conn, b"") is CLOSED


@pytest.mark.parametrize(
    ("raw", "max_body", "status", "text"),
    [
        (b"NOT HTTP\r\n\r\n", 0, 400, b"Bad Request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n", 0, 431, b""),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            0,
            413,
            b"request bodies are not accepted",
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 413, b""),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", 10, 413, b""),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nabcdef\r\n0\r\n\r\n",
            10,
            413,
            b"",
        ),
    ],
)
def test_failures_answer_and_close(raw: bytes, max_body: int, status: int, text: bytes) -> None:
    conn = ServerConnection("p", max_head=8192, max_body=max_body)
    got = feed(conn, raw)
    assert isinstance(got, Failure) and got.status == status
    assert got.data.startswith(f"HTTP/1.1 {status} ".encode()) and b"Connection: close" in got.data
    assert text in got.data
    assert conn.closing and conn.next_request() is NEED_DATA and not conn.next_cycle()


def test_empty_body_is_not_a_body() -> None:
    conn = ServerConnection("p", max_body=0)
    got = feed(conn, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(got, Request) and got.body == b""
