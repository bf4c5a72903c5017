"""Host and port as text, the one way logs, URLs and Host headers write them.

An IPv6 literal is bracketed (``[::1]:8080``, RFC 3986 §3.2.2), so the port stays readable
after the address's own colons; a name or an IPv4 address is written as it is. An empty host
is a listener bound to every address and is written ``*``.
"""

from __future__ import annotations

from typing import Any


def format_host(host: str) -> str:
    """``host`` as the host part of a URL or a Host header: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host else host


def format_address(host: str, port: int | str) -> str:
    """``host:port``, ``[v6]:port``, or ``*:port`` for an empty (every-address) host."""
    return f"{format_host(host) or '*'}:{port}"


def format_peer(address: Any) -> str:
    """A socket address as text: ``(host, port, ...)`` tuples of either family, a Unix path as
    it is, and ``?`` when there is none (a peer that left before it could be asked)."""
    if not address:
        return "?"
    if isinstance(address, tuple):
        return format_address(str(address[0]), address[1])
    return str(address)
