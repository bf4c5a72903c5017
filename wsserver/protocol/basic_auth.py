"""HTTP Basic credentials (RFC 7617), read the same way by every listener that accepts them.

The WebSocket ports (``auth = "password"`` and adapter ports), the admin API and the metrics
listener all take ``Authorization: Basic <base64(user:password)>``. The rules, from RFC 7235
and RFC 7617:

- the scheme name is case-insensitive, and any amount of space may separate it from the
  token (``1*SP``); space around the whole value is ignored;
- the token must be strict base64 (padding included): anything else is malformed;
- the user and password are UTF-8 — every challenge we send says ``charset="UTF-8"`` — so
  bytes that are not UTF-8 are malformed rather than guessed as Latin-1;
- the user ends at the first colon, the password may hold more; no colon is malformed, an
  empty user is well-formed (it names no one; callers refuse it as they see fit).
"""

from __future__ import annotations

import base64
import binascii


class BasicAuthError(ValueError):
    """The header holds no usable Basic credentials.

    ``reason`` is ``"scheme"`` for another scheme (``Bearer ...``) and ``"malformed"`` for a
    Basic header whose token is missing, not base64, not UTF-8 or without a colon.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_basic(header: str) -> tuple[str, str]:
    """``(user, password)`` of an ``Authorization`` header value; raises :class:`BasicAuthError`."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise BasicAuthError("scheme")
    token = token.strip()
    if not token:
        raise BasicAuthError("malformed")
    try:
        text = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError and non-ASCII tokens are ValueErrors
        raise BasicAuthError("malformed") from None
    user, colon, password = text.partition(":")
    if not colon:
        raise BasicAuthError("malformed")
    return user, password


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` header value that :func:`parse_basic` reads back as ``(user, password)``."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
