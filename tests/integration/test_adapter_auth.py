"""client_auth = "adapter:<name>" through real WebSocket handshakes, against real backends."""

from __future__ import annotations

import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support.backends import BASE_DN, RADIUS_SECRET, USERS, BlackHole, ensure_running, free_port
from tests.support.basic_auth import echo_status
from tests.support.server import free_port as free_tcp_port

pytestmark = pytest.mark.integration


def _config(port: int, adapter: str) -> str:
    return (
        "[server]\nworkers = 1\ngraceful_timeout = 2\n\n"
        '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n\n'
        f"{adapter}\n"
        f'[[ports]]\nalias = "secure"\nport = {port}\nbind = "127.0.0.1"\nclient_auth = "adapter:corp"\n'
        "auth_timeout_ms = 4000\n"
    )


def _ldap_adapter(urls: list[str]) -> str:
    servers = ", ".join(f'{{ url = "{u}", priority = 1 }}' for u in urls)
    return (
        f'[[adapters]]\nname = "corp"\ntype = "ldap"\nservers = [{servers}]\n\n'
        "[adapters.load_balancing]\nserver_request_attempts = 1\nrequest_attempts = 2\n"
        "connection_timeout_ms = 500\nrequest_timeout_ms = 1000\n\n"
        f'[adapters.ldap]\nbind_dn_template = "uid={{username}},ou=people,{BASE_DN}"\n'
    )


def _status(port: int, user: str, password: str) -> int:
    return echo_status(port, user, password, open_timeout=10)


def test_ldap_adapter_good_bad_and_missing_credentials(start_server, slapd_pair):
    ensure_running(slapd_pair)
    port = free_tcp_port()
    server = start_server(
        _config(port, _ldap_adapter([s.url for s in slapd_pair])), wait_for=("127.0.0.1", port)
    )
    assert _status(port, "alice", USERS["alice"]) == 101
    assert _status(port, "alice", "wrong-password") == 401
    assert _status(port, "nobody", "x") == 401
    with pytest.raises(InvalidStatus) as info:  # no credentials at all
        connect(f"ws://127.0.0.1:{port}/echo", open_timeout=10)
    assert info.value.response.status_code == 401
    assert info.value.response.headers["WWW-Authenticate"].startswith("Basic")
    assert USERS["alice"] not in server.logs()


def test_ldap_adapter_survives_one_backend_down(start_server, slapd_pair):
    ensure_running(slapd_pair)
    port = free_tcp_port()
    dead = BlackHole()  # accepts and never answers: a hung server
    try:
        urls = [f"ldap://127.0.0.1:{dead.port}", slapd_pair[0].url]
        start_server(_config(port, _ldap_adapter(urls)), wait_for=("127.0.0.1", port))
        for _ in range(5):
            assert _status(port, "bob", USERS["bob"]) == 101
    finally:
        dead.close()


def test_all_backends_down_is_503_not_401(start_server):
    port = free_tcp_port()
    closed = [free_port(), free_port()]  # nothing listens there
    start_server(
        _config(port, _ldap_adapter([f"ldap://127.0.0.1:{p}" for p in closed])), wait_for=("127.0.0.1", port)
    )
    started = time.monotonic()
    assert _status(port, "alice", USERS["alice"]) == 503
    assert time.monotonic() - started < 4.5  # within auth_timeout_ms


def test_radius_adapter(start_server, radius_pair, monkeypatch):
    ensure_running(radius_pair)
    port = free_tcp_port()
    servers = ", ".join(f'{{ url = "{s.url}", priority = 1 }}' for s in radius_pair)
    adapter = (
        f'[[adapters]]\nname = "corp"\ntype = "radius"\nservers = [{servers}]\n\n'
        "[adapters.load_balancing]\nserver_request_attempts = 1\n\n"
        '[adapters.radius]\nsecret_env = "TEST_RADIUS_SECRET"\n'
    )
    start_server(
        _config(port, adapter), wait_for=("127.0.0.1", port), env={"TEST_RADIUS_SECRET": RADIUS_SECRET}
    )
    assert _status(port, "carol", USERS["carol"]) == 101
    assert _status(port, "carol", "nope") == 401
