"""The user table: who may connect, with what credentials, to which ports and endpoints.

Built once from ``[[users]]``. Tokens are kept only as SHA-256 digests and compared in
constant time against every entry, so neither timing nor memory dumps give them away.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsserver.config import UserConfig

__all__ = ["CONNECTION_TYPES", "User", "UserTable", "check_token", "token_digest"]

CONNECTION_TYPES = ("ws", "wss", "admin")
MIN_TOKEN_LENGTH = 16
TOKEN_HELP = (
    f"a bearer token of at least {MIN_TOKEN_LENGTH} characters of A-Z a-z 0-9 - . _ ~ + / "
    '(e.g. from `python -c "import secrets; print(secrets.token_urlsafe(32))"`), '
    'or "sha256:" followed by the 64 hex digits of its SHA-256'
)
# RFC 6750 b64token: what a client can put after "Bearer ".
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SHA256_FORM = re.compile(r"sha256:[0-9a-fA-F]{64}")


def check_token(text: str) -> bool:
    """Whether a configured ``token`` is usable: "", a strong enough token, or its digest form."""
    if not text or _SHA256_FORM.fullmatch(text):
        return True
    return len(text) >= MIN_TOKEN_LENGTH and _B64TOKEN.fullmatch(text) is not None


def token_digest(presented: str) -> bytes:
    return hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()


def _configured_digest(text: str) -> bytes | None:
    if not text:
        return None
    if _SHA256_FORM.fullmatch(text):
        return bytes.fromhex(text[len("sha256:") :])
    return token_digest(text)


@dataclass(frozen=True)
class User:
    """One user's identity and limits; empty limits mean "all"."""

    name: str
    password_hash: str = ""
    connection_types: frozenset[str] = frozenset()
    ports: frozenset[str] = frozenset()
    endpoints: frozenset[str] = frozenset()

    def may_use(self, connection_type: str, port_alias: str, path: str) -> bool:
        return (
            (not self.connection_types or connection_type in self.connection_types)
            and (not self.ports or port_alias in self.ports)
            and (not self.endpoints or path in self.endpoints)
        )

    def __repr__(self) -> str:  # the hash stays out of logs and tracebacks
        return f"User({self.name!r})"


class UserTable:
    """Users by name and by token digest."""

    def __init__(self, users: Iterable[UserConfig] = ()) -> None:
        self._by_name: dict[str, User] = {}
        self._tokens: list[tuple[bytes, User]] = []
        for cfg in users:
            user = User(
                cfg.name,
                cfg.password_hash,
                frozenset(cfg.connection_types),
                frozenset(cfg.ports),
                frozenset(cfg.endpoints),
            )
            self._by_name[user.name] = user
            digest = _configured_digest(cfg.token)
            if digest is not None:
                self._tokens.append((digest, user))
        self._dummy = next((u.password_hash for u in self._by_name.values() if u.password_hash), "")

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> User | None:
        return self._by_name.get(name)

    def by_token(self, presented: str) -> User | None:
        """The user whose token this is. Compares against every entry: no early exit."""
        digest = token_digest(presented)
        found = None
        for stored, user in self._tokens:
            if hmac.compare_digest(stored, digest):
                found = user
        return found

    @property
    def dummy_hash(self) -> str:
        """A configured password hash: checking an unknown user against it costs the same time."""
        return self._dummy

    @property
    def has_passwords(self) -> bool:
        return any(u.password_hash for u in self._by_name.values())

    @property
    def has_tokens(self) -> bool:
        return bool(self._tokens)
