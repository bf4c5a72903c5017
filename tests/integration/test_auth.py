"""Client authentication on a real server with a real client (issue 7).

Every test runs the server at debug level and ends by grepping its whole log for the test's
passwords, tokens, JWTs and keys: none may appear.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support.server import REPO, free_port
from wsserver.security.jwt import sign
from wsserver.security.passwords import hash_password

pytestmark = pytest.mark.integration

PASSWORDS = {
    "alice": "Alice-Pa55word!",
    "bob": "B0b-secret-pw",
    "carol": "Car0l-wss-only",
    "dave": "Dave-0ther-port",
}
ALICE_TOKEN = "alice-token-4f9c2b7e1d0a8c3b"
JWT_SECRET = "jwt-secret-" + "x" * 32
HASHES = {name: hash_password(pw, scrypt_n=2**12) for name, pw in PASSWORDS.items()}

ENDPOINTS = """
[[endpoints]]
path = "/who"
handler = "tests.support.auth_endpoints:WhoAmI"

[[endpoints]]
path = "/admin"
handler = "tests.support.auth_endpoints:WhoAmI"
"""

USERS = f"""
[[users]]
name = "alice"
password_hash = "{HASHES["alice"]}"
token = "{ALICE_TOKEN}"

[[users]]
name = "bob"
password_hash = "{HASHES["bob"]}"
endpoints = ["/who"]

[[users]]
name = "carol"
password_hash = "{HASHES["carol"]}"
connection_types = ["wss"]

[[users]]
name = "dave"
password_hash = "{HASHES["dave"]}"
ports = ["other"]

[[users]]
name = "guest"
endpoints = ["/who"]
"""

SECRETS = [*PASSWORDS.values(), ALICE_TOKEN, JWT_SECRET]


def config(port: int, port_lines: str = "", tables: str = "", users: str = USERS, more: str = "") -> str:
    """One ws port "auth_ws" (plus an always-present "other" port) and the users above."""
    other = free_port()
    return (
        f"[server]\ngraceful_timeout = 5\nworkers = 1\n{ENDPOINTS}\n"
        f'[[ports]]\nalias = "auth_ws"\nport = {port}\nbind = "127.0.0.1"\n{port_lines}\n{tables}\n'
        f'[[ports]]\nalias = "other"\nport = {other}\nbind = "127.0.0.1"\n{more}\n{users}'
    )


def start(start_server, text: str, port: int, env: dict[str, str] | None = None):
    return start_server(text, wait_for=("127.0.0.1", port), args=("--log-level", "debug"), env=env)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def attempt(
    url: str, headers: dict[str, str] | None = None, source: str | None = None, **kwargs
) -> tuple[int, object, str | None]:
    """(status, response headers, the endpoint's reply): 101 when the session opened."""
    sock = None
    if source is not None:
        host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect((host, int(port)))
    try:
        with connect(url, additional_headers=headers, open_timeout=10, sock=sock, **kwargs) as ws:
            ws.send("who")
            return 101, None, ws.recv(timeout=5)
    except InvalidStatus as exc:
        return exc.response.status_code, exc.response.headers, None


def assert_no_secrets(server, extra: tuple[str, ...] = ()) -> None:
    logs = server.logs()
    assert "auth" in logs  # the attempts were logged ...
    for secret in (*SECRETS, *extra):
        assert secret not in logs, f"a secret leaked into the log: {secret[:4]}..."
    # ... and no credential in any encoding either
    for secret in PASSWORDS.values():
        assert base64.b64encode(secret.encode()).decode()[:12] not in logs
    assert "Authorization" not in logs and "authorization" not in logs


def test_basic_auth_with_a_hash_from_the_cli(start_server) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "wsserver", "hash-password", "--stdin", "--scrypt-n", "4096"],
        input="Erin-cli-Passw0rd\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=True,
    )
    erin_hash = made.stdout.strip()
    assert erin_hash.startswith("scrypt$4096$8$1$") and "Erin" not in made.stdout
    port = free_port()
    users = USERS + f'\n[[users]]\nname = "erin"\npassword_hash = "{erin_hash}"\n'
    server = start(start_server, config(port, 'client_auth = "password"', users=users), port)
    url = f"ws://127.0.0.1:{port}/who"

    assert attempt(url, basic("alice", PASSWORDS["alice"]))[::2] == (101, "user=alice query=")
    assert attempt(url, basic("erin", "Erin-cli-Passw0rd"))[::2] == (101, "user=erin query=")
    for headers in (
        basic("alice", PASSWORDS["bob"]),
        basic("mallory", PASSWORDS["alice"]),
        None,
        {"Authorization": f"Bearer {ALICE_TOKEN}"},
    ):
        status, response, _ = attempt(url, headers)
        assert status == 401
        assert response["WWW-Authenticate"] == 'Basic realm="wsserver", charset="UTF-8"'
    assert_no_secrets(server)


def test_token_bearer_and_query_parameter_only_when_enabled(start_server) -> None:
    port = free_port()
    text = config(
        port, 'client_auth = "token"', more='client_auth = "token"\ntoken_query_param = "access_token"'
    )
    other = int(text.split('alias = "other"\nport = ')[1].split("\n")[0])
    server = start(start_server, text, port)

    url = f"ws://127.0.0.1:{port}/who"
    assert attempt(url, {"Authorization": f"Bearer {ALICE_TOKEN}"})[::2] == (101, "user=alice query=")
    status, response, _ = attempt(url, {"Authorization": "Bearer wrong-token-0000000000"})
    assert status == 401 and response["WWW-Authenticate"] == 'Bearer realm="wsserver"'
    assert attempt(f"{url}?access_token={ALICE_TOKEN}")[0] == 401  # not enabled on this port

    other_url = f"ws://127.0.0.1:{other}/who"
    # Enabled on "other" (alice has no port limits): the endpoint never sees the token.
    assert attempt(f"{other_url}?room=a&access_token={ALICE_TOKEN}")[::2] == (101, "user=alice query=room=a")
    assert attempt(f"{other_url}?access_token=nope-nope-nope-nope")[0] == 401
    assert_no_secrets(server)


def test_jwt_bearer_cookie_expired_signature_audience(start_server, tmp_path) -> None:
    port = free_port()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "jwt-es256.pem"
    pem.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    tables = (
        '[ports.jwt]\nkey_env = "TEST_JWT_SECRET"\naudience = "wsserver-test"\ncookie = "session"\n'
        "[ports.origin]\nsame_origin = true\n"
    )
    more = f'client_auth = "jwt"\n[ports.jwt]\nalgorithms = ["ES256"]\nkey_file = "{pem}"\nissuer = "https://idp"\n'
    text = config(port, 'client_auth = "jwt"', tables, more=more)
    other = int(text.split('alias = "other"\nport = ')[1].split("\n")[0])
    server = start(start_server, text, port, env={"TEST_JWT_SECRET": JWT_SECRET})
    url = f"ws://127.0.0.1:{port}/who"
    now = time.time()
    key = JWT_SECRET.encode()

    def token(**claims) -> str:
        return sign({"sub": "alice", "aud": "wsserver-test", "exp": now + 300, **claims}, key)

    valid = token()
    tokens = [valid]
    assert attempt(url, {"Authorization": f"Bearer {valid}"})[::2] == (101, "user=alice query=")
    # The cookie a browser would send; a non-browser client without Origin passes the origin check.
    cookie = {"Cookie": f"theme=dark; session={valid}"}
    assert attempt(url, cookie)[::2] == (101, "user=alice query=")
    # ... but not from a foreign page.
    assert attempt(url, cookie, origin="http://evil.example")[0] == 403
    for bad in (
        token(exp=now - 3600),  # expired
        sign({"sub": "alice", "aud": "wsserver-test", "exp": now + 300}, b"another-secret-" + b"y" * 32),
        token(aud="someone-else"),  # wrong audience
        token(sub="mallory"),
    ):  # not a configured user
        tokens.append(bad)
        status, response, _ = attempt(url, {"Authorization": f"Bearer {bad}"})
        assert status == 401 and response["WWW-Authenticate"] == 'Bearer realm="wsserver"'
        assert attempt(url, {"Cookie": f"session={bad}"})[0] == 401

    es = sign({"sub": "bob", "iss": "https://idp", "exp": now + 300}, ec_key, "ES256")
    tokens.append(es)
    other_url = f"ws://127.0.0.1:{other}/who"
    assert attempt(other_url, {"Authorization": f"Bearer {es}"})[::2] == (101, "user=bob query=")
    assert attempt(other_url, {"Authorization": f"Bearer {valid}"})[0] == 401  # HS256 on an ES256 port
    assert_no_secrets(server, tuple(tokens) + tuple(t.split(".")[2] for t in tokens))


def test_no_auth_user_and_per_user_limits(start_server) -> None:
    port = free_port()
    server = start(start_server, config(port, 'client_auth = "password"\nno_auth_user = "guest"'), port)
    base = f"ws://127.0.0.1:{port}"

    assert attempt(f"{base}/who")[::2] == (101, "user=guest query=")  # no credentials: the guest
    assert attempt(f"{base}/admin")[0] == 403  # the guest's endpoint limit
    assert attempt(f"{base}/who", basic("guest", ""))[0] == 401  # wrong credentials never fall back
    assert attempt(f"{base}/admin", basic("alice", PASSWORDS["alice"]))[::2] == (101, "user=alice query=")
    assert attempt(f"{base}/who", basic("bob", PASSWORDS["bob"]))[0] == 101
    status, response, _ = attempt(f"{base}/admin", basic("bob", PASSWORDS["bob"]))  # endpoint limit
    assert status == 403 and "WWW-Authenticate" not in response
    assert attempt(f"{base}/who", basic("dave", PASSWORDS["dave"]))[0] == 403  # port limit
    assert attempt(f"{base}/who", basic("carol", PASSWORDS["carol"]))[0] == 403  # wss only, this is ws
    assert_no_secrets(server)


def test_auth_timeout_is_503_and_the_server_stays_responsive(start_server) -> None:
    # A user whose stored hash is very expensive to check (scrypt p = 64: seconds of CPU):
    # the check stalls, the handshake must fail with 503 after auth_timeout_ms.
    salt, digest = (base64.b64encode(os.urandom(n)).decode().rstrip("=") for n in (16, 32))
    users = USERS + f'\n[[users]]\nname = "slow"\npassword_hash = "scrypt$32768$8$64${salt}${digest}"\n'
    port = free_port()
    server = start(
        start_server, config(port, 'client_auth = "password"\nauth_timeout_ms = 300', users=users), port
    )
    url = f"ws://127.0.0.1:{port}/who"

    started = time.monotonic()
    status, response, _ = attempt(url, basic("slow", "Slow-pw-1234"))
    took = time.monotonic() - started
    assert status == 503 and response["Retry-After"] == "1"
    assert took < 2.0, took
    # The stalled check runs on a thread: other clients are served meanwhile.
    started = time.monotonic()
    assert attempt(url, basic("alice", PASSWORDS["alice"]))[0] == 101
    assert time.monotonic() - started < 2.0
    assert "result=timeout" in server.logs()
    assert_no_secrets(server, ("Slow-pw-1234",))


def test_brute_force_is_429_with_retry_after(start_server) -> None:
    port = free_port()
    server = start(
        start_server,
        config(
            port, 'client_auth = "password"', "[ports.auth_rate_limit]\nburst = 3\nrefill_per_minute = 2\n"
        ),
        port,
    )
    url = f"ws://127.0.0.1:{port}/who"
    guesses = [f"guess-{i}-{hashlib.sha1(str(i).encode()).hexdigest()[:6]}" for i in range(3)]
    for guess in guesses:
        assert attempt(url, basic("alice", guess))[0] == 401
    status, response, _ = attempt(url, basic("alice", PASSWORDS["alice"]))  # even the right password
    assert status == 429
    assert 1 <= int(response["Retry-After"]) <= 30
    # Another client address is not affected.
    assert attempt(url, basic("alice", PASSWORDS["alice"]), source="127.0.0.2")[0] == 101
    assert "result=rate_limited" in server.logs()
    assert_no_secrets(server, tuple(guesses))


def test_password_auth_on_a_thread_mode_pool(start_server) -> None:
    port = free_port()
    server = start(
        start_server,
        config(port, 'client_auth = "password"', '[ports.pool]\nmode = "thread"\nmin = 1\nmax = 4\n'),
        port,
    )
    url = f"ws://127.0.0.1:{port}/who"
    assert attempt(url, basic("alice", PASSWORDS["alice"]))[::2] == (101, "user=alice query=")
    assert attempt(url, basic("alice", PASSWORDS["bob"]))[0] == 401
    assert attempt(url, basic("nobody", PASSWORDS["bob"]))[0] == 401
    assert_no_secrets(server)


def test_client_address_from_a_trusted_proxy(start_server) -> None:
    """127.0.0.1 plays a reverse proxy: its X-Forwarded-For names the client for the rate limit
    and the IP rules; the same header from 127.0.0.2 (not trusted) is ignored."""
    port = free_port()
    tables = (
        '[ports.access]\ntrusted_proxies = ["127.0.0.1"]\nip_deny = ["198.51.100.0/24"]\n'
        "[ports.auth_rate_limit]\nburst = 2\nrefill_per_minute = 1\n"
    )
    server = start(start_server, config(port, 'client_auth = "password"', tables), port)
    url = f"ws://127.0.0.1:{port}/who"
    good = basic("alice", PASSWORDS["alice"])

    def via(client: str, headers: dict[str, str]) -> dict[str, str]:
        return {**headers, "X-Forwarded-For": f"198.51.100.99, {client}"}  # the left part is the client's lie

    for _ in range(2):
        assert attempt(url, via("203.0.113.5", basic("alice", "guess")))[0] == 401
    assert attempt(url, via("203.0.113.5", good))[0] == 429  # that client is limited ...
    assert attempt(url, via("203.0.113.6", good))[0] == 101  # ... another one behind the proxy is not
    assert attempt(url, via("198.51.100.7", good))[0] == 403  # IP rules see the forwarded client
    # From a peer that is not a trusted proxy the header means nothing.
    assert attempt(url, {**good, "X-Forwarded-For": "198.51.100.7"}, source="127.0.0.2")[0] == 101
    logs = server.logs()
    assert "peer=203.0.113.5:" in logs and "reason=ip" in logs
    assert_no_secrets(server)
