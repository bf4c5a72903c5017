"""WebSocketProtocol: messages, control frames, limits and the closing handshake."""

from __future__ import annotations

import struct

import pytest
from wsproto.frame_protocol import FrameProtocol

from wsserver.protocol import (
    BinaryMessage,
    CloseReceived,
    Ping,
    Pong,
    ProtocolState,
    TextMessage,
    WebSocketProtocol,
)

from .test_protocol_frames import BINARY, CLOSE, CONT, PING, PONG, TEXT, close_frame, frame, server_frame

BOTH = pytest.mark.parametrize("fast", [True, False], ids=["fast", "wsproto"])


def feed(proto: WebSocketProtocol, data: bytes, chunk: int | None = None) -> list:
    if chunk is None:
        proto.receive_data(data)
    else:
        for i in range(0, len(data), chunk):
            proto.receive_data(data[i : i + chunk])
    return proto.events()


def close_code_of(wire: bytes) -> int | None:
    """The status code of the (single, unmasked) close frame ``wire``."""
    assert wire[0] == 0x88
    return struct.unpack("!H", wire[2:4])[0] if wire[1] >= 2 else None


# -- messages --------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_text_binary_and_fragmented_messages(fast, chunk):
    proto = WebSocketProtocol(fast_path=fast)
    stream = (
        frame(TEXT, "héllo")
        + frame(BINARY, b"\x00\xff")
        + frame(TEXT, "frag", fin=False)
        + frame(PING, b"p")
        + frame(CONT, "mé".encode()[:2], fin=False)
        + frame(CONT, "mé".encode()[2:])
        + frame(TEXT, "")
    )
    assert feed(proto, stream, chunk) == [
        TextMessage("héllo"),
        BinaryMessage(b"\x00\xff"),
        Ping(b"p"),
        TextMessage("fragmé"),
        TextMessage(""),
    ]
    assert proto.data_to_send() == server_frame(PONG, b"p")
    assert proto.state is ProtocolState.OPEN


@BOTH
def test_pong_event_and_no_reply(fast):
    proto = WebSocketProtocol(fast_path=fast)
    assert feed(proto, frame(PONG, b"x")) == [Pong(b"x")]
    assert proto.data_to_send() == b""


@BOTH
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_outgoing_frames_are_wsproto_bytes(fast, size):
    proto = WebSocketProtocol(fast_path=fast)
    reference = FrameProtocol(client=False, extensions=[])
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    proto.send_binary(payload)
    proto.send_text("é" * (size // 2))
    assert proto.data_to_send() == reference.send_data(payload) + reference.send_data("é" * (size // 2))


def test_data_to_send_drains():
    proto = WebSocketProtocol()
    proto.send_text("a")
    proto.send_ping(b"hi")
    assert proto.data_to_send() == server_frame(TEXT, b"a") + server_frame(PING, b"hi")
    assert proto.data_to_send() == b""
    assert proto.events() == []


# -- limits and failures -----------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("chunk", [None, 3])
def test_message_too_big_single_frame(fast, chunk):
    proto = WebSocketProtocol(max_message_size=100, fast_path=fast)
    assert feed(proto, frame(BINARY, b"x" * 100), chunk) == [BinaryMessage(b"x" * 100)]
    events = feed(proto, frame(BINARY, b"x" * 101) + frame(TEXT, "after"), chunk)
    assert events == [CloseReceived(1009, "message too big")]
    assert close_code_of(proto.data_to_send()) == 1009
    assert proto.state is ProtocolState.CLOSING
    assert proto.close_code == 1009 and proto.failed


@BOTH
def test_message_too_big_across_fragments_fails_at_the_header(fast):
    proto = WebSocketProtocol(max_message_size=1000, fast_path=fast)
    feed(proto, frame(TEXT, "a" * 600, fin=False))
    assert proto.events() == []
    # The second fragment declares 5000 more bytes: refused once its header (with the key) is in,
    # before any of its payload is read (as python-websockets does).
    second = frame(CONT, "a" * 5000)
    header = 8  # 2 + 16-bit length + mask
    proto.receive_data(second[: header - 1])
    assert proto.events() == []
    proto.receive_data(second[header - 1 : header])
    assert proto.events() == [CloseReceived(1009, "message too big")]
    proto.receive_data(second[header:])
    assert proto.events() == []


@BOTH
def test_message_within_limit_across_fragments_is_not_refused_early(fast):
    proto = WebSocketProtocol(max_message_size=1000, fast_path=fast)
    feed(proto, frame(TEXT, "a" * 600, fin=False))
    second = frame(CONT, "a" * 400)
    proto.receive_data(second[:20])
    assert proto.events() == []
    proto.receive_data(second[20:])
    assert proto.events() == [TextMessage("a" * 1000)]


@BOTH
def test_oversized_declared_frame_is_never_buffered(fast):
    proto = WebSocketProtocol(max_message_size=1 << 20, fast_path=fast)
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 40) + b"\x00\x00\x00\x00"
    proto.receive_data(header)
    chunk = b"\x00" * 65536
    for _ in range(17):
        proto.receive_data(chunk)
        if proto.failed:
            break
    assert proto.events() == [CloseReceived(1009, "message too big")]
    assert len(proto._parts) == 0


@BOTH
@pytest.mark.parametrize(
    "stream",
    [
        frame(TEXT, b"ok\xff"),  # invalid start byte
        frame(TEXT, b"\xed\xa0\x80"),  # a surrogate
        frame(TEXT, b"\xc3", fin=False) + frame(CONT, b"\x28"),  # broken sequence across frames
        frame(TEXT, b"ab\xe2\x82", fin=True),  # truncated at the end of the message
        close_frame(1000, b"\xff"),  # close reason
    ],
    ids=["start-byte", "surrogate", "split", "truncated", "close-reason"],
)
def test_invalid_utf8_closes_1007(fast, stream):
    proto = WebSocketProtocol(fast_path=fast)
    assert feed(proto, stream) == [CloseReceived(1007, "invalid frame payload data")]
    assert close_code_of(proto.data_to_send()) == 1007


@BOTH
def test_utf8_split_across_fragments_is_valid(fast):
    proto = WebSocketProtocol(fast_path=fast)
    euro = "€".encode()
    stream = frame(TEXT, euro[:1], fin=False) + frame(CONT, euro[1:2], fin=False) + frame(CONT, euro[2:])
    assert feed(proto, stream, 1) == [TextMessage("€")]


@BOTH
@pytest.mark.parametrize(
    "stream",
    [
        frame(TEXT, "x", masked=False),
        *[frame(op, b"x") for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)],
        *[frame(TEXT, "x", rsv=bit) for bit in (4, 2, 1)],
        frame(PING, b"x", fin=False),
        frame(PING, b"x" * 126),
        frame(CONT, b"x"),
        frame(TEXT, "a", fin=False) + frame(TEXT, "b"),
        frame(TEXT, "x", encoding=16),
        frame(BINARY, b"x" * 200, encoding=64),
        struct.pack("!BBQ", 0x82, 0xFF, 1 << 63) + b"\x00" * 4,
        close_frame(None)[:1] + b"\x81" + b"\x00" * 4 + b"x",  # close with a 1-byte payload
        *[close_frame(code) for code in (0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535)],
    ],
)
def test_protocol_errors_close_1002(fast, stream):
    proto = WebSocketProtocol(fast_path=fast)
    assert feed(proto, stream) == [CloseReceived(1002, "protocol error")]
    assert close_code_of(proto.data_to_send()) == 1002
    assert proto.state is ProtocolState.CLOSING
    assert proto.error  # the detail, for logs
    # Nothing more is parsed or produced after a failure.
    proto.receive_data(frame(TEXT, "late") + close_frame(1000))
    assert proto.events() == []
    assert proto.data_to_send() == b""
    proto.receive_data(b"")
    assert proto.events() == []
    assert proto.state is ProtocolState.CLOSED
    assert proto.close_code == 1002


# -- the closing handshake -------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4999])
def test_peer_close_is_echoed(fast, code):
    proto = WebSocketProtocol(fast_path=fast)
    events = feed(proto, frame(TEXT, "last") + close_frame(code, "bye") + frame(TEXT, "ignored"))
    assert events == [TextMessage("last"), CloseReceived(code, "bye")]
    assert proto.data_to_send() == server_frame(CLOSE, struct.pack("!H", code))
    assert proto.state is ProtocolState.CLOSED
    assert proto.close_code == code and not proto.failed
    proto.send_text("too late")
    proto.send_close()
    assert proto.data_to_send() == b""


@BOTH
def test_peer_close_without_code(fast):
    proto = WebSocketProtocol(fast_path=fast)
    assert feed(proto, close_frame(None)) == [CloseReceived(1005, "")]
    assert proto.data_to_send() == server_frame(CLOSE)  # an empty close answers an empty close
    assert proto.close_code == 1005


def test_we_close_first_then_peer_replies():
    proto = WebSocketProtocol()
    proto.send_close(1001, "going away")
    assert proto.state is ProtocolState.CLOSING
    assert proto.data_to_send() == server_frame(CLOSE, struct.pack("!H", 1001) + b"going away")
    proto.send_close(1000)  # no-op
    proto.send_text("dropped")
    assert proto.data_to_send() == b""
    # Messages still in flight from the peer are delivered; pings get no pong any more.
    events = feed(proto, frame(TEXT, "in flight") + frame(PING, b"p") + close_frame(1001))
    assert events == [TextMessage("in flight"), Ping(b"p"), CloseReceived(1001, "")]
    assert proto.data_to_send() == b""
    assert proto.state is ProtocolState.CLOSED
    assert proto.close_code == 1001


def test_send_close_local_only_codes_become_1000():
    proto = WebSocketProtocol()
    proto.send_close(1006)
    assert close_code_of(proto.data_to_send()) == 1000


def test_send_close_without_code():
    proto = WebSocketProtocol()
    proto.send_close(None)
    assert proto.data_to_send() == server_frame(CLOSE)


@BOTH
@pytest.mark.parametrize("eof", [b"", None])
def test_eof_without_close_is_1006_once(fast, eof):
    proto = WebSocketProtocol(fast_path=fast)
    proto.receive_data(frame(TEXT, "partial message", fin=False) + frame(TEXT, "x")[:3])
    proto.receive_data(eof)
    proto.receive_data(eof)
    assert proto.events() == [CloseReceived(1006, "")]
    assert proto.state is ProtocolState.CLOSED
    assert proto.close_code == 1006
    assert proto.data_to_send() == b""


def test_eof_after_our_close_reports_1006():
    proto = WebSocketProtocol()
    proto.send_close()
    proto.receive_data(b"")
    assert proto.events() == [CloseReceived(1006, "")]
    assert proto.state is ProtocolState.CLOSED and proto.close_code == 1006


def test_eof_after_peer_close_changes_nothing():
    proto = WebSocketProtocol()
    proto.receive_data(close_frame(1000))
    proto.receive_data(b"")
    assert proto.events() == [CloseReceived(1000, "")]
    assert proto.close_code == 1000


def test_ping_payload_limit_and_fast_path_switch():
    with pytest.raises(ValueError):
        WebSocketProtocol().send_ping(b"x" * 126)
    with pytest.raises(ValueError):
        WebSocketProtocol(max_message_size=0)
    assert WebSocketProtocol(fast_path=False).fast_path is False


def test_fast_path_resumes_after_control_frames_and_fragments():
    proto = WebSocketProtocol()
    proto.receive_data(frame(TEXT, "a", fin=False))
    assert not proto._fast_ready
    proto.receive_data(frame(CONT, "b") + frame(TEXT, "c"))
    assert proto._fast_ready
    proto.receive_data(frame(PING) + frame(TEXT, "d"))
    assert proto._fast_ready
    # A simple frame cut by the read stays on the fast path: collected, then parsed here.
    proto.receive_data(frame(TEXT, "e")[:4])
    assert proto._fast_ready and proto.bytes_wanted() == 2  # the rest of its masking key
    proto.receive_data(frame(TEXT, "e")[4:])
    assert proto._fast_ready and proto.bytes_wanted() == 0
    assert [e for e in proto.events() if not isinstance(e, Ping)] == [
        TextMessage("ab"),
        TextMessage("c"),
        TextMessage("d"),
        TextMessage("e"),
    ]
