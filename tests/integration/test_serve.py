"""The server as a user meets it: a real process, real sockets, a real websockets client."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.support.rawws import RawClient, frame, http_exchange, status_of, upgrade_request
from tests.support.server import REPO, free_port, port_config, wait_listening

pytestmark = pytest.mark.integration


def test_echo_text_and_binary(echo_server):
    _, port = echo_server
    with connect(f"ws://127.0.0.1:{port}/echo") as ws:
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=5) == b"\x00\x01\xff"
        big = "x" * 200_000
        ws.send(big)
        assert ws.recv(timeout=5) == big


def test_default_config_serves_echo_on_8080(start_server):
    # The README's first command: no config file at all.
    server = start_server(None, wait_for=("127.0.0.1", 8080))
    with connect("ws://127.0.0.1:8080/echo") as ws:
        ws.send("default")
        assert ws.recv(timeout=5) == "default"
    assert "default_ws" in server.logs()


def test_unknown_path_is_404(echo_server):
    _, port = echo_server
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{port}/nope", open_timeout=5)
    assert info.value.response.status_code == 404


def test_backlog_is_applied_to_the_listening_socket(start_server):
    port = free_port()
    start_server(port_config(port, extra="backlog = 123"), wait_for=("127.0.0.1", port))
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    # For a listening socket, ss shows the backlog as Send-Q (the third column).
    send_q = {int(line.split()[2]) for line in out.splitlines() if line.strip()}
    assert send_q == {123}, out


def test_backlog_capped_by_somaxconn_is_reported(start_server):
    cap = int(Path("/proc/sys/net/core/somaxconn").read_text())
    if cap >= 65535:
        pytest.skip("somaxconn is at the maximum: no cap to report")
    port = free_port()
    server = start_server(port_config(port, extra="backlog = 65535"), wait_for=("127.0.0.1", port))
    assert f"capped by the kernel at net.core.somaxconn = {cap}" in server.logs()


def test_bind_address_ipv4_only(start_server):
    port = free_port()
    start_server(port_config(port, bind="127.0.0.1"), wait_for=("127.0.0.1", port))
    with pytest.raises(OSError):
        socket.create_connection(("::1", port), timeout=2).close()


def test_bind_address_ipv6_literal(start_server):
    port = free_port("::1")
    start_server(port_config(port, bind="::1"), wait_for=("::1", port))
    with connect(f"ws://[::1]:{port}/echo") as ws:
        ws.send("v6")
        assert ws.recv(timeout=5) == "v6"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_bind_all_addresses_answers_ipv4_and_ipv6(start_server):
    port = free_port()
    start_server(port_config(port, bind=""), wait_for=("127.0.0.1", port))
    for host in ("127.0.0.1", "[::1]"):
        with connect(f"ws://{host}:{port}/echo") as ws:
            ws.send(host)
            assert ws.recv(timeout=5) == host


def test_disabled_port_is_not_bound(start_server):
    on, off = free_port(), free_port()
    config = (
        port_config(on) + f'\n[[ports]]\nalias = "off"\nport = {off}\nbind = "127.0.0.1"\nenabled = false\n'
    )
    start_server(config, wait_for=("127.0.0.1", on))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", off), timeout=2).close()


def test_disabled_package_disables_its_port_and_endpoint(start_server):
    port, other = free_port(), free_port()
    config = (
        '[[packages]]\nname = "Demo"\nenabled = false\n\n'
        '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n\n'
        '[[endpoints]]\npath = "/demo"\nhandler = "wsserver.endpoints.echo:Echo"\npackage = "Demo"\n\n'
        f'[[ports]]\nalias = "demo"\nport = {port}\nbind = "127.0.0.1"\npackage = "Demo"\n\n'
        f'[[ports]]\nalias = "main"\nport = {other}\nbind = "127.0.0.1"\n'
    )
    start_server(config, wait_for=("127.0.0.1", other))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{other}/demo", open_timeout=5)
    assert info.value.response.status_code == 404


def test_idle_timeout_closes_quiet_session(start_server):
    port = free_port()
    start_server(
        port_config(port, extra="idle_timeout_ms = 400\nping_interval_ms = 0"), wait_for=("127.0.0.1", port)
    )
    with connect(f"ws://127.0.0.1:{port}/echo") as ws:
        # Activity keeps it open past the timeout...
        for _ in range(4):
            time.sleep(0.2)
            ws.send("still here")
            assert ws.recv(timeout=5) == "still here"
        # ...silence closes it.
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert 0.3 < time.monotonic() - started < 3
    assert info.value.rcvd.code == 1000
    assert info.value.rcvd.reason == "idle timeout"


def test_handshake_timeout_drops_silent_and_half_requests(start_server):
    port = free_port()
    start_server(port_config(port, extra="handshake_timeout_ms = 300"), wait_for=("127.0.0.1", port))
    for partial in (b"", b"GET /echo HTTP/1.1\r\nHost: x\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(partial)
            started = time.monotonic()
            assert s.recv(1024) == b""
            assert 0.2 < time.monotonic() - started < 3


def test_max_message_size_closes_with_1009(start_server):
    port = free_port()
    start_server(port_config(port, extra="max_message_size = 1000"), wait_for=("127.0.0.1", port))
    with connect(f"ws://127.0.0.1:{port}/echo", max_size=None) as ws:
        ws.send("a" * 1000)
        assert ws.recv(timeout=5) == "a" * 1000
        ws.send("a" * 1001)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd.code == 1009


def test_compression_bomb_closes_with_1009(start_server):
    port = free_port()
    start_server(port_config(port, extra="max_message_size = 100000"), wait_for=("127.0.0.1", port))
    with connect(f"ws://127.0.0.1:{port}/echo", compression="deflate", max_size=None) as ws:
        ws.send(b"\x00" * 5_000_000)  # ~5 KB on the wire, 5 MB inflated
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd.code == 1009


@pytest.mark.parametrize("enabled", [True, False])
def test_compression_negotiated_only_when_enabled(start_server, enabled):
    port = free_port()
    start_server(
        port_config(port, extra=f"compression = {str(enabled).lower()}"), wait_for=("127.0.0.1", port)
    )
    with connect(f"ws://127.0.0.1:{port}/echo", compression="deflate") as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions")
        ws.send("z" * 5000)
        assert ws.recv(timeout=5) == "z" * 5000
    assert (ext is not None and "permessage-deflate" in ext) == enabled


def test_max_connections_answers_503(start_server):
    port = free_port()
    start_server(port_config(port, extra="max_connections = 2"), wait_for=("127.0.0.1", port))
    first = connect(f"ws://127.0.0.1:{port}/echo")
    second = connect(f"ws://127.0.0.1:{port}/echo")
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5)
    assert info.value.response.status_code == 503
    first.close()
    time.sleep(0.3)
    with connect(f"ws://127.0.0.1:{port}/echo") as third:
        third.send("ok")
        assert third.recv(timeout=5) == "ok"
    second.close()


# ---- bad input on the wire ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # not an upgrade at all
        (upgrade_request(key=""), 400),  # missing Sec-WebSocket-Key
        (upgrade_request(version="8"), 426),
        (upgrade_request(extra="X-Big: " + "a" * 20000 + "\r\n"), 431),
    ],
    ids=["malformed-request-line", "no-upgrade", "missing-key", "wrong-version", "oversized-headers"],
)
def test_bad_handshakes_get_http_errors(echo_server, request_bytes, status):
    _, port = echo_server
    response = http_exchange("127.0.0.1", port, request_bytes)
    assert status_of(response) == status
    if status == 426:
        assert b"sec-websocket-version: 13" in response.lower()
    _assert_still_echoes(port)


def test_max_header_size_is_configurable(start_server):
    port = free_port()
    start_server(port_config(port, extra="max_header_size = 2048"), wait_for=("127.0.0.1", port))
    response = http_exchange("127.0.0.1", port, upgrade_request(extra="X-Big: " + "a" * 3000 + "\r\n"))
    assert status_of(response) == 431
    response = http_exchange(
        "127.0.0.1", port, upgrade_request(extra="X-Small: " + "a" * 1000 + "\r\n"), timeout=1
    )
    assert status_of(response) == 101


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(0x1, b"\xff\xfe"), 1007),  # invalid UTF-8 text
        (frame(0x1, b"hi", mask=False), 1002),  # unmasked client frame
        (frame(0x3, b"x"), 1002),  # reserved data opcode
        (frame(0xB, b"x"), 1002),  # reserved control opcode
        (frame(0x1, b"x", rsv=0b010), 1002),  # RSV2 without an extension
    ],
    ids=["invalid-utf8", "unmasked", "opcode-3", "opcode-0xB", "rsv2"],
)
def test_bad_frames_close_with_rfc_codes(echo_server, data, code):
    _, port = echo_server
    client = RawClient("127.0.0.1", port)
    assert client.status == 101
    client.send(data)
    assert client.recv_close() == code
    client.close()
    _assert_still_echoes(port)


def test_endpoint_exception_closes_only_that_session_with_1011(start_server):
    port = free_port()
    endpoints = '[[endpoints]]\npath = "/boom"\nhandler = "tests.support.endpoints:Boom"\n'
    server = start_server(port_config(port, endpoints=endpoints), wait_for=("127.0.0.1", port))
    with (
        connect(f"ws://127.0.0.1:{port}/boom") as bystander,
        connect(f"ws://127.0.0.1:{port}/boom") as victim,
    ):
        victim.send("boom")
        with pytest.raises(ConnectionClosed) as info:
            victim.recv(timeout=5)
        assert info.value.rcvd.code == 1011
        assert "boom requested" not in (info.value.rcvd.reason or "")  # no details leak to the client
        bystander.send("fine")
        assert bystander.recv(timeout=5) == "fine"
    assert "boom requested" in server.logs()


def test_server_closes_with_the_code_the_endpoint_asks(start_server):
    port = free_port()
    endpoints = '[[endpoints]]\npath = "/close"\nhandler = "tests.support.endpoints:CloseOnText"\n'
    start_server(port_config(port, endpoints=endpoints), wait_for=("127.0.0.1", port))
    with connect(f"ws://127.0.0.1:{port}/close") as ws:
        ws.send("4001")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd.code == 4001


def test_ping_timeout_closes_unresponsive_client(start_server):
    port = free_port()
    start_server(
        port_config(port, extra="ping_interval_ms = 200\nping_timeout_ms = 300"), wait_for=("127.0.0.1", port)
    )
    client = RawClient("127.0.0.1", port)
    opcode, _ = client.recv_frame()
    assert opcode == 0x9  # the server pinged
    started = time.monotonic()
    assert client.recv_close() == 1011  # and gave up on us since we never answer
    assert 0.2 < time.monotonic() - started < 3
    client.close()


def test_pings_answered_keep_session_alive(start_server):
    port = free_port()
    start_server(
        port_config(port, extra="ping_interval_ms = 100\nping_timeout_ms = 200"), wait_for=("127.0.0.1", port)
    )
    with connect(f"ws://127.0.0.1:{port}/echo") as ws:  # websockets answers pings by itself
        time.sleep(1.0)
        ws.send("alive")
        assert ws.recv(timeout=5) == "alive"


def test_sigterm_sends_1001_and_exits_zero(start_server):
    port = free_port()
    server = start_server(port_config(port), wait_for=("127.0.0.1", port))
    clients = [connect(f"ws://127.0.0.1:{port}/echo") for _ in range(5)]
    server.signal(signal.SIGTERM)
    for ws in clients:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 1001
    assert server.wait(timeout=7) == 0


def test_json_log_format(start_server):
    import json

    port = free_port()
    server = start_server(port_config(port), wait_for=("127.0.0.1", port), args=("--log-format", "json"))
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    assert any(doc.get("msg") == "listening" and doc.get("port") == "test_ws" for doc in lines)


def test_invalid_config_does_not_start(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[ports]]\nalias = "a b"\nport = 70000\n')
    proc = subprocess.run(
        [sys.executable, "-m", "wsserver", "serve", "-c", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "ports[0].alias" in proc.stderr and "ports[0].port" in proc.stderr


def test_check_prints_effective_config_or_errors(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(port_config(18080))
    proc = subprocess.run(
        [sys.executable, "-m", "wsserver", "check", "-c", str(good)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "backlog = 6000" in proc.stdout and "idle_timeout_ms = 300000" in proc.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(port_config(18080, extra="backlogg = 5"))
    proc = subprocess.run(
        [sys.executable, "-m", "wsserver", "check", "-c", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "bad.toml: ports[0].backlogg" in proc.stderr and "backlog" in proc.stderr


def test_check_reports_unimportable_handler(tmp_path):
    path = tmp_path / "handler.toml"
    path.write_text(
        port_config(18080, endpoints='[[endpoints]]\npath = "/x"\nhandler = "no.such.module:X"\n')
    )
    proc = subprocess.run(
        [sys.executable, "-m", "wsserver", "check", "-c", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "endpoints[0].handler" in proc.stderr and "no.such.module" in proc.stderr


def test_version(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "wsserver", "--version"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0 and proc.stdout.startswith("wsserver ")


def _assert_still_echoes(port: int) -> None:
    wait_listening("127.0.0.1", port)
    with connect(f"ws://127.0.0.1:{port}/echo") as ws:
        ws.send("after")
        assert ws.recv(timeout=5) == "after"
