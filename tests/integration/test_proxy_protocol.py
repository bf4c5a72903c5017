"""PROXY protocol v1/v2 on a real server: the header names the client for IP rules and logs."""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus
from websockets.sync.client import connect

from tests.support.server import free_port, port_config, wait_listening

pytestmark = pytest.mark.integration

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src: str, dst: str = "127.0.0.1", sport: int = 40000, dport: int = 8080) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str, dst: str = "127.0.0.1", sport: int = 40000, dport: int = 8080) -> bytes:
    block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    block += b"\x04\x00\x02hi"  # a TLV (PP2_TYPE_NOOP), skipped
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(block)) + block


def _proxy_config(port: int, version: str = "any", trusted: str = '["127.0.0.1"]', access: str = "") -> str:
    return port_config(
        port,
        extra=f'proxy_protocol = "{version}"\nhandshake_timeout_ms = 3000\n',
        tables=f"[ports.access]\ntrusted_proxies = {trusted}\n{access}",
    )


def _session(
    port: int,
    header: bytes,
    source: str = "127.0.0.1",
    host: str = "127.0.0.1",
    ca: Path | None = None,
    split: bool = False,
) -> int | str:
    """Send ``header``, then a WebSocket upgrade and one echo: 101, the refusal status or "closed".
    ``ca``: a wss port, TLS (verified with that CA) after the header in plain text. ``split``: the
    header in two writes (the server must wait for the rest, not start reading the request or TLS)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect((host, port))
        if split and header:
            sock.sendall(header[:7])
            time.sleep(0.1)
            sock.sendall(header[7:])
        else:
            sock.sendall(header)
        try:
            if ca is not None:
                import ssl

                sock = ssl.create_default_context(cafile=str(ca)).wrap_socket(sock, server_hostname=host)
            with connect(f"ws://{host}:{port}/echo", sock=sock, open_timeout=5) as ws:
                ws.send("hello")
                assert ws.recv(timeout=5) == "hello"
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code
        except (ConnectionClosed, InvalidMessage, OSError, EOFError):
            return "closed"
    finally:
        sock.close()


def _closed_at_once(port: int, data: bytes, source: str = "127.0.0.1") -> bool:
    """The server closes without answering (EOF or reset within 5 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(data)
            return sock.recv(1024) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


def _wait_for_log(server, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.logs():
        assert time.monotonic() < deadline, f"{text!r} not in the server log:\n{server.logs()}"
        time.sleep(0.05)


@pytest.mark.parametrize(("version", "make_header"), [("v1", v1), ("v2", v2), ("any", v1), ("any", v2)])
def test_header_then_upgrade_echoes(start_server, version, make_header):
    port = free_port()
    start_server(_proxy_config(port, version), wait_for=("127.0.0.1", port))
    assert _session(port, make_header("192.0.2.7")) == 101
    # One write holding the header and the whole upgrade: the bytes after the header are the request.
    upgrade = (
        b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(make_header("192.0.2.8") + upgrade)
        assert sock.recv(1024).startswith(b"HTTP/1.1 101 ")


def test_ip_deny_applies_to_the_client_named_in_the_header(start_server):
    port = free_port()
    server = start_server(
        _proxy_config(port, access='ip_deny = ["203.0.113.0/24"]\n'), wait_for=("127.0.0.1", port)
    )
    assert _session(port, v1("203.0.113.9")) == "closed"
    assert _session(port, v2("203.0.113.10")) == "closed"
    assert _session(port, v1("198.51.100.9")) == 101  # the proxy itself (127.0.0.1) is not denied
    _wait_for_log(server, "203.0.113.9")


def test_header_from_an_untrusted_peer_is_closed(start_server):
    port = free_port()
    server = start_server(_proxy_config(port), wait_for=("127.0.0.1", port))
    assert _closed_at_once(port, v1("192.0.2.7") + b"GET /echo HTTP/1.1\r\n\r\n", source="127.0.0.2")
    assert _session(port, v2("192.0.2.7"), source="127.0.0.2") == "closed"
    _wait_for_log(server, "proxy header from an untrusted peer")
    assert _session(port, v2("192.0.2.7")) == 101  # the trusted proxy still gets through


@pytest.mark.parametrize(
    "data",
    [
        b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",  # no header
        b"PROXY TCP4 192.0.2.999 127.0.0.1 1 2\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 1 70000\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # AF_INET block too short
        b"PROXY " + b"x" * 200,
    ],
)
def test_malformed_header_is_closed(start_server, data):
    port = free_port()
    server = start_server(_proxy_config(port), wait_for=("127.0.0.1", port))
    assert _closed_at_once(port, data)
    _wait_for_log(server, "proxy header refused")
    assert _session(port, v1("192.0.2.7")) == 101


def test_version_mismatch_is_closed(start_server):
    port = free_port()
    start_server(_proxy_config(port, "v2"), wait_for=("127.0.0.1", port))
    assert _session(port, v1("192.0.2.7")) == "closed"
    assert _session(port, v2("192.0.2.7")) == 101


HAPROXY_CFG = """\
global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{front}
    default_backend ws
backend ws
    server s1 127.0.0.1:{back} send-proxy-v2
"""


@pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy is not installed (scripts/system-deps.sh)"
)
@pytest.mark.parametrize("protocol", ["ws", "wss"])
def test_through_haproxy_send_proxy_v2(start_server, tmp_path: Path, request, protocol):
    back, front = free_port(), free_port()
    # HAProxy connects from 127.0.0.1 (trusted, allowed); its clients come from 127.0.0.1 and
    # 127.0.0.2, and only the header can tell wsserver which one it is. HAProxy is in mode tcp:
    # a wss client's TLS passes through it to wsserver, after the header.
    access = 'ip_deny = ["127.0.0.2"]\n'
    ca = None
    if protocol == "wss":
        pki = request.getfixturevalue("wss_pki")
        text, ca = _wss_proxy_config(back, pki, access=access), pki.ca_pem
    else:
        text = _proxy_config(back, "v2", access=access)
    server = start_server(text, wait_for=("127.0.0.1", back))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(front=front, back=back))
    log = open(tmp_path / "haproxy.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening("127.0.0.1", front, timeout=10)
        assert _session(front, b"", source="127.0.0.1", ca=ca) == 101
        assert _session(front, b"", source="127.0.0.2", ca=ca) == "closed"
        _wait_for_log(server, "127.0.0.2")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


# ---- wss ports: the header comes before the TLS handshake ------------------------------------------


def _wss_proxy_config(port: int, pki, version: str = "v2", access: str = "") -> str:
    return (
        _proxy_config(port, version, access=access).replace(
            f"port = {port}\n", f'port = {port}\nprotocol = "wss"\n', 1
        )
        + f'\n[ports.tls]\nkeystore = "site"\n\n[[keystores]]\nalias = "site"\ntype = "pem"\n'
        f'[keystores.keys.site]\ncert = "{pki.server_cert}"\nkey = "{pki.server_key}"\n'
    )


@pytest.fixture(scope="module")
def wss_pki(tmp_path_factory):
    from tests.support.backends import Pki

    return Pki(tmp_path_factory.mktemp("proxy-wss-pki"))


@pytest.mark.parametrize(("version", "make_header"), [("v1", v1), ("v2", v2), ("any", v2)])
def test_wss_header_before_tls_then_upgrade_echoes(start_server, wss_pki, version, make_header):
    port = free_port()
    server = start_server(
        _wss_proxy_config(port, wss_pki, version, access='ip_deny = ["203.0.113.0/24"]\n'),
        wait_for=("127.0.0.1", port),
    )
    assert _session(port, make_header("192.0.2.7"), ca=wss_pki.ca_pem) == 101
    assert _session(port, make_header("192.0.2.8"), ca=wss_pki.ca_pem, split=True) == 101
    assert _session(port, make_header("203.0.113.9"), ca=wss_pki.ca_pem) == "closed"  # the claimed client
    _wait_for_log(server, "203.0.113.9")
    assert _session(port, b"", ca=wss_pki.ca_pem) == "closed"  # TLS without the header
    _wait_for_log(server, "proxy header refused")
