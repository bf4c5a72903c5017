"""Can this config run here? The one answer, for ``wsserver check``, ``wsserver serve``, the
master's reload and the admin API's edits.

:func:`wsserver.config.parse_config` checks the text only. What else a config needs in order to
run is checked here, in two steps, each reporting every problem as one line in the loader's
format (``FILE: key = value: message``):

1. while parsing (:func:`parse`, :func:`load`), the rules that need more than the text
   (:class:`~wsserver.config.host.HostChecks`): password-hash, token and JWT key formats, a
   port's SNI names, OTP adapter settings, the ``*_env`` variables (``[cluster]``,
   ``[metrics]``, adapters' secrets) and the files adapters name. They run inside the
   loader's rules pass, so a file with a typo and a bad hash gets both lines in one round;
2. on the parsed config (:func:`preflight`): the keystores and truststores open with the
   ports' TLS settings (SNI keys, OCSP and stapling included), every adapter's TLS client
   context builds, and, when the caller hands in a way to do it, the endpoint handlers
   import and instantiate.

Importing endpoints is the caller's: the handlers' code imports the public API
(``wsserver``) and the runtime's loader, which sit above this module; the master does it in a
short-lived child (``wsserver.prefork.arbiter.check_endpoints``) so that it never imports
endpoint code itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from wsserver.config import Config, ConfigError, JWTConfig, load_config, parse_config, require_ports
from wsserver.config.host import HostChecks
from wsserver.security.adapter_tls import check_adapter_tls
from wsserver.security.jwt import JWTKeyError, load_key_material, parse_key
from wsserver.security.passwords import HashFormatError, check_hash
from wsserver.security.sni import check_port_sni
from wsserver.security.tls import TLSConfigError, tls_for_config, uses_tls
from wsserver.security.users import TOKEN_HELP, check_token, token_digest

# Imports and instantiates a config's endpoints: the error text (one line per problem), or None.
EndpointCheck = Callable[[Config], "str | None"]


def host_checks(environ: Mapping[str, str] | None = None) -> HostChecks:
    """The checks :func:`parse_config` runs beyond the text, reading ``environ`` (default: the
    process environment) and the file system."""
    env = os.environ if environ is None else environ

    def password_hash(text: str) -> str | None:
        try:
            check_hash(text)
        except HashFormatError as exc:
            return str(exc)
        return None

    def jwt_key(jwt: JWTConfig) -> str | None:
        try:
            parse_key(load_key_material(jwt.key, jwt.key_file, jwt.key_env, environ=env), jwt.algorithms)
        except JWTKeyError as exc:
            return str(exc)
        return None

    host = HostChecks(
        environ=env,
        is_file=os.path.isfile,
        password_hash=password_hash,
        token=lambda text: None if check_token(text) else TOKEN_HELP,
        token_digest=token_digest,
        jwt_key=jwt_key,
        port_sni=check_port_sni,
    )
    return host


def parse(text: str, source: str = "<string>", *, environ: Mapping[str, str] | None = None) -> Config:
    """:func:`parse_config` with every check of step 1. Raises ConfigError."""
    return parse_config(text, source, host=host_checks(environ))


def load(path: str | os.PathLike[str] | None, *, environ: Mapping[str, str] | None = None) -> Config:
    """:func:`load_config` (a missing [[ports]] refused too) with every check of step 1. Raises ConfigError."""
    return load_config(path, host=host_checks(environ))


@dataclass
class Result:
    """What :func:`check_file` / :func:`check_text` found: no config when it did not parse."""

    config: Config | None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the keystores' keys: subject, SANs, expiry

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.errors


def preflight(config: Config, *, import_endpoints: EndpointCheck | None = None) -> list[str]:
    """Step 2 on a parsed config: the error lines (empty = it can run here)."""
    return _step2(config, import_endpoints, notes=None)


def _step2(config: Config, import_endpoints: EndpointCheck | None, notes: list[str] | None) -> list[str]:
    if import_endpoints is not None:
        error = import_endpoints(config)
        if error is not None:
            # An endpoint that does not load stops here, as a worker would: the TLS check opens
            # keystores (PINs, tokens) for a config that cannot serve anyway.
            return error.splitlines() or [error]
    errors: list[str] = []
    if uses_tls(config):
        try:
            material = tls_for_config(config)  # cached per Config: the master's workers inherit it
        except TLSConfigError as exc:
            errors = list(exc.errors)
        else:
            if notes is not None:
                notes += material.report()
    # The adapters' TLS to their backends, as a worker builds it: refused here, not at boot.
    return errors + check_adapter_tls(config)


def check_config(config: Config, *, import_endpoints: EndpointCheck | None = None) -> Result:
    """Step 2 with the notes ``wsserver check`` prints."""
    notes: list[str] = []
    errors = _step2(config, import_endpoints, notes)
    return Result(config, errors, notes if not errors else [])


def check_file(
    path: str | os.PathLike[str] | None,
    *,
    environ: Mapping[str, str] | None = None,
    import_endpoints: EndpointCheck | None = None,
) -> Result:
    """Both steps for a config file (None: the built-in config)."""
    try:
        config = load(path, environ=environ)
    except ConfigError as exc:
        return Result(None, exc.errors)
    return check_config(config, import_endpoints=import_endpoints)


def check_text(
    text: str,
    source: str,
    *,
    environ: Mapping[str, str] | None = None,
    import_endpoints: EndpointCheck | None = None,
) -> Result:
    """Both steps for the text of a config file named ``source`` (the admin API's edits)."""
    try:
        config = require_ports(parse(text, source, environ=environ), source)
    except ConfigError as exc:
        return Result(None, exc.errors)
    return check_config(config, import_endpoints=import_endpoints)
