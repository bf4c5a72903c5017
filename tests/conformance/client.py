"""The fuzzing client: Autobahn's client protocol (the ``self.p`` of a case), in Python 3 on asyncio.

One :class:`FuzzingClientProtocol` per case and connection.  It speaks RFC 6455 (and RFC 7692
permessage-deflate) from raw octets and behaves like the client of Autobahn|Testsuite's
``fuzzingclient`` mode: the same options (``failByDrop = False``, masked frames, incoming UTF-8
validation, 1 s close handshake and server drop timeouts), the same state bookkeeping that
``Case.onConnectionLost`` judges (``closedByMe``, ``droppedByMe``, ``wasClean``, ``remoteCloseCode``,
...), the same primitive operations the cases call (``sendFrame`` with ``payload_len`` / ``chopsize`` /
``sync``, the streaming API, ``killAfter`` ...), and the same ordering of sends: chopped and
``sync`` writes go out one per event loop turn, in order, each as its own ``send()``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import struct
import time
from collections import deque
from typing import Any

from .abshim.compat import py2bytes, py2str
from .abshim.compress import PERMESSAGE_COMPRESSION_EXTENSION
from .abshim.protocol import WebSocketProtocol
from .abshim.utf8validator import Utf8Validator

WS_MAGIC = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
QUEUED_WRITE_DELAY = 0.00001  # Autobahn's reactor re-entry delay for chopped / sync writes
WIRELOG_MAX = 400  # wire log entries kept per case (for the report)
WIRELOG_DATA = 64  # octets of payload shown per wire log entry


def mask_payload(mask: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the 4-octet ``mask`` (fast for large payloads)."""
    n = len(data)
    if n == 0:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class XorMasker:
    """Masks a frame payload that is sent (or received) in pieces; remembers its position."""

    def __init__(self, mask: bytes | None) -> None:
        self.mask = mask
        self.ptr = 0

    def pointer(self) -> int:
        return self.ptr

    def process(self, data: bytes) -> bytes:
        n = len(data)
        if self.mask is None or n == 0:
            self.ptr += n
            return data
        off = self.ptr % 4
        rotated = self.mask[off:] + self.mask[:off]
        self.ptr += n
        return mask_payload(rotated, data)


class FrameHeader:
    def __init__(self, opcode: int, fin: bool, rsv: int, length: int, mask: bytes | None) -> None:
        self.opcode = opcode
        self.fin = fin
        self.rsv = rsv
        self.length = length
        self.mask = mask


class TrafficStats:
    """Octet and frame counters (Autobahn's ``TrafficStats``), used by the 12.* / 13.* reports."""

    FIELDS = (
        "outgoingOctetsWireLevel",
        "outgoingOctetsWebSocketLevel",
        "outgoingOctetsAppLevel",
        "outgoingWebSocketFrames",
        "outgoingWebSocketMessages",
        "incomingOctetsWireLevel",
        "incomingOctetsWebSocketLevel",
        "incomingOctetsAppLevel",
        "incomingWebSocketFrames",
        "incomingWebSocketMessages",
        "preopenOutgoingOctetsWireLevel",
        "preopenIncomingOctetsWireLevel",
    )

    def __init__(self) -> None:
        for name in self.FIELDS:
            setattr(self, name, 0)

    def __json__(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in self.FIELDS}
        app, ws = self.outgoingOctetsAppLevel, self.outgoingOctetsWebSocketLevel
        data["outgoingCompressionRatio"] = round(ws / app, 4) if app else None
        app, ws = self.incomingOctetsAppLevel, self.incomingOctetsWebSocketLevel
        data["incomingCompressionRatio"] = round(ws / app, 4) if app else None
        return data


def parse_extensions(header: str) -> list[tuple[str, dict[str, list[Any]]]]:
    """``Sec-WebSocket-Extensions`` -> [(name, {param: [value or True, ...]})] (Autobahn's parser)."""
    extensions = []
    for item in (x.strip() for x in header.split(",")):
        if not item:
            continue
        parts = [x.strip() for x in item.split(";")]
        params: dict[str, list[Any]] = {}
        for p in parts[1:]:
            kv = [x.strip() for x in p.split("=")]
            key = kv[0].lower()
            value: Any = True
            if len(kv) > 1:
                value = "=".join(kv[1:])
                if value.startswith('"'):
                    value = value[1:]
                if value.endswith('"'):
                    value = value[:-1]
            params.setdefault(key, []).append(value)
        extensions.append((parts[0].lower(), params))
    return extensions


class ClientFactory:
    """The ``self.p.factory`` a case sees."""

    isServer = False

    def __init__(self, host: str, port: int, resource: str, useragent: str) -> None:
        self.host = host
        self.port = port
        self.resource = resource
        self.useragent = useragent


class FuzzingClientProtocol(WebSocketProtocol, asyncio.Protocol):
    """Client side of one test case (Autobahn ``FuzzingClientProtocol`` + ``WebSocketClientProtocol``)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, factory: ClientFactory, case_class: type, case_id: str
    ) -> None:
        self.loop = loop
        self.factory = factory
        self.case_id = case_id
        self.Case = case_class
        self.done: asyncio.Future = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.timers: list[asyncio.TimerHandle] = []
        # Autobahn client defaults, with fuzzingclient's setProtocolOptions(failByDrop=False)
        self.version = 18
        self.utf8validateIncoming = True
        self.acceptMaskedServerFrames = False
        self.maskClientFrames = True
        self.applyMask = True
        self.maxFramePayloadSize = 0
        self.maxMessagePayloadSize = 0
        self.autoFragmentSize = 0
        self.failByDrop = False
        self.echoCloseCodeReason = False
        self.serverConnectionDropTimeout = 1
        self.openHandshakeTimeout = 5
        self.closeHandshakeTimeout = 1
        self.perMessageCompressionOffers: list = []
        self.perMessageCompressionAccept = lambda _response: None
        # FuzzingProtocol attributes that exist before connectionMade
        self.connectionWasOpen = None
        self.caseAgent = None
        self.caseStarted = None
        self.caseStart = 0.0
        self.caseEnd = 0.0
        self.createWirelog = True
        self.wirelog: list = []
        self.createStats = True
        self.rxOctetStats: dict[int, int] = {}
        self.rxFrameStats: dict[int, int] = {}
        self.txOctetStats: dict[int, int] = {}
        self.txFrameStats: dict[int, int] = {}
        self.trafficStats = TrafficStats()
        self.state = WebSocketProtocol.STATE_CONNECTING
        self._perMessageCompress = None
        self.closedByMe = False
        self.failedByMe = False
        self.droppedByMe = False
        self.wasClean = False
        self.wasNotCleanReason: str | None = None
        self.wasServerConnectionDropTimeout = False
        self.wasOpenHandshakeTimeout = False
        self.wasCloseHandshakeTimeout = False
        self.localCloseCode: int | None = None
        self.localCloseReason: Any = None
        self.remoteCloseCode: int | None = None
        self.remoteCloseReason: str | None = None
        self.http_request_data = b""
        self.http_response_data = b""
        self.runner_error: str | None = None
        # the case instance (its init() may set perMessageCompressionOffers / Accept)
        self.runCase = case_class(self)

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.caseStarted = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        self.data = b""
        self.send_queue: deque = deque()
        self.triggered = False
        self.send_state = WebSocketProtocol.SEND_STATE_GROUND
        self.send_compressed = False
        self.utf8validator = Utf8Validator()
        self.utf8validateIncomingCurrentMessage = False
        self.utf8validateLast = (True, True, 0, 0)
        self.inside_message = False
        self.current_frame: FrameHeader | None = None
        self.closeHandshakeTimeoutCall: asyncio.TimerHandle | None = None
        self.serverConnectionDropTimeoutCall: asyncio.TimerHandle | None = None
        self.openHandshakeTimeoutCall: asyncio.TimerHandle | None = None
        if self.openHandshakeTimeout > 0:
            self.openHandshakeTimeoutCall = self._call_later(
                self.openHandshakeTimeout, self.onOpenHandshakeTimeout
            )
        self.startHandshake()

    def data_received(self, data: bytes) -> None:
        try:
            if self.state == self.STATE_OPEN:
                self.trafficStats.incomingOctetsWireLevel += len(data)
            elif self.state == self.STATE_CONNECTING:
                self.trafficStats.preopenIncomingOctetsWireLevel += len(data)
            self.logRxOctets(data)
            self.data += data
            self.consumeData()
        except Exception as exc:  # a bug in the runner or in a case: record it, never hang
            self._internal_error(exc)

    def eof_received(self) -> bool:
        return False  # close our side too -> connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self.timers:
            timer.cancel()
        if self.serverConnectionDropTimeoutCall is not None:
            self.serverConnectionDropTimeoutCall.cancel()
            self.serverConnectionDropTimeoutCall = None
        self.state = self.STATE_CLOSED
        if not self.wasClean and not self.droppedByMe and self.wasNotCleanReason is None:
            self.wasNotCleanReason = (
                "peer dropped the TCP connection without previous WebSocket closing handshake"
            )
        try:
            if self.wasClean:
                self.onClose(self.wasClean, self.remoteCloseCode, self.remoteCloseReason)
            else:
                self.onClose(
                    self.wasClean,
                    self.CLOSE_STATUS_CODE_ABNORMAL_CLOSE,
                    f"connection was closed uncleanly ({self.wasNotCleanReason})",
                )
            self.runCase.onConnectionLost(self.failedByMe)
        except Exception as exc:
            self.runner_error = f"{type(exc).__name__}: {exc}"
            self.runCase.behavior = "FAILED"
        self.caseEnd = time.time()
        if not self.done.done():
            self.done.set_result(self)

    def _internal_error(self, exc: BaseException) -> None:
        self.runner_error = f"{type(exc).__name__}: {exc}"
        if self.transport is not None:
            self.state = self.STATE_CLOSED
            self.transport.abort()

    def _call_later(self, delay: float, fn, *args) -> asyncio.TimerHandle:
        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:
                self._internal_error(exc)

        handle = self.loop.call_later(delay, run)
        self.timers.append(handle)
        return handle

    # ------------------------------------------------------------------ FuzzingProtocol

    def enableWirelog(self, enable: bool) -> None:
        if enable != self.createWirelog:
            self.createWirelog = enable
            self._wirelog(("WLM", enable))

    def _wirelog(self, entry: tuple) -> None:
        if len(self.wirelog) < WIRELOG_MAX:
            self.wirelog.append(entry)
        elif len(self.wirelog) == WIRELOG_MAX:
            self.wirelog.append(("...", "wire log truncated"))

    def logRxOctets(self, data: bytes) -> None:
        n = len(data)
        self.rxOctetStats[n] = self.rxOctetStats.get(n, 0) + 1
        if self.createWirelog:
            self._wirelog(("RO", (n, data[:WIRELOG_DATA].hex())))

    def logTxOctets(self, data: bytes, sync: bool) -> None:
        n = len(data)
        self.txOctetStats[n] = self.txOctetStats.get(n, 0) + 1
        if self.createWirelog:
            self._wirelog(("TO", (n, data[:WIRELOG_DATA].hex()), sync))

    def logRxFrame(self, header: FrameHeader, payload: bytes) -> None:
        self.rxFrameStats[header.opcode] = self.rxFrameStats.get(header.opcode, 0) + 1
        if self.createWirelog:
            self._wirelog(
                (
                    "RF",
                    (len(payload), payload[:WIRELOG_DATA].hex()),
                    header.opcode,
                    header.fin,
                    header.rsv,
                    header.mask is not None,
                )
            )

    def logTxFrame(self, header: FrameHeader, payload: bytes, repeat_length, chopsize, sync) -> None:
        self.txFrameStats[header.opcode] = self.txFrameStats.get(header.opcode, 0) + 1
        if self.createWirelog:
            self._wirelog(
                (
                    "TF",
                    (len(payload), payload[:WIRELOG_DATA].hex()),
                    header.opcode,
                    header.fin,
                    header.rsv,
                    repeat_length,
                    chopsize,
                    sync,
                )
            )

    def continueLater(self, delay: float, fun, tag: str | None = None) -> None:
        self._wirelog(("CT", delay, tag))

        def execute() -> None:
            if self.state != self.STATE_CLOSED:
                self._wirelog(("CTE", tag))
                fun()

        self._call_later(delay, execute)

    def killAfter(self, delay: float) -> None:
        self._wirelog(("KL", delay))

        def execute() -> None:
            if self.state != self.STATE_CLOSED:
                self._wirelog(("KLE",))
                self.failConnection()

        self._call_later(delay, execute)

    def closeAfter(self, delay: float) -> None:
        self._wirelog(("TI", delay))

        def execute() -> None:
            if self.state != self.STATE_CLOSED:
                self._wirelog(("TIE",))
                self.sendClose()

        self._call_later(delay, execute)

    def onConnect(self, headers: dict[str, str]) -> None:
        if not self.caseAgent:
            self.caseAgent = headers.get("server", "UnknownServer")

    def onOpen(self) -> None:
        self.connectionWasOpen = True
        self.caseStart = time.time()
        self.runCase.onOpen()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.runCase.onMessage(py2str(payload), isBinary)

    def onPing(self, payload: bytes) -> None:
        # FuzzingProtocol does not forward pings to the case: the base protocol answers them
        if self.state == self.STATE_OPEN:
            self.sendPong(payload)

    def onPong(self, payload: bytes) -> None:
        self.runCase.onPong(py2str(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.runCase.onClose(wasClean, code, reason)

    # ------------------------------------------------------------------ opening handshake

    def createHixieKey(self):
        raise NotImplementedError("Hixie-76 is not part of RFC 6455 and not run")

    def startHandshake(self) -> None:
        f = self.factory
        self.websocket_key = base64.b64encode(os.urandom(16))
        lines = [
            f"GET {f.resource} HTTP/1.1",
            f"User-Agent: {f.useragent}",
            f"Host: {f.host}:{f.port}",
            "Upgrade: WebSocket",
            "Connection: Upgrade",
            "Pragma: no-cache",
            "Cache-Control: no-cache",
            f"Sec-WebSocket-Key: {self.websocket_key.decode()}",
        ]
        offers = [offer.getExtensionString() for offer in self.perMessageCompressionOffers]
        if offers:
            lines.append(f"Sec-WebSocket-Extensions: {', '.join(offers)}")
        lines.append("Sec-WebSocket-Version: 13")
        self.http_request_data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        self.sendData(self.http_request_data)

    def failHandshake(self, reason: str) -> None:
        self.wasNotCleanReason = f"opening handshake failed: {reason}"
        self.dropConnection(abort=True)

    def processHandshake(self) -> None:
        end = self.data.find(b"\r\n\r\n")
        if end < 0:
            return
        self.http_response_data = self.data[: end + 4]
        lines = self.http_response_data.decode("latin-1").split("\r\n")
        status = lines[0].split()
        headers: dict[str, str] = {}
        counts: dict[str, int] = {}
        for line in lines[1:]:
            if ":" not in line:
                continue
            name, value = line.split(":", 1)
            name = name.strip().lower()
            counts[name] = counts.get(name, 0) + 1
            headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
        if len(status) < 2 or status[0] != "HTTP/1.1":
            return self.failHandshake(f"bad status line {lines[0]!r}")
        if status[1] != "101":
            return self.failHandshake(f"WebSocket connection upgrade failed ({lines[0]})")
        if headers.get("upgrade", "").strip().lower() != "websocket":
            return self.failHandshake("HTTP Upgrade header missing or not 'websocket'")
        if "upgrade" not in [c.strip().lower() for c in headers.get("connection", "").split(",")]:
            return self.failHandshake("HTTP Connection header does not include 'upgrade'")
        if counts.get("sec-websocket-accept", 0) != 1:
            return self.failHandshake("Sec-WebSocket-Accept missing or repeated")
        expected = base64.b64encode(hashlib.sha1(self.websocket_key + WS_MAGIC).digest()).decode()
        if headers["sec-websocket-accept"] != expected:
            return self.failHandshake("Sec-WebSocket-Accept bogus value")
        if "sec-websocket-extensions" in headers:
            if counts["sec-websocket-extensions"] > 1:
                return self.failHandshake("Sec-WebSocket-Extensions appears more than once")
            for name, params in parse_extensions(headers["sec-websocket-extensions"]):
                if name not in PERMESSAGE_COMPRESSION_EXTENSION:
                    return self.failHandshake(f"server wants extension {name!r} we did not offer")
                if self._perMessageCompress is not None:
                    return self.failHandshake("multiple occurrence of a permessage-compress extension")
                if not self.perMessageCompressionOffers:
                    return self.failHandshake(f"server selected {name!r} that was not offered")
                pmce = PERMESSAGE_COMPRESSION_EXTENSION[name]
                try:
                    response = pmce["Response"].parse(params)
                except ValueError as exc:
                    return self.failHandshake(str(exc))
                accept = self.perMessageCompressionAccept(response)
                if accept is None:
                    return self.failHandshake("permessage-compress response denied by client")
                self._perMessageCompress = pmce["PMCE"].createFromResponseAccept(False, accept)
        self.data = self.data[end + 4 :]
        self.state = self.STATE_OPEN
        self.inside_message = False
        self.current_frame = None
        if self.openHandshakeTimeoutCall is not None:
            self.openHandshakeTimeoutCall.cancel()
            self.openHandshakeTimeoutCall = None
        self.onConnect(headers)
        self.onOpen()
        if self.data:
            self.consumeData()

    def onOpenHandshakeTimeout(self) -> None:
        if self.state == self.STATE_CONNECTING:
            self.wasClean = False
            self.wasNotCleanReason = "peer did not finish (in time) the opening handshake"
            self.wasOpenHandshakeTimeout = True
            self.dropConnection(abort=True)

    # ------------------------------------------------------------------ incoming data

    def consumeData(self) -> None:
        if self.state in (self.STATE_OPEN, self.STATE_CLOSING):
            while self.processData() and self.state != self.STATE_CLOSED:
                pass
        elif self.state == self.STATE_CONNECTING:
            self.processHandshake()

    def protocolViolation(self, reason: str) -> bool:
        self._wirelog(("PV", reason))
        self.failConnection(self.CLOSE_STATUS_CODE_PROTOCOL_ERROR, reason)
        return self.failByDrop

    def invalidPayload(self, reason: str) -> bool:
        self._wirelog(("IP", reason))
        self.failConnection(self.CLOSE_STATUS_CODE_INVALID_PAYLOAD, reason)
        return self.failByDrop

    def processData(self) -> bool:
        buffered = len(self.data)
        if self.current_frame is None:
            if buffered < 2:
                return False
            b0, b1 = self.data[0], self.data[1]
            fin = (b0 & 0x80) != 0
            rsv = (b0 & 0x70) >> 4
            opcode = b0 & 0x0F
            masked = (b1 & 0x80) != 0
            len1 = b1 & 0x7F
            pmce = self._perMessageCompress
            if (
                rsv != 0
                and not (pmce is not None and rsv == 4)
                and self.protocolViolation(f"RSV = {rsv} and no extension negotiated")
            ):
                return False
            if masked and not self.acceptMaskedServerFrames and self.protocolViolation("masked server frame"):
                return False
            if opcode > 7:
                if not fin and self.protocolViolation("fragmented control frame"):
                    return False
                if len1 > 125 and self.protocolViolation("control frame with payload length > 125 octets"):
                    return False
                if opcode not in (8, 9, 10) and self.protocolViolation(
                    f"control frame using reserved opcode {opcode}"
                ):
                    return False
                if opcode == 8 and len1 == 1 and self.protocolViolation("close frame with payload length 1"):
                    return False
                if pmce is not None and rsv == 4 and self.protocolViolation("compressed control frame"):
                    return False
            else:
                if opcode not in (0, 1, 2) and self.protocolViolation(
                    f"data frame using reserved opcode {opcode}"
                ):
                    return False
                if (
                    not self.inside_message
                    and opcode == 0
                    and self.protocolViolation("continuation frame outside fragmented message")
                ):
                    return False
                if (
                    self.inside_message
                    and opcode != 0
                    and self.protocolViolation("non-continuation data frame inside fragmented message")
                ):
                    return False
                if (
                    pmce is not None
                    and rsv == 4
                    and self.inside_message
                    and self.protocolViolation("continuation frame with compress bit set")
                ):
                    return False
            header_len = 2 + (4 if masked else 0) + (2 if len1 == 126 else 8 if len1 == 127 else 0)
            if buffered < header_len:
                return False
            i = 2
            if len1 == 126:
                length = struct.unpack("!H", self.data[2:4])[0]
                if length < 126 and self.protocolViolation("non-minimal payload length encoding"):
                    return False
                i = 4
            elif len1 == 127:
                length = struct.unpack("!Q", self.data[2:10])[0]
                if length > 0x7FFFFFFFFFFFFFFF and self.protocolViolation("payload length >= 2^63"):
                    return False
                if length < 65536 and self.protocolViolation("non-minimal payload length encoding"):
                    return False
                i = 10
            else:
                length = len1
            mask = None
            if masked:
                mask = self.data[i : i + 4]
                i += 4
            self.current_frame_masker = XorMasker(
                mask if (masked and length > 0 and self.applyMask) else None
            )
            self.data = self.data[i:]
            self.current_frame = FrameHeader(opcode, fin, rsv, length, mask)
            self.onFrameBegin()
            return length == 0 or len(self.data) > 0
        rest = self.current_frame.length - self.current_frame_masker.pointer()
        if buffered >= rest:
            chunk, self.data = self.data[:rest], self.data[rest:]
        else:
            chunk, self.data = self.data, b""
        payload = self.current_frame_masker.process(chunk) if chunk else b""
        if self.onFrameData(payload) is False:
            return False
        if self.current_frame_masker.pointer() == self.current_frame.length and self.onFrameEnd() is False:
            return False
        return len(self.data) > 0

    def onFrameBegin(self) -> None:
        frame = self.current_frame
        self.frame_raw: list[bytes] = []
        if frame.opcode > 7:
            self.control_frame_data: list[bytes] = []
            return
        if not self.inside_message:
            self.inside_message = True
            self._isMessageCompressed = self._perMessageCompress is not None and frame.rsv == 4
            if self._isMessageCompressed:
                self._perMessageCompress.startDecompressMessage()
            self.utf8validateIncomingCurrentMessage = frame.opcode == 1 and self.utf8validateIncoming
            if self.utf8validateIncomingCurrentMessage:
                self.utf8validator.reset()
                self.utf8validateLast = (True, True, 0, 0)
            self.message_is_binary = frame.opcode == 2
            self.message_data: list[bytes] = []
            self.message_data_total_length = 0
        self.frame_data: list[bytes] = []
        self.message_data_total_length += frame.length
        if not self.failedByMe:
            if self.maxMessagePayloadSize > 0 and self.message_data_total_length > self.maxMessagePayloadSize:
                self.failConnection(self.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG, "message exceeds payload limit")
            elif self.maxFramePayloadSize > 0 and frame.length > self.maxFramePayloadSize:
                self.failConnection(self.CLOSE_STATUS_CODE_POLICY_VIOLATION, "frame exceeds payload limit")

    def onFrameData(self, payload: bytes) -> bool | None:
        frame = self.current_frame
        if self.createWirelog:
            self.frame_raw.append(payload)
        if frame.opcode > 7:
            self.control_frame_data.append(payload)
            return None
        compressed_len = len(payload)
        if self._isMessageCompressed:
            try:
                payload = self._perMessageCompress.decompressMessageData(payload)
            except Exception as exc:  # zlib.error: the peer's compressed data is corrupt
                self.protocolViolation(f"permessage-deflate: cannot decompress ({exc})")
                return False
        if self.state == self.STATE_OPEN:
            self.trafficStats.incomingOctetsWebSocketLevel += compressed_len
            self.trafficStats.incomingOctetsAppLevel += len(payload)
        if self.utf8validateIncomingCurrentMessage:
            self.utf8validateLast = self.utf8validator.validate(payload)
            if not self.utf8validateLast[0] and self.invalidPayload(
                f"invalid UTF-8 in text message at octet {self.utf8validateLast[3]}"
            ):
                return False
        if not self.failedByMe:
            self.frame_data.append(payload)
        return None

    def onFrameEnd(self) -> bool | None:
        frame = self.current_frame
        self.logRxFrame(frame, b"".join(self.frame_raw) if self.createWirelog else b"")
        self.frame_raw = []
        if frame.opcode > 7:
            ok = self.processControlFrame()
            self.current_frame = None
            return ok
        if self.state == self.STATE_OPEN:
            self.trafficStats.incomingWebSocketFrames += 1
        if not self.failedByMe:
            self.message_data.extend(self.frame_data)
        self.frame_data = []
        if frame.fin:
            if self._isMessageCompressed:
                try:
                    self._perMessageCompress.endDecompressMessage()
                except Exception as exc:
                    self.protocolViolation(f"permessage-deflate: cannot decompress ({exc})")
                    return False
            if (
                self.utf8validateIncomingCurrentMessage
                and not self.utf8validateLast[1]
                and self.invalidPayload("UTF-8 text message ended within a code point")
            ):
                return False
            if self.state == self.STATE_OPEN:
                self.trafficStats.incomingWebSocketMessages += 1
            if not self.failedByMe:
                self.onMessage(b"".join(self.message_data), self.message_is_binary)
            self.message_data = []
            self.inside_message = False
        self.current_frame = None
        return None

    def processControlFrame(self) -> bool:
        payload = b"".join(self.control_frame_data)
        self.control_frame_data = []
        opcode = self.current_frame.opcode
        if opcode == 8:
            code = None
            reason_raw = None
            if len(payload) > 1:
                code = struct.unpack("!H", payload[:2])[0]
                if len(payload) > 2:
                    reason_raw = payload[2:]
            if self.onCloseFrame(code, reason_raw):
                return False
        elif opcode == 9:
            self.onPing(payload)
        elif opcode == 10:
            self.onPong(payload)
        return True

    def onCloseFrame(self, code: int | None, reason_raw: bytes | None) -> bool:
        self.remoteCloseCode = code
        reserved = code is not None and (
            code < 1000
            or (1000 <= code <= 2999 and code not in self.CLOSE_STATUS_CODES_ALLOWED)
            or code >= 5000
        )
        if reserved and self.protocolViolation(f"invalid close code {code}"):
            return True
        if reason_raw is not None:
            if not Utf8Validator().validate(reason_raw)[0]:
                if self.invalidPayload("invalid close reason (non-UTF-8 payload)"):
                    return True
            else:
                self.remoteCloseReason = reason_raw.decode("utf-8")
        if self.state == self.STATE_CLOSING:
            # the peer's reply to our close: the server now has to drop the TCP connection
            if self.closeHandshakeTimeoutCall is not None:
                self.closeHandshakeTimeoutCall.cancel()
                self.closeHandshakeTimeoutCall = None
            self.wasClean = True
            if self.serverConnectionDropTimeout > 0:
                self.serverConnectionDropTimeoutCall = self._call_later(
                    self.serverConnectionDropTimeout, self.onServerConnectionDropTimeout
                )
        elif self.state == self.STATE_OPEN:
            # the peer starts the closing handshake: reply (normal code), then wait for the drop
            self.wasClean = True
            self.sendCloseFrame(code=self.CLOSE_STATUS_CODE_NORMAL, isReply=True)
        return False

    # ------------------------------------------------------------------ timeouts and closing

    def onServerConnectionDropTimeout(self) -> None:
        self.serverConnectionDropTimeoutCall = None
        if self.state != self.STATE_CLOSED:
            self.wasClean = False
            self.wasNotCleanReason = "server did not drop TCP connection (in time)"
            self.wasServerConnectionDropTimeout = True
            self.dropConnection(abort=True)

    def onCloseHandshakeTimeout(self) -> None:
        self.closeHandshakeTimeoutCall = None
        if self.state != self.STATE_CLOSED:
            self.wasClean = False
            self.wasNotCleanReason = "peer did not respond (in time) in closing handshake"
            self.wasCloseHandshakeTimeout = True
            self.dropConnection(abort=True)

    def dropConnection(self, abort: bool = False) -> None:
        if self.state != self.STATE_CLOSED:
            self._wirelog(("DROP", abort))
            self.droppedByMe = True
            self.state = self.STATE_CLOSED
            if abort:
                self._out = []
                self.transport.abort()
            else:
                self._flush()
                self.transport.close()

    def failConnection(
        self, code: int = WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY, reason: str = "Going Away"
    ) -> None:
        if self.state == self.STATE_CLOSED:
            return
        self.failedByMe = True
        if self.failByDrop:
            self.wasClean = False
            self.wasNotCleanReason = "I failed the WebSocket connection by dropping the TCP connection"
            self.dropConnection(abort=True)
        elif self.state != self.STATE_CLOSING:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)
        else:
            self.dropConnection(abort=False)

    # ------------------------------------------------------------------ sending

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if chopsize and chopsize > 0:
            for i in range(0, max(len(data), 1), chopsize):
                self.send_queue.append((data[i : i + chopsize], True))
            self._trigger()
        elif sync or self.send_queue:
            self.send_queue.append((data, sync))
            self._trigger()
        else:
            self._write(data, False)

    def _write(self, data: bytes, sync: bool) -> None:
        """``transport.write``: like Twisted's, it only buffers; the buffer goes out in one ``send()``
        after the current callback (so a burst of frames is coalesced, and every chop or sync
        write of the send queue, which comes one event loop turn later, gets a ``send()`` of its own).
        """
        if self.state == self.STATE_CLOSED or self.transport is None or self.transport.is_closing():
            return
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state == self.STATE_CONNECTING:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        self.logTxOctets(data, sync)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out:
            data = b"".join(self._out)
            self._out = []
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(data)

    def _trigger(self) -> None:
        if not self.triggered:
            self.triggered = True
            self._send()

    def _send(self) -> None:
        if self.send_queue:
            data, sync = self.send_queue.popleft()
            self._write(data, sync)
            # re-enter the event loop so that these octets get their own send()
            self._call_later(QUEUED_WRITE_DELAY, self._send)
        else:
            self.triggered = False

    def sendFrame(
        self,
        opcode: int,
        payload: Any = b"",
        fin: bool = True,
        rsv: int = 0,
        mask: Any = None,
        payload_len: int | None = None,
        chopsize: int | None = None,
        sync: bool = False,
    ) -> None:
        payload = py2bytes(payload)
        if payload_len is not None:
            if len(payload) < 1:
                raise ValueError(
                    f"cannot construct repeated payload with length {payload_len} from empty payload"
                )
            length = payload_len
            pl = payload * (payload_len // len(payload)) + payload[: payload_len % len(payload)]
        else:
            length = len(payload)
            pl = payload
        b0 = (0x80 if fin else 0) | ((rsv % 8) << 4) | (opcode % 128)
        b1 = 0
        mask = py2bytes(mask) if mask else None
        if mask or self.maskClientFrames:
            b1 |= 0x80
            if not mask:
                mask = struct.pack("!I", random.getrandbits(32))
            plm = mask_payload(mask, pl) if (length > 0 and self.applyMask) else pl
            mv = mask
        else:
            mv = b""
            plm = pl
        if length <= 125:
            b1 |= length
            ext = b""
        elif length <= 0xFFFF:
            b1 |= 126
            ext = struct.pack("!H", length)
        else:
            b1 |= 127
            ext = struct.pack("!Q", length)
        raw = b"".join([bytes((b0, b1)), ext, mv, plm])
        if opcode in (0, 1, 2):
            self.trafficStats.outgoingWebSocketFrames += 1
        self.logTxFrame(FrameHeader(opcode, fin, rsv, length, mask), payload, payload_len, chopsize, sync)
        self.sendData(raw, sync, chopsize)

    def sendPing(self, payload: Any = None) -> None:
        if self.state != self.STATE_OPEN:
            return
        payload = py2bytes(payload)
        if len(payload) > 125:
            raise ValueError("invalid payload for PING (length must be <= 125)")
        self.sendFrame(opcode=9, payload=payload)

    def sendPong(self, payload: Any = None) -> None:
        if self.state != self.STATE_OPEN:
            return
        payload = py2bytes(payload)
        if len(payload) > 125:
            raise ValueError("invalid payload for PONG (length must be <= 125)")
        self.sendFrame(opcode=10, payload=payload)

    def sendCloseFrame(self, code: int | None = None, reasonUtf8: Any = None, isReply: bool = False) -> None:
        if self.state != self.STATE_OPEN:
            return  # closing: ignored; closed: ignored
        payload = b""
        if code is not None:
            payload += struct.pack("!H", code)
        if reasonUtf8 is not None:
            payload += py2bytes(reasonUtf8)
        self.sendFrame(opcode=8, payload=payload)
        self.state = self.STATE_CLOSING
        self.closedByMe = not isReply
        self.localCloseCode = code
        self.localCloseReason = reasonUtf8
        if self.closedByMe and self.closeHandshakeTimeout > 0:
            self.closeHandshakeTimeoutCall = self._call_later(
                self.closeHandshakeTimeout, self.onCloseHandshakeTimeout
            )

    def sendClose(self, code: int | None = None, reason: str | None = None) -> None:
        if code is not None:
            if not isinstance(code, int):
                raise TypeError(f"invalid type {type(code)} for close code")
            if code != 1000 and not 3000 <= code <= 4999:
                raise ValueError(f"invalid close code {code}")
        reason_utf8 = None
        if reason is not None:
            if code is None:
                raise ValueError("close reason without close code")
            reason_utf8 = reason.encode("utf-8")
            if len(reason_utf8) + 2 > 125:
                raise ValueError("close reason too long")
        self.sendCloseFrame(code=code, reasonUtf8=reason_utf8, isReply=False)

    def beginMessage(
        self, isBinary: bool = False, doNotCompress: bool = False, opcode: int | None = None
    ) -> None:
        if self.state != self.STATE_OPEN:
            return
        if self.send_state != self.SEND_STATE_GROUND:
            raise RuntimeError("beginMessage invalid in current sending state")
        if opcode is not None:
            isBinary = opcode == self.MESSAGE_TYPE_BINARY
        self.send_message_opcode = self.MESSAGE_TYPE_BINARY if isBinary else self.MESSAGE_TYPE_TEXT
        self.send_state = self.SEND_STATE_MESSAGE_BEGIN
        self.send_compressed = self._perMessageCompress is not None and not doNotCompress
        if self.send_compressed:
            self._perMessageCompress.startCompressMessage()
        self.trafficStats.outgoingWebSocketMessages += 1

    def beginMessageFrame(self, length: int) -> None:
        if self.state != self.STATE_OPEN:
            return
        if self.send_state not in (self.SEND_STATE_MESSAGE_BEGIN, self.SEND_STATE_INSIDE_MESSAGE):
            raise RuntimeError("beginMessageFrame invalid in current sending state")
        if not isinstance(length, int) or not 0 <= length <= 0x7FFFFFFFFFFFFFFF:
            raise ValueError("invalid value for message frame length")
        self.send_message_frame_length = length
        self.trafficStats.outgoingWebSocketFrames += 1
        mask = struct.pack("!I", random.getrandbits(32)) if self.maskClientFrames else None
        self.send_message_frame_masker = XorMasker(mask if (mask and length > 0 and self.applyMask) else None)
        b0 = 0  # FIN = 0: with streaming the end of the message is not known yet
        if self.send_state == self.SEND_STATE_MESSAGE_BEGIN:
            b0 |= self.send_message_opcode
            if self.send_compressed:
                b0 |= 4 << 4
            self.send_state = self.SEND_STATE_INSIDE_MESSAGE
        b1 = 0x80 if mask else 0
        if length <= 125:
            b1 |= length
            ext = b""
        elif length <= 0xFFFF:
            b1 |= 126
            ext = struct.pack("!H", length)
        else:
            b1 |= 127
            ext = struct.pack("!Q", length)
        self.sendData(b"".join([bytes((b0, b1)), ext, mask or b""]))
        self.send_state = self.SEND_STATE_INSIDE_MESSAGE_FRAME

    def sendMessageFrameData(self, payload: Any, sync: bool = False) -> int | None:
        if self.state != self.STATE_OPEN:
            return None
        payload = py2bytes(payload)
        if not self.send_compressed:
            self.trafficStats.outgoingOctetsAppLevel += len(payload)
        self.trafficStats.outgoingOctetsWebSocketLevel += len(payload)
        if self.send_state != self.SEND_STATE_INSIDE_MESSAGE_FRAME:
            raise RuntimeError("sendMessageFrameData invalid in current sending state")
        masker = self.send_message_frame_masker
        room = self.send_message_frame_length - masker.pointer()
        if len(payload) > room:
            rest = -(len(payload) - room)
            payload = payload[:room]
        else:
            rest = room - len(payload)
        self.sendData(masker.process(payload), sync=sync)
        if masker.pointer() >= self.send_message_frame_length:
            self.send_state = self.SEND_STATE_INSIDE_MESSAGE
        return rest

    def endMessage(self) -> None:
        if self.state != self.STATE_OPEN:
            return
        payload = b""
        if self.send_compressed:
            payload = self._perMessageCompress.endCompressMessage()
            self.trafficStats.outgoingOctetsWebSocketLevel += len(payload)
        self.sendFrame(opcode=0, payload=payload, fin=True)
        self.send_state = self.SEND_STATE_GROUND

    def sendMessageFrame(self, payload: Any, sync: bool = False) -> None:
        if self.state != self.STATE_OPEN:
            return
        payload = py2bytes(payload)
        if self.send_compressed:
            self.trafficStats.outgoingOctetsAppLevel += len(payload)
            payload = self._perMessageCompress.compressMessageData(payload)
        self.beginMessageFrame(len(payload))
        self.sendMessageFrameData(payload, sync)

    def sendMessage(
        self,
        payload: Any,
        isBinary: bool = False,
        fragmentSize: int | None = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        if self.state != self.STATE_OPEN:
            return
        payload = py2bytes(payload)
        opcode = 2 if isBinary else 1
        self.trafficStats.outgoingWebSocketMessages += 1
        compressed = self._perMessageCompress is not None and not doNotCompress
        if compressed:
            pmce = self._perMessageCompress
            pmce.startCompressMessage()
            self.trafficStats.outgoingOctetsAppLevel += len(payload)
            payload = pmce.compressMessageData(payload) + pmce.endCompressMessage()
            self.trafficStats.outgoingOctetsWebSocketLevel += len(payload)
        else:
            self.trafficStats.outgoingOctetsAppLevel += len(payload)
            self.trafficStats.outgoingOctetsWebSocketLevel += len(payload)
        if fragmentSize is not None:
            pfs = fragmentSize
        else:
            pfs = self.autoFragmentSize if self.autoFragmentSize > 0 else None
        rsv = 4 if compressed else 0
        if pfs is None or len(payload) <= pfs:
            self.sendFrame(opcode=opcode, payload=payload, sync=sync, rsv=rsv)
            return
        if pfs < 1:
            raise ValueError("payload fragment size must be at least 1")
        # exactly Autobahn's loop: a payload that is a multiple of the fragment size ends with an
        # empty FIN frame
        n = len(payload)
        i = 0
        done = False
        first = True
        while not done:
            j = i + pfs
            if j > n:
                done = True
                j = n
            if first:
                self.sendFrame(opcode=opcode, payload=payload[i:j], fin=done, sync=sync, rsv=rsv)
                first = False
            else:
                self.sendFrame(opcode=0, payload=payload[i:j], fin=done, sync=sync)
            i += pfs

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        raise NotImplementedError(
            "push producers (case 9.9.1, not in Autobahn's case list) are not supported"
        )
