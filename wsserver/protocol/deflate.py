"""Bounded permessage-deflate (RFC 7692) on top of wsproto's extension.

wsproto's ``PerMessageDeflate`` inflates without a limit: a 10 KB frame of compressed zeros
becomes 10 MB in memory before anyone can count it. This subclass inflates with
``decompressobj.decompress(data, max_length)`` bounded by what is left of the message budget,
so a compression bomb is refused (close 1009) after at most ``max_message_size + 1`` bytes of
output. It also parses offers itself: wsproto's ``accept`` ignores unknown or duplicate
parameters (RFC 7692 §7.1 says decline) and raises on quoted values.

Memory: zlib's deflate state is about ``(1 << (wbits + 2)) + (1 << (mem_level + 9))`` bytes and its
inflate state about ``1 << wbits`` plus 7 KiB, so the compressor's window bits and memLevel and the
window we ask the client to use are port settings (``compression_window_bits``,
``compression_mem_level``, ``compression_client_window_bits``; see docs/protocol.md for the figures
behind the defaults). Both contexts are created on the first compressed message in their direction,
so a connection that never sends or receives one holds neither.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from ._wsproto_compat import PerMessageDeflateBase

__all__ = [
    "DEFAULT_CLIENT_WINDOW_BITS",
    "DEFAULT_MEM_LEVEL",
    "DEFAULT_WINDOW_BITS",
    "EXTENSION_NAME",
    "BoundedPerMessageDeflate",
    "negotiate_deflate",
    "parse_extension_offer",
]

EXTENSION_NAME = "permessage-deflate"

# RFC 7692 §7.1.2: window bits are 8..15. zlib cannot *compress* raw deflate with 8 (it silently
# uses 9), so we decline offers that force server_max_window_bits=8, and we inflate a client
# that promised 8 with a 9-bit window (a larger inflate window is always safe).
MIN_WINDOW_BITS = 8
MAX_WINDOW_BITS = 15
ZLIB_MIN_WINDOW_BITS = 9
MIN_MEM_LEVEL = 1
MAX_MEM_LEVEL = 9

# The port defaults (wsserver/config/schema.py repeats them; a unit test keeps the two equal).
# 11/11/4 keeps an idle connection under 40 KiB of RSS with both contexts live, even once their
# windows are full (docs/protocol.md, "Compression memory"); memLevel = window bits - 7 is zlib's own
# proportion (a hash table of 2^window_bits entries), as its defaults 15 and 8 are.
DEFAULT_WINDOW_BITS = 11  # our compressor's window: server_max_window_bits
DEFAULT_CLIENT_WINDOW_BITS = 11  # asked of a client that offers client_max_window_bits
DEFAULT_MEM_LEVEL = 4  # our compressor's zlib memLevel

# The four octets a sender strips from the end of every compressed message (RFC 7692 §7.2.1).
_DEFLATE_TAIL = b"\x00\x00\xff\xff"

_KNOWN_PARAMS = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)


class BoundedPerMessageDeflate(PerMessageDeflateBase):
    """wsproto's permessage-deflate with inflation bounded by ``max_message_size``.

    A negotiated instance is born enabled (wsproto enables it in ``accept``/``finalize``).
    """

    def __init__(
        self,
        max_message_size: int,
        *,
        client_no_context_takeover: bool = False,
        client_max_window_bits: int | None = None,
        server_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
        mem_level: int = DEFAULT_MEM_LEVEL,
    ) -> None:
        if not MIN_MEM_LEVEL <= mem_level <= MAX_MEM_LEVEL:
            raise ValueError(f"mem_level must be {MIN_MEM_LEVEL}..{MAX_MEM_LEVEL}, not {mem_level}")
        super().__init__(
            client_no_context_takeover=client_no_context_takeover,
            server_no_context_takeover=server_no_context_takeover,
            server_max_window_bits=server_max_window_bits,
        )
        if client_max_window_bits is not None:
            # Bypass wsproto's 9..15 setter: 8 is legal on the wire, and inflating with 9 is safe.
            self.set_client_max_window_bits(max(client_max_window_bits, ZLIB_MIN_WINDOW_BITS))
        self.max_message_size = max_message_size
        self.mem_level = mem_level
        self._budget = max_message_size  # bytes the current message may still inflate to
        self.set_enabled()

    # -- inbound -------------------------------------------------------------------------------

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            # wsproto's base class would also reset the *message* state on a control frame, which
            # breaks a compressed message with a ping between its fragments. Keep it out.
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            self.inbound_is_compressible = False
            return RsvBits(True, False, False)
        if self.inbound_compressed is None:
            self._budget = self.max_message_size  # first frame of a new message
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self.inbound_compressed or not self.inbound_is_compressible:
            return data
        assert self.decompressor is not None
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin or not self.inbound_is_compressible:
            return None  # mid-message, or a control frame: the message state carries on
        if not self.inbound_compressed:
            self.inbound_compressed = None
            return None
        assert self.decompressor is not None
        data = self._inflate(_DEFLATE_TAIL)
        if isinstance(data, CloseReason):
            return data
        # All input is consumed and the output stopped short of its limit, so nothing is
        # pending: flush() returns (almost always) nothing, but count it all the same.
        try:
            tail = self.decompressor.flush()
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(tail) > self._budget:
            return CloseReason.MESSAGE_TOO_BIG
        data += tail
        no_context_takeover = (
            self.server_no_context_takeover if proto.client else self.client_no_context_takeover
        )
        if no_context_takeover:
            self.decompressor = None  # the peer resets its window per message: so may we
        self.inbound_compressed = None
        return data

    # -- outbound ------------------------------------------------------------------------------

    def frame_outbound(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, data: bytes, fin: bool
    ) -> tuple[RsvBits, bytes]:
        if self.compressor is None and opcode in (Opcode.TEXT, Opcode.BINARY):
            # wsproto would create it with zlib's default memLevel (8): make it ourselves, lazily.
            bits = self.client_max_window_bits if proto.client else self.server_max_window_bits
            self.compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, self.mem_level
            )
        return super().frame_outbound(proto, opcode, rsv, data, fin)

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        """Inflate at most budget + 1 bytes: producing the +1 proves the message is too big."""
        decompressor = self.decompressor
        assert decompressor is not None
        try:
            out = decompressor.decompress(data, self._budget + 1)  # max_length 0 would mean "no limit"
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(out) > self._budget or decompressor.unconsumed_tail:
            # Input left over means the output hit max_length: more would follow. Drop both.
            self.decompressor = None
            return CloseReason.MESSAGE_TOO_BIG
        self._budget -= len(out)
        return out

    def __repr__(self) -> str:
        return (
            f"<BoundedPerMessageDeflate max_message_size={self.max_message_size} mem_level={self.mem_level} "
            f"{super().__repr__()}>"
        )


# -- negotiation (server side) ---------------------------------------------------------------


def parse_extension_offer(offer: str) -> tuple[str, list[tuple[str, str | None]]] | None:
    """``"permessage-deflate; client_max_window_bits; x=\"10\""`` -> (name, [(param, value)]).

    Names are lower-cased, quoted values unquoted. None if the offer is malformed.
    """
    pieces = [piece.strip() for piece in offer.split(";")]
    name = pieces[0].lower()
    if not name:
        return None
    params: list[tuple[str, str | None]] = []
    for piece in pieces[1:]:
        key, sep, value = piece.partition("=")
        key = key.strip().lower()
        if not key:
            return None
        if not sep:
            params.append((key, None))
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params.append((key, value))
    return name, params


def _window_bits(value: str | None) -> int | None:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if MIN_WINDOW_BITS <= bits <= MAX_WINDOW_BITS else None


def _accept_one(
    params: list[tuple[str, str | None]],
    max_message_size: int,
    window_bits: int,
    client_window_bits: int,
    mem_level: int,
) -> tuple[str, BoundedPerMessageDeflate] | None:
    """Our answer to one permessage-deflate offer, or None to decline it (RFC 7692 §7.1)."""
    seen: dict[str, str | None] = {}
    for key, value in params:
        if key not in _KNOWN_PARAMS or key in seen:
            return None
        seen[key] = value

    response = [EXTENSION_NAME]
    server_no_context_takeover = "server_no_context_takeover" in seen
    client_no_context_takeover = "client_no_context_takeover" in seen
    if (server_no_context_takeover and seen["server_no_context_takeover"] is not None) or (
        client_no_context_takeover and seen["client_no_context_takeover"] is not None
    ):
        return None  # these two take no value
    if server_no_context_takeover:
        response.append("server_no_context_takeover")  # the client demands it: we must comply
    if client_no_context_takeover:
        response.append("client_no_context_takeover")  # lets us drop the inflater between messages

    # Our compressor's window needs no agreement (any smaller window inflates fine on the other
    # side); a client's server_max_window_bits caps it, and we answer with what we will use.
    server_bits = window_bits
    if "server_max_window_bits" in seen:
        offered = _window_bits(seen["server_max_window_bits"])
        if offered is None or offered < ZLIB_MIN_WINDOW_BITS:
            return None
        server_bits = min(offered, window_bits)
        response.append(f"server_max_window_bits={server_bits}")  # same or smaller (§7.1.2.1)

    client_bits: int | None = None  # None: the client may use 15 bits, so we inflate with 15
    if "client_max_window_bits" in seen:
        # Only when offered may we answer client_max_window_bits (§7.1.2.2): with our setting,
        # or the client's own smaller value. Our inflater then needs no larger window.
        value = seen["client_max_window_bits"]
        limit = client_window_bits
        if value is not None:
            offered = _window_bits(value)
            if offered is None:
                return None
            limit = min(offered, limit)
        if limit < MAX_WINDOW_BITS:
            client_bits = limit
            response.append(f"client_max_window_bits={client_bits}")

    extension = BoundedPerMessageDeflate(
        max_message_size,
        client_no_context_takeover=client_no_context_takeover,
        client_max_window_bits=client_bits,
        server_no_context_takeover=server_no_context_takeover,
        server_max_window_bits=server_bits,
        mem_level=mem_level,
    )
    return "; ".join(response), extension


def negotiate_deflate(
    offers: Iterable[str],
    max_message_size: int,
    *,
    window_bits: int = DEFAULT_WINDOW_BITS,
    client_window_bits: int = DEFAULT_CLIENT_WINDOW_BITS,
    mem_level: int = DEFAULT_MEM_LEVEL,
) -> tuple[str, BoundedPerMessageDeflate] | None:
    """Accept the first acceptable permessage-deflate offer.

    ``window_bits`` (9..15) is our compressor's window, ``client_window_bits`` (9..15) the window
    we ask of a client that offered ``client_max_window_bits``, ``mem_level`` (1..9) zlib's memLevel
    for our compressor. Returns the ``Sec-WebSocket-Extensions`` response value and the enabled
    extension, or None when nothing acceptable was offered.
    """
    for name, bits in (("window_bits", window_bits), ("client_window_bits", client_window_bits)):
        if not ZLIB_MIN_WINDOW_BITS <= bits <= MAX_WINDOW_BITS:
            raise ValueError(f"{name} must be {ZLIB_MIN_WINDOW_BITS}..{MAX_WINDOW_BITS}, not {bits}")
    for offer in offers:
        parsed = parse_extension_offer(offer)
        if parsed is None or parsed[0] != EXTENSION_NAME:
            continue
        accepted = _accept_one(parsed[1], max_message_size, window_bits, client_window_bits, mem_level)
        if accepted is not None:
            return accepted
    return None
