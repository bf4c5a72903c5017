"""Per-port access rules: client IP addresses and endpoint paths. Pure logic, no sockets."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from wsserver.config import AccessConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(items: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _normalize(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; rules are written in IPv4.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class IPRules:
    """``mode = "allow"``: everyone but ``deny``; ``mode = "deny"``: nobody but ``allow``."""

    def __init__(self, mode: str, allow: Iterable[str], deny: Iterable[str]) -> None:
        self.mode = mode
        self.allow = _networks(allow)
        self.deny = _networks(deny)
        self.trivial = mode == "allow" and not self.deny

    @classmethod
    def from_config(cls, access: AccessConfig) -> IPRules:
        return cls(access.ip_mode, access.ip_allow, access.ip_deny)

    def allows(self, address: str) -> bool:
        if self.trivial:
            return True
        ip = _normalize(address)
        if self.mode == "allow":
            return not any(ip in net for net in self.deny)
        return any(ip in net for net in self.allow)


def _forwarded_address(item: str) -> str:
    """One X-Forwarded-For entry without brackets or port: "[2001:db8::1]:443" -> "2001:db8::1"."""
    item = item.strip().strip('"')
    if item.startswith("["):
        return item[1 : item.find("]")] if "]" in item else item
    if item.count(":") == 1:  # IPv4 with a port
        return item.partition(":")[0]
    return item


class ProxyTrust:
    """``trusted_proxies``: which peers may tell us the client's address in X-Forwarded-For."""

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self.networks = _networks(trusted)

    @classmethod
    def from_config(cls, access: AccessConfig) -> ProxyTrust:
        return cls(access.trusted_proxies)

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = _normalize(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: the peer, or, when the peer is a trusted proxy, the rightmost
        X-Forwarded-For entry that is not itself a trusted proxy (entries left of it can be
        forged by the client). A malformed entry stops the walk at the last good hop."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        client = peer
        for item in reversed(forwarded_for.split(",")):
            try:
                client = str(_normalize(_forwarded_address(item)))
            except ValueError:
                break
            if not self.trusts(client):
                break
        return client


def endpoint_allowed(access: AccessConfig, path: str) -> bool:
    """Endpoint access mode of a port: allow-by-default with a deny list, or the reverse."""
    if access.mode == "allow":
        return path not in access.deny_endpoints
    return path in access.allow_endpoints
