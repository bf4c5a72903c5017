"""The PROXY protocol v1/v2 parser (wsserver.protocol.proxy): byte-exact vectors, truncation, errors."""

from __future__ import annotations

import struct

import pytest

from wsserver.protocol.proxy import V2_SIGNATURE, ProxyHeader, ProxyHeaderParser, ProxyProtocolError

REQUEST = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"

V1_TCP4 = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 8080\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
# HAProxy send-proxy-v2 for 192.0.2.7:56324 -> 198.51.100.1:8080, byte for byte.
V2_TCP4 = (
    b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"  # signature
    b"\x21\x11\x00\x0c"  # v2 PROXY, AF_INET STREAM, 12 bytes
    b"\xc0\x00\x02\x07\xc6\x33\x64\x01\xdc\x04\x1f\x90"
)
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"


def v2(ver_cmd: int, fam: int, payload: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", ver_cmd, fam, len(payload)) + payload


def v2_tcp6(tlvs: bytes = b"") -> bytes:
    src, dst = bytes.fromhex("20010db8" + "0" * 23 + "7"), bytes.fromhex("20010db8" + "0" * 23 + "1")
    return v2(0x21, 0x21, src + dst + struct.pack("!HH", 443, 8080) + tlvs)


def parse_all(data: bytes, version: str = "any") -> ProxyHeader | None:
    return ProxyHeaderParser(version).feed(data)


def parse_bytewise(data: bytes, version: str = "any") -> ProxyHeader:
    parser = ProxyHeaderParser(version)
    for i in range(len(data)):
        result = parser.feed(data[i : i + 1])
        if result is not None:
            return result
    raise AssertionError("no result")


@pytest.mark.parametrize(
    ("data", "version", "source", "destination"),
    [
        (V1_TCP4, 1, ("192.0.2.7", 56324), ("198.51.100.1", 8080)),
        (V1_TCP6, 1, ("2001:db8::7", 65535), ("2001:db8::1", 0)),
        (V1_UNKNOWN, 1, None, None),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", 1, None, None),
        (V2_TCP4, 2, ("192.0.2.7", 56324), ("198.51.100.1", 8080)),
        (v2_tcp6(), 2, ("2001:db8::7", 443), ("2001:db8::1", 8080)),
        (v2_tcp6(b"\x04\x00\x03abc"), 2, ("2001:db8::7", 443), ("2001:db8::1", 8080)),  # a TLV skipped
        (V2_LOCAL, 2, None, None),
        (v2(0x20, 0x11, bytes(12)), 2, None, None),  # LOCAL with addresses: ignored
        (v2(0x21, 0x31, bytes(216)), 2, None, None),  # AF_UNIX: use the socket peer
        (v2(0x21, 0x12, bytes(12)), 2, None, None),  # AF_INET over DGRAM
        (v2(0x21, 0x00, b""), 2, None, None),  # UNSPEC
    ],
)
@pytest.mark.parametrize("feed", [parse_all, parse_bytewise])
def test_valid_headers_keep_the_bytes_after_them(data, version, source, destination, feed):
    result = feed(data + REQUEST)
    assert result is not None
    assert (result.version, result.source, result.destination) == (version, source, destination)
    if feed is parse_all:
        assert result.rest == REQUEST
    else:  # fed byte by byte: the header ends exactly where the request starts
        assert result.rest == b""


@pytest.mark.parametrize("data", [V1_TCP4, V2_TCP4, v2_tcp6(b"\x01\x00\x02h2")])
def test_truncated_headers_need_more(data):
    parser = ProxyHeaderParser()
    for byte in data[:-1]:
        assert parser.feed(bytes([byte])) is None
    assert parser.feed(data[-1:]) is not None


@pytest.mark.parametrize(("version", "data"), [("v1", V1_TCP4), ("v2", V2_TCP4)])
def test_a_fixed_version_accepts_its_own(version, data):
    assert parse_all(data, version).source == ("192.0.2.7", 56324)


@pytest.mark.parametrize(
    ("version", "data"), [("v1", V2_TCP4), ("v2", V1_TCP4), ("v1", V2_TCP4[:12]), ("v2", b"PROXY ")]
)
def test_a_fixed_version_refuses_the_other(version, data):
    with pytest.raises(ProxyProtocolError):
        parse_all(data, version)


@pytest.mark.parametrize(
    "data",
    [
        REQUEST,  # no header at all
        b"G",
        b"PROXY\r\n",
        b"proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",  # a field missing
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 8080 9\r\n",  # one too many
        b"PROXY TCP4  192.0.2.7 198.51.100.1 56324 8080\r\n",  # two spaces
        b"PROXY TCP5 192.0.2.7 198.51.100.1 56324 8080\r\n",
        b"PROXY TCP4 2001:db8::7 198.51.100.1 56324 8080\r\n",  # family mismatch
        b"PROXY TCP6 192.0.2.7 2001:db8::1 56324 8080\r\n",
        b"PROXY TCP4 192.0.2.256 198.51.100.1 56324 8080\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 8080\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 8080\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 0080 8080\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 +80 8080\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 8080\n",  # LF alone
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 8080\rX",
        b"PROXY TCP4 192.0.2.\xff 198.51.100.1 56324 8080\r\n",
        b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n",  # longer than 107 bytes
        b"PROXY " + b"x" * 101,  # 107 bytes and no CRLF
        V2_SIGNATURE[:11] + b"X",
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
        v2(0x21, 0x11, bytes(11)),  # AF_INET block too short
        v2(0x21, 0x21, bytes(35)),  # AF_INET6 block too short
    ],
)
@pytest.mark.parametrize("feed", [parse_all, parse_bytewise])
def test_malformed_headers_are_errors(data, feed):
    with pytest.raises(ProxyProtocolError):  # as soon as the bytes show it, not at the close
        feed(data)


def test_closed_before_the_header_is_complete():
    parser = ProxyHeaderParser()
    assert parser.feed(V2_TCP4[:10]) is None
    with pytest.raises(ProxyProtocolError):
        parser.feed(b"")


def test_the_longest_v1_line_is_accepted():
    line = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
    assert len(line) == 104
    padded = b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n"
    assert len(padded) == 107
    assert parse_all(line).source == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)
    assert parse_bytewise(padded).source is None


def test_unknown_version_setting():
    with pytest.raises(ValueError):
        ProxyHeaderParser("v3")
