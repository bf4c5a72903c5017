"""The TLS tables of wsserver.toml: ``[[keystores]]`` and ``[[truststores]]``, and the rules that
tie them to ``[server.tls]`` and ``[ports.tls]``.

Two passes, like the config loader:

* shape: :func:`parse_keystores` / :func:`parse_truststores` turn the raw TOML tables into
  frozen dataclasses and report every bad key or value;
* references: :func:`check_tls_references` checks what spans tables (a ``wss`` port has a key,
  every alias named exists, a PEM key alias is configured, the cipher string is valid).

Neither pass opens a keystore file: that is :func:`wsserver.security.tls.load_tls`, which
reports wrong passwords, missing aliases, expired certificates and mismatched keys.

Every problem is one line, in the config loader's format::

    wsserver.toml: keystores[0].type = "pfx": must be one of "pem", "pkcs12", "jks", "pkcs11"

A PEM keystore names its keys in a table (``[keystores.keys.ALIAS]``) or an array of tables
(``[[keystores.keys]]`` with an ``alias`` key, the form :func:`keystore_to_toml` writes)::

    [[keystores]]
    alias = "main"
    type = "pem"
    [keystores.keys.default]
    cert = "certs/default.crt"      # leaf first; more certificates here are the chain
    key = "certs/default.key"       # may be encrypted with the keystore's password
    chain = "certs/intermediates.pem"   # optional

Why one long module: keystores, truststores and every TLS reference to them are validated
together (an alias is checked against what the same file declares); like loader.py it is to
move onto the settings registry.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, cast

KEYSTORE_TYPES = ("pem", "pkcs12", "jks", "pkcs11")
TRUSTSTORE_TYPES = ("pem", "pkcs12", "jks")
CLIENT_CERTS = ("none", "request", "require")
MIN_VERSIONS = ("1.2", "1.3")

ALIAS_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,255}")
ALIAS_HELP = "1-255 characters of a-z A-Z 0-9 _ . -"
# Key aliases come from other tools (keytool lower-cases them, PKCS#12 friendly names may hold
# spaces): any printable text without control characters.
KEY_ALIAS_PATTERN = re.compile(r"[^\x00-\x1f\x7f]{1,255}")
KEY_ALIAS_HELP = "1-255 printable characters"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _quote(value: Any) -> str:
    """A value as TOML shows it (the loader's style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value.replace("\\", "\\\\").replace('"', '\\"')
        text = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m[0]):04x}", text)
        if len(text) > 48:
            return f'"{text[:40]}..." ({len(value)} characters)'
        return f'"{text}"'
    if isinstance(value, (dict, list)):
        return "a table" if isinstance(value, dict) else "an array"
    return str(value)


def choices_text(choices: Iterable[str]) -> str:
    return "one of " + ", ".join(_quote(c) for c in choices)


class ErrorList:
    """Collects one-line errors ``SOURCE: PATH = VALUE: MESSAGE`` (the config loader's format)."""

    _NO_VALUE = object()

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, path: str, message: str, value: Any = _NO_VALUE) -> None:
        shown = ""
        if value is not self._NO_VALUE and not isinstance(value, (dict, list)):
            shown = f" = {_quote(value)}"
        self.lines.append(f"{self.source}: {path}{shown}: {message}")


# --- the dataclasses ------------------------------------------------------------------------


@dataclass(frozen=True)
class PemKeyConfig:
    """One key of a PEM keystore: the files of its certificate and private key."""

    alias: str
    cert: str  # PEM file: the certificate first, then (optionally) its chain
    key: str  # PEM private key, PKCS#8 or traditional; encrypted with the keystore password
    chain: str = ""  # optional PEM file of intermediate certificates


@dataclass(frozen=True)
class KeystoreConfig:
    """One ``[[keystores]]`` entry."""

    alias: str
    type: str
    path: str = ""  # pkcs12/jks: the file; pkcs11: the PKCS#11 module (.so); pem: unused
    password_env: str = ""  # name of an environment variable holding the password (PIN)
    password_file: str = ""  # a file holding the password; one trailing newline is ignored
    key_password_env: str = ""  # jks only: key entries' password when it differs from the store's
    key_password_file: str = ""
    token: str = ""  # pkcs11: the token label
    keys: tuple[PemKeyConfig, ...] = ()  # pem: the key aliases and their files

    def key_aliases(self) -> tuple[str, ...]:
        return tuple(k.alias for k in self.keys)


@dataclass(frozen=True)
class TruststoreConfig:
    """One ``[[truststores]]`` entry: certificates only."""

    alias: str
    type: str
    path: str = ""  # pem: a file of certificates or a directory of *.pem/*.crt files
    password_env: str = ""
    password_file: str = ""


# Keys each table accepts, for "unknown key; did you mean" (the dataclass fields are the TOML keys).
_KEYSTORE_KEYS = tuple(f.name for f in fields(KeystoreConfig))
_TRUSTSTORE_KEYS = tuple(f.name for f in fields(TruststoreConfig))
_PEM_KEY_KEYS = ("cert", "key", "chain")


def _unknown(errors: ErrorList, path: str, key: str, value: Any, known: Sequence[str]) -> None:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f'did you mean "{close[0]}"?' if close else "known keys: " + ", ".join(known)
    errors.add(f"{path}.{key}", f"unknown key; {hint}", value)


def _string(errors: ErrorList, table: Mapping[str, Any], key: str, path: str) -> str | None:
    value = table.get(key, "")
    if not isinstance(value, str):
        errors.add(f"{path}.{key}", "must be a string", value)
        return None
    return value


def _alias(errors: ErrorList, table: Mapping[str, Any], path: str) -> str | None:
    if "alias" not in table:
        errors.add(f"{path}.alias", f"is required ({ALIAS_HELP})")
        return None
    value = table["alias"]
    if not isinstance(value, str) or not ALIAS_PATTERN.fullmatch(value):
        errors.add(f"{path}.alias", f"must be {ALIAS_HELP}", value)
        return None
    return value


def _type(errors: ErrorList, table: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> str | None:
    if "type" not in table:
        errors.add(f"{path}.type", f"is required ({choices_text(allowed)})")
        return None
    value = table["type"]
    if value not in allowed:
        if value == "pkcs11" and allowed is TRUSTSTORE_TYPES:
            message = f"must be {choices_text(allowed)} (a PKCS#11 keystore serves as its own truststore)"
        else:
            message = f"must be {choices_text(allowed)}"
        errors.add(f"{path}.type", message, value)
        return None
    return cast(str, value)  # one of ``allowed``


def _password_keys(errors: ErrorList, table: Mapping[str, Any], path: str, prefix: str = "") -> dict[str, str]:
    out = {}
    env_key, file_key = f"{prefix}password_env", f"{prefix}password_file"
    env = _string(errors, table, env_key, path)
    pfile = _string(errors, table, file_key, path)
    if env:
        if ENV_NAME.fullmatch(env):
            out[env_key] = env
        else:
            errors.add(f"{path}.{env_key}", "must be an environment variable name (A-Z a-z 0-9 _)", env)
    if pfile is not None:
        out[file_key] = pfile
    if env and pfile:
        errors.add(f"{path}.{file_key}", f"give {env_key} or {file_key}, not both", pfile)
    return out


def _pem_keys(errors: ErrorList, value: Any, path: str) -> tuple[PemKeyConfig, ...] | None:
    """``keys`` as a table alias -> {cert, key, chain} or an array of tables with ``alias``."""
    items: list[tuple[str, Any, str]] = []  # (alias, table, path of the table)
    if isinstance(value, dict):
        items = [(alias, table, f"{path}.{_path_key(alias)}") for alias, table in value.items()]
    elif isinstance(value, list):
        for i, table in enumerate(value):
            sub = f"{path}[{i}]"
            if not isinstance(table, dict):
                errors.add(sub, "must be a table with alias, cert, key and optionally chain", table)
                continue
            alias = table.get("alias")
            if not isinstance(alias, str):
                errors.add(f"{sub}.alias", f"is required ({KEY_ALIAS_HELP})")
                continue
            items.append((alias, {k: v for k, v in table.items() if k != "alias"}, sub))
    else:
        errors.add(path, "must be a table of key aliases ([keystores.keys.ALIAS] with cert and key)", value)
        return None
    if not items:
        errors.add(path, "must name at least one key alias ([keystores.keys.ALIAS] with cert and key)")
        return None
    keys: list[PemKeyConfig] = []
    seen: dict[str, str] = {}
    ok = True
    for alias, table, sub in items:
        if not KEY_ALIAS_PATTERN.fullmatch(alias):
            errors.add(sub, f"key alias {_quote(alias)} must be {KEY_ALIAS_HELP}")
            ok = False
            continue
        if alias in seen:
            errors.add(sub, f"duplicate key alias {_quote(alias)} (also {seen[alias]})")
            ok = False
            continue
        seen[alias] = sub
        if not isinstance(table, dict):
            errors.add(sub, "must be a table with cert, key and optionally chain", table)
            ok = False
            continue
        for key, v in table.items():
            if key not in _PEM_KEY_KEYS:
                _unknown(errors, sub, key, v, _PEM_KEY_KEYS)
                ok = False
        files = {}
        for key in _PEM_KEY_KEYS:
            text = _string(errors, table, key, sub)
            if text is None:
                ok = False
            elif not text and key != "chain":
                errors.add(f"{sub}.{key}", "is required (a PEM file path)")
                ok = False
            else:
                files[key] = text
        if ok:
            keys.append(PemKeyConfig(alias=alias, **files))
    return tuple(keys) if ok else None


def _path_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _quote(key)


def _parse_keystore(errors: ErrorList, table: Any, path: str) -> KeystoreConfig | None:
    if not isinstance(table, dict):
        errors.add(path, "must be a table ([[keystores]])", table)
        return None
    before = len(errors.lines)
    for key, value in table.items():
        if key not in _KEYSTORE_KEYS:
            _unknown(errors, path, key, value, _KEYSTORE_KEYS)
    alias = _alias(errors, table, path)
    kind = _type(errors, table, path, KEYSTORE_TYPES)
    values: dict[str, Any] = {}
    for key in ("path", "token"):
        text = _string(errors, table, key, path)
        if text:
            values[key] = text
    values.update(_password_keys(errors, table, path))
    values.update(_password_keys(errors, table, path, "key_"))
    if kind is not None:
        _check_keystore_kind(errors, table, path, kind, values)
        if kind == "pem" and "keys" in table:
            keys = _pem_keys(errors, table["keys"], f"{path}.keys")
            if keys is not None:
                values["keys"] = keys
    if len(errors.lines) > before or alias is None or kind is None:
        return None
    return KeystoreConfig(alias=alias, type=kind, **values)


def _check_keystore_kind(errors: ErrorList, table: Mapping[str, Any], path: str, kind: str,
                         values: Mapping[str, Any]) -> None:
    """Keys that one type needs or does not use."""
    shown = _quote(kind)
    if kind == "pem":
        if "keys" not in table:
            errors.add(f"{path}.keys", "is required for type \"pem\" (a table of key aliases: "
                       "[keystores.keys.ALIAS] with cert and key)")
        if values.get("path"):
            errors.add(f"{path}.path", 'is not used by type "pem"; name the files in [keystores.keys.ALIAS]',
                       values["path"])
    else:
        if "keys" in table:
            errors.add(f"{path}.keys", f"is only used by type \"pem\" (type is {shown}; its key aliases "
                       "come from the store)", table["keys"])
        if not values.get("path") and isinstance(table.get("path", ""), str):
            what = "the PKCS#11 module (.so)" if kind == "pkcs11" else f"the {kind.upper()} file"
            errors.add(f"{path}.path", f"is required for type {shown} ({what})")
    if kind == "pkcs11":
        if not values.get("token") and isinstance(table.get("token", ""), str):
            errors.add(f"{path}.token", 'is required for type "pkcs11" (the token label)')
    elif values.get("token"):
        errors.add(f"{path}.token", f'is only used by type "pkcs11" (type is {shown})', values["token"])
    if kind != "jks":
        for key in ("key_password_env", "key_password_file"):
            if values.get(key):
                errors.add(f"{path}.{key}", f'is only used by type "jks" (type is {shown})', values[key])


def _parse_truststore(errors: ErrorList, table: Any, path: str) -> TruststoreConfig | None:
    if not isinstance(table, dict):
        errors.add(path, "must be a table ([[truststores]])", table)
        return None
    before = len(errors.lines)
    for key, value in table.items():
        if key not in _TRUSTSTORE_KEYS:
            _unknown(errors, path, key, value, _TRUSTSTORE_KEYS)
    alias = _alias(errors, table, path)
    kind = _type(errors, table, path, TRUSTSTORE_TYPES)
    values: dict[str, Any] = {}
    text = _string(errors, table, "path", path)
    if text:
        values["path"] = text
    elif text is not None:
        errors.add(f"{path}.path", "is required (a certificate file" + (" or directory)" if kind == "pem" else ")"))
    values.update(_password_keys(errors, table, path))
    if len(errors.lines) > before or alias is None or kind is None:
        return None
    return TruststoreConfig(alias=alias, type=kind, **values)


def _parse_array(tables: Any, source: str, name: str, parse: Any) -> tuple[tuple[Any, ...], list[str]]:
    errors = ErrorList(source)
    if tables is None:
        return (), []
    if not isinstance(tables, list):
        errors.add(name, f"must be an array of tables ([[{name}]])", tables)
        return (), errors.lines
    items = []
    for i, table in enumerate(tables):
        item = parse(errors, table, f"{name}[{i}]")
        if item is not None:
            items.append(item)
    return tuple(items), errors.lines


def parse_keystores(tables: Any, source: str) -> tuple[tuple[KeystoreConfig, ...], list[str]]:
    """The ``[[keystores]]`` array (``data.get("keystores")``) -> (keystores, error lines).

    Entries with errors are left out of the result, so the reference pass only sees good ones;
    the caller fails when any error line is returned.
    """
    return _parse_array(tables, source, "keystores", _parse_keystore)


def parse_truststores(tables: Any, source: str) -> tuple[tuple[TruststoreConfig, ...], list[str]]:
    """The ``[[truststores]]`` array -> (truststores, error lines)."""
    return _parse_array(tables, source, "truststores", _parse_truststore)


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
        key = KeyChoice(server_tls.keystore, own_alias or server_tls.key_alias, "server.tls.keystore", alias_key)
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


def _known(names: Iterable[str], what: str) -> str:
    names = list(names)
    return "known: " + ", ".join(_quote(n) for n in names) if names else f"no {what} configured"


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
    errors = ErrorList(source)
    stores = {k.alias: k for k in keystores}
    trusts = {t.alias: t for t in truststores}
    _check_unique_aliases(errors, keystores, truststores)

    def check_store(alias: str, key: str) -> KeystoreConfig | None:
        if alias in stores:
            return stores[alias]
        if keystores_complete:
            errors.add(key, f"must name a [[keystores]] entry ({_known(stores, '[[keystores]]')})", alias)
        return None

    if server_tls.keystore:
        ks = check_store(server_tls.keystore, "server.tls.keystore")
        if ks is not None:
            _check_key_alias(errors, ks, server_tls.key_alias, "server.tls.key_alias", "server.tls.keystore")
    elif server_tls.key_alias:
        errors.add("server.tls.key_alias", "needs server.tls.keystore (the keystore holding that key)",
                   server_tls.key_alias)

    for i, port in enumerate(ports):
        path = f"ports[{i}]"
        if port.protocol != "wss":
            if port.tls is not None:
                errors.add(f"{path}.tls", f'is only used by wss ports ({path}.protocol = "{port.protocol}"); '
                           'set protocol = "wss" or remove [ports.tls]')
            continue
        options = port_tls_options(port, i, server_tls)
        if options is None:
            errors.add(f"{path}.protocol", "needs a TLS key: set [ports.tls] keystore (and key_alias) "
                       "or the server's default key in [server.tls]", port.protocol)
            continue
        choice = options.key
        if choice.keystore_key != "server.tls.keystore":
            ks = check_store(choice.keystore, choice.keystore_key)
            if ks is not None:
                _check_key_alias(errors, ks, choice.key_alias, choice.key_alias_key, choice.keystore_key)
        elif choice.key_alias_key != "server.tls.key_alias" and choice.keystore in stores:
            _check_key_alias(errors, stores[choice.keystore], choice.key_alias, choice.key_alias_key,
                             choice.keystore_key)
        known = options.truststore in trusts or options.truststore in stores
        if options.truststore and not known and truststores_complete and keystores_complete:
            errors.add(options.truststore_key, "must name a [[truststores]] or [[keystores]] entry "
                       f"({_known([*trusts, *stores], '[[truststores]]')})", options.truststore)
        if options.truststore and options.client_certs == "none":
            errors.add(options.truststore_key, f'is only used with client_certs = "request" or "require" '
                       f'({path}.tls.client_certs = "none")', options.truststore)
        if options.ciphers:
            problem = cipher_problem(options.ciphers)
            if problem:
                errors.add(options.ciphers_key, problem, options.ciphers)
        if port_sni is not None and getattr(port.tls, "sni", None):
            port_sni(errors, port, i, options, keystores, keystores_complete=keystores_complete)
    return errors.lines


def _check_unique_aliases(errors: ErrorList, keystores: Sequence[KeystoreConfig],
                          truststores: Sequence[TruststoreConfig]) -> None:
    # One namespace: a port's truststore may name either kind.
    seen: dict[str, str] = {}
    kinds: tuple[tuple[str, Sequence[KeystoreConfig | TruststoreConfig]], ...] = (
        ("keystores", keystores), ("truststores", truststores))
    for name, items in kinds:
        for i, item in enumerate(items):
            if item.alias in seen:
                errors.add(f"{name}[{i}].alias", f"duplicate alias (also {seen[item.alias]}); keystores and "
                           "truststores share one set of aliases", item.alias)
            else:
                seen[item.alias] = f"{name}[{i}]"


def _check_key_alias(errors: ErrorList, ks: KeystoreConfig, key_alias: str, key: str, store_key: str) -> None:
    """Only PEM keystores list their aliases in the config; the others are checked on load."""
    if ks.type != "pem":
        return
    aliases = ks.key_aliases()
    if key_alias and key_alias not in aliases:
        errors.add(key, f"keystore {_quote(ks.alias)} has no key alias {_quote(key_alias)} "
                   f"({_known(aliases, 'key aliases')})", key_alias)
    elif not key_alias and len(aliases) > 1:
        errors.add(key, f"is required: keystore {_quote(ks.alias)} ({store_key}) holds {len(aliases)} keys "
                   f"({_known(aliases, 'key aliases')})")


def cipher_problem(ciphers: str) -> str | None:
    """Why an OpenSSL cipher string is unusable for TLS 1.2, or None when it is fine."""
    from OpenSSL import SSL  # imported here: the shape pass must not need OpenSSL

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    try:
        ctx.set_cipher_list(ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        return "must be an OpenSSL cipher list matching at least one TLS 1.2 cipher, e.g. \"ECDHE+AESGCM\""
    return None


def resolve_path(path: str, base_dir: str | os.PathLike[str] | None) -> str:
    """Relative paths in the config are relative to the config file's directory."""
    if not path or os.path.isabs(path) or base_dir is None:
        return path
    return os.path.join(os.fspath(base_dir), path)


# --- writing back (for `wsserver check` and the admin API's atomic writes) -------------------


def keystore_to_toml(ks: KeystoreConfig | TruststoreConfig) -> dict[str, Any]:
    """The TOML table of one entry (the inverse of the parse); PEM keys as an array of tables."""
    out: dict[str, Any] = {"alias": ks.alias, "type": ks.type}
    for f in fields(ks):
        if f.name in ("alias", "type", "keys"):
            continue
        value = getattr(ks, f.name)
        if value:
            out[f.name] = value
    keys = getattr(ks, "keys", ())
    if keys:
        out["keys"] = [
            {"alias": k.alias, "cert": k.cert, "key": k.key, **({"chain": k.chain} if k.chain else {})}
            for k in keys
        ]
    return out
