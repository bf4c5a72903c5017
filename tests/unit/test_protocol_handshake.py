"""The opening handshake: parsing, validation statuses, the 101 and error responses."""

from __future__ import annotations

import base64
import hashlib

import h11
import pytest

from wsserver.protocol import Handshake, HandshakeError, HandshakeRequest, TextMessage

from .test_protocol_frames import TEXT, frame, upgrade_request

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def parse_response(data: bytes) -> tuple[h11.Response | h11.InformationalResponse, dict[str, str], bytes]:
    """Read our response back with h11 acting as the client."""
    client = h11.Connection(h11.CLIENT)
    client.send(
        h11.Request(
            method="GET",
            target="/",
            headers=[("Host", "x"), ("Connection", "Upgrade"), ("Upgrade", "websocket")],
        )
    )
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    head = client.next_event()
    headers = {k.decode(): v.decode() for k, v in head.headers}
    body = b""
    if isinstance(head, h11.Response):
        while True:
            event = client.next_event()
            if isinstance(event, h11.Data):
                body += event.data
            else:
                assert isinstance(event, h11.EndOfMessage)
                break
    return head, headers, body


def request_for(data: bytes, chunk: int | None = None, **kw) -> HandshakeRequest:
    hs = Handshake(**kw)
    return _feed(hs, data, chunk)


def _feed(hs: Handshake, data: bytes, chunk: int | None = None) -> HandshakeRequest:
    if chunk is None:
        hs.receive_data(data)
        request = hs.next_request()
    else:
        request = None
        for i in range(0, len(data), chunk):
            hs.receive_data(data[i : i + chunk])
            request = hs.next_request()
            if request is not None:
                break
    assert request is not None
    return request


def error_for(data: bytes, **kw) -> HandshakeError:
    hs = Handshake(**kw)
    hs.receive_data(data)
    with pytest.raises(HandshakeError) as info:
        hs.next_request()
    return info.value


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 1, 13])
def test_request_fields(chunk):
    data = upgrade_request(
        "/chat/room?x=1&y=%20",
        extra=[
            ("Origin", "https://app.example.com"),
            ("Sec-WebSocket-Protocol", "v2.chat, chat"),
            ("Sec-WebSocket-Protocol", "superchat"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits, x-other"),
            ("X-Latin", "caf\xe9"),
        ],
        Connection="keep-alive, Upgrade",
        Upgrade="WebSocket",
    )
    request = request_for(data, chunk)
    assert request.method == "GET"
    assert request.target == "/chat/room?x=1&y=%20"
    assert request.path == "/chat/room"
    assert request.query == "x=1&y=%20"
    assert request.host == "example.com"
    assert request.origin == "https://app.example.com"
    assert request.subprotocols == ("v2.chat", "chat", "superchat")
    assert request.extensions == ("permessage-deflate; client_max_window_bits", "x-other")
    assert request.header("X-LATIN") == "café"
    assert request.header("sec-websocket-protocol") == "v2.chat, chat, superchat"
    assert request.header("missing") is None
    assert all(name == name.lower() for name, _ in request.headers)
    assert len(base64.b64decode(request.key)) == 16


def test_absolute_form_target():
    request = request_for(upgrade_request("http://example.com/echo?q=1"))
    assert request.path == "/echo" and request.query == "q=1"


def test_absolute_form_authority_replaces_host():
    """RFC 9112 §3.2.2: the origin rules must judge the host the request is really for."""
    request = request_for(upgrade_request("http://evil.example:8080/echo", Host="127.0.0.1"))
    assert request.host == "evil.example:8080" and request.path == "/echo"
    request = request_for(upgrade_request("ws://user@evil.example/x", Host="127.0.0.1"))
    assert request.host == "evil.example" and request.path == "/x"


@pytest.mark.parametrize("target", ["ftp://evil.example/echo", "http:///echo", "*", "echo"])
def test_odd_targets_are_400(target):
    assert error_for(upgrade_request(target)).status == 400


def test_duplicated_version_header_is_400():
    data = upgrade_request(extra=[("Sec-WebSocket-Version", "13")])
    error = error_for(data)
    assert error.status == 400 and "more than once" in error.reason


def test_need_more_data_then_request_once():
    hs = Handshake()
    data = upgrade_request()
    hs.receive_data(data[:-2])
    assert hs.next_request() is None
    hs.receive_data(data[-2:])
    assert hs.next_request() is not None
    assert hs.next_request() is None


# -- accept ----------------------------------------------------------------------------------


def test_accept_101_and_trailing_frames():
    hs = Handshake()
    hs.receive_data(upgrade_request() + frame(TEXT, "early"))
    request = hs.next_request()
    hs.receive_data(frame(TEXT, "while authenticating"))
    response, proto = hs.accept(request, extra_headers=[(b"X-Server", b"wsserver"), ("Set-Cookie", "a=b")])
    head, headers, _ = parse_response(response)
    assert head.status_code == 101
    assert headers["upgrade"] == "websocket" and headers["connection"] == "Upgrade"
    expected = base64.b64encode(hashlib.sha1(request.key.encode() + GUID).digest()).decode()
    assert headers["sec-websocket-accept"] == expected
    assert headers["x-server"] == "wsserver" and headers["set-cookie"] == "a=b"
    assert "sec-websocket-protocol" not in headers and "sec-websocket-extensions" not in headers
    assert proto.events() == [TextMessage("early"), TextMessage("while authenticating")]
    with pytest.raises(RuntimeError):
        hs.accept(request)


def test_rfc6455_sample_accept_key():
    hs = Handshake()
    hs.receive_data(upgrade_request(Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ=="))
    request = hs.next_request()
    assert request.key == "dGhlIHNhbXBsZSBub25jZQ=="
    response, _ = hs.accept(request)
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response  # RFC 6455 §1.3


@pytest.mark.parametrize(
    ("offered", "chosen", "announced"),
    [("chat, v2", "v2", "v2"), ("chat", "other", None), (None, "chat", None), ("chat", None, None)],
)
def test_subprotocol_only_if_offered(offered, chosen, announced):
    hs = Handshake()
    extra = [("Sec-WebSocket-Protocol", offered)] if offered else None
    hs.receive_data(upgrade_request(extra=extra))
    response, proto = hs.accept(hs.next_request(), subprotocol=chosen)
    _, headers, _ = parse_response(response)
    assert headers.get("sec-websocket-protocol") == announced
    assert proto.subprotocol == announced


@pytest.mark.parametrize(
    ("offer", "compression", "expected"),
    [
        ("permessage-deflate; client_max_window_bits", True, "permessage-deflate; client_max_window_bits=11"),
        (
            "permessage-deflate; client_max_window_bits=11",
            True,
            "permessage-deflate; client_max_window_bits=11",
        ),
        ("permessage-deflate", False, None),
        (None, True, None),
        ("x-webkit-deflate-frame", True, None),
    ],
)
def test_compression_negotiated_only_when_enabled_and_offered(offer, compression, expected):
    hs = Handshake()
    hs.receive_data(upgrade_request(extra=[("Sec-WebSocket-Extensions", offer)] if offer else None))
    response, proto = hs.accept(hs.next_request(), compression=compression, max_message_size=1234)
    _, headers, _ = parse_response(response)
    assert headers.get("sec-websocket-extensions") == expected
    assert proto.compression is (expected is not None)
    assert proto.extensions_header == expected
    assert proto.max_message_size == 1234
    if proto.compression:
        assert proto.deflate.max_message_size == 1234
        assert not proto.fast_path  # the fast path is for the extension-less wire format


def test_accept_rejects_header_injection():
    hs = Handshake()
    hs.receive_data(upgrade_request())
    request = hs.next_request()
    with pytest.raises(ValueError):
        hs.accept(request, extra_headers=[(b"X-Evil", b"a\r\nSet-Cookie: x")])
    with pytest.raises(ValueError):
        Handshake().reject(400, headers=[(b"Bad Name", b"x")])


def test_accept_fast_path_switch():
    hs = Handshake()
    hs.receive_data(upgrade_request())
    _, proto = hs.accept(hs.next_request(), fast_path=False)
    assert proto.fast_path is False


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"garbage\r\n\r\n", "malformed request"),
        (upgrade_request().replace(b"GET", b"POST", 1), "method must be GET"),
        (upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1), "HTTP/1.1 required"),
        (upgrade_request(Host=None), "malformed request"),  # h11 refuses HTTP/1.1 without Host
        (upgrade_request(Upgrade=None), "missing Upgrade: websocket"),
        (upgrade_request(Upgrade="h2c"), "missing Upgrade: websocket"),
        (upgrade_request(Connection=None), "missing Connection: upgrade"),
        (upgrade_request(Connection="keep-alive"), "missing Connection: upgrade"),
        (upgrade_request(Sec_WebSocket_Key=None), "missing or invalid Sec-WebSocket-Key"),
        (upgrade_request(Sec_WebSocket_Key="c2hvcnQ="), "missing or invalid Sec-WebSocket-Key"),
        (
            upgrade_request(Sec_WebSocket_Key="!!!notbase64!!!!!!!!!!=="),
            "missing or invalid Sec-WebSocket-Key",
        ),
        (
            upgrade_request(extra=[("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]),
            "missing or invalid Sec-WebSocket-Key",
        ),
        (upgrade_request(extra=[("Content-Length", "5")]) + b"hello", "an upgrade request has no body"),
    ],
)
def test_bad_requests_are_400(data, reason):
    error = error_for(data)
    assert error.status == 400 and error.reason == reason
    head, headers, body = parse_response(error.response)
    assert head.status_code == 400
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body) > 0


@pytest.mark.parametrize("version", ["8", "14", None, "13, 8"])
def test_wrong_version_is_426(version):
    error = error_for(upgrade_request(Sec_WebSocket_Version=version))
    assert error.status == 426
    head, headers, _ = parse_response(error.response)
    assert head.status_code == 426
    assert headers["sec-websocket-version"] == "13"
    assert headers["connection"] == "close"


@pytest.mark.parametrize("chunk", [None, 100])
def test_oversized_headers_are_431(chunk):
    data = upgrade_request(extra=[("X-Big", "x" * 3000)])
    hs = Handshake(max_header_size=2048)
    with pytest.raises(HandshakeError) as info:
        _feed(hs, data, chunk)
    assert info.value.status == 431
    assert parse_response(info.value.response)[0].status_code == 431


def test_header_size_limit_allows_what_fits():
    data = upgrade_request(extra=[("X-Big", "x" * 1500)])
    assert request_for(data, max_header_size=len(data)).header("x-big") == "x" * 1500


@pytest.mark.parametrize("received", [b"", b"GET /echo HTTP/1.1\r\nHost: a\r\n"])
def test_eof_before_a_request_means_just_close(received):
    hs = Handshake()
    hs.receive_data(received)
    hs.receive_data(b"")
    with pytest.raises(HandshakeError) as info:
        hs.next_request()
    assert (info.value.status, info.value.response) == (0, b"")


def test_reject_builds_a_complete_response():
    hs = Handshake()
    hs.receive_data(upgrade_request("/nowhere"))
    hs.next_request()
    data = hs.reject(404, "not found", headers=[("X-Why", "no endpoint"), ("Content-Length", "999")])
    head, headers, body = parse_response(data)
    assert head.status_code == 404 and head.reason == b"Not Found"
    assert body == b"not found\n"
    assert headers["content-length"] == str(len(body))
    assert headers["connection"] == "close" and headers["x-why"] == "no endpoint"
    assert headers["content-type"].startswith("text/plain")
    with pytest.raises(RuntimeError):
        hs.accept(HandshakeRequest("GET", "/", "/", "", (), None, None, (), (), "k"))


def test_reject_with_custom_body_and_type():
    data = Handshake().reject(
        403, body=b'{"error": "forbidden"}', headers=[(b"Content-Type", b"application/json")]
    )
    head, headers, body = parse_response(data)
    assert head.status_code == 403 and body == b'{"error": "forbidden"}'
    assert headers["content-type"] == "application/json"


# -- the fast parse of the common request is equivalent to h11 ----------------------------------

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
_GOOD = (
    b"GET /echo?x=1 HTTP/1.1\r\nHost: example.com:80\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + _KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\n"
)


def _variant(old: bytes, new: bytes) -> bytes:
    assert old in _GOOD
    return _GOOD.replace(old, new, 1) + b"\r\n"


EQUIVALENCE_CASES = [
    _GOOD + b"\r\n",
    _GOOD + b"\r\n" + b"\x81\x85early",  # a frame right behind the request
    _GOOD + b"Origin: https://a.example\r\nSec-WebSocket-Protocol: chat, , superchat\r\n\r\n",
    _GOOD + b"X-Spaces: \t a  b \t \r\n\r\n",  # OWS around, inner whitespace kept
    _GOOD + b"X-Empty:\r\nX-Empty2: \t\r\n\r\n",
    _GOOD + b"X-Obs: caf\xe9\x80\r\n\r\n",  # obs-text in a value
    _GOOD + b"Connection: keep-alive\r\nUpgrade: h2c\r\n\r\n",  # joined lists
    _GOOD + b"X-Folded: a\r\n b\r\n\r\n",  # obs-fold: h11 joins it
    _GOOD + b" X: leading space\r\n\r\n",
    _GOOD + b"X-Bare-LF: a\nX-Next: b\r\n\r\n",
    _GOOD + b"X-Bare-CR: a\rb\r\n\r\n",
    _GOOD + b"X-Nul: a\x00b\r\n\r\n",
    _GOOD + b"X-Ctl: a\x7fb\r\n\r\n",
    _GOOD + b"X-Tab-End:\ta\t\r\n\r\n",
    _GOOD + b"Bad Name: x\r\n\r\n",
    _GOOD + b"Bad\x80Name: x\r\n\r\n",
    _GOOD + b": no name\r\n\r\n",
    _GOOD + b"NoColon\r\n\r\n",
    _GOOD + b"X-Colon : x\r\n\r\n",
    _GOOD + b"Host: second.example\r\n\r\n",
    _GOOD + b"HOST: second.example\r\n\r\n",
    _variant(b"Host: example.com:80\r\n", b""),
    _variant(b"Host: example.com:80\r\n", b"Host:\r\n"),
    _GOOD + b"Content-Length: 0\r\n\r\n",
    _GOOD + b"Content-Length: 0, 0\r\n\r\n",
    _GOOD + b"Content-Length: 5\r\n\r\nhello",
    _GOOD + b"Content-Length: 1, 2\r\n\r\n",
    _GOOD + b"Content-Length: x\r\n\r\n",
    _GOOD + b"Transfer-Encoding: chunked\r\n\r\n",
    _GOOD + b"Transfer-Encoding: gzip\r\n\r\n",
    _variant(b"GET ", b"get "),
    _variant(b"GET ", b"POST "),
    _variant(b"GET ", b"GET  "),
    _variant(b"GET ", b"G\xc3\x89T "),
    _variant(b"/echo?x=1", b"http://example.com/echo?x=1"),
    _variant(b"/echo?x=1", b"/ech\x80o"),
    _variant(b"/echo?x=1", b"/e\x7fcho"),
    _variant(b"/echo?x=1", b"*"),
    _variant(b" HTTP/1.1", b" HTTP/1.0"),
    _variant(b" HTTP/1.1", b" HTTP/2.0"),
    _variant(b" HTTP/1.1", b" http/1.1"),
    _variant(b" HTTP/1.1", b" HTTP/1.1 "),
    _variant(b" HTTP/1.1", b""),
    _variant(b"\r\nHost", b"\nHost"),  # bare LF line ends
    _GOOD.replace(b"\r\n", b"\n") + b"\n",
    _GOOD + b"\n",  # CRLF LF ends the head for h11
    _GOOD[:-2] + b"\n\r\n",
    b"\r\n" + _GOOD + b"\r\n",  # a leading empty line
    b"\n" + _GOOD + b"\r\n",
    b" " + _GOOD + b"\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on a ws port
    b"garbage\r\n\r\n",
    b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    _variant(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"),
    _variant(b"Sec-WebSocket-Key: " + _KEY.encode(), b"Sec-WebSocket-Key: c2hvcnQ="),
    _variant(b"Upgrade: websocket", b"Upgrade: WebSocket, foo"),
    _variant(b"Upgrade: websocket\r\nConnection: Upgrade", b"Connection: Upgrade"),
    b"GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n",
    _GOOD + b"X-Big: " + b"x" * 3000 + b"\r\n\r\n",
    _GOOD,  # no end of head yet
    _GOOD[:30],
    b"",
]


def _outcome(
    data: bytes, chunk: int | None, fast_parse: bool, max_header_size: int = 2048, eof: bool = False
):
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    if eof:
        pieces.append(b"")
    return outcome_of_pieces(pieces, fast_parse, max_header_size)


def outcome_of_pieces(pieces: list[bytes], fast_parse: bool, max_header_size: int = 2048):
    """What a Handshake makes of these reads: the request or the error, and what it kept."""
    hs = Handshake(max_header_size=max_header_size, fast_parse=fast_parse)
    result: object = None
    try:
        for piece in pieces or [b""]:
            hs.receive_data(piece)
            result = hs.next_request()
            if result is not None:
                break
    except HandshakeError as exc:
        result = ("error", exc.status, exc.reason, exc.response)
    return result, hs.plain_get_path, hs.trailing_data


@pytest.mark.parametrize("data", EQUIVALENCE_CASES)
@pytest.mark.parametrize("chunk", [None, 1, 7])
@pytest.mark.parametrize("eof", [False, True])
def test_fast_parse_is_equivalent_to_h11(data, chunk, eof):
    assert _outcome(data, chunk, True, eof=eof) == _outcome(data, chunk, False, eof=eof)


@pytest.mark.parametrize("max_header_size", [50, 150, len(_GOOD) + 1, len(_GOOD) + 2, len(_GOOD) + 3])
@pytest.mark.parametrize("chunk", [None, 1, 64])
def test_fast_parse_size_limit_is_equivalent_to_h11(max_header_size, chunk):
    for data in (_GOOD + b"\r\n", _GOOD + b"X-Big: " + b"x" * 200 + b"\r\n\r\n" + b"trailing"):
        assert _outcome(data, chunk, True, max_header_size) == _outcome(data, chunk, False, max_header_size)


def test_fast_parse_takes_the_common_request():
    hs = Handshake()
    hs.receive_data(_GOOD + b"\r\n")
    request = hs.next_request()
    assert request is not None and hs._h11 is None  # h11 was not needed
    assert request.key == _KEY and request.path == "/echo" and request.query == "x=1"


def test_random_mutations_of_the_common_request_match_h11():
    import random

    rng = random.Random(6455)
    alphabet = b"\r\n\t :\x00\x7f\x80\xff,;=/?Ga1-"
    base = _GOOD + b"Origin: http://example.com\r\n\r\n"
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[pos] = rng.choice(alphabet)
            elif op < 0.7:
                data.insert(pos, rng.choice(alphabet))
            else:
                del data[pos]
        data = bytes(data)
        chunk = rng.choice([None, 1, 5])
        assert _outcome(data, chunk, True) == _outcome(data, chunk, False), data


def test_key_check_shortcut_matches_base64_decoding():
    import binascii
    import os
    import random

    from wsserver.protocol.handshake import _valid_key

    def reference(key: str) -> bool:
        try:
            return len(base64.b64decode(key.strip().encode("ascii"), validate=True)) == 16
        except (binascii.Error, UnicodeEncodeError):
            return False

    rng = random.Random(13)
    for _ in range(20000):
        key = list(base64.b64encode(os.urandom(rng.choice([15, 16, 16, 17]))).decode())
        for _ in range(rng.randint(0, 2)):
            pos = rng.randrange(len(key) + 1)
            key.insert(pos, rng.choice("A+/=- \t\xe9"))
        if rng.random() < 0.3 and key:
            del key[rng.randrange(len(key))]
        text = "".join(key)
        assert _valid_key(text) == reference(text), text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("", False),
        ("websocket", True),
        ("WebSocket", True),
        (" websocket ", True),
        ("h2c, WEBSOCKET", True),
        ("websockets", False),
        ("web socket", False),
        (",,websocket,", True),
    ],
)
def test_token_check(value, expected):
    from wsserver.protocol.handshake import _has_token, _tokens

    assert _has_token(value, "websocket") is expected
    assert _has_token(value, "websocket") is ("websocket" in _tokens(value))
