"""wss with the private key in a PKCS#11 token: deploy/nginx/wss-pkcs11.conf (nginx, the system
OpenSSL and libp11's engine) in front of a wsserver ws port, with a real SoftHSM2 token.

wsserver's own TLS cannot use a token's key (docs/tls.md, "PKCS#11"): a `type = "pkcs11"`
keystore is refused with one clear line, which the last test checks."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_der_public_key
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support.server import free_port, port_config, wait_listening

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "nginx" / "wss-pkcs11.conf"
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
ENGINE = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"
TOKEN, KEY, PIN = "wstoken", "wskey", "1234"
KEY_URI = f"pkcs11:token={TOKEN};object={KEY};type=private;pin-value={PIN}"

missing = [c for c in ("nginx", "softhsm2-util", "pkcs11-tool") if shutil.which(c) is None] + [
    p for p in (MODULE, ENGINE) if not os.path.exists(p)
]
if missing:
    pytestmark = [
        pytestmark,
        pytest.mark.skip(reason=f"missing {', '.join(missing)} (scripts/system-deps.sh)"),
    ]


class Token:
    def __init__(self, d: Path) -> None:
        self.dir = d
        (d / "tokens").mkdir(parents=True)
        (d / "softhsm2.conf").write_text(
            f"directories.tokendir = {d}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        (d / "openssl.cnf").write_text(
            "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n[engine_section]\n"
            f"pkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\ndynamic_path = {ENGINE}\n"
            f"MODULE_PATH = {MODULE}\ninit = 0\n"
        )
        self.env = dict(
            os.environ, SOFTHSM2_CONF=str(d / "softhsm2.conf"), OPENSSL_CONF=str(d / "openssl.cnf")
        )
        self.run(
            "softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", "5678"
        )
        # Sensitive: the token never hands the private key out (CKA_SENSITIVE).
        self.tool("--keypairgen", "--key-type", "rsa:2048", "--label", KEY, "--id", "01", "--sensitive")
        self.cert = d / "hsm-cert.pem"
        # The certificate is signed by the token's key, through the engine: the key stays inside.
        self.run(
            "openssl",
            "req",
            "-new",
            "-x509",
            "-engine",
            "pkcs11",
            "-keyform",
            "engine",
            "-key",
            KEY_URI,
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "2",
            "-out",
            str(self.cert),
        )

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=False, timeout=60, check=check)

    def tool(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(
            "pkcs11-tool",
            "--module",
            MODULE,
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            PIN,
            *args,
            check=check,
        )


@pytest.fixture(scope="module")
def token(tmp_path_factory) -> Token:
    return Token(tmp_path_factory.mktemp("pkcs11"))


def nginx_config(token: Token, d: Path, front: int, back: int, pin: str = PIN) -> str:
    """The deploy file with its example paths, ports and PIN replaced (each exactly where it is)."""
    text = DEPLOY.read_text()
    (d / "tmp").mkdir(exist_ok=True)
    for old, new, count in [
        ("listen 0.0.0.0:443 ssl;", f"listen 127.0.0.1:{front} ssl;", 1),
        ("proxy_pass http://127.0.0.1:8080;", f"proxy_pass http://127.0.0.1:{back};", 1),
        ("/var/log/nginx/wss-pkcs11.error.log", str(d / "error.log"), 1),
        ("/run/nginx-wss-pkcs11.pid", str(d / "nginx.pid"), 1),
        ("/var/lib/nginx/", str(d / "tmp") + "/", 5),
        ("/etc/wsserver/hsm-cert.pem", str(token.cert), 1),
        (
            "token=wstoken;object=wskey;type=private;pin-value=1234",
            f"token={TOKEN};object={KEY};type=private;pin-value={pin}",
            1,
        ),
        # The test's token lives in a root-only temporary directory.
        ("user www-data;", "user root;", 1),
        ("worker_connections 20000;", "worker_connections 256;", 1),
    ]:
        assert text.count(old) == count, f"{old!r} in {DEPLOY}"
        text = text.replace(old, new)
    path = d / "nginx.conf"
    path.write_text(text)
    return str(path)


def start_nginx(token: Token, d: Path, front: int, back: int, pin: str = PIN) -> subprocess.Popen:
    conf = nginx_config(token, d, front, back, pin)
    log = open(d / "nginx.out", "wb")  # noqa: SIM115 - closed with the process below
    proc = subprocess.Popen(
        ["nginx", "-p", str(d), "-c", conf], env=token.env, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)  # graceful: the master waits for its workers
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wss_echo(front: int, cert: Path, source: str = "127.0.0.1") -> int | str:
    import socket

    context = ssl.create_default_context(cafile=str(cert))
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", front))
    try:
        with connect(
            f"wss://127.0.0.1:{front}/echo",
            sock=sock,
            ssl=context,
            server_hostname="127.0.0.1",
            open_timeout=5,
        ) as ws:
            ws.send("signed inside the token")
            assert ws.recv(timeout=5) == "signed inside the token"
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_wss_with_the_key_in_a_token_in_front_of_a_ws_port(token, start_server, tmp_path):
    back, front = free_port(), free_port()
    start_server(
        port_config(
            back, tables='[ports.access]\ntrusted_proxies = ["127.0.0.1"]\nip_deny = ["127.0.0.2"]\n'
        ),
        wait_for=("127.0.0.1", back),
    )
    proc = start_nginx(token, tmp_path, front, back)
    try:
        wait_listening("127.0.0.1", front, timeout=10)
        assert wss_echo(front, token.cert) == 101
        # The client address reaches wsserver's IP rules through X-Forwarded-For.
        assert wss_echo(front, token.cert, source="127.0.0.2") == 403
        # The certificate nginx serves carries the token's public key ...
        served = ssl.get_server_certificate(("127.0.0.1", front))
        cert = x509.load_pem_x509_certificate(served.encode())
        public = load_der_public_key(token.tool("--read-object", "--type", "pubkey", "--id", "01").stdout)
        assert cert.public_key().public_numbers() == public.public_numbers()
        # ... whose private half the token never hands out (its own attributes say so).
        listing = token.tool("--list-objects", "--type", "privkey").stdout.decode()
        assert "sensitive, always sensitive, never extractable" in listing
    finally:
        stop(proc)


def test_a_wrong_pin_stops_nginx_at_start_with_a_clear_error(token, tmp_path):
    proc = start_nginx(token, tmp_path, free_port(), free_port(), pin="9999")
    try:
        assert proc.wait(15) != 0
    finally:
        stop(proc)
    text = "".join(p.read_text() for p in (tmp_path / "error.log", tmp_path / "nginx.out") if p.exists())
    assert 'cannot load certificate key "engine:pkcs11:' in text


def test_wsserver_refuses_a_pkcs11_keystore_in_one_line(tmp_path):
    cfg = tmp_path / "hsm.toml"
    cfg.write_text(
        port_config(free_port(), extra='protocol = "wss"\n', tables='[ports.tls]\nkeystore = "hsm"\n')
        + f'\n[[keystores]]\nalias = "hsm"\ntype = "pkcs11"\npath = "{MODULE}"\ntoken = "{TOKEN}"\n'
        'password_env = "HSM_PIN"\n'
    )
    deadline = time.monotonic() + 60
    proc = subprocess.run(
        [sys.executable, "-m", "wsserver", "check", "-c", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=max(1.0, deadline - time.monotonic()),
        env=dict(os.environ, HSM_PIN=PIN),
    )
    assert proc.returncode == 2
    [line] = [x for x in proc.stderr.splitlines() if "pkcs11" in x]
    assert 'keystore "hsm"' in line and "deploy/nginx/wss-pkcs11.conf" in line
