"""The opening handshake: h11 parses the request, we validate it (RFC 6455 §4.2.1) and answer.

The 101 and the error responses are written here rather than through h11's writer: they are a
few fixed lines, and an error response must be writable whatever state h11 ended up in.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

import h11
from wsproto.utilities import generate_accept_token

from .connection import DEFAULT_MAX_MESSAGE_SIZE, WebSocketProtocol
from .deflate import DEFAULT_CLIENT_WINDOW_BITS, DEFAULT_MEM_LEVEL, DEFAULT_WINDOW_BITS, negotiate_deflate
from .httpcore import status_phrase

__all__ = ["DEFAULT_MAX_HEADER_SIZE", "Handshake", "HandshakeError", "HandshakeRequest"]

DEFAULT_MAX_HEADER_SIZE = 16384
WEBSOCKET_VERSION = "13"
KEY_LENGTH = 16  # Sec-WebSocket-Key is the base64 of 16 random bytes

HeaderList = Iterable[tuple[bytes | str, bytes | str]]

# RFC 9110 §5.1 field-name token; values must not smuggle line breaks or NULs into our response.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")

# The common request is parsed without h11 when it is plainly simple: the grammar below is h11's
# own (h11/_abnf.py: request-line, field-line), narrowed to "GET <target> HTTP/1.1" with CRLF line
# ends. Anything else (another method or version, obs-fold, bare LF or CR, Content-Length,
# Transfer-Encoding, no or several Host headers, a malformed line) goes to h11 unchanged, so
# every answer to an unusual request is still h11's (see _fast_head).
_FAST_REQUEST_LINE = re.compile(rb"GET ([\x21-\x7e]+) HTTP/1\.1")
_FAST_FIELD = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*")
_HEAD_END = re.compile(rb"\n\r?\n")  # h11's end of the head (its blank_line_regex)


@dataclass(frozen=True)
class HandshakeRequest:
    """A validated WebSocket upgrade request."""

    method: str
    target: str  # raw request target
    path: str  # target without the query
    query: str  # after "?", without it
    headers: tuple[tuple[str, str], ...]  # names lower-case, latin-1 decoded, in order
    host: str | None
    origin: str | None
    subprotocols: tuple[str, ...]  # offered, in order
    extensions: tuple[str, ...]  # offered, e.g. "permessage-deflate; client_max_window_bits"
    key: str

    def header(self, name: str) -> str | None:
        """All values of header ``name`` joined with ", " (RFC 9110 §5.3), or None."""
        name = name.lower()
        values = [value for key, value in self.headers if key == name]
        return ", ".join(values) if values else None


class HandshakeError(Exception):
    """A request we will not upgrade. Send ``response`` (if any), then close the socket.

    ``status`` 0 with an empty ``response`` means the peer went away mid-request: just close.
    """

    def __init__(self, status: int, reason: str, response: bytes) -> None:
        super().__init__(f"{status} {reason}" if status else reason)
        self.status = status
        self.reason = reason
        self.response = response


class _Stage(enum.Enum):
    READING = "reading the request"
    RECEIVED = "request returned, waiting for accept() or reject()"
    DONE = "answered (accepted, rejected or failed)"


class Handshake:
    """Server side of the opening handshake, sans-IO (see ``API.md``)."""

    def __init__(self, max_header_size: int = DEFAULT_MAX_HEADER_SIZE, *, fast_parse: bool = True) -> None:
        self.max_header_size = max_header_size
        # With fast_parse, h11 is created only when the fast parse declines a request (_fast_head);
        # without, h11 parses every request (the reference the tests compare the fast parse with).
        self._h11: h11.Connection | None = None
        if not fast_parse:
            self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_size)
        self._buffer = bytearray()  # bytes fed while h11 is not in use (after the head: trailing)
        self._searched = 0  # where to resume looking for the end of the head in _buffer
        self._stage = _Stage.READING
        self._eof = False
        self._received = 0  # bytes fed so far: with the trailing data it gives the head size
        self._head: h11.Request | _Head | None = None  # the parsed request line and headers

    def receive_data(self, data: bytes | bytearray | None) -> None:
        """Feed bytes from the socket; ``b""`` or None means EOF.

        Bytes fed after the request (early frames) are kept and handed to the protocol by
        ``accept()``. EOF is not passed to h11: we tell "closed mid-request" apart ourselves.
        """
        if not data:
            self._eof = True
        elif not self._eof:
            self._received += len(data)
            if self._h11 is None:
                self._buffer += data
            else:
                self._h11.receive_data(bytes(data))

    def next_request(self) -> HandshakeRequest | None:
        """The validated request, None if more data is needed (returned once).

        Raises HandshakeError for a request we will not upgrade.
        """
        if self._stage is not _Stage.READING:
            return None
        if self._h11 is None:
            buffer = self._buffer
            end = _HEAD_END.search(buffer, self._searched)
            if end is None:
                # h11 would still wait (NEED_DATA) for this: no end of head, no early error.
                if (not buffer or buffer.startswith(b"G")) and len(buffer) <= self.max_header_size:
                    self._searched = max(0, len(buffer) - 2)
                    if self._eof:
                        self._stage = _Stage.DONE
                        raise HandshakeError(0, "incomplete request", b"")
                    return None
            elif end.group() == b"\n\r\n" and buffer[end.start() - 1 : end.start()] == b"\r":
                head = _fast_head(bytes(buffer[: end.start() - 1]))
                if head is not None:
                    del buffer[: end.end()]  # what remains (and what comes) is the trailing data
                    return self._received_head(head, end.end())
            # Not plainly simple: h11 takes over, with every byte received so far.
            self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_size)
            self._h11.receive_data(bytes(buffer))
            self._buffer = bytearray()
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            detail = "request headers too large" if status == 431 else "malformed request"
            self._fail(status, detail)
        if event is h11.NEED_DATA:
            if self._eof:
                self._stage = _Stage.DONE
                raise HandshakeError(0, "incomplete request", b"")
            return None
        if not isinstance(event, h11.Request):  # nothing else can come first from a client
            self._fail(400, "malformed request")
        return self._received_head(event, self._received - len(self._h11.trailing_data[0]))

    def _received_head(self, event: h11.Request | _Head, head_size: int) -> HandshakeRequest:
        self._head = event
        if head_size > self.max_header_size:
            # h11 bounds only incomplete requests; one read may bring a whole oversized head.
            self._fail(431, "request headers too large")
        request = self._validate(event)
        self._stage = _Stage.RECEIVED
        return request

    def accept(
        self,
        request: HandshakeRequest,
        subprotocol: str | None = None,
        compression: bool = True,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        extra_headers: HeaderList | None = None,
        *,
        fast_path: bool = True,
        compression_window_bits: int = DEFAULT_WINDOW_BITS,
        compression_client_window_bits: int = DEFAULT_CLIENT_WINDOW_BITS,
        compression_mem_level: int = DEFAULT_MEM_LEVEL,
    ) -> tuple[bytes, WebSocketProtocol]:
        """The 101 response and the protocol for the data phase.

        ``subprotocol`` is announced only if the client offered it (else no header, and
        ``proto.subprotocol`` is None). permessage-deflate is negotiated only if ``compression``
        and the client offered an acceptable variant; ``compression_*`` are the port settings of the
        same names (our window bits, the window asked of the client, zlib memLevel). Bytes that
        followed the request are fed to the protocol: call ``proto.events()`` and
        ``proto.data_to_send()`` right away.
        """
        if self._stage is not _Stage.RECEIVED:
            raise RuntimeError(f"accept() while {self._stage.value}")
        self._stage = _Stage.DONE
        if subprotocol is not None and subprotocol not in request.subprotocols:
            subprotocol = None
        headers: list[tuple[bytes, bytes]] = [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", generate_accept_token(request.key.encode("ascii"))),
        ]
        if subprotocol is not None:
            headers.append((b"Sec-WebSocket-Protocol", subprotocol.encode("latin-1")))
        deflate = None
        extensions_header = None
        if compression:
            negotiated = negotiate_deflate(
                request.extensions,
                max_message_size,
                window_bits=compression_window_bits,
                client_window_bits=compression_client_window_bits,
                mem_level=compression_mem_level,
            )
            if negotiated is not None:
                extensions_header, deflate = negotiated
                headers.append((b"Sec-WebSocket-Extensions", extensions_header.encode("ascii")))
        headers.extend(_encode_headers(extra_headers or ()))
        proto = WebSocketProtocol(
            max_message_size,
            deflate=deflate,
            fast_path=fast_path,
            subprotocol=subprotocol,
            extensions_header=extensions_header,
        )
        trailing = self.trailing_data
        if trailing:
            proto.receive_data(trailing)
        return _format_response(101, headers, b""), proto

    def reject(
        self,
        status: int = 400,
        reason: str = "",
        headers: HeaderList | None = None,
        body: bytes | None = None,
    ) -> bytes:
        """A complete HTTP/1.1 response with Content-Length and ``Connection: close``.

        The status line carries the standard phrase; ``reason`` becomes the text body when no
        ``body`` is given. Content-Length and Connection in ``headers`` are replaced by ours.
        """
        self._stage = _Stage.DONE
        return error_response(status, reason, headers, body)

    @property
    def plain_get_path(self) -> str | None:
        """The path of a plain HTTP GET (no ``Upgrade: websocket``) that ``next_request`` refused.

        None for anything else. Lets the caller answer a health check (a load balancer's
        ``GET /healthz``) on a WebSocket port instead of the 400 a non-upgrade request gets.
        """
        head = self._head
        if head is None or head.method != b"GET":
            return None
        if any(name == b"upgrade" and b"websocket" in value.lower() for name, value in head.headers):
            return None
        return head.target.decode("latin-1").partition("?")[0]

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the request head (normally empty until accept)."""
        if self._h11 is None:
            return bytes(self._buffer)
        return self._h11.trailing_data[0]

    # -- validation ----------------------------------------------------------------------------

    def _fail(self, status: int, reason: str, headers: HeaderList | None = None) -> NoReturn:
        self._stage = _Stage.DONE
        raise HandshakeError(status, reason, error_response(status, reason, headers))

    def _validate(self, event: h11.Request | _Head) -> HandshakeRequest:
        headers = tuple([(name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers])
        values: dict[str, list[str]] = {}
        for name, value in headers:
            values.setdefault(name, []).append(value)

        def joined(name: str) -> str | None:
            found = values.get(name)
            return ", ".join(found) if found else None

        # RFC 6455 §4.2.1, in its order; a plain HTTP request fails the Upgrade check with 400.
        if event.method != b"GET":
            self._fail(400, "method must be GET")
        if event.http_version != b"1.1":
            self._fail(400, "HTTP/1.1 required")
        host = joined("host")
        if not host:
            self._fail(400, "missing Host")
        if not _has_token(joined("upgrade"), "websocket"):
            self._fail(400, "missing Upgrade: websocket")
        if not _has_token(joined("connection"), "upgrade"):
            self._fail(400, "missing Connection: upgrade")
        keys = values.get("sec-websocket-key", [])
        if len(keys) != 1 or not _valid_key(keys[0]):
            self._fail(400, "missing or invalid Sec-WebSocket-Key")
        versions = values.get("sec-websocket-version", [])
        if len(versions) > 1:
            self._fail(400, "Sec-WebSocket-Version given more than once")
        if joined("sec-websocket-version") != WEBSOCKET_VERSION:
            self._fail(426, "unsupported WebSocket version", [(b"Sec-WebSocket-Version", b"13")])
        if "transfer-encoding" in values or joined("content-length") not in (None, "0"):
            self._fail(400, "an upgrade request has no body")

        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        if not path.startswith("/"):
            # Absolute-form (RFC 9112 §3.2.2): the target's authority replaces Host, so the origin
            # rules judge the host the request is really for.
            parts = urlsplit(target)
            if parts.scheme.lower() not in ("http", "https", "ws", "wss") or not parts.hostname:
                self._fail(400, "request target must be a path or an http(s)/ws(s) URL")
            host = parts.netloc.rpartition("@")[2]
            path, query = parts.path or "/", parts.query
        return HandshakeRequest(
            method="GET",
            target=target,
            path=path,
            query=query,
            headers=headers,
            host=host,
            origin=joined("origin"),
            subprotocols=tuple(_split_list(joined("sec-websocket-protocol"))),
            extensions=tuple(_split_list(joined("sec-websocket-extensions"))),
            key=keys[0].strip(),
        )


# -- helpers ---------------------------------------------------------------------------------


class _Head:
    """A request head parsed by ``_fast_head``: the attributes of ``h11.Request`` we read."""

    __slots__ = ("headers", "http_version", "method", "target")

    def __init__(self, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = b"GET"
        self.target = target
        self.http_version = b"1.1"
        self.headers = headers  # (lower-case name, value), as iterating h11's Headers gives


def _fast_head(head: bytes) -> _Head | None:
    """The head (without its final CRLF CRLF) if it is plainly simple, else None (ask h11).

    Accepts exactly what h11 accepts and reports identically for such a head: the same
    grammar, one Host header, no Content-Length or Transfer-Encoding (h11 normalizes those).
    """
    lines = head.split(b"\r\n")
    match = _FAST_REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        return None
    headers = []
    hosts = 0
    field = _FAST_FIELD.fullmatch
    for line in lines[1:]:
        found = field(line)
        if found is None:
            return None
        name = found[1].lower()
        if name == b"host":
            hosts += 1
        elif name == b"content-length" or name == b"transfer-encoding":
            return None
        headers.append((name, found[2]))
    if hosts != 1:
        return None
    return _Head(match[1], headers)


def _split_list(value: str | None) -> list[str]:
    """A comma-separated header list, items stripped, empty items dropped (RFC 9110 §5.6.1)."""
    if not value:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def _tokens(value: str | None) -> set[str]:
    return {item.lower() for item in _split_list(value)}


def _has_token(value: str | None, token: str) -> bool:
    """``token`` (lower-case) is in the comma-separated list ``value``, compared case-blind."""
    if value is None:
        return False
    return value.lower() == token or token in _tokens(value)  # the first: the common one-item case


# 16 bytes in base64: 22 digits and "==" (what _valid_key accepts, without decoding it).
_KEY_FORM = re.compile(r"[A-Za-z0-9+/]{22}==")


def _valid_key(key: str) -> bool:
    if _KEY_FORM.fullmatch(key) is not None:
        return True
    try:
        return len(base64.b64decode(key.strip().encode("ascii"), validate=True)) == KEY_LENGTH
    except (binascii.Error, UnicodeEncodeError):
        return False


def _encode_headers(headers: HeaderList) -> list[tuple[bytes, bytes]]:
    encoded = []
    for name, value in headers:
        name_b = name.encode("latin-1") if isinstance(name, str) else bytes(name)
        value_b = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        if not _TOKEN.fullmatch(name_b) or _BAD_VALUE.search(value_b):
            raise ValueError(f"invalid response header {name_b!r}: {value_b!r}")
        encoded.append((name_b, value_b))
    return encoded


def _format_response(status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {status_phrase(status)}".encode("ascii")]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def error_response(
    status: int, reason: str = "", headers: HeaderList | None = None, body: bytes | None = None
) -> bytes:
    """A complete, self-delimiting HTTP/1.1 error response that ends the connection."""
    if not 100 <= status <= 999:
        raise ValueError(f"invalid HTTP status {status}")
    extra = [
        (name, value)
        for name, value in _encode_headers(headers or ())
        if name.lower() not in (b"content-length", b"connection")
    ]
    if body is None:
        body = ((reason or status_phrase(status)) + "\n").encode("utf-8")
    if not any(name.lower() == b"content-type" for name, _ in extra):
        extra.append((b"Content-Type", b"text/plain; charset=utf-8"))
    extra.append((b"Content-Length", str(len(body)).encode("ascii")))
    extra.append((b"Connection", b"close"))
    return _format_response(status, extra, body)
