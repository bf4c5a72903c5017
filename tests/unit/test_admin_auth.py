"""Who may administer: HTTP Basic, console session cookies, CSRF tokens."""

from __future__ import annotations

import base64

import pytest

from wsserver.admin.auth import SESSION_SECONDS, AdminAuth, admin_users
from wsserver.config import Config, UserConfig
from wsserver.security.passwords import hash_password, verify

FAST = {"scrypt_n": 2**10}
ROOT_HASH = hash_password("root-pw", **FAST)
USERS = (
    UserConfig(name="root", password_hash=ROOT_HASH, connection_types=("admin",)),
    UserConfig(name="any", password_hash=hash_password("any-pw", **FAST)),  # empty = all, admin included
    UserConfig(name="chat", password_hash=hash_password("chat-pw", **FAST), connection_types=("ws", "wss")),
    UserConfig(name="tokenonly", token="tok-0123456789abcdef", connection_types=("admin",)),
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def auth() -> AdminAuth:
    return AdminAuth(USERS, b"k" * 32, clock=Clock())


def test_who_may_administer() -> None:
    # a password and connection_types allowing "admin" (empty = all, as in docs/security.md)
    assert admin_users(Config(users=USERS)) == ["root", "any"]


@pytest.mark.parametrize(
    "header, status",
    [
        (basic("root", "root-pw"), 200),
        (basic("any", "any-pw"), 200),
        (basic("chat", "chat-pw"), 403),  # right password, not an administrator
        (basic("chat", "wrong"), 401),  # wrong password: 401 even for a non-administrator
        (basic("root", "wrong"), 401),
        (basic("nobody", "x"), 401),
        (basic("tokenonly", "tok-0123456789abcdef"), 401),  # tokens are not passwords
        ("", 401),
        ("Bearer abc", 401),
        ("Basic !!!", 401),
        ("Basic " + base64.b64encode(b"no-colon").decode(), 401),
    ],
)
def test_basic(auth: AdminAuth, header: str, status: int) -> None:
    assert auth.check_basic(header, "127.0.0.1").status == status


def test_a_good_password_is_checked_once_then_remembered(auth: AdminAuth) -> None:
    calls = []

    def run_hash(fn, *args):
        calls.append(fn)
        return fn(*args)

    auth.run_hash = run_hash
    for _ in range(3):
        assert auth.check_basic(basic("root", "root-pw"), "127.0.0.1").status == 200
    assert calls == [verify]
    assert auth.check_basic(basic("root", "other"), "127.0.0.1").status == 401
    assert len(calls) == 2


def test_failed_logins_are_rate_limited_per_address(auth: AdminAuth) -> None:
    for _ in range(10):
        assert auth.check_basic(basic("root", "wrong"), "10.0.0.1").status == 401
    verdict = auth.check_basic(basic("root", "root-pw"), "10.0.0.1")
    assert verdict.status == 429 and verdict.retry_after >= 1
    assert auth.check_basic(basic("root", "root-pw"), "10.0.0.2").status == 200


def test_session_cookie(auth: AdminAuth) -> None:
    cookie = auth.issue("root")
    user, nonce = auth.session(cookie)
    assert user == "root"
    other = auth.session(auth.issue("root"))
    assert other is not None and other[1] != nonce
    token = auth.csrf_token(nonce)
    assert auth.check_csrf(nonce, token)
    assert not auth.check_csrf(other[1], token)  # a token belongs to one session
    assert not auth.check_csrf(nonce, "")
    payload, signature = cookie.split(".")
    assert auth.session(payload + "." + signature[:-2] + "AA") is None  # tampered
    assert auth.session(cookie.replace(payload, payload[:-2])) is None
    assert auth.session("garbage") is None
    assert AdminAuth(USERS, b"x" * 32).session(cookie) is None  # another master's key


def test_session_ends(auth: AdminAuth) -> None:
    cookie = auth.issue("root")
    auth.clock.now += SESSION_SECONDS + 1
    assert auth.session(cookie) is None
    cookie = auth.issue("root")
    _, nonce = auth.session(cookie)
    auth.revoke(nonce)
    assert auth.session(cookie) is None
    cookie = auth.issue("root")
    changed = (
        UserConfig(name="root", password_hash=hash_password("new-pw", **FAST), connection_types=("admin",)),
    )
    assert AdminAuth(changed, b"k" * 32, clock=auth.clock).session(cookie) is None  # password changed
    demoted = (UserConfig(name="root", password_hash=ROOT_HASH, connection_types=("ws",)),)
    assert AdminAuth(demoted, b"k" * 32, clock=auth.clock).session(cookie) is None  # no longer an admin
    assert AdminAuth(USERS, b"k" * 32, clock=auth.clock).session(cookie) is not None  # same users, same key
