"""Events of the data phase, the connection states and the protocol constants.

Events are small slotted dataclasses, like h11's. They are not frozen: a frozen dataclass
costs ~0.15 µs more per construction (``object.__setattr__``), which is ~10 % of the fast
path's cost for a small message. Treat them as immutable all the same.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from wsproto.frame_protocol import Opcode

from .close_codes import CloseCode

__all__ = [
    "BinaryMessage",
    "CloseCode",
    "CloseReceived",
    "Event",
    "Opcode",
    "Ping",
    "Pong",
    "ProtocolState",
    "TextMessage",
]


class ProtocolState(enum.Enum):
    """Where the closing handshake stands (see the table in ``connection.py``)."""

    OPEN = "OPEN"  # data flows both ways
    CLOSING = "CLOSING"  # we sent a close frame (or failed the connection); waiting for the peer
    CLOSED = "CLOSED"  # close sent and received, or the transport ended


@dataclass(slots=True)
class TextMessage:
    """A complete, reassembled, UTF-8 validated text message."""

    data: str


@dataclass(slots=True)
class BinaryMessage:
    """A complete, reassembled binary message."""

    data: bytes


@dataclass(slots=True)
class Ping:
    """A ping from the peer; the pong is already queued in ``data_to_send()``."""

    payload: bytes


@dataclass(slots=True)
class Pong:
    """A pong from the peer."""

    payload: bytes


@dataclass(slots=True)
class CloseReceived:
    """The connection is ending; emitted exactly once per connection.

    Either the peer sent a close frame (``code`` is its code, 1005 when it gave none; our reply
    is already queued), or we failed the connection (``code`` is the code we sent: 1002, 1007,
    1009), or the transport ended without a close frame (``code`` is 1006).
    """

    code: int
    reason: str


Event = TextMessage | BinaryMessage | Ping | Pong | CloseReceived
