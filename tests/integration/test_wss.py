"""wss ports as a user meets them: a real server process, keystores made here (PEM, PKCS#12 with
several keys via keytool, JKS via pyjks), and real TLS clients (Python's ssl, websockets,
openssl s_client, headless Chromium)."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.x509.oid import NameOID
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect

from tests.support.server import ServerProcess, free_port
from tests.support.tlsstores import PASSWORD, issue, keytool, write_jks, write_pem_files, write_pkcs12_multi

pytestmark = pytest.mark.integration

REFUSED = (ssl.SSLError, OSError, EOFError, WebSocketException)  # TLS 1.3 reports a refused client cert late
ECHO = '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n'


@pytest.fixture
def start_wss(tmp_path):
    started: list[ServerProcess] = []

    def start(
        config_text: str,
        wait_for: tuple[str, int] | None = None,
        env: dict[str, str] | None = None,
        name: str = "server",
    ) -> ServerProcess:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        server = ServerProcess(workdir, config_text, env=(env or {}) | {"KS_PASSWORD": PASSWORD})
        started.append(server)
        return server.start(wait_for=wait_for, timeout=20.0)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, keys issued by it, and keystores of every file type holding two keys each."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    (d / "ca.pem").write_bytes(ca.cert_pem.bytes())
    issued = {
        name: issue(ca, name, "localhost", "127.0.0.1")
        for name in ("default", "pem-a", "pem-b", "jks-a", "jks-b", "p12-a", "p12-b", "alice")
    }
    for name in ("default", "pem-a", "pem-b", "alice"):
        write_pem_files(d, issued[name])
    write_jks(d / "two.jks", [issued["jks-a"], issued["jks-b"]])
    if keytool():
        write_pkcs12_multi(d / "two.p12", [issued["p12-a"], issued["p12-b"]])
    stranger = issue(trustme.CA(), "mallory", "localhost")
    write_pem_files(d, stranger)
    return {"dir": d, "ca": ca, "issued": issued}


def keystores_toml(d: Path, with_p12: bool) -> str:
    text = f'''
[[keystores]]
alias = "pem"
type = "pem"
[keystores.keys.default]
cert = "{d}/default.crt"
key = "{d}/default.key"
[keystores.keys.a]
cert = "{d}/pem-a.crt"
key = "{d}/pem-a.key"
[keystores.keys.b]
cert = "{d}/pem-b.crt"
key = "{d}/pem-b.key"

[[keystores]]
alias = "jks"
type = "jks"
path = "{d}/two.jks"
password_env = "KS_PASSWORD"
'''
    if with_p12:
        text += f'''
[[keystores]]
alias = "p12"
type = "pkcs12"
path = "{d}/two.p12"
password_env = "KS_PASSWORD"
'''
    return text


def wss_port(alias: str, port: int, tls: str = "", extra: str = "") -> str:
    table = (
        f'[[ports]]\nalias = "{alias}"\nprotocol = "wss"\nport = {port}\nbind = "127.0.0.1"\n'
        f"handshake_timeout_ms = 3000\n{extra}\n"
    )
    if tls:
        table += f"[ports.tls]\n{tls}\n"
    return table


def config(pki, ports: str, server_tls: str = 'keystore = "pem"\nkey_alias = "default"') -> str:
    with_p12 = (pki["dir"] / "two.p12").exists()
    return (
        f"[server]\nworkers = 1\ngraceful_timeout = 2\n\n[server.tls]\n{server_tls}\n\n{ECHO}\n"
        f"{keystores_toml(pki['dir'], with_p12)}\n{ports}"
    )


def client_context(
    pki, cert: str | None = None, *, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["dir"] / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki["dir"] / f"{cert}.crt"), str(pki["dir"] / f"{cert}.key"))
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def presented_cn(port: int, ctx: ssl.SSLContext) -> str:
    """The common name of the certificate the server presents, read by the client."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def echo(port: int, ctx: ssl.SSLContext, text: str = "hello over tls") -> str:
    with connect(f"wss://localhost:{port}/echo", ssl=ctx, open_timeout=5) as ws:
        ws.send(text)
        return ws.recv(timeout=5)


# --- which certificate each port presents ---------------------------------------------------


def test_key_aliases_per_port_and_server_default(start_wss, pki):
    have_p12 = (pki["dir"] / "two.p12").exists()
    plan = {  # port alias -> (tls table, expected CN)
        "pem_a": ('keystore = "pem"\nkey_alias = "a"', "pem-a.test"),
        "pem_b": ('keystore = "pem"\nkey_alias = "b"', "pem-b.test"),
        "jks_a": ('keystore = "jks"\nkey_alias = "jks-a"', "jks-a.test"),
        "jks_b": ('keystore = "jks"\nkey_alias = "jks-b"', "jks-b.test"),
        "default": ("", "default.test"),  # no [ports.tls]: the server's default key
        "default_tls13": ('min_version = "1.3"', "default.test"),  # [ports.tls] without a key
    }
    if have_p12:
        plan["p12_a"] = ('keystore = "p12"\nkey_alias = "p12-a"', "p12-a.test")
        plan["p12_b"] = ('keystore = "p12"\nkey_alias = "p12-b"', "p12-b.test")
    numbers = {alias: free_port() for alias in plan}
    ports = "".join(wss_port(alias, numbers[alias], tls) for alias, (tls, _) in plan.items())
    start_wss(config(pki, ports), wait_for=("127.0.0.1", numbers["default"]))
    ctx = client_context(pki)
    for alias, (_, expected) in plan.items():
        assert presented_cn(numbers[alias], ctx) == expected, alias
        assert echo(numbers[alias], ctx, alias) == alias
    if not have_p12:
        pytest.skip("keytool not installed: the PKCS#12 ports were not tested")


def test_large_messages_and_many_records(start_wss, pki):
    port = free_port()
    start_wss(config(pki, wss_port("big", port)), wait_for=("127.0.0.1", port))
    with connect(
        f"wss://localhost:{port}/echo", ssl=client_context(pki), open_timeout=15, max_size=2**21
    ) as ws:
        for size in (1, 16383, 16385, 200_000, 1_000_000):
            payload = os.urandom(size)
            ws.send(payload)
            assert ws.recv(timeout=30) == payload, size
        for i in range(200):  # many small messages back to back
            ws.send(f"m{i}")
        assert [ws.recv(timeout=15) for _ in range(200)] == [f"m{i}" for i in range(200)]


# --- the server does not start on bad key material --------------------------------------------


def _expect_refusal(start_wss, cfg: str, *fragments: str, env: dict[str, str] | None = None) -> str:
    server = start_wss(cfg, env=env)
    code = server.wait(20)
    logs = server.logs()
    assert code == 2, logs
    for fragment in fragments:
        assert fragment in logs, logs
    return logs


def test_wrong_password_does_not_start(start_wss, pki):
    port = free_port()
    logs = _expect_refusal(
        start_wss,
        config(pki, wss_port("p", port, 'keystore = "jks"\nkey_alias = "jks-a"')).replace(
            'password_env = "KS_PASSWORD"', 'password_env = "WRONG_PASSWORD"'
        ),
        'keystore "jks": wrong password for',
        "(from $WRONG_PASSWORD)",
        env={"WRONG_PASSWORD": "not-it"},
    )
    assert "keystores[1].password_env" in logs


def test_missing_alias_does_not_start(start_wss, pki):
    port = free_port()
    _expect_refusal(
        start_wss,
        config(pki, wss_port("p", port, 'keystore = "jks"\nkey_alias = "nope"')),
        'ports[0].tls.key_alias = "nope": keystore "jks": key alias "nope": no such key alias',
        '"jks-a", "jks-b"',
    )


def test_expired_certificate_does_not_start(start_wss, pki, tmp_path):
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    old = issue(
        pki["ca"],
        "old",
        "localhost",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    write_pem_files(tmp_path, old)
    port = free_port()
    cfg = config(pki, wss_port("p", port, 'keystore = "old"')) + (
        f'\n[[keystores]]\nalias = "old"\ntype = "pem"\n[keystores.keys.old]\n'
        f'cert = "{tmp_path}/old.crt"\nkey = "{tmp_path}/old.key"\n'
    )
    _expect_refusal(start_wss, cfg, 'keystore "old": key alias "old": certificate expired on')


def test_key_not_matching_certificate_does_not_start(start_wss, pki):
    port = free_port()
    d = pki["dir"]
    cfg = config(pki, wss_port("p", port, 'keystore = "mixed"')) + (
        f'\n[[keystores]]\nalias = "mixed"\ntype = "pem"\n[keystores.keys.k]\n'
        f'cert = "{d}/pem-a.crt"\nkey = "{d}/pem-b.key"\n'
    )
    _expect_refusal(
        start_wss, cfg, 'keystore "mixed": key alias "k": private key does not match its certificate'
    )


def test_wss_port_without_any_key_does_not_start(start_wss, pki):
    port = free_port()
    _expect_refusal(
        start_wss,
        config(pki, wss_port("p", port), server_tls=""),
        'ports[0].protocol = "wss": needs a TLS key',
    )


# --- client certificates ----------------------------------------------------------------------


def test_client_certs_require(start_wss, pki):
    port, trusting_keystore = free_port(), free_port()
    d = pki["dir"]
    ports = wss_port("req", port, 'client_certs = "require"\ntruststore = "clients"') + wss_port(
        "req_ks", trusting_keystore, 'keystore = "jks"\nkey_alias = "jks-a"\nclient_certs = "require"'
    )
    cfg = config(pki, ports) + f'\n[[truststores]]\nalias = "clients"\ntype = "pem"\npath = "{d}/ca.pem"\n'
    server = start_wss(cfg, wait_for=("127.0.0.1", port))
    for number in (port, trusting_keystore):  # a named truststore; the keystore as its own truststore
        with pytest.raises(REFUSED):
            echo(number, client_context(pki))  # no certificate
        with pytest.raises(REFUSED):
            echo(number, client_context(pki, "mallory"))  # from a CA the truststore does not hold
        assert echo(number, client_context(pki, "alice")) == "hello over tls"
    time.sleep(0.2)
    logs = server.logs()
    assert "tls handshake failed" in logs
    assert "certificate" in logs  # e.g. "peer did not return a certificate", "certificate verify failed"


def test_client_auth_certificate_maps_the_user(start_wss, pki):
    port = free_port()
    d = pki["dir"]
    who = '[[endpoints]]\npath = "/who"\nhandler = "tests.support.auth_endpoints:WhoAmI"\n'
    ports = wss_port(
        "cert", port, 'client_certs = "request"\ntruststore = "clients"', extra='client_auth = "certificate"'
    )
    cfg = (
        config(pki, ports)
        + f'\n[[truststores]]\nalias = "clients"\ntype = "pem"\npath = "{d}/ca.pem"\n'
        + who
        + '\n[[users]]\nname = "alice.test"\n'
    )
    start_wss(cfg, wait_for=("127.0.0.1", port))
    with connect(f"wss://localhost:{port}/who", ssl=client_context(pki, "alice"), open_timeout=5) as ws:
        ws.send("?")
        assert ws.recv(timeout=5).startswith("user=alice.test ")  # the certificate's CN names the user
    with pytest.raises(InvalidStatus) as info:  # "request": no certificate gets through TLS, then 401
        connect(f"wss://localhost:{port}/who", ssl=client_context(pki), open_timeout=5)
    assert info.value.response.status_code == 401


# --- protocol versions, with openssl s_client ---------------------------------------------------


def s_client(port: int, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *flags],
        input=b"",
        capture_output=True,
        timeout=20,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_min_version_with_openssl_s_client(start_wss, pki):
    tls12, tls13 = free_port(), free_port()
    ports = wss_port("v12", tls12, 'min_version = "1.2"') + wss_port("v13", tls13, 'min_version = "1.3"')
    start_wss(config(pki, ports), wait_for=("127.0.0.1", tls12))
    # SECLEVEL=0 lets this client offer TLS 1.1 at all: the refusal must come from the server.
    old = s_client(tls12, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert old.returncode != 0, old.stdout.decode(errors="replace")
    assert b"alert protocol version" in old.stderr  # the server's alert 70: TLS 1.1 is refused
    assert b"Cipher is (NONE)" in old.stdout
    ok = s_client(tls12, "-tls1_2", "-alpn", "http/1.1")
    assert ok.returncode == 0, ok.stderr.decode(errors="replace")
    assert b"TLSv1.2" in ok.stdout and b"ALPN protocol: http/1.1" in ok.stdout
    assert s_client(tls13, "-tls1_2").returncode != 0
    assert s_client(tls13, "-tls1_3").returncode == 0


# --- the handshake deadline and non-TLS clients -------------------------------------------------


def test_silent_and_plaintext_clients(start_wss, pki):
    port = free_port()
    # 1500 ms: long enough that the good client at the end completes TLS + upgrade on a loaded
    # machine, short enough to see the silent client dropped.
    server = start_wss(
        config(
            pki,
            wss_port("p", port, extra="").replace(
                "handshake_timeout_ms = 3000", "handshake_timeout_ms = 1500"
            ),
        ),
        wait_for=("127.0.0.1", port),
    )
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=8) as silent:
        assert silent.recv(100) == b""  # closed by the server: the TLS handshake has a deadline
    assert 1.2 < time.monotonic() - started < 5
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        plain.settimeout(5)
        try:
            rest = plain.recv(1000)
        except ConnectionResetError:
            rest = b""
        assert rest.startswith(b"HTTP/1.1 400 Bad Request") and b"use wss://" in rest
    assert echo(port, client_context(pki)) == "hello over tls"  # still serving
    time.sleep(0.2)
    assert "tls handshake failed" in server.logs()


# --- a real browser -----------------------------------------------------------------------------

PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
const img = document.createElement('img'); img.src = '/hold'; document.body.appendChild(img);
function t(url){ return new Promise(res => { const ws = new WebSocket(url);
  ws.onopen = () => ws.send('ping');
  ws.onmessage = e => { res(url + ' OK ' + e.data); ws.close(); };
  ws.onerror = () => res(url + ' ERROR'); ws.onclose = e => res(url + ' CLOSED ' + e.code); }); }
t('wss://127.0.0.1:PORT/echo').then(r => { document.getElementById('out').textContent = 'DONE\\n' + r;
  fetch('/result', {method: 'POST', body: r}); });
</script></body></html>"""


def run_chromium(page: str, *flags: str) -> str:
    done, results = threading.Event(), []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/page":
                body, kind = page.encode(), "text/html"
            else:  # /hold: answered once the page has posted its result
                done.wait(15)
                body, kind = (
                    bytes.fromhex(
                        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
                    ),
                    "image/png",
                )
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            results.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            done.set()
            self.send_response(204)
            self.end_headers()

    helper = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=helper.serve_forever, daemon=True)
    thread.start()
    try:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [
                    "chromium",
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    *flags,
                    f"--user-data-dir={profile}",
                    "--dump-dom",
                    f"http://127.0.0.1:{helper.server_address[1]}/page",
                ],
                capture_output=True,
                timeout=60,
            )
        done.wait(5)
    finally:
        helper.shutdown()
        helper.server_close()
    return results[0] if results else ""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_headless_chromium_echoes_over_wss(start_wss, pki):
    port = free_port()
    start_wss(config(pki, wss_port("browser", port)), wait_for=("127.0.0.1", port))
    page = PAGE.replace("PORT", str(port))
    assert run_chromium(page, "--ignore-certificate-errors") == f"wss://127.0.0.1:{port}/echo OK ping"
    # Without the flag the test CA is unknown to the browser: the certificate check is real.
    assert run_chromium(page) == f"wss://127.0.0.1:{port}/echo ERROR"


# --- certificate renewal on HUP -----------------------------------------------------------------


def test_renewed_certificate_served_after_hup(start_wss, pki, tmp_path):
    """A new generation of workers serves the renewed key; a connection opened before the
    reload keeps working while the old generation drains."""
    renew_dir = tmp_path / "renew"
    write_pem_files(renew_dir, issue(pki["ca"], "before", "localhost"))
    cert, key = renew_dir / "before.crt", renew_dir / "before.key"
    port = free_port()
    cfg = config(pki, wss_port("p", port, 'keystore = "site"')).replace(
        "graceful_timeout = 2", "graceful_timeout = 10"
    ) + (
        f'\n[[keystores]]\nalias = "site"\ntype = "pem"\n[keystores.keys.site]\ncert = "{cert}"\nkey = "{key}"\n'
    )
    server = start_wss(cfg, wait_for=("127.0.0.1", port))
    ctx = client_context(pki)
    assert presented_cn(port, ctx) == "before.test"
    with connect(f"wss://localhost:{port}/echo", ssl=ctx, open_timeout=5) as old_client:
        renewed = issue(pki["ca"], "after", "localhost")
        cert.write_bytes(renewed.cert_pem())  # renewed in place, as certbot does
        key.write_bytes(renewed.key_pem())
        mark = len(server.logs())
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while 'msg="reload complete"' not in server.logs()[mark:] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 'msg="reload complete"' in server.logs()[mark:], server.logs()[mark:]
        assert presented_cn(port, ctx) == "after.test"
        old_client.send("still here")  # the old generation drains: no connection dropped
        assert old_client.recv(timeout=5) == "still here"
