"""What a credential check proved: shared by the authenticator (auth.py) and the one-time
password step (otp_auth.py), which must not import each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wsserver.security.users import User

__all__ = ["Outcome", "RunBlocking"]

# How a blocking check (a password hash, a backend) runs: in the worker's thread pool.
RunBlocking = Callable[..., Any]


@dataclass(frozen=True)
class Outcome:
    """What the credentials proved, before counting: the result of :meth:`Authenticator.verify`."""

    result: str  # ok | anonymous | missing | invalid | forbidden
    user: User | None = None
    reason: str = ""
    name: str = ""  # a configured user's name on a failed attempt, for the log
