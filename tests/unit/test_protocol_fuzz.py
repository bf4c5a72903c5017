"""Differential fuzzing of the protocol layer (hypothesis).

Frames: random streams of valid and invalid frames (every opcode, FIN, RSV bits, masked or
not, every length encoding, payloads of 0 B to 70 KiB, text that is or is not UTF-8), cut at
random read boundaries, are fed to ``WebSocketProtocol`` with the fast path and without it
(wsproto's engine alone); after every read the events, the bytes to send, the state and the
close code must be the same.

permessage-deflate (the fast path is off with it): random messages compressed by a client as
any offer allows, fragmented and cut anywhere, arrive as sent, and what we compress inflates
back; corrupted or truncated deflate streams behave as through wsproto's own extension.

Handshakes: random upgrade requests (header sets, orders, cases, duplicates, odd bytes spliced
in, random cuts) go through the fast request parser and through h11; the outcome must match.

``make test`` runs a short pass (``FUZZ_EXAMPLES``, default 150 per test); ``make fuzz`` a long
one (10⁶ cases in all). A failure prints the smallest failing input and the seed to replay it
(``--hypothesis-seed``).
"""

from __future__ import annotations

import itertools
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsserver.protocol import WebSocketProtocol

from .test_protocol_equivalence import _trace
from .test_protocol_handshake import outcome_of_pieces

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
MAX_SIZE = 50_000

# -- frames ----------------------------------------------------------------------------------


@st.composite
def frames(draw) -> bytes:
    opcode = draw(st.sampled_from([0x1, 0x2, 0x0, 0x8, 0x9, 0xA]) | st.integers(0, 15))
    fin = draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else True
    rsv = draw(st.integers(0, 7)) if draw(st.integers(0, 9)) == 0 else 0
    masked = draw(st.integers(0, 19)) != 0
    size = draw(st.sampled_from([0, 1, 2, 5, 125, 126, 127, 300, 65535, 65536, 70_000]) | st.integers(0, 400))
    if opcode == 0x1 and draw(st.booleans()):
        text = draw(st.text(min_size=0, max_size=min(size, 300)))
        payload = text.encode()
    elif opcode == 0x8 and size >= 2 and draw(st.booleans()):
        code = draw(st.sampled_from([1000, 1001, 1002, 1005, 1006, 1015, 2999, 3000, 4999, 5000, 999]))
        payload = struct.pack("!H", code) + draw(st.text(max_size=40)).encode()[:123]
    else:
        payload = draw(st.binary(min_size=min(size, 400), max_size=min(size, 400)))
        if size > 400:
            payload = (payload or b"\x00") * (size // max(len(payload), 1) + 1)
            payload = payload[:size]
    n = len(payload)
    encoding = draw(st.sampled_from([None, None, None, 16, 64]))
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    bit = 0x80 if masked else 0
    if encoding is None:
        encoding = 7 if n <= 125 else 16 if n <= 0xFFFF else 64
    if encoding == 7 and n <= 125:
        header = bytes((first, bit | n))
    elif encoding in (7, 16) and n <= 0xFFFF:
        header = struct.pack("!BBH", first, bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return header + payload
    key = draw(st.binary(min_size=4, max_size=4))
    return header + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@FUZZ
@given(st.lists(frames(), min_size=1, max_size=12), st.lists(st.integers(0, 1 << 20), max_size=40))
def test_fast_path_and_wsproto_agree(stream: list[bytes], cuts: list[int]) -> None:
    data = b"".join(stream)
    chunks = _cut(data, cuts)
    assert _trace(WebSocketProtocol(MAX_SIZE, fast_path=True), chunks) == _trace(
        WebSocketProtocol(MAX_SIZE, fast_path=False), chunks
    )


# -- handshakes ------------------------------------------------------------------------------

_HEADERS = [
    (b"Host", b"example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"Sec-WebSocket-Version", b"13"),
]
_ODD = [b"", b" ", b"\t", b"\r", b"\n", b"\r\n", b":", b"\x00", b"\xff", b"\x7f", b"GET", b"HTTP/1.0", b","]


@st.composite
def requests(draw) -> bytes:
    method = draw(st.sampled_from([b"GET", b"GET", b"POST", b"get", b"HEAD"]))
    target = draw(st.sampled_from([b"/echo", b"/", b"/a?b=c", b"http://h/x", b"*", b"/%00", b"/\xff"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"http/1.1"]))
    headers = list(_HEADERS)
    extra = draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [h for h, _ in _HEADERS] + [b"Origin", b"X-A", b"Content-Length", b"Transfer-Encoding"]
                ),
                st.sampled_from([b"", b"13", b"websocket", b"Upgrade, keep-alive", b"0", b"x y"]),
            ),
            max_size=3,
        )
    )
    headers += extra
    drop = draw(st.lists(st.integers(0, len(headers) - 1), max_size=2))
    headers = [h for i, h in enumerate(headers) if i not in drop]
    headers = draw(st.permutations(headers))
    lines = [method + b" " + target + b" " + version]
    for name, value in headers:
        name = name.lower() if draw(st.integers(0, 5)) == 0 else name
        sep = draw(st.sampled_from([b": ", b": ", b":", b" : ", b":  "]))
        lines.append(name + sep + value)
    text = b"\r\n".join(lines) + b"\r\n\r\n"
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(_ODD)) + text[at:]
    return text


def _outcome(data: bytes, cuts: list[int], fast_parse: bool, eof: bool) -> object:
    return outcome_of_pieces(_cut(data, cuts) + ([b""] if eof else []), fast_parse)


@FUZZ
@given(requests(), st.lists(st.integers(0, 4096), max_size=6), st.booleans())
def test_fast_request_parser_and_h11_agree(data: bytes, cuts: list[int], eof: bool) -> None:
    assert _outcome(data, cuts, True, eof) == _outcome(data, cuts, False, eof)


# -- permessage-deflate ------------------------------------------------------------------------
#
# With the extension the fast path is off, so the oracles are different: (1) a round trip —
# whatever a conforming client compresses (any offer, context takeover or not, messages
# compressed or not, fragmented, cut anywhere) arrives as the very messages it sent, and what we
# compress the client inflates back; (2) a differential — frames with corrupted or truncated
# deflate data give the same events, bytes, state and close code through our bounded extension
# as through wsproto's own PerMessageDeflate negotiated the same way.

_OFFERS = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; client_max_window_bits=9",
    "permessage-deflate; client_max_window_bits=12; server_max_window_bits=10",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; client_max_window_bits=15",
]


def _negotiated(offer: str, **settings_: int):
    from wsserver.protocol.deflate import negotiate_deflate, parse_extension_offer

    answer, ext = negotiate_deflate([offer], MAX_SIZE, **settings_)
    params = parse_extension_offer(answer)[1]
    return ext, dict(params)


def _client_frame(opcode: int, payload: bytes, fin: bool, rsv1: bool, key: bytes) -> bytes:
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n <= 125:
        header = bytes((first, 0x80 | n))
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


@st.composite
def deflate_sessions(draw):
    """(offer, [(text?, message bytes, compressed?, fragment sizes)], key)."""
    offer = draw(st.sampled_from(_OFFERS))
    messages = draw(
        st.lists(
            st.tuples(
                st.booleans(),
                st.one_of(
                    st.text(max_size=300).map(str.encode),
                    st.binary(max_size=300),
                    st.sampled_from([b"a" * 5000, bytes(20_000), b"abc" * 3000]),
                ),
                st.integers(0, 4).map(lambda n: n != 0),  # mostly compressed
                st.lists(st.integers(1, 400), max_size=3),
            ),
            min_size=1,
            max_size=6,
        )
    )
    key = draw(st.binary(min_size=4, max_size=4))
    return offer, messages, key


def _client_stream(params: dict, messages: list, key: bytes) -> bytes:
    import zlib

    bits = params.get("client_max_window_bits")
    wbits = int(bits) if bits not in (None, True) else 15
    takeover = "client_no_context_takeover" not in params
    compressor = zlib.compressobj(wbits=-max(wbits, 9))
    out = []
    for is_text, data, compressed, sizes in messages:
        if is_text:
            data = data.decode("utf-8", "replace").encode()
        body = data
        if compressed:
            if not takeover:
                compressor = zlib.compressobj(wbits=-max(wbits, 9))
            body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            body = body[:-4]
        pieces, pos = [], 0
        for size in sizes:
            if pos < len(body):
                pieces.append(body[pos : pos + size])
                pos += size
        pieces.append(body[pos:])
        for i, piece in enumerate(pieces):
            opcode = (0x1 if is_text else 0x2) if i == 0 else 0x0
            out.append(_client_frame(opcode, piece, i == len(pieces) - 1, compressed and i == 0, key))
    return b"".join(out)


@FUZZ
@given(
    deflate_sessions(),
    st.lists(st.integers(0, 1 << 20), max_size=30),
    st.sampled_from([(11, 11, 4), (15, 15, 8), (9, 9, 1)]),
)
def test_deflate_round_trip(session, cuts: list[int], ours) -> None:
    import zlib

    from wsserver.protocol import BinaryMessage, TextMessage

    offer, messages, key = session
    ext, params = _negotiated(offer, window_bits=ours[0], client_window_bits=ours[1], mem_level=ours[2])
    proto = WebSocketProtocol(MAX_SIZE, deflate=ext)
    got = []
    for chunk in _cut(_client_stream(params, messages, key), cuts):
        proto.receive_data(chunk)
        got += proto.events()
    expected = []
    for is_text, data, _, _ in messages:
        expected.append(("text", data.decode("utf-8", "replace")) if is_text else ("binary", data))
    assert [
        ("text", e.data) if isinstance(e, TextMessage) else ("binary", bytes(e.data))
        for e in got
        if isinstance(e, TextMessage | BinaryMessage)
    ] == expected
    assert proto.close_code is None and proto.data_to_send() == b""
    # And back: what we compress, a client inflates to the same messages.
    bits = params.get("server_max_window_bits")
    inflater = zlib.decompressobj(wbits=-int(bits) if bits not in (None, True) else -15)
    for is_text, data, _, _ in messages:
        message = data.decode("utf-8", "replace") if is_text else data
        proto.send_text(message) if is_text else proto.send_binary(message)
        wire = proto.data_to_send()
        assert wire[1] & 0x80 == 0  # a server does not mask
        length, at = wire[1] & 0x7F, 2
        if length == 126:
            length, at = struct.unpack_from("!H", wire, 2)[0], 4
        elif length == 127:
            length, at = struct.unpack_from("!Q", wire, 2)[0], 10
        assert at + length == len(wire)
        payload = wire[at:]
        if wire[0] & 0x40:  # RSV1: compressed (a message may also go out as it is)
            if "server_no_context_takeover" in params:
                inflater = zlib.decompressobj(wbits=inflater_wbits(params))
            payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
        assert payload == (message.encode() if is_text else message)


def inflater_wbits(params: dict) -> int:
    bits = params.get("server_max_window_bits")
    return -int(bits) if bits not in (None, True) else -15


@FUZZ
@given(
    deflate_sessions(),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
    st.integers(0, 1 << 16),
    st.lists(st.integers(0, 1 << 20), max_size=20),
)
def test_deflate_corruption_matches_wsproto(session, flips, truncate_at, cuts) -> None:
    from wsproto.extensions import PerMessageDeflate

    offer, messages, key = session
    ours, params = _negotiated(offer, window_bits=15, client_window_bits=15, mem_level=8)
    stock = PerMessageDeflate()
    stock.accept(offer)
    data = bytearray(_client_stream(params, messages, key))
    for at, value in flips:  # corrupt payload bytes (masked: the header stays readable mostly)
        if data:
            data[at % len(data)] ^= value
    data = bytes(data[: max(1, truncate_at % (len(data) + 1))])
    chunks = _cut(data, cuts)
    assert _trace(WebSocketProtocol(MAX_SIZE, deflate=ours), chunks) == _trace(
        WebSocketProtocol(MAX_SIZE, deflate=stock), chunks
    )
