"""OCSP on a wss port, end to end: a real server process, a real ``openssl ocsp`` responder
(tests/support/backends.py), websockets clients presenting certificates, and ``openssl s_client
-status`` reading the stapled response.

Client certificates (``[ports.tls] ocsp``): good -> 101, revoked -> 403, unknown -> 403,
responder down -> 503 (fail_mode closed) or 101 (open), a cached good answer outlives the
responder until nextUpdate. Stapling (``ocsp_stapling = true``): a verified good response is
stapled; without a responder the handshake goes on without one, and the staple appears once
the responder is back.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support.backends import OPENSSL, SelfSignedCA, free_port, have_commands, make_ocsp_responder
from tests.support.server import ServerProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(have_commands(OPENSSL)), reason="needs the openssl command"),
]

ECHO = '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n'
CLIENTS = {"good": 0x1001, "revoked": 0x1002, "unknown": 0x1003, "good2": 0x1004}
SERVER_SERIAL = 0x2001
SNI_SERIAL = 0x2002  # a second server certificate, served by SNI for sni.test


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class WssOcspPki(SelfSignedCA):
    """A CA whose certificates' AIA names one responder: a server certificate for 127.0.0.1 and
    client certificates (keys included). ``index`` is the responder's index.txt: good, good2 and
    the server certificate valid, revoked revoked, unknown absent. Has what
    ``make_ocsp_responder`` reads (``index``, ``ca_pem``, ``ca_key_pem``)."""

    def __init__(self, directory: Path, responder_port: int) -> None:
        now = dt.datetime.now(dt.UTC)
        super().__init__(directory, "Test wss OCSP CA", now)
        self.dir = directory
        self.responder_port = responder_port
        self.aia_url = f"http://127.0.0.1:{responder_port}/"
        for cn, serial in CLIENTS.items():
            self._issue(cn, serial, f"{cn}.test", now, ExtendedKeyUsageOID.CLIENT_AUTH)
        self._issue(
            "server",
            SERVER_SERIAL,
            "localhost",
            now,
            ExtendedKeyUsageOID.SERVER_AUTH,
            sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )
        self._issue(
            "sni",
            SNI_SERIAL,
            "sni.test",
            now,
            ExtendedKeyUsageOID.SERVER_AUTH,
            sans=[x509.DNSName("sni.test")],
        )
        expiry = (now + dt.timedelta(days=1)).strftime("%y%m%d%H%M%SZ")
        revoked_at = (now - dt.timedelta(minutes=5)).strftime("%y%m%d%H%M%SZ")
        self.index = directory / "index.txt"
        self.index.write_text(
            f"V\t{expiry}\t\t1001\tunknown\t/CN=good.test\n"
            f"R\t{expiry}\t{revoked_at},keyCompromise\t1002\tunknown\t/CN=revoked.test\n"
            f"V\t{expiry}\t\t1004\tunknown\t/CN=good2.test\n"
            f"V\t{expiry}\t\t2001\tunknown\t/CN=localhost\n"
            f"V\t{expiry}\t\t2002\tunknown\t/CN=sni.test\n"
        )

    def _issue(self, name: str, serial: int, cn: str, now: dt.datetime, usage, sans=None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        aia = x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(self.aia_url)
                )
            ]
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(aia, critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        (self.dir / f"{name}.crt").write_bytes(_pem(cert))
        (self.dir / f"{name}.key").write_bytes(_pem(key))

    def client_context(self, name: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_pem))
        if name:
            ctx.load_cert_chain(str(self.dir / f"{name}.crt"), str(self.dir / f"{name}.key"))
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> WssOcspPki:
    return WssOcspPki(tmp_path_factory.mktemp("wss-ocsp-pki"), free_port())


@pytest.fixture
def responder(pki, tmp_path):
    """A fresh ``openssl ocsp`` on the port the certificates' AIA names (a test may stop it)."""
    backend = make_ocsp_responder(tmp_path / "responder", pki, pki.responder_port)
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture
def start_server(tmp_path):
    started: list[ServerProcess] = []

    def start(config_text: str, port: int) -> ServerProcess:
        workdir = tmp_path / f"server{len(started)}"
        workdir.mkdir()
        server = ServerProcess(workdir, config_text)
        started.append(server)
        return server.start(wait_for=("127.0.0.1", port), timeout=30.0)

    yield start
    for server in started:
        server.stop()


def config(pki: WssOcspPki, port: int, tls: str, fail_mode: str = "closed", metrics_port: int = 0) -> str:
    d = pki.dir
    return f'''[server]
workers = 1
graceful_timeout = 2

[metrics]
port = {metrics_port or free_port()}

{ECHO}
[[keystores]]
alias = "pem"
type = "pem"
[keystores.keys.server]
cert = "{d}/server.crt"
key = "{d}/server.key"
chain = "{d}/ca.pem"

[[truststores]]
alias = "clients"
type = "pem"
path = "{d}/ca.pem"

[[adapters]]
name = "revocation"
type = "ocsp"
[adapters.ocsp]
fail_mode = "{fail_mode}"
[adapters.load_balancing]
connection_timeout_ms = 1000
request_timeout_ms = 2000

[[ports]]
alias = "wss_ocsp"
protocol = "wss"
port = {port}
bind = "127.0.0.1"
handshake_timeout_ms = 8000
auth_timeout_ms = 4000
[ports.tls]
keystore = "pem"
key_alias = "server"
{tls}
'''


CLIENT_OCSP = 'client_certs = "require"\ntruststore = "clients"\nocsp = "revocation"'


def echo(pki: WssOcspPki, port: int, cert: str | None) -> str:
    with connect(f"wss://localhost:{port}/echo", ssl=pki.client_context(cert), open_timeout=10) as ws:
        ws.send("hi")
        return ws.recv(timeout=5)


def refused_status(pki: WssOcspPki, port: int, cert: str | None) -> int:
    with pytest.raises(InvalidStatus) as info:
        echo(pki, port, cert)
    return info.value.response.status_code


# --- client certificates ----------------------------------------------------------------------------


def metric_lines(port: int, name: str, timeout: float = 10.0, want: str = "") -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        lines = [line for line in text.splitlines() if line.startswith(name)]
        if want in "\n".join(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.3)


def test_good_revoked_unknown(pki, responder, start_server):
    port, metrics_port = free_port(), free_port()
    server = start_server(config(pki, port, CLIENT_OCSP, metrics_port=metrics_port), port)
    assert echo(pki, port, "good") == "hi"
    assert refused_status(pki, port, "revoked") == 403
    assert refused_status(pki, port, "unknown") == 403
    logs = server.logs()
    assert "client certificate refused" in logs and "ocsp_revoked" in logs and "ocsp_unknown" in logs
    assert "revoked (key_compromise)" in logs
    rejected = metric_lines(metrics_port, "wsserver_connections_rejected_total", want="ocsp_unknown")
    assert 'wsserver_connections_rejected_total{port="wss_ocsp",reason="ocsp_revoked"} 1.0' in rejected
    assert 'wsserver_connections_rejected_total{port="wss_ocsp",reason="ocsp_unknown"} 1.0' in rejected
    requests = metric_lines(metrics_port, "wsserver_adapter_requests_total")
    assert any('adapter="revocation"' in line and 'result="accepted"' in line for line in requests), requests
    assert any('adapter="revocation"' in line and 'result="rejected"' in line for line in requests), requests


def test_request_mode_without_a_certificate_is_not_checked(pki, responder, start_server):
    port = free_port()
    tls = 'client_certs = "request"\ntruststore = "clients"\nocsp = "revocation"'
    start_server(config(pki, port, tls), port)
    assert echo(pki, port, None) == "hi"
    assert refused_status(pki, port, "revoked") == 403


def test_responder_down_fail_closed(pki, responder, start_server):
    responder.stop()
    port = free_port()
    server = start_server(config(pki, port, CLIENT_OCSP, fail_mode="closed"), port)
    assert refused_status(pki, port, "good") == 503
    assert "ocsp_unavailable" in server.logs()


def test_responder_down_fail_open(pki, responder, start_server):
    responder.stop()
    port = free_port()
    server = start_server(config(pki, port, CLIENT_OCSP, fail_mode="open"), port)
    assert echo(pki, port, "good") == "hi"
    # Open never overrides an answer, but with no responder there is none: accepted, and warned about.
    assert echo(pki, port, "revoked") == "hi"
    assert "accepted because fail_mode = open" in server.logs()


def test_cached_answer_outlives_the_responder(pki, responder, start_server):
    port = free_port()
    start_server(config(pki, port, CLIENT_OCSP, fail_mode="closed"), port)
    assert echo(pki, port, "good") == "hi"
    assert refused_status(pki, port, "revoked") == 403
    responder.stop()
    # nextUpdate is 5 minutes away (-nmin 5): the worker answers from its cache.
    assert echo(pki, port, "good") == "hi"
    assert refused_status(pki, port, "revoked") == 403
    # A certificate it has not asked about needs the responder: fail closed.
    assert refused_status(pki, port, "good2") == 503


# --- stapling ---------------------------------------------------------------------------------------


def s_client_status(port: int, servername: str = "localhost") -> str:
    proc = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", servername, "-status"],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    return proc.stdout.decode(errors="replace")


def wait_for_staple(port: int, timeout: float, servername: str = "localhost") -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = s_client_status(port, servername)
        if "OCSP Response Status: successful" in out:
            return out
        time.sleep(0.5)
    raise AssertionError(f"no stapled response after {timeout}s:\n{out}")


def test_stapled_response_seen_by_s_client(pki, responder, start_server):
    port = free_port()
    start_server(config(pki, port, "ocsp_stapling = true"), port)
    out = wait_for_staple(port, 15)
    assert "OCSP Response Status: successful" in out
    assert "Cert Status: good" in out
    assert "Serial Number: 2001" in out


def test_an_sni_key_staples_its_own_certificate(pki, responder, start_server):
    port = free_port()
    keys = f'[keystores.keys.sni]\ncert = "{pki.dir}/sni.crt"\nkey = "{pki.dir}/sni.key"\nchain = "{pki.dir}/ca.pem"\n'
    text = config(pki, port, 'ocsp_stapling = true\n[ports.tls.sni]\n"sni.test" = "sni"').replace(
        "\n[[truststores]]", "\n" + keys + "\n[[truststores]]", 1
    )
    start_server(text, port)
    assert "Serial Number: 2002" in wait_for_staple(port, 15, "sni.test")
    out = wait_for_staple(port, 15, "localhost")
    assert "Serial Number: 2001" in out and "Cert Status: good" in out


def test_stapling_without_a_responder_then_with_one(pki, responder, start_server):
    responder.stop()
    port = free_port()
    server = start_server(config(pki, port, "ocsp_stapling = true"), port)
    deadline = time.monotonic() + 10
    while "ocsp stapling: no new response" not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "ocsp stapling: no new response" in server.logs()
    out = s_client_status(port)
    assert "OCSP response: no response sent" in out
    assert "CONNECTED" in out and "Cipher is" in out  # the handshake itself is unaffected
    responder.start()
    out = wait_for_staple(port, 20)  # the retry after 5 s finds it
    assert "Cert Status: good" in out


def test_stapling_and_client_checks_together(pki, responder, start_server):
    port = free_port()
    start_server(config(pki, port, CLIENT_OCSP + "\nocsp_stapling = true"), port)
    assert echo(pki, port, "good") == "hi"
    assert refused_status(pki, port, "revoked") == 403


# --- wsserver check ---------------------------------------------------------------------------------


def wsserver_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    import sys

    path = tmp_path / "wsserver.toml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "wsserver", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_check_reports_bad_ocsp_settings(pki, tmp_path):
    text = config(pki, free_port(), 'client_certs = "none"\nocsp = "revocaton"')
    result = wsserver_check(tmp_path, text)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert (
        'ports[0].tls.ocsp = "revocaton": must name an [[adapters]] entry of type "ocsp"; '
        'did you mean "revocation"?' in out
    )
    assert 'ports[0].tls.ocsp = "revocaton": needs client_certs = "request" or "require"' in out


def test_check_reports_stapling_without_a_responder_url(pki, tmp_path):
    # The CA certificate itself has no AIA: used as the port's key it cannot be stapled.
    text = config(pki, free_port(), "ocsp_stapling = true").replace(
        f'cert = "{pki.dir}/server.crt"\nkey = "{pki.dir}/server.key"\nchain = "{pki.dir}/ca.pem"',
        f'cert = "{pki.dir}/ca.pem"\nkey = "{pki.dir}/ca.key"',
    )
    result = wsserver_check(tmp_path, text)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "ports[0].tls.ocsp_stapling" in out and "set ports[0].tls.ocsp_stapling_responder" in out
