"""The data phase: bytes in, events and bytes out (see ``API.md``).

wsproto's ``FrameProtocol`` is the engine: its ``FrameDecoder`` splits frames (masking, RSV,
opcodes, length rules, extensions) and its ``MessageDecoder`` sequences fragments and validates
UTF-8 incrementally. We drive the two directly, not through ``wsproto.Connection`` (its event
dataclasses and generators cost ~3 µs a message), and add what wsproto lacks: a message size
limit enforced as payload arrives, bounded inflation (``deflate.py``), automatic pong and close
replies, one place mapping failures to close codes, and the optional fast path (``fastpath.py``).

Why one long module: the data phase's state (the phase table, both decoders, the fast path's
partial frame) is one object that every received byte goes through.
"""

from __future__ import annotations

import enum
from typing import Any

from wsproto.extensions import Extension
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from ._wsproto_compat import decoders, process_close
from .close_codes import CloseCode
from .deflate import BoundedPerMessageDeflate
from .events import BinaryMessage, CloseReceived, Event, Ping, Pong, ProtocolState, TextMessage
from .fastpath import (
    FIN_BINARY,
    FIN_TEXT,
    HEADER_INCOMPLETE,
    PAYLOAD_ARRIVING,
    TOO_BIG,
    PartialFrame,
    build_frame,
    control_frame_end,
    parse_frames,
    pending_frame_size,
    start_partial,
)

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "IllegalTransition", "WebSocketProtocol", "encode_message"]

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20

OPEN = ProtocolState.OPEN


def encode_message(message: str | bytes) -> bytes:
    """A server data frame (unmasked, no extension) carrying ``message``: text for ``str``."""
    if type(message) is str:
        return build_frame(FIN_TEXT, message.encode("utf-8"))
    if type(message) is bytes:
        return build_frame(FIN_BINARY, message)
    if isinstance(message, str):
        return build_frame(FIN_TEXT, message.encode("utf-8"))
    return build_frame(FIN_BINARY, bytes(message))


class IllegalTransition(RuntimeError):
    """A happening the closing handshake does not allow in the current phase: a bug here."""


class _Happening(enum.Enum):
    SEND_CLOSE = "we send a close frame"
    RECEIVE_CLOSE = "the peer's close frame arrives (we reply at once)"
    FAIL = "the peer broke the protocol (we send our close frame)"
    EOF = "the transport ended"


class _Phase(enum.Enum):
    """The whole truth about the closing handshake; every other fact is read off it.

    ``state`` is what the public ``ProtocolState`` shows; ``close_sent``: our close frame is
    queued, so nothing more is sent; ``input_done``: input is ignored and ``CloseReceived`` has
    been reported; ``failed``: we failed the connection (RFC 6455 §7.1.7).
    """

    #               public state            close_sent input_done failed
    OPEN = ("open", ProtocolState.OPEN, False, False, False)
    CLOSE_SENT = ("close sent", ProtocolState.CLOSING, True, False, False)  # waiting for the peer
    FAILED = ("failed", ProtocolState.CLOSING, True, True, True)  # waiting for EOF
    CLOSED = ("closed", ProtocolState.CLOSED, True, True, False)
    FAILED_CLOSED = ("failed, closed", ProtocolState.CLOSED, True, True, True)
    DROPPED = ("dropped", ProtocolState.CLOSED, False, True, False)  # EOF before any close frame

    def __init__(
        self, label: str, state: ProtocolState, close_sent: bool, input_done: bool, failed: bool
    ) -> None:
        self.label = label
        self.state = state
        self.close_sent = close_sent
        self.input_done = input_done
        self.failed = failed


_SEND_CLOSE, _RECEIVE_CLOSE, _FAIL, _EOF = _Happening

# The closing handshake as data, h11-style: (phase, what happened) -> next phase. Every legal pair
# is listed, the no-ops too; any other pair raises IllegalTransition. Once input is done, the
# peer's close and a failure cannot happen (nothing is parsed); a second close of ours or a second
# EOF changes nothing.
_TRANSITIONS: dict[tuple[_Phase, _Happening], _Phase] = {
    (_Phase.OPEN, _SEND_CLOSE): _Phase.CLOSE_SENT,
    (_Phase.OPEN, _RECEIVE_CLOSE): _Phase.CLOSED,
    (_Phase.OPEN, _FAIL): _Phase.FAILED,
    (_Phase.OPEN, _EOF): _Phase.DROPPED,
    (_Phase.CLOSE_SENT, _SEND_CLOSE): _Phase.CLOSE_SENT,
    (_Phase.CLOSE_SENT, _RECEIVE_CLOSE): _Phase.CLOSED,
    (_Phase.CLOSE_SENT, _FAIL): _Phase.FAILED,
    (_Phase.CLOSE_SENT, _EOF): _Phase.CLOSED,
    (_Phase.FAILED, _SEND_CLOSE): _Phase.FAILED,
    (_Phase.FAILED, _EOF): _Phase.FAILED_CLOSED,
    (_Phase.CLOSED, _SEND_CLOSE): _Phase.CLOSED,
    (_Phase.CLOSED, _EOF): _Phase.CLOSED,
    (_Phase.FAILED_CLOSED, _SEND_CLOSE): _Phase.FAILED_CLOSED,
    (_Phase.FAILED_CLOSED, _EOF): _Phase.FAILED_CLOSED,
    (_Phase.DROPPED, _SEND_CLOSE): _Phase.CLOSED,  # queued for nobody, but the session may ask
    (_Phase.DROPPED, _EOF): _Phase.DROPPED,
}

# The reason we put in our close frame when we fail the connection. Fixed strings on purpose:
# no parser details leak to the peer (the detail is kept in ``WebSocketProtocol.error``).
_FAILURE_REASONS: dict[int, str] = {
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.INVALID_DATA: "invalid frame payload data",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
}

_FAST_PATH_DETAILS: dict[int, str] = {
    CloseCode.INVALID_DATA: "invalid UTF-8 in a text message",
    CloseCode.MESSAGE_TOO_BIG: "message larger than max_message_size",
}

_NO_STATUS = int(CloseCode.NO_STATUS_RCVD)
_ABNORMAL = int(CloseCode.ABNORMAL_CLOSURE)


class WebSocketProtocol:
    """One server-side WebSocket connection after the opening handshake."""

    # ~1.2 KB per connection in all (most of it wsproto's decoders); slots keep ours small and
    # make a mistyped attribute fail loudly.
    __slots__ = (
        "_close_code",
        "_close_sent",
        "_events",
        "_failed",
        "_fast_ready",
        "_input_done",
        "_message_size",
        "_out",
        "_partial",
        "_parts",
        "_pending",
        "_pending_need",
        "_pending_size",
        "_phase",
        "_state",
        "_wsproto",
        "deflate",
        "error",
        "extensions_header",
        "fast_path",
        "max_message_size",
        "subprotocol",
    )

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        *,
        deflate: BoundedPerMessageDeflate | None = None,
        fast_path: bool = True,
        subprotocol: str | None = None,
        extensions_header: str | None = None,
    ) -> None:
        if max_message_size < 1:
            raise ValueError("max_message_size must be at least 1")
        self.max_message_size = max_message_size
        self.subprotocol = subprotocol  # the one we accepted, if any
        self.extensions_header = extensions_header  # our Sec-WebSocket-Extensions answer, if any
        self.deflate = deflate
        # The fast path exists only for the extension-less wire format.
        self.fast_path = fast_path and deflate is None
        self.error: str | None = None  # parser detail of a failure, for logs (never sent)

        # wsproto's engine, created on first need: a connection whose frames all take the fast
        # path never builds one (~0.7 KiB less per idle connection).
        self._wsproto: FrameProtocol | None = None

        self._phase = _Phase.OPEN
        # Copies of the phase's facts that the per-message path reads (``state`` and ``failed`` by
        # the session after each read), written only by _happen: a slot read each, where
        # ``self._phase.close_sent`` would cost two lookups per message.
        self._state = OPEN
        self._close_sent = False
        self._input_done = False
        self._failed = False
        self._close_code: int | None = None
        self._fast_ready = self.fast_path  # fast path on, and wsproto holds no partial frame/message

        self._events: list[Event] = []
        self._out: list[bytes | bytearray] = []
        self._parts: list[Any] = []  # the message being reassembled: str pieces, or bytes
        # An incomplete simple frame the fast path takes as it comes (fastpath.pending_frame_size):
        # while its header is incomplete, the header's chunks, their size and the size needed;
        # then its payload, unmasked piece by piece.
        self._pending: list[bytes | bytearray] | None = None
        self._pending_size = 0
        self._pending_need = 0
        self._partial: PartialFrame | None = None
        self._message_size = 0  # its size in bytes so far (after inflation, before UTF-8 decoding)

    def _engine(self) -> FrameProtocol:
        fp = self._wsproto
        if fp is None:
            extensions: list[Extension] = [self.deflate] if self.deflate is not None else []
            fp = self._wsproto = FrameProtocol(client=False, extensions=extensions)
        return fp

    # -- public surface ------------------------------------------------------------------------

    @property
    def state(self) -> ProtocolState:
        return self._state

    @property
    def close_code(self) -> int | None:
        """The code received (1005 if none), the code we failed with, or 1006 on EOF."""
        return self._close_code

    @property
    def failed(self) -> bool:
        """We failed the connection: flush ``data_to_send()`` and close the socket.

        Input is no longer parsed, so no close reply will be seen (RFC 6455 §7.1.7).
        """
        return self._failed

    @property
    def compression(self) -> bool:
        return self.deflate is not None

    def receive_data(self, data: bytes | bytearray | None) -> None:
        """Feed bytes from the socket; ``b""`` or None means EOF."""
        if not data:
            self._receive_eof()
            return
        if self._input_done:
            return
        if self._partial is not None:
            if type(data) is not bytes:
                data = bytes(data)
            if not self._feed_partial(data, 0):
                return
            data = data[-self._pending_size :]  # what follows the frame (set by _feed_partial)
        elif self._pending is not None:
            pending = self._pending
            pending.append(data)
            self._pending_size += len(data)
            if self._pending_size < self._pending_need:
                return
            self._pending = None
            data = b"".join(pending)
        if self._fast_ready:
            if type(data) is not bytes:
                data = bytes(data)
            # The common case inline: every frame of this read taken by the fast path.
            pos, code = parse_frames(data, 0, self.max_message_size, self._events)
            if code or pos != len(data):
                self._receive_fast(data, pos, code)
        else:
            self._drain(data)

    def bytes_wanted(self) -> int:
        """Bytes still missing from an incomplete frame the fast path collects (0 if none):
        a hint for the size of the next read."""
        if self._partial is not None:
            return self._partial.remaining
        return self._pending_need - self._pending_size if self._pending is not None else 0

    def events(self) -> list[Event]:
        """The events produced so far, in order; each is returned once."""
        events = self._events
        if not events:
            return []  # a new list: the caller may keep it while ours fills up again
        self._events = []
        return events

    def data_to_send(self) -> bytes:
        """Drain the outgoing bytes (pongs, close replies, sent messages)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        if len(out) == 1:
            data = out[0]
            return data if type(data) is bytes else bytes(data)
        return b"".join(out)

    def send_text(self, text: str) -> int:
        """Queue a text message; returns the bytes queued (0 once our close frame is queued)."""
        if self._close_sent:
            return 0
        data: bytes | bytearray
        if self.fast_path:
            data = build_frame(FIN_TEXT, text.encode("utf-8"))
        else:
            data = self._engine().send_data(text)
        self._out.append(data)
        return len(data)

    def send_binary(self, data: bytes | bytearray | memoryview) -> int:
        """Queue a binary message; returns the bytes queued (0 once our close frame is queued)."""
        if self._close_sent:
            return 0
        frame: bytes | bytearray
        if self.fast_path:
            frame = build_frame(FIN_BINARY, data if type(data) is bytes else bytes(data))
        else:
            frame = self._engine().send_data(bytes(data))
        self._out.append(frame)
        return len(frame)

    def send_encoded(self, frame: bytes) -> int:
        """Queue a data frame built by :func:`encode_message` (for a message sent to many
        connections, encoded once); returns the bytes queued. Only for a connection without
        extensions (``compression`` False), whose frames are the same for every peer."""
        if self._close_sent:
            return 0
        if self.deflate is not None:
            raise ValueError("send_encoded: this connection compresses; use send_text/send_binary")
        self._out.append(frame)
        return len(frame)

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a ping (payload up to 125 bytes, else ValueError). Ignored once closing."""
        if self._close_sent:
            return
        self._out.append(self._engine().ping(payload))

    def send_close(self, code: int | None = CloseCode.NORMAL, reason: str = "") -> None:
        """Queue our close frame, once; a no-op if one is already queued.

        ``code=None`` sends a close frame without a status code. wsproto replaces the local-only
        codes 1005/1006/1015 with 1000 and truncates the reason to fit 125 bytes.
        """
        if self._close_sent:
            return
        if code is CloseCode.NO_STATUS_RCVD:
            code = None  # as wsproto treats its own NO_STATUS_RCVD: a frame without a code
        self._out.append(self._engine().close(code, reason) if code is not None else self._engine().close())
        self._happen(_SEND_CLOSE)

    def __repr__(self) -> str:
        return (
            f"<WebSocketProtocol {self._state.value} ({self._phase.label}) close_code={self._close_code} "
            f"fast_path={self.fast_path} compression={self.compression}>"
        )

    # -- input ---------------------------------------------------------------------------------

    def _receive_fast(self, data: bytes, pos: int, code: int) -> None:
        """Continue where ``parse_frames`` stopped: a failure, or a frame for wsproto at ``pos``."""
        end = len(data)
        while True:
            if code:
                self._fail(code, _FAST_PATH_DETAILS[code])
                return
            if pos == end:
                return
            what, size = pending_frame_size(data, pos, self.max_message_size)
            if what == PAYLOAD_ARRIVING:
                # A simple frame still arriving: its payload is taken piece by piece here.
                self._partial = start_partial(data, pos)
                self._feed_partial(data, pos + size)
                return
            if what == HEADER_INCOMPLETE:
                self._pending = [data[pos:] if pos else data]
                self._pending_size = end - pos
                self._pending_need = size
                return
            if what == TOO_BIG:
                code = CloseCode.MESSAGE_TOO_BIG
                continue
            frame_end = control_frame_end(data, pos)
            if frame_end < 0:
                # A fragment, a partial or odd frame, a close: wsproto takes the rest of this read.
                self._fast_ready = False
                self._drain(data[pos:] if pos else data)
                return
            # A complete ping/pong alone to wsproto, then back to the fast path.
            self._drain(data[pos:frame_end])
            if not self._fast_ready:
                return
            pos, code = parse_frames(data, frame_end, self.max_message_size, self._events)

    def _feed_partial(self, data: bytes, pos: int) -> bool:
        """Give ``data[pos:]`` to the frame in progress; True when it completed and the rest of
        ``data`` (its last ``self._pending_size`` bytes) is to be parsed."""
        partial = self._partial
        assert partial is not None
        try:
            pos = partial.feed(data, pos)
        except UnicodeDecodeError:
            self._partial = None
            self._fail(CloseCode.INVALID_DATA, _FAST_PATH_DETAILS[CloseCode.INVALID_DATA])
            return False
        if partial.remaining:
            return False
        self._partial = None
        self._events.append(partial.message())
        rest = len(data) - pos
        if not rest:
            return False
        if self._input_done:
            return False
        self._pending_size = rest
        return True

    def _drain(self, data: bytes | bytearray) -> None:
        """Give ``data`` to wsproto; take every complete frame (or available payload) out."""
        fp = self._engine()
        decoder, message_decoder = decoders(fp)  # wsproto internals, driven directly
        decoder.receive_bytes(data)
        while True:
            try:
                if decoder.header is None and not decoder.parse_header():
                    break  # the next header is incomplete
                header = decoder.header
                assert header is not None  # parse_header() found one
                if (
                    self.deflate is None
                    and not header.opcode.iscontrol()
                    and self._message_size - decoder.payload_consumed + header.payload_len
                    > self.max_message_size
                ):
                    # Refused at the header, before any of its payload is read (the fast path does
                    # the same); with compression only the inflated size counts, checked below.
                    self._fail(
                        CloseCode.MESSAGE_TOO_BIG, f"message larger than {self.max_message_size} bytes"
                    )
                    return
                frame = decoder.process_buffer()
            except ParseFailed as exc:
                self._fail(exc.code, str(exc))
                return
            if frame is None:
                break
            opcode = frame.opcode
            if opcode is Opcode.PING:
                if not self._close_sent:
                    self._out.append(self._engine().pong(frame.payload))
                self._events.append(Ping(frame.payload))
            elif opcode is Opcode.PONG:
                self._events.append(Pong(frame.payload))
            elif opcode is Opcode.CLOSE:
                try:
                    code, reason = process_close(fp, frame)
                except ParseFailed as exc:
                    self._fail(exc.code, str(exc))
                    return
                self._receive_close(code, reason)
                return
            else:
                # Count bytes before decoding: the limit holds however the message is framed.
                size = self._message_size + len(frame.payload)
                if size > self.max_message_size:
                    self._fail(
                        CloseCode.MESSAGE_TOO_BIG, f"message larger than {self.max_message_size} bytes"
                    )
                    return
                self._message_size = size
                try:
                    frame = message_decoder.process_frame(frame)
                except ParseFailed as exc:
                    self._fail(exc.code, str(exc))
                    return
                if frame.payload:
                    self._parts.append(frame.payload)
                if frame.message_finished:
                    self._finish_message(frame.opcode)
        self._fast_ready = (
            self.fast_path
            and not self._input_done
            and not decoder.buffer.buffer
            and decoder.header is None
            and message_decoder.opcode is None
        )

    def _finish_message(self, opcode: Opcode) -> None:
        parts = self._parts
        if opcode is Opcode.TEXT:
            self._events.append(TextMessage(parts[0] if len(parts) == 1 else "".join(parts)))
        else:
            self._events.append(BinaryMessage(parts[0] if len(parts) == 1 else b"".join(parts)))
        self._parts = []
        self._message_size = 0

    # -- the end of the connection --------------------------------------------------------------

    # Each of these moves the phase first, so an illegal happening raises before any side effect.

    def _receive_close(self, code: int, reason: str) -> None:
        close_sent = self._close_sent
        self._happen(_RECEIVE_CLOSE)
        self._close_code = code
        if not close_sent:
            # RFC 6455 §5.5.1: reply with a close frame, echoing the status code (none if none).
            self._out.append(self._engine().close(code) if code != _NO_STATUS else self._engine().close())
        self._events.append(CloseReceived(code, reason))

    def _fail(self, code: int, detail: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7): our close frame, one event, no more input."""
        close_sent = self._close_sent
        self._happen(_FAIL)
        code = int(code)
        reason = _FAILURE_REASONS.get(code, "")
        self.error = detail
        self._drop_message()
        if self._close_code is None:
            self._close_code = code
        if not close_sent:
            self._out.append(self._engine().close(code, reason))
        self._events.append(CloseReceived(code, reason))

    def _receive_eof(self) -> None:
        input_done = self._input_done
        self._happen(_EOF)
        if input_done:
            return  # CloseReceived is already out (peer's close, failure or an earlier EOF)
        self._drop_message()
        if self._close_code is None:
            self._close_code = _ABNORMAL
        self._events.append(CloseReceived(_ABNORMAL, ""))

    def _drop_message(self) -> None:
        self._pending = None
        self._partial = None
        self._parts = []
        self._message_size = 0

    def _happen(self, happening: _Happening) -> None:
        try:
            phase = _TRANSITIONS[self._phase, happening]
        except KeyError:
            raise IllegalTransition(f"{happening.name} in phase {self._phase.name}") from None
        self._phase = phase
        self._state = phase.state
        self._close_sent = phase.close_sent
        self._failed = phase.failed
        if phase.input_done:
            self._input_done = True
            self._fast_ready = False
