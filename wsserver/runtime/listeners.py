"""Listening sockets for ports: bind address, backlog, SO_REUSEADDR.

Plain ``socket`` only (no gevent): the prefork master binds with this before any hub exists,
and workers inherit the sockets.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from wsserver.config import PortConfig

SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"


def kernel_somaxconn() -> int | None:
    """The kernel's cap on listen backlogs, or None where it cannot be read."""
    try:
        with open(SOMAXCONN_PATH) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def effective_backlog(requested: int) -> int:
    """What the kernel will really queue: it silently caps ``listen(n)`` at somaxconn."""
    cap = kernel_somaxconn()
    return requested if cap is None else min(requested, cap)


@dataclass(frozen=True)
class BoundListener:
    alias: str
    sock: socket.socket
    address: tuple
    requested_backlog: int
    effective_backlog: int


def _family_and_address(bind: str, port: int) -> tuple[socket.AddressFamily, tuple]:
    if bind == "":
        # All addresses: one dual-stack IPv6 socket where the host has IPv6, else IPv4 any.
        if socket.has_ipv6:
            return socket.AF_INET6, ("::", port)
        return socket.AF_INET, ("0.0.0.0", port)
    try:
        ip = ipaddress.ip_address(bind)
    except ValueError:
        info = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM)[0]
        return info[0], info[4]
    if ip.version == 6:
        return socket.AF_INET6, (bind, port)
    return socket.AF_INET, (bind, port)


def bind_listener(port: PortConfig, reuse_port: bool = False) -> BoundListener:
    """Bind and listen for one port. Raises OSError with the address in the message."""
    family, address = _family_and_address(port.bind, port.port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and port.bind == "":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        # The configured backlog is applied here: gevent would not re-listen a bound socket.
        sock.listen(port.backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"port {port.alias}: cannot listen on {address[0]}:{address[1]}: {exc.strerror}"
        ) from exc
    return BoundListener(port.alias, sock, sock.getsockname(), port.backlog, effective_backlog(port.backlog))
