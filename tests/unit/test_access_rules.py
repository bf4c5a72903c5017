from __future__ import annotations

import pytest

from wsserver.config import AccessConfig
from wsserver.security.access import IPRules, endpoint_allowed


@pytest.mark.parametrize(
    ("mode", "allow", "deny", "address", "expected"),
    [
        ("allow", (), (), "203.0.113.9", True),
        ("allow", (), ("127.0.0.0/8",), "127.0.0.1", False),
        ("allow", (), ("127.0.0.0/8",), "::ffff:127.0.0.1", False),  # dual-stack listener form
        ("allow", (), ("127.0.0.0/8",), "::1", True),
        ("allow", (), ("::1",), "::1", False),
        ("deny", ("10.0.0.0/8",), (), "10.1.2.3", True),
        ("deny", ("10.0.0.0/8",), (), "11.1.2.3", False),
        ("deny", ("2001:db8::/32",), (), "2001:db8::1", True),
        ("deny", (), (), "127.0.0.1", False),
        ("deny", ("fe80::/10",), (), "fe80::1%eth0", True),  # scoped link-local address
    ],
)
def test_ip_rules(mode, allow, deny, address, expected):
    assert IPRules(mode, allow, deny).allows(address) is expected


def test_endpoint_access_modes():
    allow_default = AccessConfig(mode="allow", deny_endpoints=("/admin",))
    assert endpoint_allowed(allow_default, "/echo")
    assert not endpoint_allowed(allow_default, "/admin")
    deny_default = AccessConfig(mode="deny", allow_endpoints=("/echo",))
    assert endpoint_allowed(deny_default, "/echo")
    assert not endpoint_allowed(deny_default, "/admin")
