"""Per-port access rules on a real server: IP rules, endpoint access mode, origins."""

from __future__ import annotations

import socket

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support.server import free_port, port_config

pytestmark = pytest.mark.integration

TWO_ENDPOINTS = (
    '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n\n'
    '[[endpoints]]\npath = "/admin-echo"\nhandler = "wsserver.endpoints.echo:Echo"\n'
)


def _status(url: str, **kwargs) -> int:
    try:
        with connect(url, open_timeout=5, **kwargs) as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def _refused_before_handshake(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            return s.recv(1024) == b""
        except ConnectionResetError:
            return True


def test_ip_deny_refuses_ipv4_while_ipv6_connects(start_server):
    port = free_port()
    config = port_config(port, bind="", tables='[ports.access]\nip_deny = ["127.0.0.0/8"]\n')
    start_server(config, wait_for=("::1", port))
    assert _refused_before_handshake("127.0.0.1", port)
    assert _status(f"ws://[::1]:{port}/echo") == 101


def test_ip_deny_by_default_with_allow_list(start_server):
    port = free_port()
    config = port_config(port, bind="", tables='[ports.access]\nip_mode = "deny"\nip_allow = ["::1/128"]\n')
    start_server(config, wait_for=("::1", port))
    assert _refused_before_handshake("127.0.0.1", port)
    assert _status(f"ws://[::1]:{port}/echo") == 101


def test_endpoint_access_allow_by_default_with_deny_list(start_server):
    port = free_port()
    config = port_config(
        port, endpoints=TWO_ENDPOINTS, tables='[ports.access]\ndeny_endpoints = ["/admin-echo"]\n'
    )
    start_server(config, wait_for=("127.0.0.1", port))
    assert _status(f"ws://127.0.0.1:{port}/echo") == 101
    assert _status(f"ws://127.0.0.1:{port}/admin-echo") == 403
    assert _status(f"ws://127.0.0.1:{port}/unknown") == 404


def test_endpoint_access_deny_by_default_with_allow_list(start_server):
    port = free_port()
    config = port_config(
        port,
        endpoints=TWO_ENDPOINTS,
        tables='[ports.access]\nmode = "deny"\nallow_endpoints = ["/admin-echo"]\n',
    )
    start_server(config, wait_for=("127.0.0.1", port))
    assert _status(f"ws://127.0.0.1:{port}/echo") == 403
    assert _status(f"ws://127.0.0.1:{port}/admin-echo") == 101


def test_same_origin(start_server):
    port = free_port()
    start_server(
        port_config(port, tables="[ports.origin]\nsame_origin = true\nallow_missing = false\n"),
        wait_for=("127.0.0.1", port),
    )
    url = f"ws://127.0.0.1:{port}/echo"
    assert _status(url, origin=f"http://127.0.0.1:{port}") == 101
    assert _status(url, origin="http://evil.example") == 403
    assert _status(url, origin=f"https://127.0.0.1:{port}") == 403  # scheme-aware
    assert _status(url) == 403  # missing Origin refused when allow_missing = false


def _raw_upgrade_status(port: int, host: str, origin: str) -> int:
    request = (
        f"GET /echo HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {origin}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request.encode())
        return int(s.recv(4096).split(b" ", 2)[1])


def test_same_origin_judged_by_the_servers_own_names(start_server):
    """DNS rebinding: a page on evil.example resolving to this server sends Host and Origin
    evil.example, which same_origin alone accepts; with hosts set, both are refused."""
    port = free_port()
    start_server(
        port_config(port, tables='[ports.origin]\nsame_origin = true\nhosts = ["127.0.0.1", "localhost"]\n'),
        wait_for=("127.0.0.1", port),
    )
    assert _raw_upgrade_status(port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}") == 101
    assert _raw_upgrade_status(port, f"localhost:{port}", f"http://localhost:{port}") == 101
    assert _raw_upgrade_status(port, "evil.example", "http://evil.example") == 403
    assert _raw_upgrade_status(port, f"127.0.0.1:{port}", "http://evil.example") == 403
    assert _status(f"ws://127.0.0.1:{port}/echo", origin=f"http://127.0.0.1:{port}") == 101


def test_allowed_origins_with_default_ports(start_server):
    port = free_port()
    tables = '[ports.origin]\nallowed = ["https://app.example.com", "http://tools.example:8000"]\n'
    start_server(port_config(port, tables=tables), wait_for=("127.0.0.1", port))
    url = f"ws://127.0.0.1:{port}/echo"
    assert _status(url, origin="https://app.example.com") == 101
    assert _status(url, origin="https://app.example.com:443") == 101  # explicit default port
    assert _status(url, origin="https://app.example.com:8443") == 403
    assert _status(url, origin="http://app.example.com") == 403
    assert _status(url, origin="http://tools.example:8000") == 101
    assert _status(url, origin="http://tools.example") == 403
    assert _status(url) == 101  # allow_missing defaults to true
