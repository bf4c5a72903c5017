"""wsserver.security.auth: the pure decision for each client_auth method and the user limits."""

from __future__ import annotations

import base64
import time

import pytest

from wsserver.config import parse_config
from wsserver.protocol import HandshakeRequest
from wsserver.security.auth import Authenticator, AuthEvent
from wsserver.security.jwt import sign
from wsserver.security.passwords import hash_password

ALICE_PW = "alice-pw-1"
BOB_PW = "bob-pw-2"
ALICE_TOKEN = "tok-alice-0123456789abcdef"
SECRET = "k" * 40
HASHES = {name: hash_password(pw, scrypt_n=1024) for name, pw in (("alice", ALICE_PW), ("bob", BOB_PW))}

ENDPOINTS = """
[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"

[[endpoints]]
path = "/admin"
handler = "wsserver.endpoints.echo:Echo"
"""

USERS = f"""
[[users]]
name = "alice"
password_hash = "{HASHES["alice"]}"
token = "{ALICE_TOKEN}"

[[users]]
name = "bob"
password_hash = "{HASHES["bob"]}"
token = "sha256:{__import__("hashlib").sha256(b"tok-bob-0123456789abcdef").hexdigest()}"
endpoints = ["/echo"]

[[users]]
name = "carol"
connection_types = ["wss"]

[[users]]
name = "guest"
endpoints = ["/echo"]
ports = ["p"]
"""


def authenticator(port_lines: str, tables: str = "", clock=time.time, observer=None) -> Authenticator:
    cfg = parse_config(f'{ENDPOINTS}\n[[ports]]\nalias = "p"\nport = 8080\n{port_lines}\n{tables}\n{USERS}')
    return Authenticator.from_config(cfg.ports[0], cfg, clock=clock, observer=observer)


def request(path: str = "/echo", headers: tuple = (), query: str = "") -> HandshakeRequest:
    return HandshakeRequest(
        method="GET",
        target=path + ("?" + query if query else ""),
        path=path,
        query=query,
        headers=(("host", "x"), *headers),
        host="x",
        origin=None,
        subprotocols=(),
        extensions=(),
        key="dGhlIHNhbXBsZSBub25jZQ==",
    )


def basic(user: str, password: str) -> tuple:
    return (("authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()),)


def bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


def test_none_is_trivial() -> None:
    auth = authenticator("")
    assert auth.trivial
    d = auth.authenticate(request(), "127.0.0.1")
    assert d.ok and d.user is None


def test_password() -> None:
    auth = authenticator('client_auth = "password"')
    ok = auth.authenticate(request(headers=basic("alice", ALICE_PW)), "127.0.0.1")
    assert (ok.status, ok.user, ok.result) == (200, "alice", "ok")
    for headers in (
        basic("alice", "wrong"),
        basic("mallory", ALICE_PW),
        basic("carol", ""),
        (("authorization", "Basic !!!"),),
        (("authorization", "Basic " + base64.b64encode(b"x").decode()),),
        bearer(ALICE_TOKEN),
        (),
    ):
        d = auth.authenticate(request(headers=headers), "127.0.0.1")
        assert d.status == 401, headers
        assert dict(d.headers)["WWW-Authenticate"] == 'Basic realm="wsserver", charset="UTF-8"'
    wrong = auth.authenticate(request(headers=basic("alice", "nope")), "127.0.0.2")
    unknown = auth.authenticate(request(headers=basic("mallory", "nope")), "127.0.0.2")
    # The answers are identical; the log may name a configured user, never an unknown one.
    assert (wrong.status, wrong.headers) == (unknown.status, unknown.headers)
    assert wrong.user == "alice" and unknown.user is None


def test_password_is_checked_through_run_blocking() -> None:
    auth = authenticator('client_auth = "password"')
    calls = []

    def run_blocking(fn, *args):
        calls.append(fn.__name__)
        return fn(*args)

    auth.authenticate(request(headers=basic("alice", ALICE_PW)), "127.0.0.1", run_blocking)
    auth.authenticate(request(headers=basic("nobody", "x")), "127.0.0.1", run_blocking)
    assert calls == ["verify", "verify_dummy"]


def test_token_bearer_and_digest_form() -> None:
    auth = authenticator('client_auth = "token"')
    assert auth.authenticate(request(headers=bearer(ALICE_TOKEN)), "127.0.0.1").user == "alice"
    assert auth.authenticate(request(headers=bearer("tok-bob-0123456789abcdef")), "127.0.0.1").user == "bob"
    bad = auth.authenticate(request(headers=bearer("tok-nobody-0123456789")), "127.0.0.1")
    assert bad.status == 401 and dict(bad.headers)["WWW-Authenticate"] == 'Bearer realm="wsserver"'
    # No query parameter unless enabled.
    assert auth.authenticate(request(query=f"token={ALICE_TOKEN}"), "127.0.0.1").status == 401


def test_token_query_parameter_when_enabled() -> None:
    auth = authenticator('client_auth = "token"\ntoken_query_param = "access_token"')
    d = auth.authenticate(request(query=f"room=a&access_token={ALICE_TOKEN}"), "127.0.0.1")
    assert d.user == "alice"
    assert auth.public_query(f"room=a&access_token={ALICE_TOKEN}&x=1") == "room=a&x=1"
    twice = f"access_token={ALICE_TOKEN}&access_token={ALICE_TOKEN}"
    assert auth.authenticate(request(query=twice), "127.0.0.1").status == 401


def _jwt_auth(extra: str = "", clock=time.time) -> Authenticator:
    tables = (
        f'[ports.jwt]\nkey = "{SECRET}"\naudience = "ws"\ncookie = "session"\n{extra}\n'
        "[ports.origin]\nsame_origin = true\n"
    )
    return authenticator('client_auth = "jwt"', tables, clock=clock)


def test_jwt_bearer_cookie_and_claims() -> None:
    now = time.time()
    auth = _jwt_auth()
    good = sign({"sub": "alice", "aud": "ws", "exp": now + 60}, SECRET.encode())
    assert auth.authenticate(request(headers=bearer(good)), "127.0.0.1").user == "alice"
    cookie = (("cookie", f"theme=dark; session={good}; other=1"),)
    assert auth.authenticate(request(headers=cookie), "127.0.0.1").user == "alice"
    for token in (
        sign({"sub": "alice", "aud": "ws", "exp": now - 3600}, SECRET.encode()),  # expired
        sign({"sub": "alice", "aud": "other", "exp": now + 60}, SECRET.encode()),  # wrong audience
        sign({"sub": "alice", "aud": "ws", "exp": now + 60}, b"x" * 40),  # wrong signature
        sign({"sub": "mallory", "aud": "ws", "exp": now + 60}, SECRET.encode()),  # unknown user
        sign({"aud": "ws", "exp": now + 60}, SECRET.encode()),  # no user claim
    ):
        d = auth.authenticate(request(headers=bearer(token)), "127.0.0.1")
        assert d.status == 401 and d.result == "invalid"
        assert dict(d.headers)["WWW-Authenticate"] == 'Bearer realm="wsserver"'
    assert auth.authenticate(request(), "127.0.0.1").result == "missing"


def test_jwt_unknown_users_allowed_when_configured() -> None:
    auth = _jwt_auth("known_users_only = false")
    token = sign({"sub": "zed", "aud": "ws", "exp": time.time() + 60}, SECRET.encode())
    d = auth.authenticate(request(headers=bearer(token)), "127.0.0.1")
    assert d.ok and d.user == "zed"


def test_no_auth_user() -> None:
    auth = authenticator('client_auth = "password"\nno_auth_user = "guest"')
    d = auth.authenticate(request(), "127.0.0.1")
    assert (d.status, d.user, d.result) == (200, "guest", "anonymous")
    assert auth.authenticate(request("/admin"), "127.0.0.1").status == 403  # guest's endpoint limit
    # Wrong credentials do not fall back to the no-auth user.
    assert auth.authenticate(request(headers=basic("alice", "bad")), "127.0.0.1").status == 401
    # A none port with no_auth_user: every session is that user, limits included.
    none = authenticator('no_auth_user = "guest"')
    assert not none.trivial
    assert none.authenticate(request(), "127.0.0.1").user == "guest"
    assert none.authenticate(request("/admin"), "127.0.0.1").status == 403


def test_user_limits_are_403() -> None:
    auth = authenticator('client_auth = "password"')
    assert auth.authenticate(request("/admin", basic("bob", BOB_PW)), "127.0.0.1").status == 403
    assert auth.authenticate(request("/echo", basic("bob", BOB_PW)), "127.0.0.1").status == 200
    token_auth = authenticator('client_auth = "token"')
    d = token_auth.authenticate(request("/admin", bearer("tok-bob-0123456789abcdef")), "127.0.0.1")
    assert d.status == 403 and not d.headers


def test_connection_type() -> None:
    cfg_users = USERS.replace('name = "carol"', f'name = "carol"\npassword_hash = "{HASHES["alice"]}"')
    cfg = parse_config(
        f'{ENDPOINTS}\n[[ports]]\nalias = "p"\nport = 8080\nclient_auth = "password"\n{cfg_users}'
    )
    auth = Authenticator.from_config(cfg.ports[0], cfg)
    assert auth.authenticate(request(headers=basic("carol", ALICE_PW)), "127.0.0.1").status == 403


def test_rate_limit_counts_failures_only() -> None:
    now = [0.0]
    auth = authenticator(
        'client_auth = "password"', "[ports.auth_rate_limit]\nburst = 2\nrefill_per_minute = 6\n"
    )
    auth.limiter.clock = lambda: now[0]
    for _ in range(5):  # missing credentials are no guess
        assert auth.authenticate(request(), "192.0.2.9").status == 401
    for _ in range(5):  # neither are successes
        assert auth.authenticate(request(headers=basic("alice", ALICE_PW)), "192.0.2.9").ok
    for _ in range(2):
        assert auth.authenticate(request(headers=basic("alice", "guess")), "192.0.2.9").status == 401
    limited = auth.authenticate(request(headers=basic("alice", ALICE_PW)), "192.0.2.9")
    assert limited.status == 429 and dict(limited.headers) == {"Retry-After": "10"}
    assert auth.authenticate(request(headers=basic("alice", ALICE_PW)), "192.0.2.10").ok
    now[0] += 10
    assert auth.authenticate(request(headers=basic("alice", ALICE_PW)), "192.0.2.9").ok


def test_counters_and_observer() -> None:
    events: list[AuthEvent] = []
    auth = authenticator('client_auth = "token"', observer=events.append)
    auth.authenticate(request(headers=bearer(ALICE_TOKEN)), "127.0.0.1")
    auth.authenticate(request(headers=bearer("nope-nope-nope-nope")), "127.0.0.1")
    auth.timed_out(2.5)
    assert auth.counters == {("token", "ok"): 1, ("token", "invalid"): 1, ("token", "timeout"): 1}
    assert [(e.port, e.method, e.result) for e in events] == [
        ("p", "token", "ok"),
        ("p", "token", "invalid"),
        ("p", "token", "timeout"),
    ]
    assert auth.timed_out(0).status == 503


def test_decisions_carry_no_secrets() -> None:
    auth = authenticator('client_auth = "token"')
    d = auth.authenticate(request(headers=bearer(ALICE_TOKEN)), "127.0.0.1")
    assert ALICE_TOKEN not in repr(d)
    pw = authenticator('client_auth = "password"')
    d = pw.authenticate(request(headers=basic("alice", "typo-" + ALICE_PW)), "127.0.0.1")
    assert ALICE_PW not in repr(d) and "typo" not in repr(d)
    assert HASHES["alice"] not in repr(pw.users.get("alice"))


def test_certificate_and_adapter_methods() -> None:
    cfg = parse_config(f'{ENDPOINTS}\n[[ports]]\nalias = "p"\nport = 8080\n')
    import dataclasses

    port = dataclasses.replace(cfg.ports[0], client_auth="certificate")
    assert Authenticator.from_config(port, cfg).method == "certificate"
    port = dataclasses.replace(cfg.ports[0], client_auth="adapter:corp")
    with pytest.raises(ValueError, match="needs its adapter"):
        Authenticator.from_config(port, cfg)  # no adapter of that name was built
