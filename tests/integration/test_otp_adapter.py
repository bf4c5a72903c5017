"""The GEMALTO (one-time password) adapter against real OTP servers on loopback: privacyIDEA's
/validate/check (two servers sharing one SQLite database) and FreeRADIUS answering the password
with an Access-Challenge, then checking the code (tests/support/otp_backends.py).

Through real WebSocket handshakes: a valid code is 101, a reused or wrong one 401, a wrong
password 401 without spending the code, every server down 503. At the adapter: the next server
is used when the first is down, and every backend request reaches the metrics observer.
"""

from __future__ import annotations

import socket
import time

import pytest

pytest.register_assert_rewrite("tests.support.otp_backends")  # also a plugin (below): no warning

from tests.support.backends import RADIUS_SECRET, USERS, ensure_running, free_port  # noqa: E402
from tests.support.basic_auth import echo_status  # noqa: E402
from tests.support.otp_backends import OTP_USERS, Totp  # noqa: E402
from tests.support.server import free_port as free_tcp_port  # noqa: E402
from wsserver.adapters import Adapter, Decision, parse_adapter  # noqa: E402
from wsserver.security.passwords import hash_password  # noqa: E402

pytest_plugins = ("tests.support.otp_backends",)
pytestmark = pytest.mark.integration

ENV = {"TEST_RADIUS_SECRET": RADIUS_SECRET}
FAST = (
    "[adapters.load_balancing]\nserver_request_attempts = 1\nrequest_attempts = 2\n"
    "connection_timeout_ms = 1000\nrequest_timeout_ms = 3000\n\n"
)


def _servers(urls: list[str], priorities: list[int] | None = None) -> str:
    priorities = priorities or [1] * len(urls)
    return ", ".join(f'{{ url = "{u}", priority = {p} }}' for u, p in zip(urls, priorities, strict=True))


def _privacyidea_adapter(urls: list[str], priorities: list[int] | None = None, **options: str) -> str:
    extra = "".join(f'{k} = "{v}"\n' for k, v in options.items())
    return (
        f'[[adapters]]\nname = "otp"\ntype = "gemalto"\nservers = [{_servers(urls, priorities)}]\n\n{FAST}'
        f'[adapters.gemalto]\nprotocol = "privacyidea"\nrealm = "corp"\n{extra}\n'
    )


def _radius_adapter(urls: list[str], **options: str) -> str:
    extra = "".join(f'{k} = "{v}"\n' for k, v in options.items())
    return (
        f'[[adapters]]\nname = "otp"\ntype = "otp"\nservers = [{_servers(urls)}]\n\n{FAST}'
        f'[adapters.gemalto]\nprotocol = "radius"\nsecret_env = "TEST_RADIUS_SECRET"\n{extra}\n'
    )


USERS_TABLE = "".join(
    f'[[users]]\nname = "{name}"\npassword_hash = "{hash_password(pw, scrypt_n=2**12)}"\n\n'
    for name, pw in OTP_USERS.items()
)


def _config(port: int, adapters: str, users: str = "") -> str:
    return (
        "[server]\nworkers = 1\ngraceful_timeout = 2\n\n"
        '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n\n'
        f"{users}{adapters}"
        f'[[ports]]\nalias = "secure"\nport = {port}\nbind = "127.0.0.1"\nclient_auth = "adapter:otp"\n'
        "auth_timeout_ms = 8000\n"
    )


_status = echo_status


def _start(start_server, adapters: str, users: str = "") -> int:
    port = free_tcp_port()
    start_server(_config(port, adapters, users), wait_for=("127.0.0.1", port), env=ENV)
    return port


# --- privacyIDEA ----------------------------------------------------------------------------------------


def test_privacyidea_password_then_appended_code(start_server, privacyidea, pi_totp: Totp):
    privacyidea.start()
    port = _start(
        start_server,
        _privacyidea_adapter([s.url for s in privacyidea.servers], first_factor="users"),
        USERS_TABLE,
    )
    code = pi_totp.fresh()
    assert _status(port, "alice", "alicepw" + code) == 101
    assert _status(port, "alice", "alicepw" + code) == 401  # reused (the other server knows it too)
    assert _status(port, "alice", "alicepw" + pi_totp.wrong()) == 401
    fresh = pi_totp.fresh()
    assert _status(port, "alice", "wrong-pw" + fresh) == 401  # the password fails first ...
    assert _status(port, "alice", "alicepw" + fresh) == 101  # ... so the code was not spent
    assert _status(port, "bob", "bobpw" + pi_totp.fresh()) == 401  # no token
    assert _status(port, "alice", "alicepw") == 401  # no code at all


def test_privacyidea_code_in_query_or_header(start_server, privacyidea, pi_totp: Totp):
    privacyidea.start()
    url = [privacyidea.servers[0].url]
    port = _start(
        start_server, _privacyidea_adapter(url, first_factor="users", code_from="query"), USERS_TABLE
    )
    assert _status(port, "alice", "alicepw", query=f"?otp={pi_totp.fresh()}") == 101
    assert _status(port, "alice", "alicepw", query=f"?otp={pi_totp.wrong()}") == 401
    assert _status(port, "alice", "alicepw") == 401
    port = _start(
        start_server, _privacyidea_adapter(url, first_factor="users", code_from="header"), USERS_TABLE
    )
    assert _status(port, "alice", "alicepw", headers={"X-OTP": pi_totp.fresh()}) == 101
    assert _status(port, "alice", "nope", headers={"X-OTP": pi_totp.fresh()}) == 401


def test_password_by_radius_adapter_then_privacyidea_code(
    start_server, privacyidea, radius_pair, pi_totp: Totp
):
    privacyidea.start()
    ensure_running(radius_pair)
    first = (
        f'[[adapters]]\nname = "corp"\ntype = "radius"\nservers = [{_servers([radius_pair[0].url])}]\n\n'
        '[adapters.radius]\nsecret_env = "TEST_RADIUS_SECRET"\n\n'
    )
    port = _start(
        start_server,
        first + _privacyidea_adapter([privacyidea.servers[0].url], first_factor="corp", code_from="query"),
    )
    assert (
        _status(port, "carol", USERS["carol"], query=f"?otp={pi_totp.fresh()}") == 401
    )  # carol has no token
    assert _status(port, "alice", "wrong", query=f"?otp={pi_totp.fresh()}") == 401
    assert _status(port, "alice", USERS["alice"], query=f"?otp={pi_totp.fresh()}") == 101


def test_privacyidea_first_server_down_then_all_down(start_server, privacyidea, pi_totp: Totp):
    privacyidea.start()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    port = _start(start_server, _privacyidea_adapter([dead, privacyidea.servers[1].url], [1, 2]))
    assert _status(port, "alice", pi_totp.fresh()) == 101  # OTP only: the token has no PIN
    port = _start(start_server, _privacyidea_adapter([dead, f"http://127.0.0.1:{free_port()}"]))
    started = time.monotonic()
    assert _status(port, "alice", pi_totp.fresh()) == 503
    assert time.monotonic() - started < 8.5


def test_privacyidea_failover_and_metrics_at_the_adapter(privacyidea, pi_totp: Totp):
    privacyidea.start()
    seen: list[tuple[str, str, str]] = []
    urls = [s.url for s in privacyidea.servers]
    settings, errors = parse_adapter(
        {
            "name": "otp",
            "type": "otp",
            "servers": [{"url": urls[0], "priority": 1}, {"url": urls[1], "priority": 2}],
            "load_balancing": {"request_attempts": 1},
            "otp": {"realm": "corp"},
        },
        0,
        "test.toml",
    )
    assert errors == []
    adapter = Adapter(
        settings, observer=lambda name, server, result, s, p: seen.append((name, server, result))
    )
    first = adapter.authenticate("alice", pi_totp.fresh(), timeout=10)
    assert [(t.server, t.result) for t in first.tried] == [(urls[0], "accepted")]
    privacyidea.servers[0].stop()  # the next test that needs it starts it again (~10 s)
    result = adapter.authenticate("alice", pi_totp.fresh(), timeout=10)
    assert result.decision is Decision.ACCEPTED, result
    assert [(t.server, t.result) for t in result.tried] == [(urls[0], "failed"), (urls[1], "accepted")]
    wrong = adapter.authenticate("alice", pi_totp.wrong(), timeout=10)
    assert wrong.decision is Decision.REJECTED
    assert [(t.server, t.result) for t in wrong.tried] == [(urls[0], "failed"), (urls[1], "rejected")]
    # The observer feeds wsserver_adapter_requests_total{adapter,server,result} and the rest.
    assert seen == [
        ("otp", urls[0], "accepted"),
        ("otp", urls[0], "failed"),
        ("otp", urls[1], "accepted"),
        ("otp", urls[0], "failed"),
        ("otp", urls[1], "rejected"),
    ]
    assert [(s.failed, s.accepted, s.rejected) for s in adapter.snapshot()] == [(2, 1, 0), (0, 1, 1)]


# --- FreeRADIUS: the password, Access-Challenge, then the code -------------------------------------------


def test_radius_challenge_then_code(start_server, otp_radius_pair, radius_totp: Totp):
    port = _start(start_server, _radius_adapter([s.url for s in otp_radius_pair]))
    code = radius_totp.fresh()
    assert _status(port, "alice", "alicepw" + code) == 101
    assert _status(port, "alice", "alicepw" + code) == 401  # reused
    assert _status(port, "alice", "alicepw" + radius_totp.wrong()) == 401
    fresh = radius_totp.fresh()
    assert _status(port, "alice", "badpw" + fresh) == 401  # Access-Reject before any challenge
    assert _status(port, "alice", "alicepw" + fresh) == 101


def test_radius_code_in_header(start_server, otp_radius_pair, radius_totp: Totp):
    port = _start(start_server, _radius_adapter([otp_radius_pair[0].url], code_from="header"))
    assert _status(port, "alice", "alicepw", headers={"X-OTP": radius_totp.fresh()}) == 101
    assert _status(port, "alice", "alicepw") == 401


def test_radius_first_server_down_and_all_down(start_server, otp_radius_pair, radius_totp: Totp, monkeypatch):
    monkeypatch.setenv("TEST_RADIUS_SECRET", RADIUS_SECRET)
    seen: list[tuple[str, str]] = []
    urls = [s.url for s in otp_radius_pair]
    settings, errors = parse_adapter(
        {
            "name": "otp",
            "type": "gemalto",
            "servers": [{"url": urls[0], "priority": 1}, {"url": urls[1], "priority": 2}],
            "load_balancing": {"request_attempts": 1},
            "gemalto": {"protocol": "radius", "secret_env": "TEST_RADIUS_SECRET"},
        },
        0,
        "test.toml",
    )
    assert errors == []
    adapter = Adapter(settings, observer=lambda name, server, result, s, p: seen.append((server, result)))
    otp_radius_pair[0].stop()
    try:
        result = adapter.authenticate("alice", "alicepw" + radius_totp.fresh(), timeout=10)
        assert result.decision is Decision.ACCEPTED, result
        assert [(t.server, t.result) for t in result.tried] == [(urls[0], "failed"), (urls[1], "accepted")]
        assert (urls[0], "failed") in seen
    finally:
        otp_radius_pair[0].start()
    port = _start(
        start_server,
        _radius_adapter([f"radius://127.0.0.1:{free_port(socket.SOCK_DGRAM)}" for _ in range(2)]),
    )
    assert _status(port, "alice", "alicepw" + radius_totp.fresh()) == 503


def test_bad_settings_one_line_each():
    settings, errors = parse_adapter(
        {
            "name": "otp",
            "type": "otp",
            "servers": [{"url": "radius://127.0.0.1"}],
            "otp": {"protocol": "privacyidea", "otp_length": 2, "code_from": "cookie", "secret_env": "X"},
        },
        0,
        "t.toml",
    )
    assert settings is None
    assert errors == [
        't.toml: adapters[0].gemalto.code_from = "cookie": must be one of "append", "query", "header"',
        "t.toml: adapters[0].gemalto.otp_length = 2: must be an integer 4..12",
        't.toml: adapters[0].servers[0].url = "radius://127.0.0.1": protocol = "privacyidea" needs http:// or '
        "https:// servers",
        't.toml: adapters[0].gemalto.secret_env = "X": is for protocol = "radius"',
    ]
