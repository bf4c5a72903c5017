"""The GEMALTO adapter without servers: privacyIDEA answers classified, the two-factor port mode
(order of the factors, where the code comes from, what the OTP server is sent), the query
parameter hidden from endpoints."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import pytest

from wsserver import preflight
from wsserver.adapters import AuthResult, Decision, Result, parse_adapter
from wsserver.adapters.otp import classify_privacyidea
from wsserver.config import parse_config
from wsserver.protocol import HandshakeRequest
from wsserver.security.auth import Authenticator
from wsserver.security.passwords import hash_password

ALICE_HASH = hash_password("alicepw", scrypt_n=1024)


def answer(
    status: bool, value: object = None, detail: dict | None = None, error: dict | None = None
) -> bytes:
    result: dict = {"status": status}
    if value is not None:
        result["value"] = value
    if error is not None:
        result["error"] = error
    return json.dumps({"result": result, "detail": detail}).encode()


def test_privacyidea_answers() -> None:
    assert (
        classify_privacyidea(200, answer(True, True, {"message": "matching 1 tokens"})).result
        is Result.ACCEPTED
    )
    reused = classify_privacyidea(
        200, answer(True, False, {"message": "wrong otp value. previous otp used again"})
    )
    assert reused.result is Result.REJECTED and "used again" in reused.detail
    challenge = classify_privacyidea(200, answer(True, False, {"transaction_id": "0123"}))
    assert challenge.result is Result.REJECTED and challenge.attributes["transaction_id"] == "0123"
    no_user = classify_privacyidea(400, answer(False, error={"code": 904, "message": "ERR904: no user"}))
    assert no_user.result is Result.REJECTED
    assert classify_privacyidea(500, answer(False, error={"code": 500})).result is Result.FAILED
    assert classify_privacyidea(503, b"busy").result is Result.FAILED
    assert classify_privacyidea(429, b"").result is Result.FAILED
    assert classify_privacyidea(200, b"<html>proxy login</html>").result is Result.FAILED


@dataclass
class FakeAdapter:
    """Records what it was asked; answers from ``answers`` (user, secret) -> Decision."""

    settings: object
    answers: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)

    def authenticate(self, user: str, secret: str, *, timeout: float | None = None) -> AuthResult:
        self.calls.append((user, secret))
        return AuthResult(self.answers.get((user, secret), Decision.REJECTED), user)


def otp_settings(**options: object):
    settings, errors = parse_adapter(
        {"name": "otp", "type": "otp", "servers": [{"url": "http://127.0.0.1:1"}], "otp": options},
        0,
        "t.toml",
    )
    assert errors == [], errors
    return settings


def ldap_settings():
    settings, errors = parse_adapter(
        {
            "name": "ldap",
            "type": "ldap",
            "servers": [{"url": "ldap://127.0.0.1"}],
            "ldap": {"bind_dn_template": "uid={username},dc=x"},
        },
        0,
        "t.toml",
    )
    assert errors == [], errors
    return settings


def port_auth(otp: FakeAdapter, ldap: FakeAdapter | None = None) -> Authenticator:
    cfg = parse_config(
        '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n\n'
        f'[[users]]\nname = "alice"\npassword_hash = "{ALICE_HASH}"\n\n'
        '[[ports]]\nalias = "p"\nport = 8080\n'
    )
    import dataclasses

    port = dataclasses.replace(cfg.ports[0], client_auth="adapter:otp")
    adapters = {"otp": otp} | ({"ldap": ldap} if ldap else {})
    return Authenticator.from_config(port, cfg, adapters=adapters)


def request(user: str, secret: str, query: str = "", headers: tuple = ()) -> HandshakeRequest:
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    target = "/echo" + (f"?{query}" if query else "")
    return HandshakeRequest(
        "GET",
        target,
        "/echo",
        query,
        (("authorization", f"Basic {token}"), *headers),
        "example.test",
        None,
        (),
        (),
        "dGhlIHNhbXBsZSBub25jZQ==",
    )


def test_otp_server_checks_everything_by_default() -> None:
    otp = FakeAdapter(otp_settings(), {("alice", "pin123456"): Decision.ACCEPTED})
    auth = port_auth(otp)
    assert auth.authenticate(request("alice", "pin123456"), "10.0.0.1").status == 200
    assert otp.calls == [("alice", "pin123456")]  # PIN + code, as typed
    assert auth.authenticate(request("alice", "pin654321"), "10.0.0.1").status == 401


def test_users_password_first_then_only_the_code() -> None:
    otp = FakeAdapter(otp_settings(first_factor="users"), {("alice", "123456"): Decision.ACCEPTED})
    auth = port_auth(otp)
    decision = auth.authenticate(request("alice", "alicepw123456"), "10.0.0.1")
    assert (decision.status, decision.user) == (200, "alice")
    assert otp.calls == [("alice", "123456")]  # the password never reaches the OTP server
    wrong = auth.authenticate(request("alice", "wrongpw123456"), "10.0.0.1")
    assert (wrong.status, wrong.reason) == (401, "password")
    assert len(otp.calls) == 1  # a wrong password spends no code
    assert auth.authenticate(request("mallory", "x123456"), "10.0.0.1").status == 401
    short = auth.authenticate(request("alice", "12345"), "10.0.0.1")
    assert (short.status, short.reason) == (401, "otp_malformed")


def test_adapter_first_factor_and_code_in_header() -> None:
    ldap = FakeAdapter(ldap_settings(), {("bob", "bobpw"): Decision.ACCEPTED})
    otp = FakeAdapter(
        otp_settings(first_factor="ldap", code_from="header"), {("bob", "654321"): Decision.ACCEPTED}
    )
    auth = port_auth(otp, ldap)
    ok = auth.authenticate(request("bob", "bobpw", headers=(("x-otp", "654321"),)), "10.0.0.1")
    assert (ok.status, ok.user) == (200, "bob")
    missing = auth.authenticate(request("bob", "bobpw"), "10.0.0.1")
    assert (missing.status, missing.reason) == (401, "otp_missing")
    ldap.answers[("bob", "bobpw")] = Decision.UNAVAILABLE
    down = auth.authenticate(request("bob", "bobpw", headers=(("x-otp", "654321"),)), "10.0.0.1")
    assert down.status == 503
    ldap.answers[("bob", "bobpw")] = Decision.ACCEPTED
    otp.answers[("bob", "654321")] = Decision.UNAVAILABLE
    assert (
        auth.authenticate(request("bob", "bobpw", headers=(("x-otp", "654321"),)), "10.0.0.1").status == 503
    )


@pytest.mark.parametrize("query, seen", [("otp=123456", ""), ("a=1&otp=123456&b=2", "a=1&b=2")])
def test_code_in_query_is_hidden_from_the_endpoint(query: str, seen: str) -> None:
    otp = FakeAdapter(
        otp_settings(first_factor="users", code_from="query"), {("alice", "123456"): Decision.ACCEPTED}
    )
    auth = port_auth(otp)
    assert auth.authenticate(request("alice", "alicepw", query=query), "10.0.0.1").status == 200
    assert auth.public_query(query) == seen


def test_check_reports_cross_references_one_line_each() -> None:
    from wsserver.config.loader import ConfigError

    text = (
        '[[adapters]]\nname = "ocsp1"\ntype = "ocsp"\n\n'
        '[[adapters]]\nname = "otp"\ntype = "otp"\nservers = [{ url = "http://127.0.0.1:5001" }]\n'
        '[adapters.otp]\nfirst_factor = "ocsp1"\n\n'
        '[[adapters]]\nname = "otp2"\ntype = "gemalto"\nservers = [{ url = "http://127.0.0.1:5000" }]\n'
        '[adapters.gemalto]\nfirst_factor = "users"\n\n'
        '[[ports]]\nalias = "p"\nport = 18999\nclient_auth = "adapter:otp2"\n'
    )
    with pytest.raises(ConfigError) as info:
        preflight.parse(text, "w.toml")
    assert info.value.errors == [
        'w.toml: adapters[1].gemalto.first_factor = "ocsp1": adapter "ocsp1" has type = "ocsp"; the password '
        "must be checked by an ldap, radius or http adapter",
        'w.toml: ports[0].client_auth = "adapter:otp2": adapter "otp2" has first_factor = "users" but no '
        "[[users]] entry has a password_hash",
    ]
