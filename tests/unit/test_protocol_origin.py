"""origin_allowed: scheme://host:port comparison with default ports, case-insensitive hosts."""

from __future__ import annotations

import pytest

from wsserver.protocol import origin_allowed
from wsserver.protocol.origin import parse_origin


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("https://Example.COM", ("https", "example.com", 443)),
        ("http://example.com", ("http", "example.com", 80)),
        ("http://example.com:8080", ("http", "example.com", 8080)),
        ("wss://example.com", ("https", "example.com", 443)),
        ("ws://example.com:80/", ("http", "example.com", 80)),
        ("http://[::1]:9000", ("http", "[::1]", 9000)),
        ("http://[::1]", ("http", "[::1]", 80)),
        ("null", None),
        ("example.com", None),
        ("ftp://example.com", None),
        ("http://example.com:99999", None),
        ("http://example.com:x", None),
        ("http://user@example.com", None),
        ("http://example.com/path", None),
        ("http://", None),
    ],
)
def test_parse_origin(value, parsed):
    assert parse_origin(value) == parsed


def allowed(origin, host="example.com", scheme="http", same_origin=False, allow=(), allow_missing=True):
    return origin_allowed(origin, host, scheme, same_origin, list(allow), allow_missing)


def test_missing_origin():
    assert allowed(None, same_origin=True)
    assert not allowed(None, allow_missing=False)


def test_no_restriction_allows_any_origin():
    assert allowed("https://evil.example")
    assert allowed("null")


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "ok"),
    [
        ("http://example.com", "example.com", "http", True),
        ("http://EXAMPLE.com:80", "example.com", "ws", True),  # default port, case-insensitive
        ("https://example.com", "example.com", "http", False),  # scheme differs
        ("https://example.com", "example.com:443", "wss", True),
        ("http://example.com:8080", "example.com:8080", "http", True),
        ("http://example.com", "example.com:8080", "http", False),  # port differs
        ("http://other.com", "example.com", "http", False),
        ("http://[::1]:8080", "[::1]:8080", "http", True),
        ("null", "example.com", "http", False),
    ],
)
def test_same_origin(origin, host, scheme, ok):
    assert allowed(origin, host=host, scheme=scheme, same_origin=True) is ok


def test_same_origin_without_host_header_fails():
    assert not allowed("http://example.com", host=None, same_origin=True)


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("https://app.example.com", True),
        ("https://APP.example.com:443", True),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("http://localhost:3000", True),
        ("null", True),  # listed literally
        ("https://evil.example", False),
    ],
)
def test_allowed_list(origin, ok):
    allow = ["https://app.example.com/", "http://localhost:3000", "null"]
    assert allowed(origin, allow=allow) is ok


def test_allowed_or_same_origin_and_wildcard():
    assert allowed("http://example.com", same_origin=True, allow=["https://app.example.com"])
    assert allowed("https://app.example.com", same_origin=True, allow=["https://app.example.com"])
    assert allowed("https://anything.example", same_origin=True, allow=["*"])


def test_host_allowed_with_own_names():
    from wsserver.protocol import host_allowed

    hosts = ("app.example.com", "ws.example.com:8443", "[::1]")
    assert host_allowed("anything", "ws", ())  # not configured: every Host
    assert host_allowed("APP.example.com", "ws", hosts)
    assert host_allowed("app.example.com:9000", "ws", hosts)  # a name without port: any port
    assert host_allowed("ws.example.com:8443", "wss", hosts)
    assert not host_allowed("ws.example.com", "wss", hosts)  # 443 is not 8443
    assert host_allowed("[::1]:8080", "ws", hosts)
    assert not host_allowed("evil.example", "ws", hosts)
    assert not host_allowed(None, "ws", hosts)


def test_same_origin_with_own_names_ignores_the_host_header():
    hosts = ("app.example.com",)
    # Rebinding: Host and Origin both name the attacker's domain.
    assert not origin_allowed("http://evil.example", "evil.example", "ws", True, (), False, hosts)
    assert origin_allowed("http://app.example.com", "evil.example", "ws", True, (), False, hosts)
    assert not origin_allowed("https://app.example.com", "app.example.com", "ws", True, (), False, hosts)
    assert origin_allowed("https://app.example.com", "app.example.com", "wss", True, (), False, hosts)
    # allowed still adds origins beside the own names
    assert origin_allowed("https://other.example", "x", "ws", True, ("https://other.example",), False, hosts)
