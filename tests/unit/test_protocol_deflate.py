"""Bounded permessage-deflate: negotiation, inflation limits, the compression bomb."""

from __future__ import annotations

import dataclasses
import inspect
import os
import tracemalloc
import zlib

import pytest

from wsserver.config import ConfigError, PortConfig, parse_config
from wsserver.protocol import BinaryMessage, CloseReceived, Ping, TextMessage, WebSocketProtocol
from wsserver.protocol.deflate import (
    DEFAULT_CLIENT_WINDOW_BITS,
    DEFAULT_MEM_LEVEL,
    DEFAULT_WINDOW_BITS,
    BoundedPerMessageDeflate,
    negotiate_deflate,
    parse_extension_offer,
)
from wsserver.protocol.handshake import Handshake

from .test_protocol_frames import BINARY, CONT, PING, TEXT, frame, open_protocol

MIB = 1 << 20
# The settings wsproto and zlib use unasked: the negotiation answers of the first table below.
ZLIB_DEFAULTS = {"window_bits": 15, "client_window_bits": 15, "mem_level": 8}


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
    negotiated = negotiate_deflate(offers, MIB, **ZLIB_DEFAULTS)
    assert (negotiated and negotiated[0]) == answer
    if negotiated:
        assert negotiated[1].enabled()


def test_client_max_window_bits_sets_the_inflater_window():
    _, ext = negotiate_deflate(["permessage-deflate; client_max_window_bits=10"], MIB)
    assert ext.client_max_window_bits == 10
    _, ext = negotiate_deflate(["permessage-deflate; client_max_window_bits"], MIB)
    assert ext.client_max_window_bits == DEFAULT_CLIENT_WINDOW_BITS
    _, ext = negotiate_deflate(["permessage-deflate; client_max_window_bits"], MIB, client_window_bits=15)
    assert ext.client_max_window_bits == 15
    _, ext = negotiate_deflate(["permessage-deflate; client_max_window_bits=8"], MIB)
    assert ext.client_max_window_bits == 9  # zlib's raw deflate really uses 9 for 8


# (offer, settings, answer, our compressor's window bits, our inflater's window bits)
PER_SETTING = [
    # The defaults, with the offer python-websockets' client and browsers send by default.
    (
        "permessage-deflate; client_max_window_bits",
        {},
        "permessage-deflate; client_max_window_bits=11",
        11,
        11,
    ),
    # No client_max_window_bits offered: we must not send it, and must inflate with 15 bits.
    ("permessage-deflate", {}, "permessage-deflate", 11, 15),
    ("permessage-deflate", {"client_window_bits": 9, "window_bits": 9}, "permessage-deflate", 9, 15),
    # Offered without a value: we ask for our setting; 15 means asking nothing.
    (
        "permessage-deflate; client_max_window_bits",
        {"client_window_bits": 9},
        "permessage-deflate; client_max_window_bits=9",
        11,
        9,
    ),
    ("permessage-deflate; client_max_window_bits", {"client_window_bits": 15}, "permessage-deflate", 11, 15),
    # Offered with a value: the smaller of it and our setting (RFC 7692 §7.1.2.2).
    (
        "permessage-deflate; client_max_window_bits=10",
        {},
        "permessage-deflate; client_max_window_bits=10",
        11,
        10,
    ),
    (
        "permessage-deflate; client_max_window_bits=14",
        {},
        "permessage-deflate; client_max_window_bits=11",
        11,
        11,
    ),
    (
        "permessage-deflate; client_max_window_bits=15",
        {"client_window_bits": 15},
        "permessage-deflate",
        11,
        15,
    ),
    # A client's server_max_window_bits caps our window; the answer is what we use (§7.1.2.1).
    (
        "permessage-deflate; server_max_window_bits=9",
        {},
        "permessage-deflate; server_max_window_bits=9",
        9,
        15,
    ),
    (
        "permessage-deflate; server_max_window_bits=13",
        {},
        "permessage-deflate; server_max_window_bits=11",
        11,
        15,
    ),
    (
        "permessage-deflate; server_max_window_bits=13",
        {"window_bits": 15},
        "permessage-deflate; server_max_window_bits=13",
        13,
        15,
    ),
    (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits",
        {"window_bits": 10, "client_window_bits": 12},
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12",
        10,
        12,
    ),
    (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits",
        {"client_window_bits": 10},
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10",
        11,
        10,
    ),
]


@pytest.mark.parametrize(("offer", "settings", "answer", "server_bits", "client_bits"), PER_SETTING)
def test_negotiation_per_setting(offer, settings, answer, server_bits, client_bits):
    negotiated = negotiate_deflate([offer], MIB, **settings)
    assert negotiated is not None
    header, ext = negotiated
    assert header == answer
    assert ext.server_max_window_bits == server_bits  # what our compressor uses
    assert ext.client_max_window_bits == client_bits  # what our inflater uses
    assert ext.mem_level == settings.get("mem_level", DEFAULT_MEM_LEVEL)
    if "client_max_window_bits" not in offer:
        assert "client_max_window_bits" not in header


@pytest.mark.parametrize(
    "settings", [{}, ZLIB_DEFAULTS, {"window_bits": 9, "client_window_bits": 9, "mem_level": 1}]
)
def test_server_max_window_bits_8_is_still_declined(settings):
    assert negotiate_deflate(["permessage-deflate; server_max_window_bits=8"], MIB, **settings) is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"window_bits": 8}, "window_bits must be 9..15, not 8"),
        ({"window_bits": 16}, "window_bits must be 9..15, not 16"),
        ({"client_window_bits": 8}, "client_window_bits must be 9..15, not 8"),
        ({"mem_level": 0}, "mem_level must be 1..9, not 0"),
        ({"mem_level": 10}, "mem_level must be 1..9, not 10"),
    ],
)
def test_negotiate_refuses_out_of_range_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        negotiate_deflate(["permessage-deflate"], MIB, **settings)


def test_defaults_agree_with_the_config_schema_and_the_handshake():
    fields = {f.name: f.default for f in dataclasses.fields(PortConfig)}
    assert fields["compression_window_bits"] == DEFAULT_WINDOW_BITS
    assert fields["compression_client_window_bits"] == DEFAULT_CLIENT_WINDOW_BITS
    assert fields["compression_mem_level"] == DEFAULT_MEM_LEVEL
    accept = inspect.signature(Handshake.accept).parameters
    assert accept["compression_window_bits"].default == DEFAULT_WINDOW_BITS
    assert accept["compression_client_window_bits"].default == DEFAULT_CLIENT_WINDOW_BITS
    assert accept["compression_mem_level"].default == DEFAULT_MEM_LEVEL


# -- configuration -----------------------------------------------------------------------------

PORT = '[[ports]]\nalias = "a"\nport = 8080\n'


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("compression_window_bits = 8", "ports[0].compression_window_bits = 8: must be an integer 9..15"),
        ("compression_window_bits = 16", "ports[0].compression_window_bits = 16: must be an integer 9..15"),
        (
            "compression_client_window_bits = 8",
            "ports[0].compression_client_window_bits = 8: must be an integer 9..15",
        ),
        (
            'compression_client_window_bits = "12"',
            'ports[0].compression_client_window_bits = "12": must be an integer 9..15',
        ),
        ("compression_mem_level = 0", "ports[0].compression_mem_level = 0: must be an integer 1..9"),
        ("compression_mem_level = 10", "ports[0].compression_mem_level = 10: must be an integer 1..9"),
        ("compression_mem_level = 4.5", "ports[0].compression_mem_level = 4.5: must be an integer 1..9"),
    ],
)
def test_config_refuses_out_of_range_compression_settings(line, error):
    with pytest.raises(ConfigError) as info:
        parse_config(PORT + line + "\n", "wsserver.toml")
    assert info.value.errors == [f"wsserver.toml: {error}"]


def test_config_compression_settings():
    port = parse_config(PORT, "wsserver.toml").ports[0]
    assert (
        port.compression_window_bits,
        port.compression_client_window_bits,
        port.compression_mem_level,
    ) == (DEFAULT_WINDOW_BITS, DEFAULT_CLIENT_WINDOW_BITS, DEFAULT_MEM_LEVEL)
    text = (
        PORT + "compression_window_bits = 15\ncompression_client_window_bits = 9\ncompression_mem_level = 9\n"
    )
    port = parse_config(text, "wsserver.toml").ports[0]
    assert (
        port.compression_window_bits,
        port.compression_client_window_bits,
        port.compression_mem_level,
    ) == (15, 9, 9)


# -- the chosen windows on the wire --------------------------------------------------------------


def server_frames(wire: bytes) -> list[tuple[int, bytes]]:
    """(first header byte, payload) of each unmasked frame the server wrote."""
    frames = []
    while wire:
        length, pos = wire[1] & 0x7F, 2
        if length == 126:
            length, pos = int.from_bytes(wire[2:4], "big"), 4
        elif length == 127:
            length, pos = int.from_bytes(wire[2:10], "big"), 10
        frames.append((wire[0], wire[pos : pos + length]))
        wire = wire[pos + length :]
    return frames


def test_contexts_are_created_on_the_first_compressed_message_in_their_direction():
    proto = open_protocol(offer="permessage-deflate; client_max_window_bits")
    ext = proto.deflate
    assert ext._compressor is None and ext._decompressor is None  # an idle connection holds neither
    proto.receive_data(frame(TEXT, b"plain"))  # RSV1 clear: no inflater needed
    assert proto.events() == [TextMessage("plain")]
    proto.send_ping(b"p")  # control frames are never compressed
    assert ext._compressor is None and ext._decompressor is None
    proto.receive_data(frame(TEXT, deflate_message(b"squeezed", wbits=11), rsv=4))
    assert proto.events() == [TextMessage("squeezed")]
    assert ext._decompressor is not None and ext._compressor is None
    proto.send_text("out")
    assert ext._compressor is not None


@pytest.mark.parametrize(
    ("window_bits", "mem_level"),
    [(DEFAULT_WINDOW_BITS, DEFAULT_MEM_LEVEL), (9, 1), (12, 5), (15, 8), (15, 9)],
)
def test_compressor_uses_the_window_and_mem_level(window_bits, mem_level):
    proto = open_protocol(
        offer="permessage-deflate", compression_window_bits=window_bits, compression_mem_level=mem_level
    )
    assert proto.extensions_header == "permessage-deflate"
    reference = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits, mem_level)
    inflater = zlib.decompressobj(-window_bits)  # a peer told our window inflates everything we send
    block = os.urandom(3000)  # repeated 3000 bytes apart: a window below 12 bits cannot reach back
    messages = [block * 3, b"abc" * 2000, block + os.urandom(500) + block]  # context taken over
    for message in messages:
        proto.send_binary(message)
        ((first, payload),) = server_frames(proto.data_to_send())
        assert first == 0x80 | 0x40 | 0x2  # FIN, RSV1, binary
        assert payload == deflate_message(message, compressor=reference)  # same window and memLevel
        assert inflater.decompress(payload + b"\x00\x00\xff\xff") == message


def test_wider_window_would_not_inflate_in_a_narrow_one():
    # The checks above mean something: a 15-bit sender's reference 3000 bytes back into the
    # previous message does not inflate in an 11-bit window (zlib keeps only 2 KiB between calls).
    block = os.urandom(3000)
    compressor, inflater = zlib.compressobj(wbits=-15), zlib.decompressobj(-11)
    assert inflater.decompress(deflate_message(block, compressor=compressor) + b"\x00\x00\xff\xff") == block
    with pytest.raises(zlib.error, match="too far back"):
        inflater.decompress(deflate_message(block, compressor=compressor) + b"\x00\x00\xff\xff")


@pytest.mark.parametrize(
    ("offer", "settings", "client_bits"),
    [
        ("permessage-deflate; client_max_window_bits", {}, DEFAULT_CLIENT_WINDOW_BITS),
        ("permessage-deflate; client_max_window_bits", {"compression_client_window_bits": 9}, 9),
        ("permessage-deflate; client_max_window_bits=10", {"compression_client_window_bits": 12}, 10),
        ("permessage-deflate", {"compression_client_window_bits": 9}, 15),  # not offered: 15
        (
            "permessage-deflate; client_max_window_bits; client_no_context_takeover",
            {},
            DEFAULT_CLIENT_WINDOW_BITS,
        ),
    ],
)
def test_round_trip_with_the_negotiated_windows(offer, settings, client_bits):
    proto = open_protocol(offer=offer, **settings)
    answer = dict(parse_extension_offer(proto.extensions_header)[1])
    assert answer.get("client_max_window_bits", "15") == str(client_bits)
    no_takeover = "client_no_context_takeover" in answer
    client = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -client_bits, 8)
    from_server = zlib.decompressobj(-DEFAULT_WINDOW_BITS)
    block = os.urandom(2500)
    for i in range(4):
        message = block + f" message {i} ".encode() * 50 + block
        if no_takeover:
            client = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -client_bits, 8)
        proto.receive_data(frame(BINARY, deflate_message(message, compressor=client), rsv=4))
        assert proto.events() == [BinaryMessage(message)]
        proto.send_binary(message)  # the echo
        ((_, payload),) = server_frames(proto.data_to_send())
        assert from_server.decompress(payload + b"\x00\x00\xff\xff") == message


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
    assert "max_message_size=100" in repr(ext) and f"mem_level={DEFAULT_MEM_LEVEL}" in repr(ext)
    with pytest.raises(ValueError, match=r"mem_level must be 1\.\.9"):
        BoundedPerMessageDeflate(100, mem_level=0)
    proto = WebSocketProtocol(100, deflate=ext)
    for _ in range(3):  # each message gets a fresh budget
        proto.receive_data(frame(BINARY, deflate_message(b"q" * 100), rsv=4))
        assert proto.events() == [BinaryMessage(b"q" * 100)]
