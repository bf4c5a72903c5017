"""Adapters on the keystore registry, through ``wsserver serve`` and ``wsserver check``.

Adapter ``truststore``/``keystore`` name ``[[truststores]]``/``[[keystores]]`` aliases (PEM,
PKCS#12, JKS) and ``key_alias`` picks the client key for mutual TLS. Real servers, started by
the tests: slapd (LDAPS), an HTTPS auth server that requires a client certificate and records
its subject, and wsserver itself with ``client_auth = "adapter:..."``; a WebSocket client logs in.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from tests.support.backends import BASE_DN, USERS, HttpAuthServer, Pki, ensure_running
from tests.support.basic_auth import echo_status
from tests.support.server import REPO
from tests.support.server import free_port as free_tcp_port
from tests.support.tlsstores import (
    PASSWORD,
    issue,
    keytool,
    write_jks,
    write_pkcs12_multi,
    write_pkcs12_single,
)

pytestmark = pytest.mark.integration

PASSWORD_ENV = "TEST_STORE_PASSWORD"
ENV = {PASSWORD_ENV: PASSWORD}


# --- configs -------------------------------------------------------------------------------------


def _port(alias: str, port: int, adapter: str) -> str:
    return (
        f'[[ports]]\nalias = "{alias}"\nport = {port}\nbind = "127.0.0.1"\nclient_auth = "adapter:{adapter}"\n'
        "auth_timeout_ms = 4000\n\n"
    )


def _config(stores: str, adapters: str, ports: str) -> str:
    return (
        "[server]\nworkers = 1\ngraceful_timeout = 2\n\n"
        '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n\n'
        f"{stores}\n{adapters}\n{ports}"
    )


def _store(kind: str, alias: str, type_: str, path: Path | str, password_env: str = PASSWORD_ENV) -> str:
    secret = f'password_env = "{password_env}"\n' if password_env else ""
    return f'[[{kind}]]\nalias = "{alias}"\ntype = "{type_}"\npath = "{path}"\n{secret}\n'


def _adapter(name: str, kind: str, urls: list[str], **tls: str) -> str:
    servers = ", ".join(f'{{ url = "{u}", priority = 1 }}' for u in urls)
    keys = "".join(f'{k} = "{v}"\n' for k, v in tls.items())
    options = {
        "ldap": f'[adapters.ldap]\nbind_dn_template = "uid={{username}},ou=people,{BASE_DN}"\n',
        "http": "[adapters.http]\n",
    }[kind]
    return (
        f'[[adapters]]\nname = "{name}"\ntype = "{kind}"\nservers = [{servers}]\nsecurity_protocol = "tls"\n'
        f"{keys}\n[adapters.load_balancing]\nserver_request_attempts = 1\nrequest_attempts = 2\n"
        f"connection_timeout_ms = 1000\nrequest_timeout_ms = 2000\n\n{options}\n"
    )


_status = echo_status


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    """A CA that signed nothing the test servers present."""
    return trustme.CA()


@pytest.fixture
def mtls_server(adapter_pki: Pki):
    """HTTPS ``POST /auth`` that requires a client certificate issued by the adapter PKI's CA."""
    server = HttpAuthServer(tls=adapter_pki.server_context(require_client_cert=True)).start()
    try:
        yield server
    finally:
        server.stop()


# --- LDAPS trusting a JKS truststore by alias ----------------------------------------------------


def test_ldaps_trusts_a_jks_truststore_by_alias(
    start_server, slapd_pair, adapter_pki: Pki, other_ca, tmp_path
):
    ensure_running(slapd_pair)
    good = adapter_pki.jks_truststore()
    wrong = write_jks(tmp_path / "other.jks", [], trusted=(_cert(other_ca),))
    port, wrong_port = free_tcp_port(), free_tcp_port()
    urls = [s.tls_url for s in slapd_pair]
    config = _config(
        _store("truststores", "corp-ca", "jks", good) + _store("truststores", "other-ca", "jks", wrong),
        _adapter("corp", "ldap", urls, truststore="corp-ca")
        + _adapter("untrusting", "ldap", urls[:1], truststore="other-ca"),
        _port("secure", port, "corp") + _port("wrong_trust", wrong_port, "untrusting"),
    )
    server = start_server(config, wait_for=("127.0.0.1", port), env=ENV)
    assert _status(port, "alice", USERS["alice"]) == 101
    assert _status(port, "alice", "wrong-password") == 401
    # slapd's certificate is not vouched for by other-ca: a TLS failure on every server = 503
    assert _status(wrong_port, "alice", USERS["alice"]) == 503
    logs = server.logs()
    assert "adapter backends unavailable" in logs and "untrusting" in logs
    assert USERS["alice"] not in logs


# --- HTTP with mutual TLS: the client key from a PKCS#12 keystore, chosen by key_alias -----------


@pytest.mark.skipif(keytool() is None, reason="keytool not found (apt-get install default-jre-headless)")
def test_http_mutual_tls_presents_the_pkcs12_key_named_by_key_alias(
    start_server, adapter_pki: Pki, mtls_server, tmp_path
):
    keys = [
        issue(adapter_pki.ca, "alpha", "alpha@example.test"),
        issue(adapter_pki.ca, "beta", "beta@example.test"),
    ]
    p12 = write_pkcs12_multi(tmp_path / "clients.p12", keys)
    alpha_port, beta_port = free_tcp_port(), free_tcp_port()
    stores = (
        _store("keystores", "clients", "pkcs12", p12)
        + f'[[truststores]]\nalias = "corp-ca"\ntype = "pem"\npath = "{adapter_pki.ca_pem}"\n\n'
    )
    adapters = _adapter(
        "as-alpha", "http", [mtls_server.url], truststore="corp-ca", keystore="clients", key_alias="alpha"
    ) + _adapter(
        "as-beta", "http", [mtls_server.url], truststore="corp-ca", keystore="clients", key_alias="beta"
    )
    start_server(
        _config(
            stores,
            adapters,
            _port("alpha_ws", alpha_port, "as-alpha") + _port("beta_ws", beta_port, "as-beta"),
        ),
        wait_for=("127.0.0.1", beta_port),
        env=ENV,
    )
    assert _status(beta_port, "bob", USERS["bob"]) == 101
    assert mtls_server.client_subjects[-1]["commonName"] == "beta.test"
    assert _status(alpha_port, "bob", USERS["bob"]) == 101
    assert mtls_server.client_subjects[-1]["commonName"] == "alpha.test"
    assert _status(alpha_port, "bob", "nope") == 401
    assert {s["commonName"] for s in mtls_server.client_subjects} == {"alpha.test", "beta.test"}


# --- keystore as truststore ----------------------------------------------------------------------


def test_keystore_serves_as_truststore_when_none_is_named(
    start_server, slapd_pair, adapter_pki: Pki, mtls_server, other_ca, tmp_path
):
    """A JKS keystore with the client key (its chain ends at the CA) and nothing else: the same
    store authenticates the client and trusts the servers, as TrustBuilder's adapters do."""
    ensure_running(slapd_pair)
    client = issue(adapter_pki.ca, "gamma", "gamma@example.test")
    jks_path = write_jks(tmp_path / "adapter.jks", [client])
    # A keystore whose only key comes from another CA trusts that CA only: slapd is refused.
    stranger = write_pkcs12_single(tmp_path / "stranger.p12", issue(other_ca, "stranger"))
    http_port, ldap_port, refused_port = free_tcp_port(), free_tcp_port(), free_tcp_port()
    stores = _store("keystores", "adapter-ks", "jks", jks_path) + _store(
        "keystores", "stranger", "pkcs12", stranger
    )
    adapters = (
        _adapter("http-ks", "http", [mtls_server.url], keystore="adapter-ks", key_alias="gamma")
        + _adapter("ldap-ks", "ldap", [slapd_pair[0].tls_url], keystore="adapter-ks")
        + _adapter("ldap-stranger", "ldap", [slapd_pair[0].tls_url], keystore="stranger")
    )
    start_server(
        _config(
            stores,
            adapters,
            _port("http_ws", http_port, "http-ks")
            + _port("ldap_ws", ldap_port, "ldap-ks")
            + _port("refused_ws", refused_port, "ldap-stranger"),
        ),
        wait_for=("127.0.0.1", refused_port),
        env=ENV,
    )
    assert _status(http_port, "carol", USERS["carol"]) == 101
    assert mtls_server.client_subjects[-1]["commonName"] == "gamma.test"
    assert _status(ldap_port, "carol", USERS["carol"]) == 101
    assert _status(refused_port, "carol", USERS["carol"]) == 503


# --- wsserver check and wsserver serve refuse bad adapter TLS settings ---------------------------


def _run(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "wsserver", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=REPO,
        timeout=timeout,
    )


def _check(path: Path, text: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    path.write_text(text)
    return _run(["check", "-c", str(path)], env=env)


def _cert(ca: trustme.CA):
    from cryptography import x509

    return x509.load_pem_x509_certificate(ca.cert_pem.bytes())


@pytest.fixture
def stores_dir(tmp_path: Path, adapter_pki: Pki) -> Path:
    """A config directory with a PKCS#12 keystore (key "client", valid), one with an expired key
    ("old"), and the CA as PEM; the adapter URL is never contacted by ``check``."""
    now = dt.datetime.now(dt.UTC)
    write_pkcs12_single(tmp_path / "client.p12", issue(adapter_pki.ca, "client"))
    write_pkcs12_single(
        tmp_path / "old.p12",
        issue(
            adapter_pki.ca,
            "old",
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        ),
    )
    (tmp_path / "ca.pem").write_bytes(adapter_pki.ca_pem.read_bytes())
    return tmp_path


def _check_config(adapter_tls: str, stores: str) -> str:
    return (
        stores + '[[adapters]]\nname = "corp-http"\ntype = "http"\n'
        'servers = [{ url = "https://127.0.0.1:9/auth", priority = 1 }]\nsecurity_protocol = "tls"\n'
        f'{adapter_tls}\n[[ports]]\nalias = "p"\nport = 8080\nclient_auth = "adapter:corp-http"\n'
    )


OLD_PASSWORD_ENV = "TEST_OLD_STORE_PASSWORD"
STORES = (
    _store("keystores", "client", "pkcs12", "client.p12")
    + _store("keystores", "old", "pkcs12", "old.p12", OLD_PASSWORD_ENV)
    + '[[truststores]]\nalias = "corp-ca"\ntype = "pem"\npath = "ca.pem"\n\n'
)
CHECK_ENV = {PASSWORD_ENV: PASSWORD, OLD_PASSWORD_ENV: PASSWORD}


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_check_accepts_aliases_and_a_pem_path(stores_dir: Path):
    ok = _check(
        stores_dir / "ok.toml",
        _check_config('truststore = "corp-ca"\nkeystore = "client"\nkey_alias = "client"\n', STORES),
        CHECK_ENV,
    )
    assert ok.returncode == 0, ok.stderr
    # a value with a "/" is a PEM file path, relative to the config file
    path = _check(stores_dir / "path.toml", _check_config('truststore = "./ca.pem"\n', STORES), CHECK_ENV)
    assert path.returncode == 0, path.stderr


def test_check_reports_a_missing_alias(stores_dir: Path):
    result = _check(
        stores_dir / "missing.toml",
        _check_config('truststore = "corp-cas"\nkeystore = "client"\nkey_alias = "clinet"\n', STORES),
        CHECK_ENV,
    )
    assert result.returncode == 2
    lines = _error_lines(result)
    assert len(lines) == 2, lines
    src = str(stores_dir / "missing.toml")
    assert lines[0] == (
        f'{src}: adapters[0].key_alias = "clinet": adapter "corp-http": keystore "client": '
        'key alias "clinet": no such key alias in the pkcs12 store (aliases: "client")'
    )
    assert lines[1].startswith(
        f'{src}: adapters[0].truststore = "corp-cas": adapter "corp-http": no '
        "[[truststores]] or [[keystores]] entry with this alias"
    )


def test_check_reports_a_wrong_password_once(stores_dir: Path):
    result = _check(
        stores_dir / "password.toml",
        _check_config('keystore = "client"\nkey_alias = "client"\n', STORES),
        CHECK_ENV | {PASSWORD_ENV: "not-the-password"},
    )
    assert result.returncode == 2
    lines = _error_lines(result)
    # one line, on the config key at fault; the adapter that uses the store adds none
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f'{stores_dir / "password.toml"}: keystores[0].password_env: keystore "client": '
        f"wrong password for {stores_dir / 'client.p12'} (from ${PASSWORD_ENV})"
    ), lines


def test_check_reports_an_expired_client_certificate(stores_dir: Path):
    result = _check(
        stores_dir / "expired.toml",
        _check_config('truststore = "corp-ca"\nkeystore = "old"\nkey_alias = "old"\n', STORES),
        CHECK_ENV,
    )
    assert result.returncode == 2
    lines = _error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f'{stores_dir / "expired.toml"}: adapters[0].key_alias = "old": adapter '
        '"corp-http": keystore "old": key alias "old": certificate expired on '
    )


def test_serve_refuses_a_missing_alias_at_start(stores_dir: Path):
    path = stores_dir / "serve.toml"
    path.write_text(
        _check_config('truststore = "nowhere"\n', STORES).replace("port = 8080", f"port = {free_tcp_port()}")
    )
    result = _run(["serve", "-c", str(path)], env=CHECK_ENV, timeout=60)
    assert result.returncode == 2
    assert (
        f'{path}: adapters[0].truststore = "nowhere": adapter "corp-http": no [[truststores]]'
        in result.stderr
    )
