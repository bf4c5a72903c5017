"""Bounded permessage-deflate: negotiation, inflation limits, the compression bomb."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest

from wsserver.protocol import BinaryMessage, CloseReceived, Ping, TextMessage, WebSocketProtocol
from wsserver.protocol.deflate import BoundedPerMessageDeflate, negotiate_deflate, parse_extension_offer

from .test_protocol_frames import BINARY, CONT, PING, TEXT, frame

MIB = 1 << 20


def deflate_message(data: bytes, wbits: int = 15, compressor=None) -> bytes:
    """A message body as an RFC 7692 sender makes it (sync flush, tail stripped)."""
    compressor = compressor or zlib.compressobj(wbits=-wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def deflate_protocol(max_message_size: int = MIB, offer: str = "permessage-deflate") -> WebSocketProtocol:
    negotiated = negotiate_deflate([offer], max_message_size)
    assert negotiated is not None
    _, ext = negotiated
    return WebSocketProtocol(max_message_size, deflate=ext)


# -- negotiation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        (["permessage-deflate"], "permessage-deflate"),
        (["permessage-deflate; client_max_window_bits"], "permessage-deflate"),
        (["permessage-deflate; client_max_window_bits=10"], "permessage-deflate; client_max_window_bits=10"),
        (
            ['permessage-deflate; client_max_window_bits="12"'],
            "permessage-deflate; client_max_window_bits=12",
        ),
        (["permessage-deflate; server_max_window_bits=12"], "permessage-deflate; server_max_window_bits=12"),
        (
            ["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        # The first acceptable offer wins; unacceptable ones are skipped (RFC 7692 §7.1).
        (
            [
                "permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; unknown_param",
                "permessage-deflate; client_max_window_bits; client_max_window_bits",
                "permessage-deflate; client_max_window_bits=16",
                "permessage-deflate; server_max_window_bits",
                "permessage-deflate; server_no_context_takeover=1",
                "x-webkit-deflate-frame",
                "permessage-deflate; client_max_window_bits=9",
            ],
            "permessage-deflate; client_max_window_bits=9",
        ),
        (["x-webkit-deflate-frame"], None),
        (["permessage-deflate; client_max_window_bits=abc"], None),
        ([], None),
    ],
)
def test_negotiation(offers, answer):
    negotiated = negotiate_deflate(offers, MIB)
    assert (negotiated and negotiated[0]) == answer
    if negotiated:
        assert negotiated[1].enabled()


def test_client_max_window_bits_sets_the_inflater_window():
    _, ext = negotiate_deflate(["permessage-deflate; client_max_window_bits=10"], MIB)
    assert ext.client_max_window_bits == 10
    _, ext = negotiate_deflate(["permessage-deflate; client_max_window_bits"], MIB)
    assert ext.client_max_window_bits == 15
    _, ext = negotiate_deflate(["permessage-deflate; client_max_window_bits=8"], MIB)
    assert ext.client_max_window_bits == 9  # zlib's raw deflate really uses 9 for 8


def test_parse_extension_offer():
    assert parse_extension_offer('Permessage-Deflate ; A ; b = "3"') == (
        "permessage-deflate",
        [("a", None), ("b", "3")],
    )
    assert parse_extension_offer("") is None
    assert parse_extension_offer("permessage-deflate; =3") is None


# -- inflation ---------------------------------------------------------------------------------


def test_compressed_messages_and_context_takeover():
    proto = deflate_protocol()
    compressor = zlib.compressobj(wbits=-15)
    text = "takeover " * 100
    stream = b"".join(
        frame(TEXT, deflate_message(text.encode(), compressor=compressor), rsv=4) for _ in range(3)
    )
    stream += frame(BINARY, b"uncompressed")  # RSV1 clear: passed through
    assert proto.receive_data(stream) is None
    assert proto.events() == [TextMessage(text)] * 3 + [BinaryMessage(b"uncompressed")]


def test_fragmented_compressed_message_with_ping_between_fragments():
    # wsproto 1.3's PerMessageDeflate resets its message state on the ping and returns garbage.
    proto = deflate_protocol()
    body = deflate_message(b"hello world " * 50)
    stream = frame(TEXT, body[:7], fin=False, rsv=4) + frame(PING, b"p") + frame(CONT, body[7:])
    for i in range(len(stream)):
        proto.receive_data(stream[i : i + 1])
    assert proto.events() == [Ping(b"p"), TextMessage("hello world " * 50)]


def test_no_context_takeover_drops_the_inflater():
    proto = deflate_protocol(offer="permessage-deflate; client_no_context_takeover")
    for _ in range(2):
        proto.receive_data(frame(BINARY, deflate_message(b"abc" * 100), rsv=4))
        assert proto.events() == [BinaryMessage(b"abc" * 100)]
        assert proto.deflate._decompressor is None


@pytest.mark.parametrize("size", [MIB, MIB + 1])
def test_limit_counts_inflated_bytes(size):
    proto = deflate_protocol()
    proto.receive_data(frame(BINARY, deflate_message(b"\x00" * size), rsv=4))
    expected = [BinaryMessage(b"\x00" * size)] if size <= MIB else [CloseReceived(1009, "message too big")]
    assert proto.events() == expected


def test_limit_spans_fragments():
    proto = deflate_protocol(max_message_size=10_000)
    body = deflate_message(b"z" * 10_001)
    stream = (
        frame(BINARY, body[:4], fin=False, rsv=4) + frame(CONT, body[4:8], fin=False) + frame(CONT, body[8:])
    )
    proto.receive_data(stream)
    assert proto.events() == [CloseReceived(1009, "message too big")]


def test_corrupt_deflate_data_is_1007():
    proto = deflate_protocol()
    proto.receive_data(frame(TEXT, b"\xff\xff\xff\xff", rsv=4))
    assert proto.events() == [CloseReceived(1007, "invalid frame payload data")]


def test_rsv1_on_control_frame_is_1002():
    proto = deflate_protocol()
    proto.receive_data(frame(PING, b"x", rsv=4))
    assert proto.events() == [CloseReceived(1002, "protocol error")]


@pytest.mark.parametrize("chunk", [None, 1000])
def test_compression_bomb_never_expands(chunk):
    bomb = frame(BINARY, deflate_message(b"\x00" * (10 * MIB)), rsv=4)
    assert len(bomb) < 20_000  # ~10 KB on the wire
    proto = deflate_protocol(max_message_size=MIB)
    tracemalloc.start()
    try:
        if chunk is None:
            proto.receive_data(bomb)
        else:
            for i in range(0, len(bomb), chunk):
                proto.receive_data(bomb[i : i + chunk])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert proto.events() == [CloseReceived(1009, "message too big")]
    assert peak < 4 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_bounded_extension_repr_and_budget_reset():
    ext = BoundedPerMessageDeflate(100)
    assert "max_message_size=100" in repr(ext)
    proto = WebSocketProtocol(100, deflate=ext)
    for _ in range(3):  # each message gets a fresh budget
        proto.receive_data(frame(BINARY, deflate_message(b"q" * 100), rsv=4))
        assert proto.events() == [BinaryMessage(b"q" * 100)]
