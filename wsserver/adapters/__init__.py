"""Authentication adapters: LDAP, RADIUS, HTTP, OCSP and OTP (GEMALTO) backends behind a load balancer.

    from wsserver.adapters import Adapter, parse_adapter
    settings, errors = parse_adapter(table, 0, "wsserver.toml")
    result = Adapter(settings).authenticate("alice", "pw", timeout=2.0)

``balancer`` is pure (injected clock, adapter callbacks); the backend modules are imported on
demand, so a server without an LDAP adapter never imports ldap3. See docs/adapters.md.
"""

from wsserver.adapters.balancer import (
    Attempt,
    Balancer,
    BalanceResult,
    Decision,
    Outcome,
    Result,
    ServerSnapshot,
    Timeouts,
)
from wsserver.adapters.service import Adapter, AuthResult, Tried, build_adapters
from wsserver.config.adapter_settings import AdapterSettings, LoadBalancing, parse_adapter, parse_adapters

__all__ = [
    "Adapter",
    "AdapterSettings",
    "Attempt",
    "AuthResult",
    "BalanceResult",
    "Balancer",
    "Decision",
    "LoadBalancing",
    "Outcome",
    "Result",
    "ServerSnapshot",
    "Timeouts",
    "Tried",
    "build_adapters",
    "parse_adapter",
    "parse_adapters",
]
