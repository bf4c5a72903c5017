"""The rules that span several keys, run on what the shape pass built (wsserver.config.settings).

Every rule is a function of the built ``Config`` and the error list; :func:`check_rules` runs
them all, in one place, in the order their messages read best. A rule skips a key whose value
the shape pass found bad (``errors.is_bad``): one mistake is reported once.

Rules that need more than the text (a password hash's format, a JWT key, an environment
variable, a file) ask ``errors.host`` (config/host.py); parse_config alone runs none of them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import Any

from wsserver.config.adapter_settings import check_adapters
from wsserver.config.ocsp_settings import check_port_ocsp
from wsserver.config.schema import Config, PortConfig
from wsserver.config.settings import Errors, known_names, usable
from wsserver.config.tls_settings import check_keystore, check_tls_references, check_truststore
from wsserver.config.tomltext import toml_value
from wsserver.config.values import is_ip

# client_auth values (see _check_certificate_and_adapter_auth for the last two).
CLIENT_AUTH = ("none", "password", "token", "jwt", "certificate", "adapter:<name>")


def check_rules(cfg: Config, errors: Errors) -> Config:
    """Run every rule; returns ``cfg`` with only the usable adapters, keystores and truststores
    (the same as ``cfg`` when no error was found)."""
    check_adapters(errors, cfg.adapters)
    for i, ks in enumerate(cfg.keystores):
        check_keystore(errors, ks, f"keystores[{i}]")
    for i, ts in enumerate(cfg.truststores):
        check_truststore(errors, ts, f"truststores[{i}]")
    adapters, _ = usable(errors, cfg.adapters, "adapters")
    keystores, keystores_complete = usable(errors, cfg.keystores, "keystores")
    truststores, truststores_complete = usable(errors, cfg.truststores, "truststores")
    cfg = dataclasses.replace(cfg, adapters=adapters, keystores=keystores, truststores=truststores)
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
    errors.lines += check_tls_references(
        cfg.server.tls,
        cfg.ports,
        keystores,
        truststores,
        errors.source,
        keystores_complete=keystores_complete,
        truststores_complete=truststores_complete,
        port_sni=errors.host.port_sni,
    )
    _check_admin(cfg, errors, keystores, keystores_complete=keystores_complete)
    return cfg


def _indexed(name: str, items: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    for i, item in enumerate(items):
        yield f"{name}[{i}]", item


def _check_unique(errors: Errors, table: str, items: Iterable[Any], key: str, what: str) -> None:
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
    return str(ipaddress.ip_address(bind)) if is_ip(bind) else bind.lower().rstrip(".")


# Each family's wildcard address covers every address of that family.
_WILDCARDS = {"0.0.0.0": 4, "::": 6}


def _covers(wildcard: str, other: str) -> bool:
    version = _WILDCARDS.get(_bind_key(wildcard))
    return version is not None and is_ip(other) and ipaddress.ip_address(other).version == version


def _binds_overlap(a: str, b: str) -> bool:
    """Whether listening on both addresses with the same port would fail (EADDRINUSE)."""
    if a == "" or b == "":
        return True  # "" is every address, IPv4 and IPv6 (a dual-stack socket)
    return _bind_key(a) == _bind_key(b) or _covers(a, b) or _covers(b, a)


def _check_listen_addresses(cfg: Config, errors: Errors) -> None:
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


def _check_pools(cfg: Config, errors: Errors) -> None:
    for path, port in _indexed("ports", cfg.ports):
        if errors.is_bad(f"{path}.pool.min", f"{path}.pool.max"):
            continue
        if port.pool.min > port.pool.max:
            errors.add(path, f"pool.min = {port.pool.min} is larger than pool.max = {port.pool.max}")


def _check_package_refs(cfg: Config, errors: Errors) -> None:
    if any(errors.is_bad(f"{p}.name") for p, _ in _indexed("packages", cfg.packages)):
        return  # the known names are incomplete: a reference to a bad entry is no news
    names = [p.name for p in cfg.packages]
    for table, items in (("ports", cfg.ports), ("endpoints", cfg.endpoints)):
        for path, item in _indexed(table, items):
            if item.package and item.package not in names and not errors.is_bad(f"{path}.package"):
                errors.add(
                    f"{path}.package",
                    f"must name a [[packages]] entry ({known_names(names, '[[packages]]')})",
                    item.package,
                )


def _check_endpoint_refs(cfg: Config, errors: Errors) -> None:
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
                        f"must be a configured endpoint path ({known_names(paths, '[[endpoints]]')})",
                        endpoint,
                    )


# Features of the operator's vocabulary that land in later versions. Each is one function
# so that the change that implements the feature deletes exactly its check.


def _check_certificate_and_adapter_auth(cfg: Config, errors: Errors) -> None:
    """client_auth "certificate" needs client certificates; "adapter:<name>" a password adapter."""
    adapters = {a.name: a for a in cfg.adapters}
    for path, port in _indexed("ports", cfg.ports):
        auth = port.client_auth
        if errors.is_bad(f"{path}.client_auth") or auth in CLIENT_AUTH[:4]:
            continue
        adapter = re.fullmatch(r"adapter:(.+)", auth)
        if auth == "certificate":
            if port.protocol != "wss" or port.tls is None or port.tls.client_certs == "none":
                errors.add(
                    f"{path}.client_auth",
                    'needs a wss port with [ports.tls] client_certs = "require" or "request"',
                    auth,
                )
        elif adapter is not None:
            found = adapters.get(adapter[1])
            if found is None:
                errors.add(
                    f"{path}.client_auth",
                    f"must name an [[adapters]] entry ({known_names(list(adapters), '[[adapters]]')})",
                    auth,
                )
            elif found.type == "ocsp":
                errors.add(
                    f"{path}.client_auth",
                    "an OCSP adapter checks certificates, not passwords: use an "
                    f'ldap, radius or http adapter (for client certificates: [ports.tls] ocsp = "{found.name}")',
                    auth,
                )
            elif (
                found.gemalto is not None
                and found.gemalto.first_factor == "users"
                and not any(u.password_hash for u in cfg.users)
            ):
                errors.add(
                    f"{path}.client_auth",
                    f'adapter "{found.name}" has first_factor = "users" but no '
                    "[[users]] entry has a password_hash",
                    auth,
                )
        else:
            errors.add(f"{path}.client_auth", f"must be one of {_CLIENT_AUTH_TEXT}", auth)


_CLIENT_AUTH_TEXT = ", ".join(f'"{a}"' for a in CLIENT_AUTH)


# --- users and client authentication ----------------------------------------------------------
# Password-hash, token and JWT key formats are security/'s: errors.host (config/host.py) asks
# it, so that what validates here is exactly what the server can use.


def _check_users(cfg: Config, errors: Errors) -> None:
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
                digest = (
                    bytes.fromhex(user.token[7:])
                    if user.token.startswith("sha256:")
                    else host.token_digest(user.token)
                )
                if digest in tokens:
                    errors.add(f"{path}.token", f"the same token as {tokens[digest]}")
                tokens.setdefault(digest, path)
        for key, known, what in (
            ("ports", aliases, "[[ports]] alias"),
            ("endpoints", paths, "endpoint path"),
        ):
            if errors.is_bad(f"{path}.{key}"):
                continue
            for i, item in enumerate(getattr(user, key)):
                if item not in known:
                    errors.add(
                        f"{path}.{key}[{i}]",
                        f"must be a configured {what} ({known_names(known, what)})",
                        item,
                    )


def _check_client_auth(cfg: Config, errors: Errors) -> None:
    jwt_key = errors.host.jwt_key
    names = [u.name for u in cfg.users]
    for path, port in _indexed("ports", cfg.ports):
        auth = port.client_auth
        if (
            port.no_auth_user
            and not errors.is_bad(f"{path}.no_auth_user", "users")
            and port.no_auth_user not in names
        ):
            errors.add(
                f"{path}.no_auth_user",
                f'must be "" or a [[users]] name ({known_names(names, "[[users]]")})',
                port.no_auth_user,
            )
        if errors.is_bad(f"{path}.client_auth"):
            continue
        if (
            port.token_query_param
            and auth not in ("token", "jwt")
            and not errors.is_bad(f"{path}.token_query_param")
        ):
            errors.add(
                f"{path}.token_query_param",
                'is only used with client_auth = "token" or "jwt"',
                port.token_query_param,
            )
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
                errors.add(
                    f"{path}.jwt", "no way to send a token: set bearer = true, cookie or token_query_param"
                )
            origin = port.origin
            if jwt.cookie and not (origin.same_origin or origin.allowed):
                # Browsers attach cookies to cross-site WebSocket requests: without an Origin
                # check any web page could open a session as the user (CSWSH).
                errors.add(
                    f"{path}.jwt.cookie",
                    "cookie authentication needs an Origin check: set "
                    "origin.same_origin = true or origin.allowed",
                    jwt.cookie,
                )


_HOST_ENTRY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?")


def _check_origin_hosts(cfg: Config, errors: Errors) -> None:
    """[ports.origin] hosts: each a host name or address, optionally with :port."""
    for path, port in _indexed("ports", cfg.ports):
        for i, entry in enumerate(port.origin.hosts):
            match = _HOST_ENTRY.fullmatch(entry)
            if match is None or (match[2] and not 0 < int(match[2]) <= 65535):
                errors.add(
                    f"{path}.origin.hosts[{i}]",
                    'must be a host name or address, optionally with ":port" '
                    '(e.g. "app.example.com", "app.example.com:8443", "[::1]:8080")',
                    entry,
                )


def _check_proxy_protocol(cfg: Config, errors: Errors) -> None:
    """proxy_protocol: only from trusted proxies."""
    for path, port in _indexed("ports", cfg.ports):
        if port.proxy_protocol == "off" or errors.is_bad(f"{path}.proxy_protocol", f"{path}.access"):
            continue
        if not port.access.trusted_proxies:
            errors.add(
                f"{path}.proxy_protocol",
                "needs [ports.access] trusted_proxies: the load balancers allowed to send the header",
                port.proxy_protocol,
            )


def _check_cluster(cfg: Config, errors: Errors) -> None:
    """[cluster]: the password's environment variable must be set (the workers read it), and a
    CA file goes with TLS."""
    c = cfg.cluster
    if c is None or errors.is_bad("cluster"):
        return
    if c.password_env and errors.host.env_empty(c.password_env):
        errors.add("cluster.password_env", "this environment variable is not set or empty", c.password_env)
    if c.tls_ca_file and not c.broker.startswith("rediss://"):
        errors.add("cluster.tls_ca_file", "is only used with a rediss:// broker", c.tls_ca_file)


def _check_metrics(cfg: Config, errors: Errors) -> None:
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
    problem = (
        errors.host.password_hash(m.password_hash) if m.password_hash and errors.host.password_hash else None
    )
    if problem:
        errors.add("metrics.password_hash", problem)
    if m.password_env and errors.host.env_empty(m.password_env):
        errors.add("metrics.password_env", "this environment variable is not set or empty", m.password_env)
    if not m.enabled:
        return
    for path, port in _indexed("ports", cfg.ports):
        if (
            port.port == m.port
            and not errors.is_bad(f"{path}.port", f"{path}.bind")
            and _binds_overlap(port.bind, m.bind)
        ):
            errors.add(
                "metrics.port",
                f"bind {toml_value(m.bind)} port {m.port} conflicts with {path} "
                f"(bind {toml_value(port.bind)})",
                m.port,
            )


def _check_admin(cfg: Config, errors: Errors, keystores: Iterable[Any], keystores_complete: bool) -> None:
    """[admin]: its TLS key names a keystore; its address is its own (no port, not /metrics)."""
    a = cfg.admin
    if errors.is_bad("admin"):
        return
    aliases = [k.alias for k in keystores]
    if a.tls.keystore and a.tls.keystore not in aliases and keystores_complete:
        errors.add(
            "admin.tls.keystore",
            f"must name a [[keystores]] entry ({known_names(aliases, '[[keystores]]')})",
            a.tls.keystore,
        )
    elif a.tls.key_alias and not a.tls.keystore:
        errors.add(
            "admin.tls.key_alias", "needs admin.tls.keystore (the keystore holding that key)", a.tls.key_alias
        )
    # The listener opens only when someone may log in to it (see docs/admin.md): without such a
    # user the default address 9100 must not stand in the way of a port.
    if not a.enabled or not any(
        u.password_hash and (not u.connection_types or "admin" in u.connection_types) for u in cfg.users
    ):
        return
    taken = [
        (f"{path}.port", port.port, port.bind)
        for path, port in _indexed("ports", cfg.ports)
        if not errors.is_bad(f"{path}.port", f"{path}.bind")
    ]
    if cfg.metrics.enabled and not errors.is_bad("metrics.port", "metrics.bind"):
        taken.append(("metrics.port", cfg.metrics.port, cfg.metrics.bind))
    for path, number, bind in taken:
        if number == a.port and _binds_overlap(bind, a.bind):
            errors.add(
                "admin.port",
                f"bind {toml_value(a.bind)} port {a.port} conflicts with "
                f"{path.removesuffix('.port')} (bind {toml_value(bind)})",
                a.port,
            )
