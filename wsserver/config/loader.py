"""Load wsserver.toml and validate it into the frozen dataclasses of :mod:`.schema`.

Validation has two passes. The shape pass walks the TOML tables along the schema: every
key must be known and every value must have the right type, range, choice or pattern;
it builds the dataclasses. The rules pass then checks what spans several keys (unique
aliases, package references, ...) on the built ``Config``. Every problem is collected, so
the operator fixes the file in one round, and each is one line:

    wsserver.toml: ports[1].backlog = 70000: must be an integer 1..65535

Why one long module: it is the validation engine and the rules across keys together; the
engine part is to become the settings registry (docs/architecture.md), after which this file
keeps only the rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from wsserver.config.host import PURE, HostChecks
from wsserver.config.ocsp_settings import check_port_ocsp
from wsserver.config.schema import (
    BROKER_HELP,
    AccessConfig,
    AdminConfig,
    ClusterConfig,
    Config,
    EndpointConfig,
    JWTConfig,
    MetricsConfig,
    OriginConfig,
    PortConfig,
    UserConfig,
)
from wsserver.config.tls_settings import check_tls_references, parse_keystores, parse_truststores
from wsserver.config.writer import toml_value

NOT_SUPPORTED = "not supported by this version of wsserver"

# Tables of the operator's vocabulary (wsserver.example.toml) whose features land later.
# They are rejected rather than ignored: configuring something that is not enforced would
# be a lie (an [[users]] table must not look like it protects a port).
UNSUPPORTED_TABLES: tuple[str, ...] = ()

# client_auth values (see _check_certificate_and_adapter_auth for the last two).
CLIENT_AUTH = ("none", "password", "token", "jwt", "certificate", "adapter:<name>")
CONNECTION_TYPES = ("ws", "wss", "admin")
JWT_ALGORITHMS = ("HS256", "RS256", "ES256")

# Keys whose values are secrets: error messages name the key but never show the value
# (a plain password pasted into password_hash must not reach a terminal or a log).
# A broker URL is not shown either: it may carry a password (which it must not: see valid_broker).
SECRET_KEYS = ("password_hash", "token", "key", "broker")

DEFAULT_CONFIG_TOML = """\
# wsserver's built-in configuration, used when no file is given:
# one plain WebSocket port on the loopback address with the echo endpoint.

[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"

[[ports]]
alias = "default_ws"
protocol = "ws"
bind = "127.0.0.1"
port = 8080
"""


class ConfigError(Exception):
    """The configuration is invalid. ``errors`` holds every problem, one line each."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: list[str] = list(errors)
        super().__init__("\n".join(self.errors))


# --- messages -------------------------------------------------------------------------------


def _range(meta: Mapping[str, Any]) -> str:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and high is not None:
        return f" {low}..{high}"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def _kinds(kind: Any) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def describe(meta: Mapping[str, Any]) -> str:
    """What a key allows, worded to follow "must be" (also the docs' "Allowed" column)."""
    kind = meta.get("kind")
    if meta.get("choices"):
        return "one of " + ", ".join(toml_value(c) for c in meta["choices"])
    if meta.get("pattern_help"):
        pattern_help: str = meta["pattern_help"]
        return pattern_help
    if kind is bool:
        return "a boolean (true/false)"
    if float in _kinds(kind):
        return "a number" + _range(meta)
    if kind is int:
        return "an integer" + _range(meta)
    if kind is str:
        return "a string"
    if kind is list:
        item = meta.get("item_kind")
        return "an array of tables" if dataclasses.is_dataclass(item) else f"an array of {_plural(item)}"
    if dataclasses.is_dataclass(kind):
        return "a table"
    return "a valid value"


def _plural(kind: Any) -> str:
    return {str: "strings", int: "integers", bool: "booleans"}.get(kind, "values")


def _shown(value: Any) -> str:
    """A value as the operator wrote it (TOML-like), cut short when long."""
    if isinstance(value, str) and len(value) > 48:
        return toml_value(value[:40])[:-1] + f'..." ({len(value)} characters)'
    try:
        text = toml_value(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= 80 else text[:72] + "..."


def _is_table_like(value: Any) -> bool:
    """Tables are not repeated in messages: the key path already points at them."""
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


_NO_VALUE = object()


class _Errors:
    """Collects error lines and remembers which key paths were bad.

    The rules pass skips bad paths: a port whose alias is invalid must not also be
    reported as a duplicate of another port with an invalid alias.
    """

    def __init__(self, source: str, host: HostChecks = PURE) -> None:
        self.source = source
        self.host = host  # the checks beyond the text (config/host.py)
        self.lines: list[str] = []
        self.bad: set[str] = set()

    def add(self, path: str, message: str, value: Any = _NO_VALUE) -> None:
        if path.rsplit(".", 1)[-1] in SECRET_KEYS:
            value = _NO_VALUE
        shown = "" if value is _NO_VALUE or _is_table_like(value) else f" = {_shown(value)}"
        self.lines.append(f"{self.source}: {path}{shown}: {message}")

    def bad_value(self, path: str, message: str, value: Any = _NO_VALUE) -> None:
        """A shape-pass error: the value at ``path`` is unusable for the rules pass."""
        self.add(path, message, value)
        self.taint(path)

    def taint(self, path: str) -> None:
        self.bad.add(path)

    def is_bad(self, *paths: str) -> bool:
        """Whether any of ``paths``, or a table containing one, failed the shape pass."""
        return any(self._bad_one(path) for path in paths)

    def _bad_one(self, path: str) -> bool:
        return any(path == b or path.startswith((b + ".", b + "[")) for b in self.bad)


# --- checks of one value beyond its schema metadata ----------------------------------------

_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}\Z){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_ORIGIN_SCHEMES = ("http", "https", "ws", "wss")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def valid_bind(text: str) -> bool:
    if text == "" or _is_ip(text):
        return True
    # All-numeric names are mistyped IPv4 addresses ("10.0.0.300"), not host names.
    return _HOST_NAME.fullmatch(text) is not None and not re.fullmatch(r"[0-9.]+", text)


def valid_network(text: str) -> bool:
    # The same call security/access.py makes, so what passes here works there.
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def valid_origin(text: str) -> bool:
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0  # .port raises on a bad port
    except ValueError:
        return False
    return (
        port_ok
        and parts.scheme.lower() in _ORIGIN_SCHEMES
        and bool(parts.hostname)
        and "@" not in parts.netloc
        and not any(ch.isspace() for ch in text)  # urlsplit strips some; Origin headers have none
        # Browsers send an Origin without path, query or fragment; one here never matches.
        and not (parts.path or parts.query or parts.fragment or text.endswith(("?", "#")))
    )


def valid_handler(text: str) -> bool:
    # The schema pattern lets "a..b:C" through; every dotted part must be an identifier.
    module, _, cls = text.partition(":")
    return all(part.isidentifier() for part in module.split(".")) and cls.isidentifier()


BROKER_SCHEMES = ("redis", "rediss", "unix")


def valid_broker(text: str) -> bool:
    """A Redis URL this version connects to (see wsserver.runtime.broker)."""
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a bad port
    except ValueError:
        return False
    if parts.scheme not in BROKER_SCHEMES or parts.password is not None or parts.fragment \
            or any(ch.isspace() for ch in text):
        return False
    if parts.scheme == "unix":
        query = parts.query
        return (not parts.netloc and parts.path.startswith("/") and len(parts.path) > 1
                and (not query or re.fullmatch(r"db=\d{1,5}", query) is not None))
    host = parts.hostname
    return (host is not None and host != "" and valid_bind(host.strip("[]"))
            and (port is None or port > 0) and not parts.query
            and (parts.path in ("", "/") or re.fullmatch(r"/\d{1,5}", parts.path) is not None))


@dataclasses.dataclass(frozen=True)
class ValueRule:
    check: Callable[[str], bool]
    allowed: str  # worded to follow "must be"


VALUE_RULES: dict[tuple[type, str], ValueRule] = {
    (PortConfig, "bind"): ValueRule(
        valid_bind, '"" (all addresses), an IPv4 or IPv6 address without brackets, or a host name'
    ),
    (AdminConfig, "bind"): ValueRule(
        valid_bind, '"" (all addresses), an IPv4 or IPv6 address without brackets, or a host name'
    ),
    (MetricsConfig, "bind"): ValueRule(
        valid_bind, '"" (all addresses), an IPv4 or IPv6 address without brackets, or a host name'
    ),
    (MetricsConfig, "allow"): ValueRule(
        valid_network, 'an IPv4 or IPv6 address or CIDR, e.g. "10.0.0.0/8" or "2001:db8::/32"'
    ),
    (AccessConfig, "ip_deny"): ValueRule(
        valid_network, 'an IPv4 or IPv6 address or CIDR, e.g. "10.0.0.0/8" or "2001:db8::/32"'
    ),
    (AccessConfig, "ip_allow"): ValueRule(
        valid_network, 'an IPv4 or IPv6 address or CIDR, e.g. "10.0.0.0/8" or "2001:db8::/32"'
    ),
    (AccessConfig, "trusted_proxies"): ValueRule(
        valid_network, 'an IPv4 or IPv6 address or CIDR, e.g. "10.0.0.0/8" or "2001:db8::/32"'
    ),
    (OriginConfig, "allowed"): ValueRule(
        valid_origin,
        'scheme://host[:port] with scheme http, https, ws or wss and no path, e.g. "https://app.example.com"',
    ),
    (ClusterConfig, "broker"): ValueRule(valid_broker, BROKER_HELP),
    (EndpointConfig, "handler"): ValueRule(valid_handler, "module:Class, e.g. wsserver.endpoints.echo:Echo"),
    (UserConfig, "connection_types"): ValueRule(
        lambda value: value in CONNECTION_TYPES, "one of " + ", ".join(f'"{t}"' for t in CONNECTION_TYPES)
    ),
    (JWTConfig, "algorithms"): ValueRule(
        lambda value: value in JWT_ALGORITHMS, "one of " + ", ".join(f'"{a}"' for a in JWT_ALGORITHMS)
    ),
}


# --- shape pass: TOML tables -> dataclasses -------------------------------------------------


def settings(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The TOML keys of a schema dataclass (fields without a kind, like Config.source, are not)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("kind") is not None}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_ok(kind: Any, value: Any) -> bool:
    kinds = _kinds(kind)
    if isinstance(value, bool):  # bool is an int subclass: port = true is a mistake
        return bool in kinds
    return isinstance(value, kinds)


class _Builder:
    def __init__(self, errors: _Errors) -> None:
        self.errors = errors

    def table(self, cls: type, data: dict[str, Any], path: str) -> Any:
        fields = settings(cls)
        for key, value in data.items():
            if key not in fields:
                self._unknown(key, value, path, fields)
        values = {}
        for name, f in fields.items():
            sub = _join(path, name)
            if name in data:
                ok, value = self.value(cls, f, data[name], sub)
                if ok:
                    values[name] = value
            elif f.metadata.get("required"):
                self.errors.bad_value(sub, f"is required ({describe(f.metadata)})")
        return cls(**values)

    def _unknown(self, key: str, value: Any, path: str, fields: dict[str, Any]) -> None:
        sub = _join(path, key)
        if not path and key in UNSUPPORTED_TABLES:
            self.errors.bad_value(sub, NOT_SUPPORTED, value)
            return
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f'did you mean "{close[0]}"?' if close else "known keys: " + ", ".join(fields)
        self.errors.bad_value(sub, f"unknown key; {hint}", value)

    def value(self, owner: type, f: dataclasses.Field[Any], value: Any, path: str) -> tuple[bool, Any]:
        meta = f.metadata
        kind: type | tuple[type, ...] = meta["kind"]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                self.errors.bad_value(path, f"must be a table ([{_table_name(path)}])", value)
                return False, None
            return True, self.table(kind, value, path)
        if kind is list:
            return self._array(owner, f, value, path)
        ok, value = self._scalar(meta, value, path)
        if ok:
            ok = self._rule(owner, f.name, value, path)
        return ok, value

    def _array(self, owner: type, f: dataclasses.Field[Any], value: Any, path: str) -> tuple[bool, Any]:
        item_kind: type | tuple[type, ...] | None = f.metadata.get("item_kind")
        if dataclasses.is_dataclass(item_kind):
            if not isinstance(value, list):
                self.errors.bad_value(path, f"must be an array of tables ([[{_table_name(path)}]])", value)
                return False, None
            return True, tuple(
                self._array_table(item_kind, item, f"{path}[{i}]") for i, item in enumerate(value)
            )
        if not isinstance(value, list):
            self.errors.bad_value(path, "must be " + describe(f.metadata), value)
            return False, None
        ok = True
        for i, item in enumerate(value):
            if not _type_ok(item_kind, item):
                self.errors.bad_value(f"{path}[{i}]", f"must be {describe({'kind': item_kind})}", item)
                ok = False
            elif not self._rule(owner, f.name, item, f"{path}[{i}]"):
                ok = False
        if not ok:
            self.errors.taint(path)
        return ok, tuple(value)

    def _array_table(self, cls: type, item: Any, path: str) -> Any:
        if isinstance(item, dict):
            return self.table(cls, item, path)
        self.errors.bad_value(path, f"must be a table ([[{_table_name(path)}]])", item)
        # A stand-in keeps the indexes of the following entries right for the rules pass.
        return cls()

    def _scalar(self, meta: Any, value: Any, path: str) -> tuple[bool, Any]:
        if not (_type_ok(meta["kind"], value) and _in_bounds(meta, value)):
            self.errors.bad_value(path, "must be " + describe(meta), value)
            return False, None
        if float in _kinds(meta["kind"]):
            value = float(value)
        return True, value

    def _rule(self, owner: type, name: str, value: Any, path: str) -> bool:
        rule = VALUE_RULES.get((owner, name))
        if rule is None or rule.check(value):
            return True
        self.errors.bad_value(path, "must be " + rule.allowed, value)
        return False


def _in_bounds(meta: Any, value: Any) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False  # nan compares false with everything and would pass min/max
    if meta.get("min") is not None and value < meta["min"]:
        return False
    if meta.get("max") is not None and value > meta["max"]:
        return False
    if meta.get("choices") and value not in meta["choices"]:
        return False
    return not (meta.get("pattern") and re.fullmatch(meta["pattern"], value) is None)


def _table_name(path: str) -> str:
    """ports[0].pool -> ports.pool, the name the operator writes in the table header."""
    return re.sub(r"\[\d+\]", "", path)


# --- rules pass: what spans several keys ----------------------------------------------------


def _indexed(name: str, items: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    for i, item in enumerate(items):
        yield f"{name}[{i}]", item


def _known(names: Iterable[str], what: str) -> str:
    names = list(names)
    return "known: " + ", ".join(toml_value(n) for n in names) if names else f"no {what} configured"


def _check_unique(errors: _Errors, table: str, items: Iterable[Any], key: str, what: str) -> None:
    seen: dict[Any, str] = {}
    for path, item in _indexed(table, items):
        if errors.is_bad(f"{path}.{key}"):
            continue
        value = getattr(item, key)
        if value in seen:
            errors.add(f"{path}.{key}", f"duplicate {what} (also {seen[value]})", value)
        else:
            seen[value] = path


def _bind_key(bind: str) -> str:
    return str(ipaddress.ip_address(bind)) if _is_ip(bind) else bind.lower().rstrip(".")


# Each family's wildcard address covers every address of that family.
_WILDCARDS = {"0.0.0.0": 4, "::": 6}


def _covers(wildcard: str, other: str) -> bool:
    version = _WILDCARDS.get(_bind_key(wildcard))
    return version is not None and _is_ip(other) and ipaddress.ip_address(other).version == version


def _binds_overlap(a: str, b: str) -> bool:
    """Whether listening on both addresses with the same port would fail (EADDRINUSE)."""
    if a == "" or b == "":
        return True  # "" is every address, IPv4 and IPv6 (a dual-stack socket)
    return _bind_key(a) == _bind_key(b) or _covers(a, b) or _covers(b, a)


def _check_listen_addresses(cfg: Config, errors: _Errors) -> None:
    taken: list[tuple[str, PortConfig]] = []
    for path, port in _indexed("ports", cfg.ports):
        if errors.is_bad(f"{path}.port", f"{path}.bind"):
            continue
        clash = next(
            (t for t in taken if t[1].port == port.port and _binds_overlap(t[1].bind, port.bind)), None
        )
        if clash is None:
            taken.append((path, port))
            continue
        clash_path, other = clash
        hint = '; bind "" takes every address' if "" in (port.bind, other.bind) else ""
        errors.add(
            f"{path}.port",
            f"bind {toml_value(port.bind)} port {port.port} conflicts with {clash_path} "
            f"(bind {toml_value(other.bind)}){hint}",
            port.port,
        )


def _check_pools(cfg: Config, errors: _Errors) -> None:
    for path, port in _indexed("ports", cfg.ports):
        if errors.is_bad(f"{path}.pool.min", f"{path}.pool.max"):
            continue
        if port.pool.min > port.pool.max:
            errors.add(path, f"pool.min = {port.pool.min} is larger than pool.max = {port.pool.max}")


def _check_package_refs(cfg: Config, errors: _Errors) -> None:
    if any(errors.is_bad(f"{p}.name") for p, _ in _indexed("packages", cfg.packages)):
        return  # the known names are incomplete: a reference to a bad entry is no news
    names = [p.name for p in cfg.packages]
    for table, items in (("ports", cfg.ports), ("endpoints", cfg.endpoints)):
        for path, item in _indexed(table, items):
            if item.package and item.package not in names and not errors.is_bad(f"{path}.package"):
                errors.add(
                    f"{path}.package",
                    f"must name a [[packages]] entry ({_known(names, '[[packages]]')})",
                    item.package,
                )


def _check_endpoint_refs(cfg: Config, errors: _Errors) -> None:
    if any(errors.is_bad(f"{p}.path") for p, _ in _indexed("endpoints", cfg.endpoints)):
        return  # the known paths are incomplete
    paths = [e.path for e in cfg.endpoints]
    for path, port in _indexed("ports", cfg.ports):
        for key in ("deny_endpoints", "allow_endpoints"):
            list_path = f"{path}.access.{key}"
            if errors.is_bad(list_path):
                continue
            for i, endpoint in enumerate(getattr(port.access, key)):
                if endpoint not in paths:
                    errors.add(
                        f"{list_path}[{i}]",
                        f"must be a configured endpoint path ({_known(paths, '[[endpoints]]')})",
                        endpoint,
                    )


# Features of the operator's vocabulary that land in later versions. Each is one function
# so that the change that implements the feature deletes exactly its check.


def _check_certificate_and_adapter_auth(cfg: Config, errors: _Errors) -> None:
    """client_auth "certificate" needs client certificates; "adapter:<name>" a password adapter."""
    adapters = {a.name: a for a in cfg.adapters}
    for path, port in _indexed("ports", cfg.ports):
        auth = port.client_auth
        if errors.is_bad(f"{path}.client_auth") or auth in CLIENT_AUTH[:4]:
            continue
        adapter = re.fullmatch(r"adapter:(.+)", auth)
        if auth == "certificate":
            if port.protocol != "wss" or port.tls is None or port.tls.client_certs == "none":
                errors.add(f"{path}.client_auth", 'needs a wss port with [ports.tls] client_certs = "require" '
                           'or "request"', auth)
        elif adapter is not None:
            found = adapters.get(adapter[1])
            if found is None:
                errors.add(f"{path}.client_auth", f"must name an [[adapters]] entry "
                           f"({_known(list(adapters), '[[adapters]]')})", auth)
            elif found.type == "ocsp":
                errors.add(f"{path}.client_auth", "an OCSP adapter checks certificates, not passwords: use an "
                           f'ldap, radius or http adapter (for client certificates: [ports.tls] ocsp = "{found.name}")',
                           auth)
            elif (found.type == "gemalto" and found.gemalto.first_factor == "users"
                  and not any(u.password_hash for u in cfg.users)):
                errors.add(f"{path}.client_auth", f'adapter "{found.name}" has first_factor = "users" but no '
                           "[[users]] entry has a password_hash", auth)
        else:
            errors.add(f"{path}.client_auth", f"must be one of {_CLIENT_AUTH_TEXT}", auth)


_CLIENT_AUTH_TEXT = ", ".join(f'"{a}"' for a in CLIENT_AUTH)


# --- users and client authentication ----------------------------------------------------------
# Password-hash, token and JWT key formats are security/'s: errors.host (config/host.py) asks
# it, so that what validates here is exactly what the server can use.


def _check_users(cfg: Config, errors: _Errors) -> None:
    host = errors.host
    _check_unique(errors, "users", cfg.users, "name", "user name")
    aliases = [p.alias for p in cfg.ports]
    paths = [e.path for e in cfg.endpoints]
    tokens: dict[bytes, str] = {}
    for path, user in _indexed("users", cfg.users):
        if user.password_hash and not errors.is_bad(f"{path}.password_hash") and host.password_hash:
            problem = host.password_hash(user.password_hash)
            if problem:
                errors.add(f"{path}.password_hash", problem)
        if user.token and not errors.is_bad(f"{path}.token"):
            problem = host.token(user.token) if host.token else None
            if problem:
                errors.add(f"{path}.token", f"must be {problem}")
            elif host.token_digest:
                digest = (bytes.fromhex(user.token[7:]) if user.token.startswith("sha256:")
                          else host.token_digest(user.token))
                if digest in tokens:
                    errors.add(f"{path}.token", f"the same token as {tokens[digest]}")
                tokens.setdefault(digest, path)
        for key, known, what in (("ports", aliases, "[[ports]] alias"), ("endpoints", paths, "endpoint path")):
            if errors.is_bad(f"{path}.{key}"):
                continue
            for i, item in enumerate(getattr(user, key)):
                if item not in known:
                    errors.add(f"{path}.{key}[{i}]", f"must be a configured {what} ({_known(known, what)})", item)


def _check_client_auth(cfg: Config, errors: _Errors) -> None:
    jwt_key = errors.host.jwt_key
    names = [u.name for u in cfg.users]
    for path, port in _indexed("ports", cfg.ports):
        auth = port.client_auth
        if (port.no_auth_user and not errors.is_bad(f"{path}.no_auth_user", "users")
                and port.no_auth_user not in names):
            errors.add(f"{path}.no_auth_user", f'must be "" or a [[users]] name ({_known(names, "[[users]]")})',
                       port.no_auth_user)
        if errors.is_bad(f"{path}.client_auth"):
            continue
        if port.token_query_param and auth not in ("token", "jwt") and not errors.is_bad(f"{path}.token_query_param"):
            errors.add(f"{path}.token_query_param", 'is only used with client_auth = "token" or "jwt"',
                       port.token_query_param)
        if errors.is_bad("users"):
            continue
        if auth == "password" and not any(u.password_hash for u in cfg.users):
            errors.add(f"{path}.client_auth", "no [[users]] entry has a password_hash", auth)
        elif auth == "token" and not any(u.token for u in cfg.users):
            errors.add(f"{path}.client_auth", "no [[users]] entry has a token", auth)
        elif auth == "jwt" and not errors.is_bad(f"{path}.jwt"):
            jwt = port.jwt
            problem = jwt_key(jwt) if jwt_key else None
            if problem:
                errors.add(f"{path}.jwt", problem)
            if not (jwt.bearer or jwt.cookie or port.token_query_param):
                errors.add(f"{path}.jwt", "no way to send a token: set bearer = true, cookie or token_query_param")
            origin = port.origin
            if jwt.cookie and not (origin.same_origin or origin.allowed):
                # Browsers attach cookies to cross-site WebSocket requests: without an Origin
                # check any web page could open a session as the user (CSWSH).
                errors.add(f"{path}.jwt.cookie", "cookie authentication needs an Origin check: set "
                           "origin.same_origin = true or origin.allowed", jwt.cookie)


def _check_rules(cfg: Config, errors: _Errors) -> None:
    _check_unique(errors, "packages", cfg.packages, "name", "package name")
    _check_unique(errors, "endpoints", cfg.endpoints, "path", "endpoint path")
    _check_unique(errors, "ports", cfg.ports, "alias", "alias")
    _check_listen_addresses(cfg, errors)
    _check_pools(cfg, errors)
    _check_package_refs(cfg, errors)
    _check_endpoint_refs(cfg, errors)
    _check_users(cfg, errors)
    _check_certificate_and_adapter_auth(cfg, errors)
    check_port_ocsp(cfg.ports, cfg.adapters, errors)
    _check_client_auth(cfg, errors)
    _check_metrics(cfg, errors)
    _check_cluster(cfg, errors)
    _check_proxy_protocol(cfg, errors)
    _check_origin_hosts(cfg, errors)


_HOST_ENTRY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?")


def _check_origin_hosts(cfg: Config, errors: _Errors) -> None:
    """[ports.origin] hosts: each a host name or address, optionally with :port."""
    for path, port in _indexed("ports", cfg.ports):
        for i, entry in enumerate(port.origin.hosts):
            match = _HOST_ENTRY.fullmatch(entry)
            if match is None or (match[2] and not 0 < int(match[2]) <= 65535):
                errors.add(f"{path}.origin.hosts[{i}]", 'must be a host name or address, optionally with ":port" '
                           '(e.g. "app.example.com", "app.example.com:8443", "[::1]:8080")', entry)


def _check_proxy_protocol(cfg: Config, errors: _Errors) -> None:
    """proxy_protocol: only from trusted proxies."""
    for path, port in _indexed("ports", cfg.ports):
        if port.proxy_protocol == "off" or errors.is_bad(f"{path}.proxy_protocol", f"{path}.access"):
            continue
        if not port.access.trusted_proxies:
            errors.add(f"{path}.proxy_protocol", "needs [ports.access] trusted_proxies: the load balancers "
                       "allowed to send the header", port.proxy_protocol)


def _check_cluster(cfg: Config, errors: _Errors) -> None:
    """[cluster]: the password's environment variable must be set (the workers read it), and a
    CA file goes with TLS."""
    c = cfg.cluster
    if c is None or errors.is_bad("cluster"):
        return
    if c.password_env and errors.host.env_empty(c.password_env):
        errors.add("cluster.password_env", "this environment variable is not set or empty", c.password_env)
    if c.tls_ca_file and not c.broker.startswith("rediss://"):
        errors.add("cluster.tls_ca_file", "is only used with a rediss:// broker", c.tls_ca_file)


def _check_metrics(cfg: Config, errors: _Errors) -> None:
    """[metrics]: basic auth needs a user and exactly one password; the address is its own."""
    m = cfg.metrics
    if errors.is_bad("metrics"):
        return
    if m.password_hash and m.password_env:
        errors.add("metrics.password_env", "give password_hash or password_env, not both", m.password_env)
    elif m.user and not (m.password_hash or m.password_env):
        errors.add("metrics.user", "needs password_hash or password_env", m.user)
    elif (m.password_hash or m.password_env) and not m.user:
        errors.add("metrics.user", "is required with password_hash or password_env", m.user)
    problem = errors.host.password_hash(m.password_hash) if m.password_hash and errors.host.password_hash else None
    if problem:
        errors.add("metrics.password_hash", problem)
    if m.password_env and errors.host.env_empty(m.password_env):
        errors.add("metrics.password_env", "this environment variable is not set or empty", m.password_env)
    if not m.enabled:
        return
    for path, port in _indexed("ports", cfg.ports):
        if port.port == m.port and not errors.is_bad(f"{path}.port", f"{path}.bind") \
                and _binds_overlap(port.bind, m.bind):
            errors.add("metrics.port", f"bind {toml_value(m.bind)} port {m.port} conflicts with {path} "
                       f"(bind {toml_value(port.bind)})", m.port)


def _check_admin(cfg: Config, errors: _Errors, keystores: Iterable[Any], keystores_complete: bool) -> None:
    """[admin]: its TLS key names a keystore; its address is its own (no port, not /metrics)."""
    a = cfg.admin
    if errors.is_bad("admin"):
        return
    aliases = [k.alias for k in keystores]
    if a.tls.keystore and a.tls.keystore not in aliases and keystores_complete:
        errors.add("admin.tls.keystore", f"must name a [[keystores]] entry ({_known(aliases, '[[keystores]]')})",
                   a.tls.keystore)
    elif a.tls.key_alias and not a.tls.keystore:
        errors.add("admin.tls.key_alias", "needs admin.tls.keystore (the keystore holding that key)",
                   a.tls.key_alias)
    # The listener opens only when someone may log in to it (see docs/admin.md): without such a
    # user the default address 9100 must not stand in the way of a port.
    if not a.enabled or not any(u.password_hash and (not u.connection_types or "admin" in u.connection_types)
                                for u in cfg.users):
        return
    taken = [(f"{path}.port", port.port, port.bind) for path, port in _indexed("ports", cfg.ports)
             if not errors.is_bad(f"{path}.port", f"{path}.bind")]
    if cfg.metrics.enabled and not errors.is_bad("metrics.port", "metrics.bind"):
        taken.append(("metrics.port", cfg.metrics.port, cfg.metrics.bind))
    for path, number, bind in taken:
        if number == a.port and _binds_overlap(bind, a.bind):
            errors.add("admin.port", f"bind {toml_value(a.bind)} port {a.port} conflicts with "
                       f"{path.removesuffix('.port')} (bind {toml_value(bind)})", a.port)


# --- public API -----------------------------------------------------------------------------


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, source: str) -> ConfigError:
    # Python 3.11's TOMLDecodeError has no line attribute: the place is in the message.
    message = str(exc)
    where = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if where:
        place = f"line {where[1]}, column {where[2]}"
        message = message[: where.start()]
    elif message.endswith(" (at end of document)"):
        place = f"line {max(len(text.splitlines()), 1)} (end of file)"
        message = message.removesuffix(" (at end of document)")
    else:
        place = "line ?"
    return ConfigError([f"{source}: {place}: invalid TOML: {message}"])


def parse_config(text: str, source: str = "<string>", *, host: HostChecks = PURE) -> Config:
    """Parse and validate TOML text. Raises ConfigError listing every problem found.

    Reads nothing but ``text``: the rules that need the environment, files or ``security/``
    run only with ``host`` (:func:`wsserver.preflight.parse` passes the real ones).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text, source) from None
    except RecursionError:
        raise ConfigError([f"{source}: invalid TOML: arrays or inline tables nested too deeply"]) from None
    errors = _Errors(source, host)
    # Adapter settings reuse this module's builder, so they are imported here, not at the top.
    from wsserver.config.adapter_settings import parse_adapters

    adapters, adapter_errors = parse_adapters(data.pop("adapters", []), source, host)
    keystores, ks_errors = parse_keystores(data.pop("keystores", None), source)
    truststores, ts_errors = parse_truststores(data.pop("truststores", None), source)
    cfg: Config = _Builder(errors).table(Config, data, "")
    errors.lines += adapter_errors + ks_errors + ts_errors
    cfg = dataclasses.replace(cfg, adapters=adapters)
    _check_rules(cfg, errors)
    errors.lines += check_tls_references(cfg.server.tls, cfg.ports, keystores, truststores, source,
                                         keystores_complete=not ks_errors, truststores_complete=not ts_errors,
                                         port_sni=host.port_sni)
    _check_admin(cfg, errors, keystores, keystores_complete=not ks_errors)
    if errors.lines:
        raise ConfigError(errors.lines)
    return dataclasses.replace(cfg, source=source, keystores=keystores, truststores=truststores, adapters=adapters)


def load_config(path: str | os.PathLike[str] | None, *, host: HostChecks = PURE) -> Config:
    """Read and validate a config file; ``None`` gives the built-in default config.

    ``host`` as for :func:`parse_config`; :func:`wsserver.preflight.load` passes the real checks.
    """
    if path is None:
        return default_config()
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read config file: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{source}: line {line}: invalid TOML: not UTF-8 text"]) from None
    return require_ports(parse_config(text, source, host=host), source)


def require_ports(config: Config, source: str) -> Config:
    """A config *file* with no [[ports]] is refused unless ``[server] allow_no_ports = true``.

    Such a file is most often a truncated or wrong one (a full disk, an editor crash): refusing
    it makes a reload keep what runs, and ``wsserver check`` and the admin API say the same.
    """
    if not config.ports and not config.server.allow_no_ports:
        raise ConfigError([f"{source}: ports: no [[ports]] declared, the server would serve nothing: "
                           "declare one, or set [server] allow_no_ports = true if that is intended"])
    return config


@functools.cache
def default_config() -> Config:
    """The built-in config: one ws port on 127.0.0.1:8080 serving /echo.

    Cached: a Config is immutable all the way down, so every caller can share one.
    """
    return parse_config(DEFAULT_CONFIG_TOML, "<built-in>")
