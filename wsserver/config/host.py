"""The checks :func:`~wsserver.config.parse_config` runs only when the caller hands them in.

Some rules of wsserver.toml cannot be decided from the text alone: a password hash or a token
is well formed (``security/`` knows the formats), a JWT key parses, an SNI name routes to a
key, an OTP adapter's first factor is usable, an environment variable is set, a file exists.
``config/`` is the bottom layer and imports nothing above it, and ``parse_config`` reads no
file and no environment; so each such rule asks a :class:`HostChecks` here. Without one
(:data:`PURE`) the rule is skipped. :mod:`wsserver.preflight` builds the real one, and the
lines it adds are the same lines, in the same place, as when the loader made the calls itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HostChecks:
    """Each field None: that rule is not checked (nothing is read or imported for it)."""

    # The environment: *_env settings name variables that must be set.
    environ: Mapping[str, str] | None = None
    # Files named by the config (an adapter's secret_file, dictionary, issuers) must exist.
    is_file: Callable[[str], bool] | None = None
    # The problem with a [[users]]/[metrics] password_hash, or None when it is well formed.
    password_hash: Callable[[str], str | None] | None = None
    # The problem with a [[users]] token (worded to follow "must be"), or None.
    token: Callable[[str], str | None] | None = None
    # The digest two tokens are compared by (the same token twice is refused).
    token_digest: Callable[[str], bytes] | None = None
    # The problem with a port's [ports.jwt] key (key, key_file or key_env), or None.
    jwt_key: Callable[[Any], str | None] | None = None
    # A wss port's [ports.tls.sni] table: (errors, port, index, options, keystores, *, keystores_complete).
    port_sni: Callable[..., None] | None = None

    def env_value(self, name: str) -> str | None:
        """The variable's value; None when it is unset (or the environment is not consulted)."""
        return None if self.environ is None else self.environ.get(name)

    def env_unset(self, name: str) -> bool:
        """Whether ``name`` is known not to be set (False when the environment is not consulted)."""
        return self.environ is not None and name not in self.environ

    def env_empty(self, name: str) -> bool:
        """Whether ``name`` is known to be unset or empty."""
        return self.environ is not None and not self.environ.get(name)

    def file_missing(self, path: str) -> bool:
        """Whether ``path`` is known not to be a file (False when files are not looked at)."""
        return self.is_file is not None and not self.is_file(path)


PURE = HostChecks()  # text only: what parse_config checks when given nothing
