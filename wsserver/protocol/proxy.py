"""PROXY protocol v1 and v2 (HAProxy's ``send-proxy`` / ``send-proxy-v2``), sans-IO.

A load balancer sends one header before the client's bytes, naming the client's address.
Feed bytes to :class:`ProxyHeaderParser`; :meth:`~ProxyHeaderParser.feed` returns ``None``
while the header is incomplete, then a :class:`ProxyHeader` whose ``rest`` holds the bytes
that followed the header (the start of the HTTP request). A malformed header raises
:class:`ProxyProtocolError`. No sockets here.

Spec: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the whole line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16  # signature, version/command, family/transport, length
V2_MAX_PAYLOAD = 65535  # what the 16-bit length allows
VERSIONS = ("v1", "v2", "any")

_V2_INET_STREAM = 0x11
_V2_INET6_STREAM = 0x21


class ProxyProtocolError(ValueError):
    """A malformed or unexpected PROXY header; the connection must be closed."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header. ``source`` is ``None`` for LOCAL / UNKNOWN / unsupported families:
    then the socket's peer is the client (a health check of the balancer itself)."""

    version: int  # 1 or 2
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    rest: bytes  # bytes received after the header


class ProxyHeaderParser:
    """Accumulates bytes until one PROXY header is complete. ``version`` is "v1", "v2" or "any"."""

    def __init__(self, version: str = "any") -> None:
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, not {version!r}")
        self.version = version
        self._buf = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        """Add bytes; ``None`` = need more. An empty ``data`` means the peer closed: error."""
        if not data:
            raise ProxyProtocolError("connection closed before a complete PROXY header")
        self._buf += data
        buf = self._buf
        kind = _kind(buf)
        if kind is None:
            return None
        if self.version != "any" and kind != self.version:
            raise ProxyProtocolError(f"expected a PROXY {self.version} header")
        return _parse_v1(buf) if kind == "v1" else _parse_v2(buf)


def _kind(buf: bytes) -> str | None:
    """ "v1", "v2" or None (too short to tell); raises if it can be neither."""
    n = min(len(buf), len(V2_SIGNATURE))
    if buf[:n] == V2_SIGNATURE[:n]:
        return "v2" if n == len(V2_SIGNATURE) else None
    n = min(len(buf), len(V1_PREFIX))
    if buf[:n] == V1_PREFIX[:n]:
        return "v1" if n == len(V1_PREFIX) else None
    raise ProxyProtocolError("no PROXY protocol header")


def _port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError(f"bad port {text!r}")
    value = int(text)
    if value > 65535:
        raise ProxyProtocolError(f"port {value} out of range 0..65535")
    return value


def _address(text: str, cls: type) -> str:
    try:
        return str(cls(text))
    except ValueError:
        raise ProxyProtocolError(f"bad address {text!r}") from None


def _parse_v1(buf: bytes) -> ProxyHeader | None:
    end = buf.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buf) >= V1_MAX:
            raise ProxyProtocolError(f"PROXY v1 line longer than {V1_MAX} bytes")
        if b"\n" in buf or b"\r" in buf[:-1]:
            raise ProxyProtocolError("PROXY v1 line not ended by CRLF")
        return None
    try:
        line = buf[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    rest = buf[end + 2 :]
    parts = line.split(" ")
    if parts[1:2] == ["UNKNOWN"]:  # the receiver ignores whatever follows
        return ProxyHeader(1, None, None, rest)
    if len(parts) != 6 or parts[0] != "PROXY":
        raise ProxyProtocolError("PROXY v1 line must be: PROXY TCP4|TCP6|UNKNOWN src dst sport dport")
    _, family, src, dst, sport, dport = parts
    if family == "TCP4":
        cls: type = ipaddress.IPv4Address
    elif family == "TCP6":
        cls = ipaddress.IPv6Address
    else:
        raise ProxyProtocolError(f"unknown PROXY v1 family {family!r}")
    source = (_address(src, cls), _port(sport))
    destination = (_address(dst, cls), _port(dport))
    return ProxyHeader(1, source, destination, rest)


def _parse_v2(buf: bytes) -> ProxyHeader | None:
    if len(buf) < V2_HEADER:
        return None
    ver_cmd, fam, length = struct.unpack_from("!BBH", buf, 12)
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 header with version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyProtocolError(f"PROXY v2 header with unknown command {command}")
    if len(buf) < V2_HEADER + length:
        return None
    payload = buf[V2_HEADER : V2_HEADER + length]
    rest = buf[V2_HEADER + length :]
    if command == 0:  # LOCAL: the balancer's own connection (health checks)
        return ProxyHeader(2, None, None, rest)
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    if fam == _V2_INET_STREAM:
        if length < 12:
            raise ProxyProtocolError("PROXY v2 AF_INET address block shorter than 12 bytes")
        src, dst = ipaddress.IPv4Address(payload[0:4]), ipaddress.IPv4Address(payload[4:8])
        sport, dport = struct.unpack_from("!HH", payload, 8)
    elif fam == _V2_INET6_STREAM:
        if length < 36:
            raise ProxyProtocolError("PROXY v2 AF_INET6 address block shorter than 36 bytes")
        src, dst = ipaddress.IPv6Address(payload[0:16]), ipaddress.IPv6Address(payload[16:32])
        sport, dport = struct.unpack_from("!HH", payload, 32)
    else:  # UNSPEC, UNIX, DGRAM...: the receiver uses the socket's addresses
        return ProxyHeader(2, None, None, rest)
    # TLVs after the address block are skipped.
    return ProxyHeader(2, (str(src), sport), (str(dst), dport), rest)
