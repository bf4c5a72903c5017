"""Checks of one value beyond its type, range, choices and pattern: addresses, networks,
origins, handlers, broker URLs. Each is a :class:`~wsserver.config.settings.ValueRule` the schema
attaches to its keys, worded for "must be"."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from wsserver.config.settings import ValueRule

# Names other keys refer to: ports, packages, keystores, truststores, adapters.
ALIAS_PATTERN = r"[A-Za-z0-9_.-]{1,255}"
ALIAS_HELP = "1-255 characters of a-z A-Z 0-9 _ . -"

_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}\Z){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_ORIGIN_SCHEMES = ("http", "https", "ws", "wss")


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def valid_bind(text: str) -> bool:
    if text == "" or is_ip(text):
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
    if (
        parts.scheme not in BROKER_SCHEMES
        or parts.password is not None
        or parts.fragment
        or any(ch.isspace() for ch in text)
    ):
        return False
    if parts.scheme == "unix":
        query = parts.query
        return (
            not parts.netloc
            and parts.path.startswith("/")
            and len(parts.path) > 1
            and (not query or re.fullmatch(r"db=\d{1,5}", query) is not None)
        )
    host = parts.hostname
    return (
        host is not None
        and host != ""
        and valid_bind(host.strip("[]"))
        and (port is None or port > 0)
        and not parts.query
        and (parts.path in ("", "/") or re.fullmatch(r"/\d{1,5}", parts.path) is not None)
    )


BIND = ValueRule(valid_bind, '"" (all addresses), an IPv4 or IPv6 address without brackets, or a host name')
NETWORK = ValueRule(valid_network, 'an IPv4 or IPv6 address or CIDR, e.g. "10.0.0.0/8" or "2001:db8::/32"')
ORIGIN = ValueRule(
    valid_origin,
    'scheme://host[:port] with scheme http, https, ws or wss and no path, e.g. "https://app.example.com"',
)
HANDLER = ValueRule(valid_handler, "module:Class, e.g. wsserver.endpoints.echo:Echo")
BROKER_HELP = (
    "redis://HOST[:PORT][/DB], rediss://HOST[:PORT][/DB] (TLS) or unix:///PATH[?db=DB], "
    "without a password in it (use password_env)"
)
BROKER = ValueRule(valid_broker, BROKER_HELP)
