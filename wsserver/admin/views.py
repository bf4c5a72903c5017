"""What the API and the console show: ports, packages, workers and sessions as plain data.

Configuration comes from the validated config file; live state (listening addresses,
connection counts, workers) from the master's status answer, a dict shaped like
``{"ports": {alias: {"connections": n, "listening": [...]}}, "workers": [...], "master": {...}}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

from wsserver.config import Config, PortConfig
from wsserver.protocol.address import format_host
from wsserver.security.access import endpoint_allowed


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def settings_of(port: PortConfig) -> dict[str, Any]:
    """Every key of the port with the value in force (defaults included)."""
    return _plain(dataclasses.asdict(port))


def url_host(bind: str, request_host: str) -> str:
    """The host part of a port's URLs: its bind address, or the host the admin was reached at."""
    host = bind
    if bind in ("", "0.0.0.0", "::"):
        try:
            host = urlsplit("//" + request_host).hostname or "localhost"
        except ValueError:
            host = "localhost"
    return format_host(host)


def port_endpoints(config: Config, port: PortConfig, request_host: str = "") -> list[dict[str, str]]:
    """The endpoints a client can open on this port, with their URLs."""
    host = url_host(port.bind, request_host)
    return [
        {"path": e.path, "url": f"{port.protocol}://{host}:{port.port}{e.path}", "package": e.package}
        for e in config.active_endpoints()
        if endpoint_allowed(port.access, e.path)
    ]


def port_view(
    config: Config, port: PortConfig, status: dict[str, Any], request_host: str = ""
) -> dict[str, Any]:
    live = status.get("ports", {}).get(port.alias, {})
    package_enabled = config.package_enabled(port.package)
    return {
        "alias": port.alias,
        "port": port.port,
        "protocol": port.protocol,
        "bind": port.bind,
        "description": port.description,
        "package": port.package,
        "enabled": port.enabled,
        "package_enabled": package_enabled,
        "active": port.enabled and package_enabled,
        "access_mode": port.access.mode,
        "client_auth": port.client_auth,
        "endpoints": port_endpoints(config, port, request_host),
        "listening": live.get("listening", []),
        "connections": live.get("connections", 0),
        "settings": settings_of(port),
    }


def ports_view(config: Config, status: dict[str, Any], request_host: str = "") -> list[dict[str, Any]]:
    return [port_view(config, p, status, request_host) for p in config.ports]


def packages_view(config: Config, status: dict[str, Any]) -> list[dict[str, Any]]:
    live = status.get("ports", {})
    out = []
    for package in config.packages:
        ports = [p for p in config.ports if p.package == package.name]
        out.append(
            {
                "name": package.name,
                "enabled": package.enabled,
                "description": package.description,
                "ports": [p.alias for p in ports],
                "endpoints": [e.path for e in config.endpoints if e.package == package.name],
                "connections": sum(live.get(p.alias, {}).get("connections", 0) for p in ports),
            }
        )
    return out


def workers_view(status: dict[str, Any]) -> dict[str, Any]:
    return {"master": status.get("master", {}), "workers": status.get("workers", [])}
