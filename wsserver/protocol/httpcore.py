"""The sans-IO core of wsserver's two small HTTP/1.1 servers: bytes in, requests out, responses
to bytes.

The master's metrics listener (``prefork/httpd.py``: non-blocking sockets in the master's
poll loop) and the admin API (``admin/httpd.py``: a greenlet per connection, optional TLS)
differ in how they wait for sockets, not in what HTTP they speak. Everything they share is
here: the request and response types, the limits on a request (head size, body size), how an
unparseable request is answered, and how a response is framed. Each server only moves bytes
and keeps its own clocks.

h11 parses and frames. Limits: a request head of at most ``max_head`` bytes (431), a body of
at most ``max_body`` bytes (413; 0 refuses bodies), one response per request (no pipelined
response is queued before the previous one is out).
"""

from __future__ import annotations

import http
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import h11

_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}


def status_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (RFC 9110), ``""`` for a code without one."""
    return _PHRASES.get(status, "")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]  # the last value of each parameter, blank values kept
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    peer: str
    scheme: str = "http"  # http | https
    user: str = ""  # set by the application once authenticated (for the logs)
    target: str = ""  # as sent: path and query

    @property
    def host(self) -> str:
        return self.headers.get("host", "")

    @property
    def origin(self) -> str:
        """This listener's own origin, as a browser names it."""
        return f"{self.scheme}://{self.host}"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Response]


class NeedData:
    """Read more bytes (or, when a response is still going out, wait for it first)."""


class Closed:
    """The client closed the connection between requests."""


@dataclass(frozen=True)
class Failure:
    """The request cannot be served: send ``data`` (empty when nothing can be said any more),
    then close the connection."""

    status: int
    data: bytes


NEED_DATA = NeedData()
CLOSED = Closed()


class ServerConnection:
    """One server-side connection: feed it bytes, take requests, turn responses into bytes.

    ``received`` counts the bytes of the current request cycle, so a head that arrived whole in
    one read (which h11's own bound, on incomplete heads, lets through) is still held to
    ``max_head``.
    """

    def __init__(self, peer: str, scheme: str = "http", max_head: int = 16384, max_body: int = 0) -> None:
        self.peer = peer
        self.scheme = scheme
        self.max_head = max_head
        self.max_body = max_body
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self.received = 0
        self.closing = False  # a failure or a ``close`` response was sent: read no more
        self._request: h11.Request | None = None
        self._body = bytearray()

    @property
    def between_requests(self) -> bool:
        """Nothing of a next request has arrived (an end of input here is a clean close)."""
        return self.h11.their_state is h11.IDLE

    def receive_data(self, data: bytes) -> None:
        """Bytes from the socket; ``b""`` is the end of input."""
        self.received += len(data)
        self.h11.receive_data(data)

    def next_request(self) -> Request | Failure | NeedData | Closed:
        """The next complete request, or what to do instead."""
        while not self.closing:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                return self.fail(exc.error_status_hint)
            if event is h11.NEED_DATA:
                return NEED_DATA
            if event is h11.PAUSED:
                if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE and self.next_cycle():
                    continue
                return NEED_DATA  # the previous response is not out yet
            if isinstance(event, h11.ConnectionClosed):
                return CLOSED
            if isinstance(event, h11.Request):
                self._request, self._body = event, bytearray()
                if self.received - len(self.h11.trailing_data[0]) > self.max_head:
                    return self.fail(431)
                failure = self._refuse_body(event)
                if failure is not None:
                    return failure
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.max_body:
                    return self.fail(413)
            elif isinstance(event, h11.EndOfMessage):
                assert self._request is not None
                return self._make_request(self._request, bytes(self._body))
        return NEED_DATA

    def _refuse_body(self, event: h11.Request) -> Failure | None:
        length = None
        for name, value in event.headers:
            if name == b"content-length":
                length = value.strip()
            elif name == b"transfer-encoding" and self.max_body == 0:
                return self.fail(413, "request bodies are not accepted")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return self.fail(413, "request bodies are not accepted" if self.max_body == 0 else "")
        return None

    def _make_request(self, event: h11.Request, body: bytes) -> Request:
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        return Request(
            event.method.decode("latin-1"), path, params, headers, body, self.peer, self.scheme, target=target
        )

    def respond(self, response: Response, close: bool = False) -> bytes:
        """The bytes of the answer to the current request (no body for HEAD).

        With ``close`` the answer says ``Connection: close`` and the connection is to end once it
        is out. Raises ``h11.LocalProtocolError`` when the connection can take no response.
        """
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Cache-Control", "no-store"),
            *response.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
            self.closing = True
        h = self.h11
        data = h.send(
            h11.Response(
                status_code=response.status,
                headers=headers,
                reason=status_phrase(response.status).encode("ascii"),
            )
        )
        if self._request is not None and self._request.method != b"HEAD":
            data += h.send(h11.Data(data=response.body))
        data += h.send(h11.EndOfMessage())
        return data

    def fail(self, status: int, text: str = "") -> Failure:
        """The answer to a request that cannot be served: a short text response that closes the
        connection, written by hand since h11 may be in a state that can send nothing more."""
        self.closing = True
        self._request = None
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return Failure(status, b"")
        phrase = status_phrase(status) or "Bad Request"
        body = f"{text or phrase}\n".encode()
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return Failure(status, head.encode() + body)

    def next_cycle(self) -> bool:
        """The response is out: whether the connection may carry another request."""
        h = self.h11
        if self.closing or h.our_state is h11.MUST_CLOSE or h.their_state is h11.MUST_CLOSE:
            return False
        self._request = None
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            self.received = len(h.trailing_data[0])  # already here: the next request's bytes
        return True
