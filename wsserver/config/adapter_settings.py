"""One ``[[adapters]]`` table as a frozen dataclass, validated with one-line errors.

    settings, errors = parse_adapter(table, index=0, source="wsserver.toml")
    # errors: ['wsserver.toml: adapters[0].load_balancing.penalty_limit = -1: must be an integer 0..10000']

The fields are declared with :func:`wsserver.config.settings.setting`, so the settings engine
checks them exactly as it checks the rest of the file. An adapter is a tagged union: ``type``
chooses which of the options tables (``[adapters.ldap]``, ``[adapters.radius]``, ...) applies.
:func:`check_adapter` and :func:`check_adapters` are the rules that span several keys. Secrets
are never stored here: only the names of the environment variables or files that hold them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from wsserver.config.host import PURE, HostChecks
from wsserver.config.settings import Builder, Errors, setting, usable
from wsserver.config.values import ALIAS_HELP, ALIAS_PATTERN

# Other names accepted for a type (the seed calls the one-time-password adapter "otp" too).
TYPE_ALIASES = {"otp": "gemalto"}

# security_protocol values of the seed that are refused, and why (one line for the error).
REFUSED_PROTOCOLS = {
    "sslv2": "SSLv2",
    "sslv3": "SSLv3",
    "tlsv1": "TLSv1.0",
    "tlsv1.0": "TLSv1.0",
    "tlsv1_0": "TLSv1.0",
    "tlsv1.1": "TLSv1.1",
    "tlsv1_1": "TLSv1.1",
}
REFUSED_WHY = (
    'refused: {name} is broken (POODLE, BEAST, weak MACs) and RFC 8996 forbids it; use "tls", which '
    'negotiates TLS 1.2 or 1.3 (tls_min_version = "1.3" to require 1.3)'
)

# URL schemes per adapter type, and whether the scheme itself means TLS.
SCHEMES: dict[str, dict[str, bool]] = {
    "ldap": {"ldap": False, "ldaps": True},
    "radius": {"radius": False},
    "http": {"http": False, "https": True},
    "ocsp": {"http": False, "https": True},
    "gemalto": {"http": False, "https": True, "radius": False},
}
DEFAULT_PORTS = {"ldap": 389, "ldaps": 636, "radius": 1812, "http": 80, "https": 443}

STATUS_PATTERN = r"[1-5][0-9][0-9]|[1-5]xx"
STATUS_HELP = 'HTTP status codes as strings: "401", or a class such as "2xx"'
ENV_PATTERN = r"|[A-Za-z_][A-Za-z0-9_]*"
ENV_HELP = "an environment variable name"


@dataclass(frozen=True)
class ServerEntry:
    url: str = setting("", required=True, help="ldap://, ldaps://, radius://, http:// or https://")
    priority: int = setting(1, min=1, max=1000, help="lower = tried first; equal = one pool")


@dataclass(frozen=True)
class LoadBalancing:
    connection_timeout_ms: int = setting(3000, min=1, max=600_000)
    request_timeout_ms: int = setting(5000, min=1, max=600_000)
    request_attempts: int = setting(2, min=1, max=100, help="requests per pool at most")
    server_request_attempts: int = setting(
        1, min=1, max=100, help="requests per server at most (pools of 2+ servers)"
    )
    penalty_limit: int = setting(100, min=0, max=10000)
    connection_failure_threshold: int = setting(
        4, min=1, max=1000, help="consecutive failures before each one adds the weight"
    )
    connection_failure_weight: int = setting(50, min=0, max=10000)
    high_load_threshold_ms: int = setting(1000, min=1, max=600_000)
    high_load_weight: int = setting(2, min=0, max=10000)
    penalty_decay_per_s: float = setting(1.0, min=0, max=10000, help="penalty units forgiven per second")


@dataclass(frozen=True)
class LdapOptions:
    bind_dn_template: str = setting("", help='simple bind, e.g. "uid={username},ou=people,dc=example,dc=com"')
    search_base: str = setting("", help="search-then-bind: where users are searched")
    search_filter: str = setting("(uid={username})")
    search_scope: str = setting("subtree", choices=("subtree", "one"))
    service_dn: str = setting("", help="service account for the search; empty = anonymous")
    service_password_env: str = setting("", pattern=ENV_PATTERN, pattern_help=ENV_HELP)
    service_password_file: str = setting("")
    group_dn: str = setting("", help="required group; empty = none")
    group_member_attribute: str = setting(
        "member",
        choices=("member", "uniqueMember", "memberUid"),
        help="memberUid holds user names, the others DNs",
    )


@dataclass(frozen=True)
class RadiusOptions:
    secret_env: str = setting("", pattern=ENV_PATTERN, pattern_help=ENV_HELP)
    secret_file: str = setting("")
    nas_identifier: str = setting("wsserver")
    nas_ip_address: str = setting("")
    attributes: dict[str, str | int] = setting(factory=dict, help="extra Access-Request attributes by name")
    dictionary: str = setting("", help="extra RADIUS dictionary file (vendor attributes)")
    require_message_authenticator: bool = setting(False, help="BlastRADIUS hardening")


@dataclass(frozen=True)
class HttpOptions:
    method: str = setting("POST", choices=("GET", "POST", "PUT"))
    body_format: str = setting(
        "basic", choices=("basic", "json"), help="basic = Authorization header; json = a JSON body"
    )
    username_field: str = setting("username")
    password_field: str = setting("password")
    accept_statuses: tuple[str, ...] = setting(("2xx",), help=STATUS_HELP)
    reject_statuses: tuple[str, ...] = setting(("401", "403"), help=STATUS_HELP)


@dataclass(frozen=True)
class OcspOptions:
    fail_mode: str = setting(
        "closed", choices=("closed", "open"), help="open = accept when no responder answers"
    )
    cache: bool = setting(True, help="cache answers until their nextUpdate")
    cache_max_entries: int = setting(10000, min=1, max=10_000_000)
    issuers: str = setting("", help="PEM file of CA certificates to find a certificate's issuer")
    hash: str = setting("sha1", choices=("sha1", "sha256"), help="CertID hash")
    nonce: bool = setting(False)
    clock_skew_s: int = setting(300, min=0, max=86400)


@dataclass(frozen=True)
class GemaltoOptions:
    """One-time passwords checked by an OTP server (wsserver/adapters/otp.py, docs/adapters.md)."""

    protocol: str = setting(
        "privacyidea",
        choices=("privacyidea", "radius"),
        help="privacyidea = its /validate/check JSON API over http(s)://; radius = Access-Request over radius://",
    )
    first_factor: str = setting(
        "",
        help='"" = the OTP server checks all it is sent (PIN + code); "users" = a [[users]] password_hash; '
        "else the name of an ldap, radius or http adapter that checks the password first",
    )
    code_from: str = setting(
        "append",
        choices=("append", "query", "header"),
        help="append = the last otp_length characters of the Basic password; query = code_param; "
        "header = code_header",
    )
    otp_length: int = setting(6, min=4, max=12, help="characters of a one-time code")
    code_param: str = setting(
        "otp", pattern=r"[A-Za-z0-9_.~-]{1,64}", pattern_help="a query parameter name (A-Z a-z 0-9 _ . ~ -)"
    )
    code_header: str = setting(
        "X-OTP", pattern=r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}", pattern_help="an HTTP header name"
    )
    path: str = setting(
        "/validate/check",
        pattern=r"/[!-~]*",
        pattern_help="an absolute URL path",
        help="privacyidea: the validate endpoint (a path in the server URL wins)",
    )
    realm: str = setting("", help="privacyidea: the user's realm; empty = the default realm")
    radius_flow: str = setting(
        "challenge",
        choices=("challenge", "single"),
        help="radius: challenge = the password first, the code after Access-Challenge (State); "
        "single = password + code in one Access-Request",
    )
    secret_env: str = setting("", pattern=ENV_PATTERN, pattern_help=ENV_HELP, help="radius: shared secret")
    secret_file: str = setting("")
    nas_identifier: str = setting("wsserver")
    nas_ip_address: str = setting("")
    require_message_authenticator: bool = setting(False, help="BlastRADIUS hardening")


@dataclass(frozen=True)
class AdapterSettings:
    name: str = setting("", required=True, pattern=ALIAS_PATTERN, pattern_help=ALIAS_HELP)
    # The tag: it chooses which of the options tables below applies (one of their names).
    type: str = setting(
        "",
        required=True,
        tag="adapter",
        help='chooses the options table [adapters.TYPE]; "otp" is another name for "gemalto"',
    )
    servers: tuple[ServerEntry, ...] = setting(
        (),
    )
    security_protocol: str = setting("none", choices=("none", "tls"))
    tls_min_version: str = setting("1.2", choices=("1.2", "1.3"))
    truststore: str = setting("", help="default: the keystore, else the system CAs")
    keystore: str = setting("", help="client key for mutual TLS")
    key_alias: str = setting("")
    pinned_sha256: tuple[str, ...] = setting((), help="SHA-256 of accepted server certificates (hex)")
    load_balancing: LoadBalancing = setting(factory=LoadBalancing)
    ldap: LdapOptions | None = setting(None, variant=True)
    radius: RadiusOptions | None = setting(None, variant=True)
    http: HttpOptions | None = setting(None, variant=True)
    ocsp: OcspOptions | None = setting(None, variant=True)
    gemalto: GemaltoOptions | None = setting(None, variant=True)

    @property
    def options(self) -> Any:
        """The options table of this adapter's type."""
        return getattr(self, self.type)

    def server_list(self) -> list[tuple[str, int]]:
        return [(s.url, s.priority) for s in self.servers]


# --- rules that span keys -------------------------------------------------------------------


def prepare_adapter(table: dict[str, Any], path: str, errors: Errors) -> dict[str, Any]:
    """Before the shape pass: the type's other name, and the refused security protocols."""
    table = dict(table)
    if isinstance(table.get("type"), str) and table["type"] in TYPE_ALIASES:
        alias = table["type"]
        table["type"] = TYPE_ALIASES[alias]
        if alias in table and table["type"] not in table:
            table[table["type"]] = table.pop(alias)  # [adapters.otp] = [adapters.gemalto]
    protocol = table.get("security_protocol")
    if isinstance(protocol, str) and protocol.lower() in REFUSED_PROTOCOLS:
        errors.bad_value(
            f"{path}.security_protocol",
            REFUSED_WHY.format(name=REFUSED_PROTOCOLS[protocol.lower()]),
            protocol,
        )
        del table["security_protocol"]
    return table


def prepare_adapters(tables: Any, errors: Errors) -> Any:
    if not isinstance(tables, list):
        return tables  # the shape pass says what it must be
    return [
        prepare_adapter(t, f"adapters[{i}]", errors) if isinstance(t, dict) else t
        for i, t in enumerate(tables)
    ]


def parse_adapter(
    table: Any, index: int, source: str, host: HostChecks = PURE
) -> tuple[AdapterSettings | None, list[str]]:
    """Validate one ``[[adapters]]`` table; returns the settings (None if invalid) and the errors.

    ``host``: the checks of secrets' variables and files (config/host.py).
    """
    path = f"adapters[{index}]"
    errors = Errors(source, host)
    if not isinstance(table, dict):
        errors.add(path, "must be a table ([[adapters]])", table)
        return None, errors.lines
    built = Builder(errors).table(AdapterSettings, prepare_adapter(table, path, errors), path)
    check_adapter(errors, built, path)
    if errors.lines:
        return None, errors.lines
    return built, []


def parse_adapters(
    tables: Any, source: str, host: HostChecks = PURE
) -> tuple[tuple[AdapterSettings, ...], list[str]]:
    """Every ``[[adapters]]`` table, with the rules across them; only the valid ones are returned."""
    errors = Errors(source, host)
    _ok, built = Builder(errors).tables(AdapterSettings, prepare_adapters(tables, errors), "adapters")
    check_adapters(errors, built)
    return usable(errors, built, "adapters")[0], errors.lines


def check_adapter(errors: Errors, s: AdapterSettings, path: str) -> None:
    """The rules within one adapter (its options table is the engine's: the tag chose it)."""
    if errors.is_bad(f"{path}.type") or not s.type:
        return
    before = len(errors.lines)
    _check_servers(s, path, errors)
    for i, pin in enumerate(s.pinned_sha256):
        if not re.fullmatch(r"[0-9a-fA-F]{64}", pin.replace(":", "")):
            errors.bad_value(
                f"{path}.pinned_sha256[{i}]",
                "must be a SHA-256 digest in hex (64 digits, colons allowed)",
                pin,
            )
    if s.key_alias and not s.keystore and not errors.is_bad(f"{path}.keystore"):
        errors.bad_value(f"{path}.key_alias", "needs a keystore", s.key_alias)
    if not errors.is_bad(f"{path}.{s.type}"):
        checks: dict[str, Callable[[AdapterSettings, Any, str, Errors], None]] = {
            "ldap": _check_ldap,
            "radius": _check_radius,
            "http": _check_http,
            "ocsp": _check_ocsp,
            "gemalto": _check_gemalto,
        }
        checks[s.type](s, s.options, f"{path}.{s.type}", errors)
    if len(errors.lines) > before:
        errors.taint(path)  # left out of the config's adapters: no reference to it is checked


def check_adapters(errors: Errors, adapters: Sequence[AdapterSettings]) -> None:
    """Every adapter's own rules, then across adapters: unique names, and first factors that name
    a password adapter."""
    for i, adapter in enumerate(adapters):
        check_adapter(errors, adapter, f"adapters[{i}]")
    seen: dict[str, str] = {}
    for i, a in enumerate(adapters):
        path = f"adapters[{i}]"
        if errors.has_bad_within(path):
            continue
        if a.name in seen:
            errors.bad_value(f"{path}.name", f"duplicate adapter name (also {seen[a.name]})", a.name)
        else:
            seen[a.name] = path
    by_name = {a.name: (i, a) for i, a in enumerate(adapters) if not errors.has_bad_within(f"adapters[{i}]")}
    for i, a in by_name.values():
        if a.type != "gemalto" or a.gemalto is None or a.gemalto.first_factor in ("", "users"):
            continue
        name = a.gemalto.first_factor
        where = f"adapters[{i}].gemalto.first_factor"
        other = by_name.get(name)
        if other is None:
            known = (
                ", ".join(sorted(n for n, (_, b) in by_name.items() if b.type in FIRST_FACTOR_TYPES))
                or "none"
            )
            errors.add(
                where,
                f'must be "", "users" or the name of an ldap, radius or http adapter (known: {known})',
                name,
            )
        elif other[1].type not in FIRST_FACTOR_TYPES:
            errors.add(
                where,
                f'adapter "{name}" has type = "{other[1].type}"; the password must be checked by '
                "an ldap, radius or http adapter",
                name,
            )


def _check_servers(s: AdapterSettings, path: str, errors: Errors) -> None:
    if errors.is_bad(f"{path}.servers"):
        return
    if not s.servers and s.type != "ocsp":
        errors.add(
            f"{path}.servers", 'needs at least one server, e.g. servers = [{ url = "...", priority = 1 }]'
        )
    schemes = SCHEMES[s.type]
    seen: dict[str, int] = {}
    for i, server in enumerate(s.servers):
        where = f"{path}.servers[{i}].url"
        if errors.is_bad(where):
            continue
        problem = url_problem(server.url, schemes)
        if problem:
            errors.add(where, problem, server.url)
            continue
        scheme = urlsplit(server.url).scheme.lower()
        if errors.is_bad(f"{path}.security_protocol"):
            pass
        elif schemes[scheme] and s.security_protocol != "tls":
            errors.add(where, f'{scheme}:// needs security_protocol = "tls"', server.url)
        elif s.security_protocol == "tls" and not schemes[scheme] and scheme != "ldap":
            hint = {"http": "use https://", "radius": "RADIUS over TLS (RadSec) is not supported"}[scheme]
            errors.add(where, f'is not TLS but security_protocol = "tls": {hint}', server.url)
        if server.url in seen:
            errors.add(where, f"duplicate server (also servers[{seen[server.url]}])", server.url)
        seen.setdefault(server.url, i)


def url_problem(url: str, schemes: dict[str, bool]) -> str:
    """Why ``url`` is not a usable server URL, or ""."""
    allowed = " or ".join(f"{k}://" for k in schemes)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"must be a URL ({exc})"
    if parts.scheme.lower() not in schemes:
        return f"must start with {allowed}"
    if not parts.hostname:
        return "must name a host, e.g. " + f"{next(iter(schemes))}://host:port"
    if parts.username or parts.password:
        return "must not carry credentials; use the adapter's secret keys"
    if parts.scheme.lower() in ("ldap", "ldaps", "radius") and (parts.path not in ("", "/") or parts.query):
        return "must not have a path or query"
    return ""


def _secret_problem(env: str, file: str, host: HostChecks = PURE) -> str:
    if env and file:
        return "give one of *_env and *_file, not both"
    if env and host.env_unset(env):
        return f"environment variable {env} is not set"
    if file and host.file_missing(file):
        return f"file {file!r} does not exist"
    return ""


def _check_ldap(s: AdapterSettings, o: LdapOptions, path: str, errors: Errors) -> None:
    if bool(o.bind_dn_template) == bool(o.search_base):
        errors.add(
            path, "needs exactly one of bind_dn_template (simple bind) and search_base (search-then-bind)"
        )
    if o.bind_dn_template and "{username}" not in o.bind_dn_template:
        errors.add(f"{path}.bind_dn_template", "must contain {username}", o.bind_dn_template)
    if o.search_base and "{username}" not in o.search_filter:
        errors.add(f"{path}.search_filter", "must contain {username}", o.search_filter)
    if o.search_base and not (o.search_filter.startswith("(") and o.search_filter.endswith(")")):
        errors.add(f"{path}.search_filter", "must be an LDAP filter in parentheses", o.search_filter)
    problem = _secret_problem(o.service_password_env, o.service_password_file, errors.host)
    if problem:
        errors.add(f"{path}.service_password_env", problem, o.service_password_env)
    if o.service_dn and not (o.service_password_env or o.service_password_file):
        errors.add(f"{path}.service_dn", "needs service_password_env or service_password_file", o.service_dn)


def _check_radius(s: AdapterSettings, o: RadiusOptions, path: str, errors: Errors) -> None:
    if not (o.secret_env or o.secret_file):
        errors.add(
            f"{path}.secret_env", "is required (the shared secret's environment variable), or secret_file"
        )
    problem = _secret_problem(o.secret_env, o.secret_file, errors.host)
    if problem:
        errors.add(f"{path}.secret_env", problem, o.secret_env)
    if o.dictionary and errors.host.file_missing(o.dictionary):
        errors.add(f"{path}.dictionary", "file does not exist", o.dictionary)


def _check_http(s: AdapterSettings, o: HttpOptions, path: str, errors: Errors) -> None:
    ok = True
    for key in ("accept_statuses", "reject_statuses"):
        for i, status in enumerate(getattr(o, key)):
            if not re.fullmatch(STATUS_PATTERN, status):
                errors.add(f"{path}.{key}[{i}]", "must be " + STATUS_HELP, status)
                ok = False
    if ok:
        overlap = sorted(
            c for c in range(100, 600) if status_in(c, o.accept_statuses) and status_in(c, o.reject_statuses)
        )
        if overlap:
            errors.add(f"{path}.reject_statuses", f"overlaps accept_statuses (e.g. {overlap[0]})")
    if o.body_format == "json" and o.method == "GET":
        errors.add(f"{path}.method", 'GET cannot carry the JSON body of body_format = "json"', o.method)


def _check_ocsp(s: AdapterSettings, o: OcspOptions, path: str, errors: Errors) -> None:
    if o.issuers and errors.host.file_missing(o.issuers):
        errors.add(f"{path}.issuers", "file does not exist", o.issuers)


def _check_gemalto(s: AdapterSettings, o: GemaltoOptions, path: str, errors: Errors) -> None:
    """The OTP adapter's servers fit its protocol, and a shared secret goes with RADIUS only."""
    want = ("radius",) if o.protocol == "radius" else ("http", "https")
    for i, server in enumerate(s.servers):
        scheme = urlsplit(server.url).scheme.lower()
        if scheme in ("http", "https", "radius") and scheme not in want:
            errors.add(
                f"{path[: -len('.gemalto')]}.servers[{i}].url",
                f'protocol = "{o.protocol}" needs {" or ".join(w + "://" for w in want)} servers',
                server.url,
            )
    if o.protocol == "radius":
        if not (o.secret_env or o.secret_file):
            errors.add(
                f"{path}.secret_env",
                'protocol = "radius" needs secret_env (or secret_file): the shared secret',
            )
        problem = _secret_problem(o.secret_env, o.secret_file, errors.host)
        if problem:
            errors.add(f"{path}.secret_env", problem, o.secret_env)
    else:
        for key in ("secret_env", "secret_file"):
            if getattr(o, key):
                errors.add(f"{path}.{key}", 'is for protocol = "radius"', getattr(o, key))


# Adapter types that check a password: an OTP adapter's first factor.
FIRST_FACTOR_TYPES = ("ldap", "radius", "http")


def status_in(code: int, patterns: tuple[str, ...]) -> bool:
    """Whether an HTTP status matches "401"-style or "4xx"-style patterns."""
    text = str(code)
    return any(p == text or (p.endswith("xx") and p[0] == text[0]) for p in patterns)
