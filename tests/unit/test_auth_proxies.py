"""wsserver.security.access.ProxyTrust: the client's address behind trusted reverse proxies."""

from __future__ import annotations

import pytest

from wsserver.config import parse_config
from wsserver.security.access import ProxyTrust

TRUST = ProxyTrust(["10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("10.0.0.2", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", "", "10.0.0.2"),
        ("192.0.2.1", "203.0.113.9", "192.0.2.1"),  # not a trusted proxy: its header is ignored
        ("10.0.0.2", "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the client may forge the left part
        ("10.0.0.2", "203.0.113.9, 10.1.1.1", "203.0.113.9"),  # a chain of trusted proxies
        ("10.0.0.2", "10.9.9.9, 10.1.1.1", "10.9.9.9"),  # all trusted: the leftmost
        ("10.0.0.2", "203.0.113.9, garbage", "10.0.0.2"),  # malformed: stop at the last good hop
        ("10.0.0.2", "garbage, 10.1.1.1", "10.1.1.1"),
        ("10.0.0.2", "203.0.113.9:4711", "203.0.113.9"),
        ("::1", "[2001:db8::7]:443", "2001:db8::7"),
        ("::ffff:10.0.0.2", "2001:db8::7", "2001:db8::7"),  # IPv4-mapped peer on a dual-stack socket
        ("::ffff:10.0.0.2", "::ffff:203.0.113.9", "203.0.113.9"),
    ],
)
def test_client_address(peer: str, xff: str | None, client: str) -> None:
    assert TRUST.client_address(peer, xff) == client


def test_no_trusted_proxies_trusts_nobody() -> None:
    none = ProxyTrust()
    assert not none.trusts("127.0.0.1")
    assert none.client_address("127.0.0.1", "203.0.113.9") == "127.0.0.1"


def test_config_key() -> None:
    cfg = parse_config(
        '[[ports]]\nalias = "a"\nport = 1\n[ports.access]\ntrusted_proxies = ["127.0.0.1", "::1/128"]\n'
    )
    assert ProxyTrust.from_config(cfg.ports[0].access).trusts("::1")
