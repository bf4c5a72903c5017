"""Who may use the admin listener: HTTP Basic for the API, a signed cookie for the console.

An administrator is a ``[[users]]`` entry with a ``password_hash`` whose ``connection_types``
allow ``admin`` (``empty = all``, as everywhere in docs/security.md). Wrong or missing
credentials get 401 with a ``WWW-Authenticate: Basic`` challenge, a user who logs in correctly
but is not an administrator gets 403, and an address that failed too often gets 429.

Password checks cost about 0.1 s (scrypt): they run on a thread (the hash releases the GIL),
and a correct ``user:password`` pair is remembered for :data:`CACHE_SECONDS` (as an HMAC of
it, never the password) so scripts and the CLI do not pay it on every request.

Console sessions are stateless signed cookies: ``user|expires|nonce|fp`` with an HMAC under a
key the master draws at start and hands to every admin process it forks, so a session
survives the admin process being replaced by a reload (and ends with the master). ``fp`` is a
digest of the user's password hash: changing the password ends the user's sessions. The CSRF
token of a session is an HMAC of its nonce: nothing to store, different for every session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from wsserver.protocol.basic_auth import BasicAuthError, parse_basic
from wsserver.security.passwords import verify, verify_dummy
from wsserver.security.ratelimit import FailureLimiter
from wsserver.security.users import User, UserTable

REALM = 'Basic realm="wsserver admin", charset="UTF-8"'
COOKIE = "wsadmin"
SESSION_SECONDS = 8 * 3600
CACHE_SECONDS = 300.0
CACHE_MAX = 256
REVOKED_MAX = 4096


def is_admin(user: User) -> bool:
    return bool(user.password_hash) and (not user.connection_types or "admin" in user.connection_types)


def admin_users(config: Any) -> list[str]:
    """Names of the configured users who may log in to the admin listener."""
    table = UserTable(config.users)
    return [u.name for u in config.users if (user := table.get(u.name)) is not None and is_admin(user)]


@dataclass(frozen=True)
class Verdict:
    status: int  # 200 ok, 401, 403, 429
    user: str = ""
    retry_after: int | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AdminAuth:
    def __init__(
        self,
        users: Iterable[Any],
        secret: bytes,
        run_hash: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.users = UserTable(users)
        self.secret = secret
        self.clock = clock
        # run_hash(fn, *args) runs the CPU-heavy hash off the event loop (a thread pool).
        self.run_hash = run_hash or (lambda fn, *args: fn(*args))
        self.limiter = FailureLimiter(burst=10, refill_per_minute=6.0)
        self._good: OrderedDict[bytes, float] = OrderedDict()  # HMAC(user:password) -> until
        self._revoked: OrderedDict[str, None] = OrderedDict()

    # ---- HTTP Basic ------------------------------------------------------------------------
    def check_basic(self, header: str, peer: str) -> Verdict:
        """The verdict for an ``Authorization`` header value ("" when absent)."""
        try:
            name, password = parse_basic(header)
        except BasicAuthError:
            return Verdict(401)  # not a guess at a password: the failure limit does not count it
        return self.check_password(name, password, peer)

    def check_password(self, name: str, password: str, peer: str) -> Verdict:
        retry = self.limiter.retry_after(peer)
        if retry is not None:
            return Verdict(429, retry_after=retry)
        user = self.users.get(name)
        key = hmac.new(
            self.secret, f"{name}\0{password}".encode("utf-8", "surrogateescape"), "sha256"
        ).digest()
        now = time.monotonic()
        if user is not None and self._good.get(key, 0.0) > now:
            return Verdict(200 if is_admin(user) else 403, name)
        if user is not None and user.password_hash:
            ok = bool(self.run_hash(verify, user.password_hash, password))
        else:
            ok = bool(self.run_hash(verify_dummy, password, self.users.dummy_hash))
        if not ok or user is None:
            self.limiter.failed(peer)
            return Verdict(401)
        self._good[key] = now + CACHE_SECONDS
        self._good.move_to_end(key)
        while len(self._good) > CACHE_MAX:
            self._good.popitem(last=False)
        return Verdict(200 if is_admin(user) else 403, name)

    # ---- console sessions --------------------------------------------------------------------
    def _fingerprint(self, user: User) -> str:
        return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), "sha256").digest())

    def issue(self, name: str) -> str:
        """A session cookie value for a user who just logged in."""
        user = self.users.get(name)
        assert user is not None
        payload = f"{name}|{int(self.clock()) + SESSION_SECONDS}|{secrets.token_urlsafe(12)}|{self._fingerprint(user)}"
        return f"{_b64(payload.encode())}.{self._sign(payload)}"

    def session(self, cookie: str) -> tuple[str, str] | None:
        """(user, nonce) of a valid session cookie value, else None."""
        encoded, _, signature = cookie.partition(".")
        try:
            payload = _unb64(encoded).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        parts = payload.rsplit("|", 3)
        if len(parts) != 4:
            return None
        name, expires, nonce, fingerprint = parts
        user = self.users.get(name)
        if (
            user is None
            or not is_admin(user)
            or not expires.isdigit()
            or int(expires) < self.clock()
            or nonce in self._revoked
            or not hmac.compare_digest(fingerprint, self._fingerprint(user))
        ):
            return None
        return name, nonce

    def revoke(self, nonce: str) -> None:
        self._revoked[nonce] = None
        while len(self._revoked) > REVOKED_MAX:
            self._revoked.popitem(last=False)

    def csrf_token(self, nonce: str) -> str:
        return self._sign(f"csrf|{nonce}")

    def check_csrf(self, nonce: str, token: str) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(nonce), token)


def new_secret() -> bytes:
    return os.urandom(32)
