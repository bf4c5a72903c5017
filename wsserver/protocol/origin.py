"""Origin checks (RFC 6455 §10.2, RFC 6454): is this browser page allowed to connect?

Origins compare as (scheme, host, port) with default ports filled in and the host
case-insensitive; ws/wss count as http/https (a port's own scheme is ws or wss, pages are
http or https).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

__all__ = ["DEFAULT_PORTS", "origin_allowed", "parse_origin"]

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
) -> bool:
    """Decide the Origin header of an upgrade request.

    - no Origin header (non-browser clients): ``allow_missing``;
    - neither ``same_origin`` nor ``allowed`` set: any origin;
    - otherwise the origin must equal this server (``scheme`` + the Host header) when
      ``same_origin``, or one of ``allowed`` (``"*"`` matches any; entries that are not
      origins, such as ``"null"``, match literally).
    """
    if origin is None:
        return allow_missing
    if not same_origin and not allowed:
        return True
    parsed = parse_origin(origin)
    if parsed is None:
        literal = origin.strip().lower()
        return any(entry == "*" or entry.strip().lower() == literal for entry in allowed)
    if same_origin and host is not None:
        own_scheme = _SCHEME_ALIASES.get(scheme.lower())
        if own_scheme is not None:
            own = _split_host_port(host.strip(), DEFAULT_PORTS[own_scheme])
            if own is not None and parsed == (own_scheme, *own):
                return True
    return any(entry == "*" or parse_origin(entry) == parsed for entry in allowed)
