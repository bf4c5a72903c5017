"""Everything wsserver takes from wsproto beyond its public API, in one place.

We drive wsproto's ``FrameProtocol`` below its ``Connection`` (see ``connection.py``), borrow its
XOR tables for the fast path's unmasking and bound its permessage-deflate inflater. Those are
private names that a wsproto release may rename or change without notice, so this module checks
the installed version at import and refuses one outside the range the tests pin, with a message
that says what to install, rather than failing later in the middle of a frame. To support a new
wsproto: run the protocol tests against it (the equivalence and fuzz tests cover every name
below), then widen ``SUPPORTED`` here and the bound in ``setup.cfg`` together.

The private names used, all here: ``frame_protocol._XOR_TABLE``, ``FrameProtocol._frame_decoder``,
``FrameProtocol._message_decoder``, ``FrameProtocol._process_close`` and ``PerMessageDeflate``'s
``_compressor``, ``_decompressor``, ``_inbound_compressed``, ``_inbound_is_compressible``,
``_client_max_window_bits`` and ``_enabled``.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Protocol

import wsproto
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import _XOR_TABLE, Buffer, FrameProtocol, Header, Opcode

__all__ = [
    "SUPPORTED",
    "XOR_TABLES",
    "FrameDecoderView",
    "FrameView",
    "MessageDecoderView",
    "PerMessageDeflateBase",
    "check_version",
    "decoders",
    "process_close",
]

#: wsproto versions whose internals match what this module uses: [low, high).
SUPPORTED = ((1, 2), (1, 4))


def _range_text() -> str:
    (lo_major, lo_minor), (hi_major, hi_minor) = SUPPORTED
    return f"wsproto>={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"


def check_version(version: str) -> None:
    """Raise ImportError unless ``version`` is in ``SUPPORTED``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    found = (int(match[1]), int(match[2])) if match else None
    if found is None or not SUPPORTED[0] <= found < SUPPORTED[1]:
        raise ImportError(
            f"wsserver needs {_range_text()} (it drives wsproto internals that change between "
            f"releases); wsproto {version} is installed. Install a supported one: "
            f"pip install '{_range_text()}'"
        )


check_version(wsproto.__version__)

#: ``XOR_TABLES[k]`` maps each byte to ``byte ^ k`` (a ``bytes.translate`` table).
XOR_TABLES: list[bytes] = _XOR_TABLE


# What connection.py relies on in wsproto's decoders, typed as it is used: wsproto's own
# annotations are narrower than what it accepts (its buffer takes any bytes-like) and wider than
# what it returns (one payload union for every opcode).


class FrameView(Protocol):
    """A wsproto ``Frame``: ``payload`` is bytes (a bytearray from wsproto 1.3) for a ping, pong
    or binary frame, str for a text frame once the message decoder has decoded it; a close
    frame's goes to ``process_close``."""

    @property
    def opcode(self) -> Opcode: ...

    @property
    def payload(self) -> Any: ...

    @property
    def message_finished(self) -> bool: ...


class FrameDecoderView(Protocol):
    header: Header | None
    payload_consumed: int
    buffer: Buffer

    def receive_bytes(self, data: bytes | bytearray) -> None: ...

    def parse_header(self) -> bool: ...

    def process_buffer(self) -> FrameView | None: ...


class MessageDecoderView(Protocol):
    opcode: Opcode | None

    def process_frame(self, frame: FrameView) -> FrameView: ...


def decoders(fp: FrameProtocol) -> tuple[FrameDecoderView, MessageDecoderView]:
    """The frame and message decoders inside ``fp``, which ``connection.py`` drives directly."""
    frame_decoder: Any = fp._frame_decoder  # Any: typed by the return annotation, at no cost
    message_decoder: Any = fp._message_decoder
    return frame_decoder, message_decoder


def process_close(fp: FrameProtocol, frame: FrameView) -> tuple[int, str]:
    """The (code, reason) of a close frame (1005 if none); raises ParseFailed if it is invalid."""
    close_frame: Any = frame
    payload = fp._process_close(close_frame).payload
    assert isinstance(payload, tuple)
    code, reason = payload
    return int(code), reason


class PerMessageDeflateBase(PerMessageDeflate):
    """wsproto's permessage-deflate with its private state behind named attributes.

    Properties rather than copies: wsproto's own methods (which the subclass still calls) read
    and write the same private fields.
    """

    @property
    def compressor(self) -> zlib._Compress | None:
        return self._compressor

    @compressor.setter
    def compressor(self, value: zlib._Compress | None) -> None:
        self._compressor = value

    @property
    def decompressor(self) -> zlib._Decompress | None:
        return self._decompressor

    @decompressor.setter
    def decompressor(self, value: zlib._Decompress | None) -> None:
        self._decompressor = value

    @property
    def inbound_compressed(self) -> bool | None:
        """True/False inside a message (its first frame had RSV1 or not); None between messages."""
        return self._inbound_compressed

    @inbound_compressed.setter
    def inbound_compressed(self, value: bool | None) -> None:
        self._inbound_compressed = value

    @property
    def inbound_is_compressible(self) -> bool | None:
        """False for a control frame, which is never compressed."""
        return self._inbound_is_compressible

    @inbound_is_compressible.setter
    def inbound_is_compressible(self, value: bool | None) -> None:
        self._inbound_is_compressible = value

    def set_client_max_window_bits(self, bits: int) -> None:
        """Set the client's window without wsproto's 9..15 check (8 is legal on the wire)."""
        self._client_max_window_bits = bits

    def set_enabled(self) -> None:
        """Mark the extension negotiated (wsproto does so in ``accept``/``finalize``)."""
        self._enabled = True
