"""The plain-Python fast path for the common frame (see ``docs/protocol.md`` and perf-notes).

wsproto spends ~9 µs of Python per small frame (generator chains, buffer copies, three
namedtuples, enum lookups, extension hooks, a new incremental UTF-8 decoder per message). Most
frames a server receives are the simplest kind: one complete, unfragmented (FIN=1), masked
TEXT or BINARY frame with RSV bits clear. ``parse_frames`` takes exactly those straight from
the input bytes and stops at the first frame that is anything else; the caller hands that frame
to wsproto. It enforces what wsproto would enforce for such a frame: the size limit (1009) and
UTF-8 validity (1007, via the strict ``bytes.decode``). Masking, RSV, opcode and length-encoding
rules are enforced by *not* taking a frame that breaks them: wsproto then rejects it.

``build_frame`` writes the server's (unmasked, uncompressed) frames byte-for-byte as wsproto's
``FrameProtocol._serialize_frame`` does.
"""

from __future__ import annotations

import struct

from wsproto.frame_protocol import _XOR_TABLE

from .events import BinaryMessage, TextMessage

__all__ = ["FIN_BINARY", "FIN_TEXT", "build_frame", "control_frame_end", "parse_frames", "unmask"]

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
_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack

# Close codes the fast path can produce (same values as CloseCode).
MESSAGE_TOO_BIG = 1009
INVALID_FRAME_PAYLOAD_DATA = 1007


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (RFC 6455 §5.3)."""
    n = len(payload)
    if n <= _INT_XOR_MAX:
        # Key = mask repeated ceil(n/4) times, its surplus trailing bytes shifted off (big-endian).
        key = (int.from_bytes(mask, "big") * _REPEAT[(n + 3) >> 2]) >> (((-n) & 3) << 3)
        return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    data = bytearray(payload)
    a, b, c, d = (_XOR_TABLE[k] for k in mask)
    data[::4] = data[::4].translate(a)
    data[1::4] = data[1::4].translate(b)
    data[2::4] = data[2::4].translate(c)
    data[3::4] = data[3::4].translate(d)
    return bytes(data)


def parse_frames(data: bytes, pos: int, max_size: int, events: list) -> tuple[int, int]:
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
        if length <= _INT_XOR_MAX:  # unmask() inlined: this is the hot line of the server
            key = _unpack_mask(data, start)[0] * _REPEAT[(length + 3) >> 2]
            payload = (
                int.from_bytes(data[start + MASK_SIZE : end], "big") ^ (key >> (((-length) & 3) << 3))
            ).to_bytes(length, "big")
        else:
            payload = unmask(data[start + MASK_SIZE : end], data[start : start + MASK_SIZE])
        if first == FIN_TEXT:
            try:
                events.append(TextMessage(payload.decode("utf-8")))
            except UnicodeDecodeError:
                return pos, INVALID_FRAME_PAYLOAD_DATA
        else:
            events.append(BinaryMessage(payload))
        pos = end
    return pos, 0


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
