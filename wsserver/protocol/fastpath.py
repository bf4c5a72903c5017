"""The plain-Python fast path for the common frame (see ``docs/protocol.md`` and perf-notes).

wsproto spends ~9 µs of Python per small frame (generator chains, buffer copies, three
namedtuples, enum lookups, extension hooks, a new incremental UTF-8 decoder per message). Most
frames a server receives are the simplest kind: one complete, unfragmented (FIN=1), masked
TEXT or BINARY frame with RSV bits clear. ``parse_frames`` takes exactly those straight from
the input bytes and stops at the first frame that is anything else; the caller hands that frame
to wsproto. It enforces what wsproto would enforce for such a frame: the size limit (1009) and
UTF-8 validity (1007, via the strict ``bytes.decode``). Masking, RSV, opcode and length-encoding
rules are enforced by *not* taking a frame that breaks them: wsproto then rejects it.

A simple frame that is not complete yet (a 64 KiB message arrives in several reads) is not
handed to wsproto either: ``pending_frame_size`` says how many header bytes to collect, then a
``PartialFrame`` unmasks each piece of payload as it arrives (the C ``_speedups`` when built,
eight bytes at a time; else the pure-Python lanes below) instead of wsproto's per-byte-lane
Python masker, validating text incrementally so bad UTF-8 fails as early as with wsproto. A
header declaring more than ``max_size`` fails at once (1009), before any payload is buffered.

``build_frame`` writes the server's (unmasked, uncompressed) frames byte-for-byte as wsproto's
``FrameProtocol._serialize_frame`` does.
"""

from __future__ import annotations

import codecs
import struct
from typing import Any

from ._wsproto_compat import XOR_TABLES
from .close_codes import CloseCode
from .events import BinaryMessage, Event, TextMessage

__all__ = [
    "FIN_BINARY",
    "FIN_TEXT",
    "HEADER_INCOMPLETE",
    "NOT_SIMPLE",
    "PAYLOAD_ARRIVING",
    "SPEEDUPS",
    "TOO_BIG",
    "PartialFrame",
    "build_frame",
    "control_frame_end",
    "mask",
    "parse_frames",
    "pending_frame_size",
    "start_partial",
    "unmask",
    "unmask_at",
]

# First header byte = FIN | RSV1..3 | opcode. The fast path takes only these two values.
FIN_TEXT = 0x81  # FIN, RSV clear, opcode 0x1
FIN_BINARY = 0x82  # FIN, RSV clear, opcode 0x2
FIN_PING = 0x89
FIN_PONG = 0x8A
MASK_BIT = 0x80  # second header byte: MASK | 7-bit length
LEN_16 = 126  # 7-bit length values announcing an extended length
LEN_64 = 127
MAX_LEN_7 = 125
MAX_LEN_16 = 0xFFFF
MASK_SIZE = 4
MAX_CONTROL_PAYLOAD = 125

# Up to this size an int-XOR unmask wins; above it bytes.translate on the four byte lanes does
# (measured on 3.11: 32 B 0.7 vs 1.6 µs, 1 KiB about equal, 64 KiB 243 vs 135 µs).
_INT_XOR_MAX = 1024
# _REPEAT[q] * mask == the mask repeated q times, as an int: cheaper than building the key bytes
# (~0.25 µs of a 0.8 µs unmask at 32 B). The table costs ~130 KB once per process.
_REPEAT = [int.from_bytes(b"\x00\x00\x00\x01" * q, "big") for q in range((_INT_XOR_MAX >> 2) + 2)]

_unpack_mask = struct.Struct("!I").unpack_from
_utf8_decoder = codecs.getincrementaldecoder("utf-8")
_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack

# The close codes the fast path can produce, as plain ints: returned from the per-frame loop.
MESSAGE_TOO_BIG = int(CloseCode.MESSAGE_TOO_BIG)
INVALID_DATA = int(CloseCode.INVALID_DATA)


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (RFC 6455 §5.3)."""
    n = len(payload)
    if n <= _INT_XOR_MAX:
        # Key = mask repeated ceil(n/4) times, its surplus trailing bytes shifted off (big-endian).
        key = (int.from_bytes(mask, "big") * _REPEAT[(n + 3) >> 2]) >> (((-n) & 3) << 3)
        return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    data = bytearray(payload)
    a, b, c, d = (XOR_TABLES[k] for k in mask)
    data[::4] = data[::4].translate(a)
    data[1::4] = data[1::4].translate(b)
    data[2::4] = data[2::4].translate(c)
    data[3::4] = data[3::4].translate(d)
    return bytes(data)


def _unmask_at_py(data: bytes, mask_pos: int, end: int) -> bytes:
    """``data[mask_pos + 4 : end]`` unmasked with the key at ``data[mask_pos : mask_pos + 4]``."""
    length = end - mask_pos - MASK_SIZE
    if length <= _INT_XOR_MAX:
        key: int = _unpack_mask(data, mask_pos)[0] * _REPEAT[(length + 3) >> 2]
        return (
            int.from_bytes(data[mask_pos + MASK_SIZE : end], "big") ^ (key >> (((-length) & 3) << 3))
        ).to_bytes(length, "big")
    return unmask(data[mask_pos + MASK_SIZE : end], data[mask_pos : mask_pos + MASK_SIZE])


def _mask_py(data: bytes, start: int, end: int, key: bytes, offset: int) -> bytes:
    """``data[start:end]`` XOR ``key``, as if the slice began ``offset`` bytes into the payload."""
    r = offset & 3
    return unmask(data[start:end], key[r:] + key[:r]) if end > start else b""


try:  # the optional C accelerator (setup.py builds it where a compiler exists)
    from ._speedups import mask
    from ._speedups import unmask as unmask_at
except ImportError:  # pragma: no cover - exercised by the fallback test
    unmask_at = _unmask_at_py
    mask = _mask_py

#: True when the C masker is in use (``wsserver --version`` says which).
SPEEDUPS = unmask_at is not _unmask_at_py


def parse_frames(data: bytes, pos: int, max_size: int, events: list[Event]) -> tuple[int, int]:
    """Parse the simple frames of ``data`` from ``pos``; append their messages to ``events``.

    Returns ``(pos, 0)`` where the first frame not taken starts (``len(data)`` if all were), or
    ``(pos, close_code)`` if the frame at ``pos`` must fail the connection.
    """
    end_of_data = len(data)
    while end_of_data - pos >= 6:  # the smallest masked frame: 2 header + 4 mask bytes
        first = data[pos]
        if first != FIN_TEXT and first != FIN_BINARY:
            break
        length = data[pos + 1] ^ MASK_BIT  # clears MASK; if MASK was clear the result is > 127
        if length <= MAX_LEN_7:
            start = pos + 2
        elif length == LEN_16:
            start = pos + 4
            if start > end_of_data:
                break
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length <= MAX_LEN_7:
                break  # non-minimal length: wsproto's error to raise
        elif length == LEN_64:
            start = pos + 10
            if start > end_of_data:
                break
            length = int.from_bytes(data[pos + 2 : start], "big")
            if length <= MAX_LEN_16 or length >> 63:
                break
        else:
            break  # unmasked frame: wsproto fails it with 1002
        end = start + MASK_SIZE + length
        if end > end_of_data:
            break  # incomplete: wsproto buffers it
        if length > max_size:
            return pos, MESSAGE_TOO_BIG
        payload = unmask_at(data, start, end)
        if first == FIN_TEXT:
            try:
                events.append(TextMessage(payload.decode("utf-8")))
            except UnicodeDecodeError:
                return pos, INVALID_DATA
        else:
            events.append(BinaryMessage(payload))
        pos = end
    return pos, 0


# What pending_frame_size found at a position where parse_frames stopped.
NOT_SIMPLE = 0  # another kind of frame: wsproto takes it
TOO_BIG = 1  # declares more than max_size: fail with 1009 before any payload is read
HEADER_INCOMPLETE = 2  # collect ``size`` bytes from pos (the header so far known) and ask again
PAYLOAD_ARRIVING = 3  # the header (``size`` bytes with the masking key) is in: start_partial


def pending_frame_size(data: bytes, pos: int, max_size: int) -> tuple[int, int]:
    """``(what, size)`` for the incomplete frame at ``pos``, where ``parse_frames`` stopped.

    Only a simple frame (FIN, RSV clear, TEXT or BINARY, masked, minimally encoded length) is
    taken here; the checks fall at the same bytes as wsproto's, so both paths fail on the same
    read: the length rules once the length bytes are in, the size limit once the key is in too.
    """
    avail = len(data) - pos
    first = data[pos]
    if first != FIN_TEXT and first != FIN_BINARY:
        return NOT_SIMPLE, 0
    if avail < 2:
        return HEADER_INCOMPLETE, 2
    length = data[pos + 1] ^ MASK_BIT
    if length <= MAX_LEN_7:
        header = 2
    elif length == LEN_16:
        header = 4
    elif length == LEN_64:
        header = 10
    else:
        return NOT_SIMPLE, 0  # unmasked: wsproto fails it with 1002
    if avail < header:
        return HEADER_INCOMPLETE, header
    if header == 4:
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length <= MAX_LEN_7:
            return NOT_SIMPLE, 0
    elif header == 10:
        length = int.from_bytes(data[pos + 2 : pos + 10], "big")
        if length <= MAX_LEN_16 or length >> 63:
            return NOT_SIMPLE, 0
    if avail < header + MASK_SIZE:
        return HEADER_INCOMPLETE, header + MASK_SIZE
    if length > max_size:
        return TOO_BIG, 0
    return PAYLOAD_ARRIVING, header + MASK_SIZE


class PartialFrame:
    """A simple frame whose header is in but whose payload arrives over several reads.

    Each piece is unmasked as it comes (and, for text, fed to an incremental UTF-8 decoder, so
    an invalid byte fails the connection on the read that brought it, as with wsproto); the
    message is assembled once the last byte is in.
    """

    __slots__ = ("decoder", "key", "offset", "parts", "remaining", "text")

    def __init__(self, text: bool, key: bytes, length: int) -> None:
        self.text = text
        self.key = key
        self.offset = 0
        self.remaining = length
        self.parts: list[Any] = []  # str pieces for text, bytes for binary
        self.decoder = _utf8_decoder() if text else None

    def feed(self, data: bytes, pos: int) -> int:
        """Take this frame's bytes from ``data[pos:]``; returns where the rest of ``data`` starts.

        Raises UnicodeDecodeError on invalid UTF-8 in a text frame.
        """
        take = min(len(data) - pos, self.remaining)
        piece = mask(data, pos, pos + take, self.key, self.offset)
        self.offset += take
        self.remaining -= take
        if self.decoder is not None:
            piece = self.decoder.decode(piece, not self.remaining)
        if piece:
            self.parts.append(piece)
        return pos + take

    def message(self) -> TextMessage | BinaryMessage:
        parts = self.parts
        if self.text:
            return TextMessage(parts[0] if len(parts) == 1 else "".join(parts))
        return BinaryMessage(parts[0] if len(parts) == 1 else b"".join(parts))


def start_partial(data: bytes, pos: int) -> PartialFrame:
    """The PartialFrame of the frame at ``pos``, whose whole header ``pending_frame_size`` saw."""
    length = data[pos + 1] ^ MASK_BIT
    start = pos + 2
    if length == LEN_16:
        length = (data[pos + 2] << 8) | data[pos + 3]
        start = pos + 4
    elif length == LEN_64:
        length = int.from_bytes(data[pos + 2 : pos + 10], "big")
        start = pos + 10
    return PartialFrame(data[pos] == FIN_TEXT, data[start : start + MASK_SIZE], length)


def control_frame_end(data: bytes, pos: int) -> int:
    """End of a complete, masked ping or pong frame at ``pos`` (else -1).

    Such a frame is handed to wsproto alone, so the fast path resumes right after it: a ping
    between pipelined messages does not push the rest of the read onto the slow path.
    """
    first = data[pos]
    if (first != FIN_PING and first != FIN_PONG) or pos + 2 > len(data):
        return -1
    length = data[pos + 1] ^ MASK_BIT
    if length > MAX_CONTROL_PAYLOAD:
        return -1  # unmasked or too long: let wsproto fail it with the rest of the input
    end = pos + 2 + MASK_SIZE + length
    return end if end <= len(data) else -1


def build_frame(first: int, payload: bytes) -> bytes:
    """A server frame (unmasked, uncompressed): ``first`` header byte, then the payload."""
    n = len(payload)
    if n <= MAX_LEN_7:
        return bytes((first, n)) + payload
    if n <= MAX_LEN_16:
        return _pack_16(first, LEN_16, n) + payload
    return _pack_64(first, LEN_64, n) + payload
