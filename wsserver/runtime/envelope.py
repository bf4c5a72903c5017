"""The wire format of broadcasts between nodes, without I/O: envelopes, offsets and the Redis
names under ``[cluster] prefix``.

An envelope is one byte of version and flags, the 8-byte origin (the publishing worker, so it
ignores its own copy), an optional offset (the stream id the message got in the group's
history) and the message. :mod:`wsserver.runtime.broker` moves them; :mod:`.groups` and
:mod:`.presence` use the offsets and names without importing the broker.
"""

from __future__ import annotations

import struct

ENVELOPE = struct.Struct("!B8s")
VERSION = 0x10  # the high nibble of the first byte
FLAG_TEXT = 0x01
FLAG_OFFSET = 0x02


class BrokerUnavailable(Exception):
    """A broadcast could not be handed to the cluster's broker (Redis): nobody received it."""


class EnvelopeError(ValueError):
    """Bytes on a group channel that are not an envelope of this version."""


def encode_envelope(origin: bytes, message: str | bytes) -> bytes:
    if isinstance(message, str):
        return ENVELOPE.pack(VERSION | FLAG_TEXT, origin) + message.encode()
    return ENVELOPE.pack(VERSION, origin) + bytes(message)


def decode_envelope(data: bytes) -> tuple[bytes, str | bytes]:
    """``(origin, message)``; a text message comes back as ``str``."""
    origin, message, _ = decode_message(data)
    return origin, message


def decode_message(data: bytes) -> tuple[bytes, str | bytes, str | None]:
    """``(origin, message, offset)``: ``offset`` is None for an envelope without one."""
    if len(data) < ENVELOPE.size:
        raise EnvelopeError(f"envelope too short ({len(data)} bytes)")
    flags, origin = ENVELOPE.unpack_from(data)
    if flags & 0xF0 != VERSION or flags & 0x0C:
        raise EnvelopeError(f"unknown envelope version or flags 0x{flags:02x}")
    start = ENVELOPE.size
    offset = None
    if flags & FLAG_OFFSET:
        size = data[start] if len(data) > start else 0
        raw = bytes(data[start + 1 : start + 1 + size])
        if not size or len(raw) != size:
            raise EnvelopeError("truncated offset")
        try:
            offset = raw.decode("ascii")
            parse_offset(offset)
        except (UnicodeDecodeError, ValueError):
            raise EnvelopeError("bad offset") from None
        start += 1 + size
    payload = data[start:]
    if flags & FLAG_TEXT:
        try:
            return origin, payload.decode(), offset
        except UnicodeDecodeError:
            raise EnvelopeError("text message is not UTF-8") from None
    return origin, bytes(payload), offset


def parse_offset(offset: str) -> tuple[int, int]:
    """A stream id ``"MS-SEQ"`` as a comparable pair; ValueError when it is not one."""
    ms, sep, seq = offset.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit() or len(offset) > 41:
        raise ValueError(f"not an offset: {offset!r}")
    return int(ms), int(seq)


class Names:
    """Redis names under ``[cluster] prefix`` (two clusters on one Redis use two prefixes)."""

    __slots__ = ("channel_prefix", "control_prefix", "history_prefix", "prefix", "presence_prefix")

    def __init__(self, prefix: str = "wsserver") -> None:
        self.prefix = prefix
        self.channel_prefix = prefix + ":group:"
        self.history_prefix = prefix + ":history:"
        self.presence_prefix = prefix + ":presence:"
        self.control_prefix = (
            prefix + ":worker:"
        )  # a channel of the worker's own: the subscriber always has one

    def channel(self, group: str) -> str:
        return self.channel_prefix + group

    def history(self, group: str) -> str:
        return self.history_prefix + group

    def presence(self, group: str) -> str:
        return self.presence_prefix + group


DEFAULT_NAMES = Names()


def channel_of(group: str) -> str:
    """The channel of ``group`` under the default prefix."""
    return DEFAULT_NAMES.channel(group)


def history_key(group: str) -> str:
    """The history stream of ``group`` under the default prefix."""
    return DEFAULT_NAMES.history(group)
