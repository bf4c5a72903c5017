"""WebSocket close codes (RFC 6455 §7.4.1 and the IANA registry): the one place they are named.

Every close the server starts names its code from here, so a grep for ``CloseCode.`` finds them
all. Names follow python-websockets; the spellings wsproto uses (and ``CloseCode`` meant before it
was ours) stay as aliases so existing code keeps working. Values are plain ints underneath
(``IntEnum``): they compare equal to the numbers on the wire and to wsproto's ``CloseReason``.
"""

from __future__ import annotations

import enum

__all__ = ["CloseCode"]


class CloseCode(enum.IntEnum):
    """A close frame's status code."""

    NORMAL = 1000
    GOING_AWAY = 1001  # shutdown, reload, drain
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # local only: the peer's close frame carried no code
    ABNORMAL_CLOSURE = 1006  # local only: the transport ended without a close frame
    INVALID_DATA = 1007  # e.g. invalid UTF-8 in a text message
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011  # an endpoint callback raised; no pong in time
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013  # e.g. the client reads too slowly (write_limit_action = "close")
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # local only

    # wsproto's names for the same codes.
    NORMAL_CLOSURE = 1000
    INVALID_FRAME_PAYLOAD_DATA = 1007
    MANDATORY_EXT = 1010
    TLS_HANDSHAKE_FAILED = 1015
