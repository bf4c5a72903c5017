"""wsserver.protocol — the sans-IO WebSocket layer: bytes in, events and bytes out.

No sockets, no gevent, no clocks here. The contract is ``API.md`` beside this file.
"""

from .connection import DEFAULT_MAX_MESSAGE_SIZE, WebSocketProtocol, encode_message
from .deflate import BoundedPerMessageDeflate
from .events import (
    BinaryMessage,
    CloseCode,
    CloseReceived,
    Event,
    Opcode,
    Ping,
    Pong,
    ProtocolState,
    TextMessage,
)
from .handshake import DEFAULT_MAX_HEADER_SIZE, Handshake, HandshakeError, HandshakeRequest, error_response
from .origin import host_allowed, origin_allowed

__all__ = [
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "BinaryMessage",
    "BoundedPerMessageDeflate",
    "CloseCode",
    "CloseReceived",
    "Event",
    "Handshake",
    "HandshakeError",
    "HandshakeRequest",
    "Opcode",
    "Ping",
    "Pong",
    "ProtocolState",
    "TextMessage",
    "WebSocketProtocol",
    "encode_message",
    "error_response",
    "host_allowed",
    "origin_allowed",
]
