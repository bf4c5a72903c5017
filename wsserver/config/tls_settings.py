"""The TLS tables of wsserver.toml: ``[[keystores]]`` and ``[[truststores]]``, and the rules that
tie them to ``[server.tls]`` and ``[ports.tls]``.

The tables are declared for the settings engine (config/settings.py), which checks every key;
the rules here are the rest, run by config/rules.py:

* one entry: :func:`check_keystore` / :func:`check_truststore` (what a type needs or does not
  use); :func:`parse_keystores` / :func:`parse_truststores` run the engine and these on one array;
* references: :func:`check_tls_references` checks what spans tables (a ``wss`` port has a key,
  every alias named exists, a PEM key alias is configured, the cipher string is valid).

Neither pass opens a keystore file: that is :func:`wsserver.security.tls.load_tls`, which
reports wrong passwords, missing aliases, expired certificates and mismatched keys.

Every problem is one line, in the config loader's format::

    wsserver.toml: keystores[0].type = "pfx": must be one of "pem", "pkcs12", "jks", "pkcs11"

A PEM keystore names its keys in a table (``[keystores.keys.ALIAS]``) or an array of tables
(``[[keystores.keys]]`` with an ``alias`` key, the form ``wsserver check`` writes)::

    [[keystores]]
    alias = "main"
    type = "pem"
    [keystores.keys.default]
    cert = "certs/default.crt"      # leaf first; more certificates here are the chain
    key = "certs/default.key"       # may be encrypted with the keystore's password
    chain = "certs/intermediates.pem"   # optional

Why one long module: keystores, truststores and every TLS reference to them are validated
together (an alias is checked against what the same file declares).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from wsserver.config.settings import Builder, Errors, ValueRule, known_names, one_of, setting, usable
from wsserver.config.tomltext import toml_value
from wsserver.config.values import ALIAS_HELP, ALIAS_PATTERN

KEYSTORE_TYPES = ("pem", "pkcs12", "jks", "pkcs11")
TRUSTSTORE_TYPES = ("pem", "pkcs12", "jks")

# Key aliases come from other tools (keytool lower-cases them, PKCS#12 friendly names may hold
# spaces): any printable text without control characters.
KEY_ALIAS_PATTERN = r"[^\x00-\x1f\x7f]{1,255}"
KEY_ALIAS_HELP = "1-255 printable characters"
ENV_PATTERN = r"|[A-Za-z_][A-Za-z0-9_]*"
ENV_HELP = "an environment variable name (A-Z a-z 0-9 _)"
_TRUSTSTORE_TYPES = one_of(TRUSTSTORE_TYPES)
TRUSTSTORE_TYPE = ValueRule(
    lambda value: value in TRUSTSTORE_TYPES,
    f"{_TRUSTSTORE_TYPES} (a PKCS#11 keystore serves as its own truststore)",
)


# --- the tables -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PemKeyConfig:
    """One key of a PEM keystore: the files of its certificate and private key."""

    alias: str = setting("", required=True, pattern=KEY_ALIAS_PATTERN, pattern_help=KEY_ALIAS_HELP)
    cert: str = setting(
        "",
        required=True,
        pattern=r".+",
        pattern_help="a PEM file path",
        help="the certificate first; more certificates in the file are its chain",
    )
    key: str = setting(
        "",
        required=True,
        pattern=r".+",
        pattern_help="a PEM file path",
        help="PKCS#8 or traditional; may be encrypted with the keystore's password",
    )
    chain: str = setting("", help="a PEM file of intermediate certificates; optional")


@dataclass(frozen=True)
class KeystoreConfig:
    """One ``[[keystores]]`` entry."""

    alias: str = setting("", required=True, pattern=ALIAS_PATTERN, pattern_help=ALIAS_HELP)
    type: str = setting("", required=True, choices=KEYSTORE_TYPES)
    path: str = setting("", help="pkcs12, jks: the file; pkcs11: the PKCS#11 module (.so); pem: unused")
    password_env: str = setting(
        "", pattern=ENV_PATTERN, pattern_help=ENV_HELP, help="environment variable holding the password (PIN)"
    )
    password_file: str = setting("", help="file holding the password; one trailing newline is ignored")
    key_password_env: str = setting(
        "",
        pattern=ENV_PATTERN,
        pattern_help=ENV_HELP,
        help="jks only: the key entries' password when it differs from the store's",
    )
    key_password_file: str = setting("", help="jks only: as key_password_env, from a file")
    token: str = setting("", help="pkcs11: the token label")
    keys: tuple[PemKeyConfig, ...] = setting(
        (), keyed_by="alias", help="pem: the key aliases and their files"
    )

    def key_aliases(self) -> tuple[str, ...]:
        return tuple(k.alias for k in self.keys)


@dataclass(frozen=True)
class TruststoreConfig:
    """One ``[[truststores]]`` entry: certificates only."""

    alias: str = setting("", required=True, pattern=ALIAS_PATTERN, pattern_help=ALIAS_HELP)
    type: str = setting("", required=True, pattern_help=_TRUSTSTORE_TYPES, rule=TRUSTSTORE_TYPE)
    path: str = setting("", help="pem: a file of certificates or a directory of *.pem/*.crt files")
    password_env: str = setting("", pattern=ENV_PATTERN, pattern_help=ENV_HELP)
    password_file: str = setting("")


# --- rules of one entry (run after the shape pass, on what it built) --------------------------


def _check_passwords(
    errors: Errors, store: KeystoreConfig | TruststoreConfig, path: str, prefix: str = ""
) -> None:
    env_key, file_key = f"{prefix}password_env", f"{prefix}password_file"
    if getattr(store, env_key) and getattr(store, file_key):
        errors.bad_value(
            f"{path}.{file_key}", f"give {env_key} or {file_key}, not both", getattr(store, file_key)
        )


def check_keystore(errors: Errors, ks: KeystoreConfig, path: str) -> None:
    """Keys that one type needs or does not use."""
    if errors.is_bad(f"{path}.type") or not ks.type:
        return  # the type's own error says enough
    _check_passwords(errors, ks, path)
    _check_passwords(errors, ks, path, "key_")
    kind, shown = ks.type, toml_value(ks.type)
    keys_given = bool(ks.keys) or errors.is_bad(f"{path}.keys")
    if kind == "pem":
        if not keys_given:
            errors.bad_value(
                f"{path}.keys",
                'is required for type "pem" (a table of key aliases: '
                "[keystores.keys.ALIAS] with cert and key)",
            )
        if ks.path:
            errors.bad_value(
                f"{path}.path", 'is not used by type "pem"; name the files in [keystores.keys.ALIAS]', ks.path
            )
    else:
        if keys_given:
            errors.bad_value(
                f"{path}.keys",
                f'is only used by type "pem" (type is {shown}; its key aliases come from the store)',
            )
        if not ks.path and not errors.is_bad(f"{path}.path"):
            what = "the PKCS#11 module (.so)" if kind == "pkcs11" else f"the {kind.upper()} file"
            errors.bad_value(f"{path}.path", f"is required for type {shown} ({what})")
    if kind == "pkcs11":
        if not ks.token and not errors.is_bad(f"{path}.token"):
            errors.bad_value(f"{path}.token", 'is required for type "pkcs11" (the token label)')
    elif ks.token:
        errors.bad_value(f"{path}.token", f'is only used by type "pkcs11" (type is {shown})', ks.token)
    if kind != "jks":
        for key in ("key_password_env", "key_password_file"):
            if getattr(ks, key):
                errors.bad_value(
                    f"{path}.{key}", f'is only used by type "jks" (type is {shown})', getattr(ks, key)
                )


def check_truststore(errors: Errors, ts: TruststoreConfig, path: str) -> None:
    _check_passwords(errors, ts, path)
    if not ts.path and not errors.is_bad(f"{path}.path", f"{path}.type"):
        what = " or directory)" if ts.type == "pem" else ")"
        errors.bad_value(f"{path}.path", "is required (a certificate file" + what)


def _parse_stores(
    cls: type, name: str, tables: Any, source: str, check: Callable[[Errors, Any, str], None]
) -> tuple[tuple[Any, ...], list[str]]:
    errors = Errors(source)
    if tables is None:
        return (), []
    ok, built = Builder(errors).tables(cast(type[Any], cls), tables, name)
    if not ok:
        return (), errors.lines
    for i, item in enumerate(built):
        check(errors, item, f"{name}[{i}]")
    return usable(errors, built, name)[0], errors.lines


def parse_keystores(tables: Any, source: str) -> tuple[tuple[KeystoreConfig, ...], list[str]]:
    """The ``[[keystores]]`` array (``data.get("keystores")``) -> (keystores, error lines).

    Entries with errors are left out of the result, so the reference pass only sees good ones;
    the caller fails when any error line is returned. (parse_config builds them with the rest
    of the file; this is the same engine and rules, for one table.)
    """
    return _parse_stores(KeystoreConfig, "keystores", tables, source, check_keystore)


def parse_truststores(tables: Any, source: str) -> tuple[tuple[TruststoreConfig, ...], list[str]]:
    """The ``[[truststores]]`` array -> (truststores, error lines)."""
    return _parse_stores(TruststoreConfig, "truststores", tables, source, check_truststore)


# --- references between tables -------------------------------------------------------------


# The schema's frozen dataclasses, seen read-only (schema.py imports this module).
class _ServerTLS(Protocol):
    @property
    def keystore(self) -> str: ...
    @property
    def key_alias(self) -> str: ...


class _PortTLS(Protocol):
    @property
    def keystore(self) -> str: ...
    @property
    def key_alias(self) -> str: ...
    @property
    def client_certs(self) -> str: ...
    @property
    def truststore(self) -> str: ...
    @property
    def min_version(self) -> str: ...


class _Port(Protocol):
    @property
    def alias(self) -> str: ...
    @property
    def protocol(self) -> str: ...
    @property
    def tls(self) -> _PortTLS | None: ...


@dataclass(frozen=True)
class KeyChoice:
    """Which key a wss port presents, and where that choice was configured (for messages)."""

    keystore: str
    key_alias: str  # "" = the keystore's only key
    keystore_key: str  # config path of the keystore setting, e.g. "ports[1].tls.keystore"
    key_alias_key: str


@dataclass(frozen=True)
class PortTLSOptions:
    """The effective TLS settings of one wss port, defaults filled in."""

    key: KeyChoice
    client_certs: str = "none"
    truststore: str = ""  # "" = the key's keystore serves as truststore
    truststore_key: str = ""
    min_version: str = "1.2"
    ciphers: str = ""  # "" = tls.DEFAULT_CIPHERS
    ciphers_key: str = ""


def port_tls_options(port: _Port, index: int, server_tls: _ServerTLS) -> PortTLSOptions | None:
    """Resolve a wss port's key: its own ``[ports.tls]`` key, else ``[server.tls]``.

    * ``tls.keystore`` and ``tls.key_alias`` set: that key;
    * only ``tls.key_alias``: that key alias in the server's default keystore;
    * only ``tls.keystore``: the server's key alias if it is the server's keystore, else the
      keystore's only key;
    * neither (or no ``[ports.tls]``): the server's default key.

    None when there is no key at all (an error :func:`check_tls_references` reports).
    """
    path = f"ports[{index}]"
    tls = port.tls
    own_store = getattr(tls, "keystore", "") if tls is not None else ""
    own_alias = getattr(tls, "key_alias", "") if tls is not None else ""
    if own_store:
        if own_alias:
            key = KeyChoice(own_store, own_alias, f"{path}.tls.keystore", f"{path}.tls.key_alias")
        elif own_store == server_tls.keystore:
            key = KeyChoice(own_store, server_tls.key_alias, f"{path}.tls.keystore", "server.tls.key_alias")
        else:
            key = KeyChoice(own_store, "", f"{path}.tls.keystore", f"{path}.tls.key_alias")
    elif server_tls.keystore:
        alias_key = f"{path}.tls.key_alias" if own_alias else "server.tls.key_alias"
        key = KeyChoice(
            server_tls.keystore, own_alias or server_tls.key_alias, "server.tls.keystore", alias_key
        )
    else:
        return None
    if tls is None:
        return PortTLSOptions(key=key)
    return PortTLSOptions(
        key=key,
        client_certs=tls.client_certs,
        truststore=tls.truststore,
        truststore_key=f"{path}.tls.truststore",
        min_version=tls.min_version,
        ciphers=getattr(tls, "ciphers", ""),
        ciphers_key=f"{path}.tls.ciphers",
    )


def check_tls_references(
    server_tls: _ServerTLS,
    ports: Sequence[_Port],
    keystores: Sequence[KeystoreConfig],
    truststores: Sequence[TruststoreConfig],
    source: str,
    *,
    keystores_complete: bool = True,
    truststores_complete: bool = True,
    port_sni: Callable[..., None] | None = None,
) -> list[str]:
    """Rules across tables; returns error lines (empty = fine). No file is opened.

    Pass ``*_complete=False`` when the shape pass dropped a bad entry: then a reference to an
    unknown alias may be a reference to that bad entry, and is not reported twice.
    ``port_sni`` checks a port's ``[ports.tls.sni]`` table (``security.sni.check_port_sni``,
    handed in by the caller: config/ imports nothing above it); None skips it.
    """
    errors = Errors(source)
    stores = {k.alias: k for k in keystores}
    trusts = {t.alias: t for t in truststores}
    _check_unique_aliases(errors, keystores, truststores)

    def check_store(alias: str, key: str) -> KeystoreConfig | None:
        if alias in stores:
            return stores[alias]
        if keystores_complete:
            errors.add(
                key, f"must name a [[keystores]] entry ({known_names(stores, '[[keystores]]')})", alias
            )
        return None

    if server_tls.keystore:
        ks = check_store(server_tls.keystore, "server.tls.keystore")
        if ks is not None:
            _check_key_alias(errors, ks, server_tls.key_alias, "server.tls.key_alias", "server.tls.keystore")
    elif server_tls.key_alias:
        errors.add(
            "server.tls.key_alias",
            "needs server.tls.keystore (the keystore holding that key)",
            server_tls.key_alias,
        )

    for i, port in enumerate(ports):
        path = f"ports[{i}]"
        if port.protocol != "wss":
            if port.tls is not None:
                errors.add(
                    f"{path}.tls",
                    f'is only used by wss ports ({path}.protocol = "{port.protocol}"); '
                    'set protocol = "wss" or remove [ports.tls]',
                )
            continue
        options = port_tls_options(port, i, server_tls)
        if options is None:
            errors.add(
                f"{path}.protocol",
                "needs a TLS key: set [ports.tls] keystore (and key_alias) "
                "or the server's default key in [server.tls]",
                port.protocol,
            )
            continue
        choice = options.key
        if choice.keystore_key != "server.tls.keystore":
            ks = check_store(choice.keystore, choice.keystore_key)
            if ks is not None:
                _check_key_alias(errors, ks, choice.key_alias, choice.key_alias_key, choice.keystore_key)
        elif choice.key_alias_key != "server.tls.key_alias" and choice.keystore in stores:
            _check_key_alias(
                errors, stores[choice.keystore], choice.key_alias, choice.key_alias_key, choice.keystore_key
            )
        known = options.truststore in trusts or options.truststore in stores
        if options.truststore and not known and truststores_complete and keystores_complete:
            errors.add(
                options.truststore_key,
                "must name a [[truststores]] or [[keystores]] entry "
                f"({known_names([*trusts, *stores], '[[truststores]]')})",
                options.truststore,
            )
        if options.truststore and options.client_certs == "none":
            errors.add(
                options.truststore_key,
                f'is only used with client_certs = "request" or "require" ({path}.tls.client_certs = "none")',
                options.truststore,
            )
        if options.ciphers:
            problem = cipher_problem(options.ciphers)
            if problem:
                errors.add(options.ciphers_key, problem, options.ciphers)
        if port_sni is not None and getattr(port.tls, "sni", None):
            port_sni(errors, port, i, options, keystores, keystores_complete=keystores_complete)
    return errors.lines


def _check_unique_aliases(
    errors: Errors, keystores: Sequence[KeystoreConfig], truststores: Sequence[TruststoreConfig]
) -> None:
    # One namespace: a port's truststore may name either kind.
    seen: dict[str, str] = {}
    kinds: tuple[tuple[str, Sequence[KeystoreConfig | TruststoreConfig]], ...] = (
        ("keystores", keystores),
        ("truststores", truststores),
    )
    for name, items in kinds:
        for i, item in enumerate(items):
            if item.alias in seen:
                errors.add(
                    f"{name}[{i}].alias",
                    f"duplicate alias (also {seen[item.alias]}); keystores and "
                    "truststores share one set of aliases",
                    item.alias,
                )
            else:
                seen[item.alias] = f"{name}[{i}]"


def _check_key_alias(errors: Errors, ks: KeystoreConfig, key_alias: str, key: str, store_key: str) -> None:
    """Only PEM keystores list their aliases in the config; the others are checked on load."""
    if ks.type != "pem":
        return
    aliases = ks.key_aliases()
    if key_alias and key_alias not in aliases:
        errors.add(
            key,
            f"keystore {toml_value(ks.alias)} has no key alias {toml_value(key_alias)} "
            f"({known_names(aliases, 'key aliases')})",
            key_alias,
        )
    elif not key_alias and len(aliases) > 1:
        errors.add(
            key,
            f"is required: keystore {toml_value(ks.alias)} ({store_key}) holds {len(aliases)} keys "
            f"({known_names(aliases, 'key aliases')})",
        )


def cipher_problem(ciphers: str) -> str | None:
    """Why an OpenSSL cipher string is unusable for TLS 1.2, or None when it is fine."""
    from OpenSSL import SSL  # imported here: the shape pass must not need OpenSSL

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    try:
        ctx.set_cipher_list(ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        return 'must be an OpenSSL cipher list matching at least one TLS 1.2 cipher, e.g. "ECDHE+AESGCM"'
    return None


def resolve_path(path: str, base_dir: str | os.PathLike[str] | None) -> str:
    """Relative paths in the config are relative to the config file's directory."""
    if not path or os.path.isabs(path) or base_dir is None:
        return path
    return os.path.join(os.fspath(base_dir), path)
