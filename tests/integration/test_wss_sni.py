"""[ports.tls.sni]: one wss port serving several host names, each with its own key, seen by real
clients (openssl s_client -servername, Python's ssl under websockets), plus what `wsserver check`
and the certificate-expiry metric say about the SNI keys."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from websockets.sync.client import connect

from tests.integration.test_wss import REFUSED, client_context, config, pki, start_wss, wss_port
from tests.support.server import REPO, free_port
from tests.support.tlsstores import PASSWORD, issue, write_pem_files

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed"),
]

__all__ = ["pki", "start_wss"]  # fixtures shared with test_wss.py

SOON_DAYS = 10  # a key expiring within wsserver check's 30-day warning


@pytest.fixture(scope="module")
def sites(pki):
    """A PEM keystore "sites" with keys for the SNI names, issued by the test CA."""
    d = pki["dir"] / "sites"
    ca = pki["ca"]
    now = datetime.datetime.now(datetime.UTC)
    keys = {
        "fallback": issue(ca, "fallback", "localhost", "127.0.0.1"),
        "app": issue(ca, "app", "app.example.com"),
        "wild": issue(ca, "wild", "*.example.com"),
        "soon": issue(
            ca,
            "soon",
            "soon.example.net",
            not_before=now - datetime.timedelta(days=1),
            not_after=now + datetime.timedelta(days=SOON_DAYS),
        ),
    }
    for issued in keys.values():
        write_pem_files(d, issued)
    tables = "".join(
        f'[keystores.keys.{name}]\ncert = "{d}/{name}.crt"\nkey = "{d}/{name}.key"\n' for name in keys
    )
    return f'\n[[keystores]]\nalias = "sites"\ntype = "pem"\n{tables}'


def sni_table(have_p12: bool) -> str:
    lines = [
        '"app.example.com" = "app"',  # the port's own keystore
        '"*.example.com" = "wild"',
        '"soon.example.net" = "soon"',
        '"JKS.Example.org" = "jks:jks-a"',  # another keystore; matched without case
        '"pem.example.org" = "pem:a"',
        '"fallback.example.org" = "fallback"',  # the port's own key: no context switch
    ]
    if have_p12:
        lines.append('"p12.example.org" = "p12:p12-b"')
    return "[ports.tls.sni]\n" + "\n".join(lines) + "\n"


def served(port: int, *flags: str) -> x509.Certificate:
    """The certificate the server presents to `openssl s_client` with these flags."""
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *flags],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    pem = re.search(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out.stdout, re.S)
    assert pem, out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
    return x509.load_pem_x509_certificate(pem[0])


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def dns(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )


def echo_as(port: int, name: str, ctx: ssl.SSLContext, text: str) -> str:
    """A full WebSocket session over Python's ssl with SNI ``name`` (certificate and host name checked)."""
    with connect(f"wss://127.0.0.1:{port}/echo", ssl=ctx, server_hostname=name, open_timeout=10) as ws:
        assert ws.response.status_code == 101
        ws.send(text)
        return ws.recv(timeout=10)


@pytest.fixture(scope="module")
def sni_server(tmp_path_factory, pki, sites):
    from tests.support.server import ServerProcess

    have_p12 = (pki["dir"] / "two.p12").exists()
    port, mtls, metrics = free_port(), free_port(), free_port()
    d = pki["dir"]
    ports = wss_port(
        "sni", port, 'keystore = "sites"\nkey_alias = "fallback"\n' + sni_table(have_p12)
    ) + wss_port(
        "sni_mtls",
        mtls,
        'keystore = "sites"\nkey_alias = "fallback"\nclient_certs = "require"\n'
        'truststore = "clients"\n[ports.tls.sni]\n"app.example.com" = "app"\n',
    )
    text = (
        config(pki, ports)
        + sites
        + f'\n[[truststores]]\nalias = "clients"\ntype = "pem"\npath = "{d}/ca.pem"\n'
        + f'\n[metrics]\nbind = "127.0.0.1"\nport = {metrics}\n'
    )
    workdir = tmp_path_factory.mktemp("sni-server")
    server = ServerProcess(workdir, text, env={"KS_PASSWORD": PASSWORD})
    server.start(wait_for=("127.0.0.1", port), timeout=30.0)
    try:
        yield {
            "port": port,
            "mtls": mtls,
            "metrics": metrics,
            "server": server,
            "p12": have_p12,
            "config": text,
        }
    finally:
        server.stop()


# --- the certificate each name gets (openssl s_client) --------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected_cn", "expected_dns"),
    [
        (("-servername", "app.example.com"), "app.test", ["app.example.com"]),  # exact name
        (("-servername", "APP.example.COM"), "app.test", ["app.example.com"]),  # case-insensitive
        (("-servername", "x.example.com"), "wild.test", ["*.example.com"]),  # wildcard
        (("-servername", "a.b.example.com"), "fallback.test", ["localhost"]),  # two labels: not the wildcard
        (("-servername", "example.com"), "fallback.test", ["localhost"]),  # the wildcard's domain itself
        (("-servername", "jks.example.org"), "jks-a.test", ["localhost"]),  # KEYSTORE:ALIAS, a JKS key
        (("-servername", "pem.example.org"), "pem-a.test", ["localhost"]),
        (("-servername", "fallback.example.org"), "fallback.test", ["localhost"]),
        (("-servername", "unknown.test"), "fallback.test", ["localhost"]),  # unknown name: the port's key
        (("-noservername",), "fallback.test", ["localhost"]),  # no SNI: the port's key
    ],
)
def test_openssl_s_client_sees_the_key_of_each_name(sni_server, flags, expected_cn, expected_dns):
    cert = served(sni_server["port"], *flags)
    assert cn(cert) == expected_cn
    assert dns(cert) == expected_dns


def test_pkcs12_key_by_keystore_prefix(sni_server):
    if not sni_server["p12"]:
        pytest.skip("keytool not installed: no PKCS#12 keystore")
    assert cn(served(sni_server["port"], "-servername", "p12.example.org")) == "p12-b.test"


def test_tls_settings_are_the_ports_for_sni_names(sni_server):
    # TLS 1.1 refused and ALPN http/1.1 chosen on an SNI context as on the port's own.
    ok = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{sni_server['port']}",
            "-servername",
            "app.example.com",
            "-alpn",
            "h2,http/1.1",
        ],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    assert b"ALPN protocol: http/1.1" in ok.stdout, ok.stdout.decode(errors="replace")
    old = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{sni_server['port']}",
            "-servername",
            "app.example.com",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    assert old.returncode != 0 and b"alert protocol version" in old.stderr


# --- a WebSocket client with host name verification (Python's ssl) ------------------------------


def test_websocket_over_sni_names_with_verified_host_names(sni_server, pki):
    ctx = client_context(pki)  # trusts the test CA and checks the host name
    port = sni_server["port"]
    assert echo_as(port, "app.example.com", ctx, "exact") == "exact"
    assert echo_as(port, "chat.example.com", ctx, "wildcard") == "wildcard"
    assert echo_as(port, "localhost", ctx, "default") == "default"  # not configured: the port's key
    with pytest.raises(ssl.SSLCertVerificationError):  # the port's key does not name this host
        echo_as(port, "unknown.example.net", ctx, "-")


def test_client_certificates_on_an_sni_context(sni_server, pki):
    port = sni_server["mtls"]
    assert echo_as(port, "app.example.com", client_context(pki, "alice"), "mtls") == "mtls"
    with pytest.raises(REFUSED):
        echo_as(port, "app.example.com", client_context(pki), "-")  # no certificate
    with pytest.raises(REFUSED):
        echo_as(port, "app.example.com", client_context(pki, "mallory"), "-")  # a CA the truststore lacks


# --- the expiry metric and wsserver check --------------------------------------------------------


def test_expiry_metric_has_every_sni_key(sni_server):
    deadline = time.monotonic() + 15
    text = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{sni_server['metrics']}/metrics", timeout=5
            ) as resp:
                text = resp.read().decode()
            break
        except OSError:
            time.sleep(0.2)
    values = {}
    for match in re.finditer(r"^wsserver_tls_certificate_expiry_seconds\{(.*?)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match[1]))
        values[(labels["keystore"], labels["key_alias"])] = float(match[2])
    for key in (("sites", "app"), ("sites", "wild"), ("sites", "soon"), ("jks", "jks-a"), ("pem", "a")):
        assert key in values, (key, text[-3000:])
    assert (SOON_DAYS - 1) * 86400 < values[("sites", "soon")] <= SOON_DAYS * 86400


def run_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "check.toml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "wsserver", "check", "-c", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO), KS_PASSWORD=PASSWORD),
    )


def test_check_reports_sni_keys_coverage_and_expiry(sni_server, tmp_path):
    done = run_check(tmp_path, sni_server["config"])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert '# port sni: sni "app.example.com": key "app" of keystore "sites", expires ' in out
    assert '# port sni: sni "*.example.com": key "wild" of keystore "sites"' in out
    assert '# port sni: sni "JKS.Example.org": key "jks-a" of keystore "jks"' in out
    # a certificate that does not name its host: served (as nginx does), but check warns
    assert (
        '# port sni: sni "JKS.Example.org": warning: the certificate of key "jks-a" does not cover '
        '"JKS.Example.org" (it names localhost)'
    ) in out
    assert 'sni "app.example.com": warning' not in out and 'sni "*.example.com": warning' not in out
    # the SNI key that expires soon is warned about
    assert re.search(
        r'# keystore "sites" key "soon": warning: certificate expires in (9|10)\.\d days', out
    ), out
    assert 'sni = { "app.example.com" = "app", "*.example.com" = "wild"' in out  # the effective config


# --- the server does not start on bad SNI settings ------------------------------------------------


def test_bad_sni_keys_do_not_start(start_wss, pki, sites, tmp_path):
    now = datetime.datetime.now(datetime.UTC)
    old = issue(
        pki["ca"],
        "old",
        "old.example.com",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    write_pem_files(tmp_path, old)
    port = free_port()
    sni = (
        '[ports.tls.sni]\n"jks.example.org" = "jks:jks-aa"\n"old.example.com" = "old:old"\n'
        '"x.example.com" = "sites:ap"\n'
    )
    cfg = (
        config(pki, wss_port("p", port, 'keystore = "sites"\nkey_alias = "fallback"\n' + sni))
        + sites
        + f'\n[[keystores]]\nalias = "old"\ntype = "pem"\n[keystores.keys.old]\n'
        f'cert = "{tmp_path}/old.crt"\nkey = "{tmp_path}/old.key"\n'
    )
    # the reference pass (no file opened) finds the PEM alias typo; the load then finds the others
    server = start_wss(cfg)
    assert server.wait(30) == 2
    logs = server.logs()
    assert (
        'ports[0].tls.sni."x.example.com" = "sites:ap": keystore "sites" has no key alias "ap"; '
        'did you mean "app"?'
    ) in logs, logs
    fixed = cfg.replace('"sites:ap"', '"sites:app"')
    server = start_wss(fixed, name="second")
    assert server.wait(30) == 2
    logs = server.logs()
    assert (
        'ports[0].tls.sni."jks.example.org" = "jks:jks-aa": keystore "jks" has no key alias "jks-aa"; '
        'did you mean "jks-a"? (aliases: "jks-a", "jks-b")'
    ) in logs, logs
    assert (
        'ports[0].tls.sni."old.example.com" = "old:old": keystore "old": key alias "old": certificate expired on'
        in logs
    ), logs
    # the same two lines from wsserver check, exit 2
    done = run_check(tmp_path, fixed)
    assert done.returncode == 2
    assert done.stderr.count("ports[0].tls.sni.") == 2, done.stderr
