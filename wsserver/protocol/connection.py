"""The data phase: bytes in, events and bytes out (see ``API.md``).

wsproto's ``FrameProtocol`` is the engine: its ``FrameDecoder`` splits frames (masking, RSV,
opcodes, length rules, extensions) and its ``MessageDecoder`` sequences fragments and validates
UTF-8 incrementally. We drive the two directly, not through ``wsproto.Connection`` (its event
dataclasses and generators cost ~3 µs a message), and add what wsproto lacks: a message size
limit enforced as payload arrives, bounded inflation (``deflate.py``), automatic pong and close
replies, one place mapping failures to close codes, and the optional fast path (``fastpath.py``).
"""

from __future__ import annotations

import enum

from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from .deflate import BoundedPerMessageDeflate
from .events import BinaryMessage, CloseCode, CloseReceived, Event, Ping, Pong, ProtocolState, TextMessage
from .fastpath import FIN_BINARY, FIN_TEXT, build_frame, control_frame_end, parse_frames

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "WebSocketProtocol"]

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20

OPEN, CLOSING, CLOSED = ProtocolState.OPEN, ProtocolState.CLOSING, ProtocolState.CLOSED


class _Happening(enum.Enum):
    SEND_CLOSE = "we send a close frame"
    RECEIVE_CLOSE = "the peer's close frame arrives (we reply at once)"
    FAIL = "the peer broke the protocol (we send our close frame)"
    EOF = "the transport ended"


# The closing handshake as data, h11-style: (state, what happened) -> next state.
# A pair not listed leaves the state as it is (e.g. CLOSING + SEND_CLOSE is a no-op).
_TRANSITIONS: dict[tuple[ProtocolState, _Happening], ProtocolState] = {
    (OPEN, _Happening.SEND_CLOSE): CLOSING,
    (OPEN, _Happening.FAIL): CLOSING,
    (OPEN, _Happening.RECEIVE_CLOSE): CLOSED,
    (OPEN, _Happening.EOF): CLOSED,
    (CLOSING, _Happening.RECEIVE_CLOSE): CLOSED,
    (CLOSING, _Happening.EOF): CLOSED,
}

# The reason we put in our close frame when we fail the connection. Fixed strings on purpose:
# no parser details leak to the peer (the detail is kept in ``WebSocketProtocol.error``).
_FAILURE_REASONS: dict[int, str] = {
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.INVALID_FRAME_PAYLOAD_DATA: "invalid frame payload data",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
}

_FAST_PATH_DETAILS: dict[int, str] = {
    CloseCode.INVALID_FRAME_PAYLOAD_DATA: "invalid UTF-8 in a text message",
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
        "_close_received",
        "_close_reported",
        "_close_sent",
        "_decoder",
        "_events",
        "_failed",
        "_fast_ready",
        "_fp",
        "_input_done",
        "_message_decoder",
        "_message_size",
        "_out",
        "_parts",
        "_state",
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

        self._fp = FrameProtocol(client=False, extensions=[deflate] if deflate is not None else [])
        self._decoder = self._fp._frame_decoder  # wsproto internals, driven directly (pinned by tests)
        self._message_decoder = self._fp._message_decoder

        self._state = OPEN
        self._close_code: int | None = None
        self._close_sent = False
        self._close_received = False
        self._close_reported = False  # CloseReceived emitted (exactly once per connection)
        self._failed = False
        self._input_done = False  # close received, failure or EOF: input is ignored from now on
        self._fast_ready = self.fast_path  # fast path on, and wsproto holds no partial frame/message

        self._events: list[Event] = []
        self._out: list[bytes | bytearray] = []
        self._parts: list = []  # the message being reassembled (str or bytes pieces)
        self._message_size = 0  # its size in bytes so far (after inflation, before UTF-8 decoding)

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
        if self._fast_ready:
            if type(data) is not bytes:
                data = bytes(data)
            # The common case inline: every frame of this read taken by the fast path.
            pos, code = parse_frames(data, 0, self.max_message_size, self._events)
            if code or pos != len(data):
                self._receive_fast(data, pos, code)
        else:
            self._decoder.receive_bytes(data)
            self._drain()

    def events(self) -> list[Event]:
        """The events produced so far, in order; each is returned once."""
        events = self._events
        if events:
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

    def send_text(self, text: str) -> None:
        """Queue a text message. Ignored once our close frame is queued."""
        if self._close_sent:
            return
        if self.fast_path:
            self._out.append(build_frame(FIN_TEXT, text.encode("utf-8")))
        else:
            self._out.append(self._fp.send_data(text))

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Queue a binary message. Ignored once our close frame is queued."""
        if self._close_sent:
            return
        if self.fast_path:
            self._out.append(build_frame(FIN_BINARY, bytes(data)))
        else:
            self._out.append(self._fp.send_data(bytes(data)))

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a ping (payload up to 125 bytes, else ValueError). Ignored once closing."""
        if self._close_sent:
            return
        self._out.append(self._fp.ping(payload))

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        """Queue our close frame, once; a no-op if one is already queued.

        ``code=None`` sends a close frame without a status code. wsproto replaces the local-only
        codes 1005/1006/1015 with 1000 and truncates the reason to fit 125 bytes.
        """
        if self._close_sent:
            return
        self._out.append(self._fp.close(code, reason) if code is not None else self._fp.close())
        self._close_sent = True
        self._happen(_Happening.SEND_CLOSE)

    def __repr__(self) -> str:
        return (
            f"<WebSocketProtocol {self._state.value} close_code={self._close_code} "
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
            frame_end = control_frame_end(data, pos)
            if frame_end < 0:
                # A fragment, a partial or odd frame, a close: wsproto takes the rest of this read.
                self._fast_ready = False
                self._decoder.receive_bytes(data[pos:] if pos else data)
                self._drain()
                return
            # A complete ping/pong alone to wsproto, then back to the fast path.
            self._decoder.receive_bytes(data[pos:frame_end])
            self._drain()
            if not self._fast_ready:
                return
            pos, code = parse_frames(data, frame_end, self.max_message_size, self._events)

    def _drain(self) -> None:
        """Take every complete frame (or available payload) out of wsproto's buffer."""
        decoder = self._decoder
        while True:
            try:
                frame = decoder.process_buffer()
            except ParseFailed as exc:
                self._fail(exc.code, str(exc))
                return
            if frame is None:
                break
            opcode = frame.opcode
            if opcode is Opcode.PING:
                if not self._close_sent:
                    self._out.append(self._fp.pong(frame.payload))
                self._events.append(Ping(frame.payload))
            elif opcode is Opcode.PONG:
                self._events.append(Pong(frame.payload))
            elif opcode is Opcode.CLOSE:
                try:
                    code, reason = self._fp._process_close(frame).payload
                except ParseFailed as exc:
                    self._fail(exc.code, str(exc))
                    return
                self._receive_close(int(code), reason)
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
                    frame = self._message_decoder.process_frame(frame)
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
            and self._message_decoder.opcode is None
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

    def _receive_close(self, code: int, reason: str) -> None:
        self._input_done = True
        self._fast_ready = False
        self._close_received = True
        self._close_code = code
        if not self._close_sent:
            # RFC 6455 §5.5.1: reply with a close frame, echoing the status code (none if none).
            self._out.append(self._fp.close(code) if code != _NO_STATUS else self._fp.close())
            self._close_sent = True
        self._report_close(code, reason)
        self._happen(_Happening.RECEIVE_CLOSE)

    def _fail(self, code: int, detail: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7): our close frame, one event, no more input."""
        code = int(code)
        reason = _FAILURE_REASONS.get(code, "")
        self.error = detail
        self._failed = True
        self._input_done = True
        self._fast_ready = False
        self._drop_message()
        if self._close_code is None:
            self._close_code = code
        if not self._close_sent:
            self._out.append(self._fp.close(code, reason))
            self._close_sent = True
        self._report_close(code, reason)
        self._happen(_Happening.FAIL)

    def _receive_eof(self) -> None:
        if self._state is CLOSED and self._input_done:
            return
        self._input_done = True
        self._fast_ready = False
        self._drop_message()
        if self._close_code is None:
            self._close_code = _ABNORMAL
        self._report_close(_ABNORMAL, "")
        self._happen(_Happening.EOF)

    def _report_close(self, code: int, reason: str) -> None:
        if not self._close_reported:
            self._close_reported = True
            self._events.append(CloseReceived(code, reason))

    def _drop_message(self) -> None:
        self._parts = []
        self._message_size = 0

    def _happen(self, happening: _Happening) -> None:
        self._state = _TRANSITIONS.get((self._state, happening), self._state)
