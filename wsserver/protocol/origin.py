"""Origin checks (RFC 6455 §10.2, RFC 6454): is this browser page allowed to connect?

Origins compare as (scheme, host, port) with default ports filled in and the host
case-insensitive; ws/wss count as http/https (a port's own scheme is ws or wss, pages are
http or https).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

__all__ = ["DEFAULT_PORTS", "host_allowed", "origin_allowed", "parse_host", "parse_origin"]

DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME_ALIASES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
MAX_PORT = 65535

Origin = tuple[str, str, int]  # (scheme, lower-case host, port)


def _split_host_port(hostport: str, default_port: int) -> tuple[str, int] | None:
    if hostport.startswith("["):  # IPv6 literal
        close = hostport.find("]")
        if close < 0:
            return None
        host, rest = hostport[: close + 1], hostport[close + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host or any(c in host for c in "/?#@ \t"):
        return None
    if not port_text:
        return host.lower(), default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) <= MAX_PORT:
        return None
    return host.lower(), int(port_text)


def parse_host(entry: str) -> tuple[str, int | None] | None:
    """A ``[ports.origin] hosts`` entry: ``"name"`` (any port) or ``"name:port"``; None if invalid."""
    parsed = _split_host_port(entry.strip(), 0)
    if parsed is None:
        return None
    return parsed[0], (parsed[1] or None)


def _own_name(host: str, hosts: Sequence[str], default_port: int) -> bool:
    """Whether ``host`` (a Host header or an origin's host:port) is one of the server's ``hosts``."""
    own = _split_host_port(host.strip(), default_port)
    if own is None:
        return False
    for entry in hosts:
        name = parse_host(entry)
        if name is not None and name[0] == own[0] and name[1] in (None, own[1]):
            return True
    return False


def host_allowed(host: str | None, scheme: str, hosts: Sequence[str]) -> bool:
    """With ``hosts`` set (the server's own names), the request's Host must be one of them: a
    page on a rebinding domain reaches the server with its own name in Host and is refused."""
    if not hosts:
        return True
    own_scheme = _SCHEME_ALIASES.get(scheme.lower())
    return host is not None and own_scheme is not None and _own_name(host, hosts, DEFAULT_PORTS[own_scheme])


@functools.lru_cache(maxsize=1024)
def parse_origin(value: str) -> Origin | None:
    """``"https://Example.com"`` -> ``("https", "example.com", 443)``; None if not an origin."""
    scheme, sep, rest = value.strip().partition("://")
    scheme = _SCHEME_ALIASES.get(scheme.lower(), "")
    if not sep or not scheme:
        return None
    if rest.endswith("/"):  # tolerate "https://a.example/" in configuration
        rest = rest[:-1]
    hostport = _split_host_port(rest, DEFAULT_PORTS[scheme])
    return None if hostport is None else (scheme, *hostport)


def origin_allowed(
    origin: str | None,
    host: str | None,
    scheme: str,
    same_origin: bool,
    allowed: Sequence[str],
    allow_missing: bool,
    hosts: Sequence[str] = (),
) -> bool:
    """Decide the Origin header of an upgrade request.

    - no Origin header (non-browser clients): ``allow_missing``;
    - neither ``same_origin`` nor ``allowed`` set: any origin;
    - otherwise the origin must equal this server when ``same_origin`` — ``scheme`` and one of
      the server's own ``hosts`` when they are given, else ``scheme`` + the Host header — or one
      of ``allowed`` (``"*"`` matches any; entries that are not origins, such as ``"null"``,
      match literally).
    """
    if origin is None:
        return allow_missing
    if not same_origin and not allowed:
        return True
    parsed = parse_origin(origin)
    if parsed is None:
        literal = origin.strip().lower()
        return any(entry == "*" or entry.strip().lower() == literal for entry in allowed)
    if same_origin and hosts:
        own_scheme = _SCHEME_ALIASES.get(scheme.lower())
        if own_scheme is not None and parsed[0] == own_scheme:
            host_port = f"{parsed[1]}:{parsed[2]}"
            if _own_name(host_port, hosts, parsed[2]):
                return True
    elif same_origin and host is not None:
        own_scheme = _SCHEME_ALIASES.get(scheme.lower())
        if own_scheme is not None:
            own = _split_host_port(host.strip(), DEFAULT_PORTS[own_scheme])
            if own is not None and parsed == (own_scheme, *own):
                return True
    return any(entry == "*" or parse_origin(entry) == parsed for entry in allowed)
