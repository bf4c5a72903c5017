"""[[keystores]] / [[truststores]] validation, the cross-table rules, load_tls and the contexts it
builds (handshakes over memory BIOs: which certificate each port presents, client certificates,
protocol versions, ALPN)."""

from __future__ import annotations

import datetime
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from OpenSSL import SSL, crypto

from tests.support.tlsstores import PASSWORD, issue, write_jks, write_pem_files
from wsserver.config import Config, dump_config
from wsserver.config.tls_settings import (
    KeystoreConfig,
    PemKeyConfig,
    check_tls_references,
    parse_keystores,
    parse_truststores,
)
from wsserver.security.keystores import KeyEntry
from wsserver.security.tls import (
    TLSConfigError,
    build_server_context,
    certificate_lines,
    describe_certificate,
    load_tls,
)

SRC = "wsserver.toml"


def keystores(text: str):
    return parse_keystores(tomllib.loads(text).get("keystores"), SRC)


# --- the shape pass -------------------------------------------------------------------------


def test_type_error_is_one_line():
    items, errors = keystores('[[keystores]]\nalias = "main"\ntype = "pfx"\npath = "x.pfx"\n')
    assert items == ()
    assert errors == [
        'wsserver.toml: keystores[0].type = "pfx": must be one of "pem", "pkcs12", "jks", "pkcs11"'
    ]


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[[keystores]]\ntype = "jks"\npath = "a"', "keystores[0].alias: is required (1-255 characters"),
        (
            '[[keystores]]\nalias = "a b"\ntype = "jks"\npath = "a"',
            'keystores[0].alias = "a b": must be 1-255',
        ),
        ('[[keystores]]\nalias = "a"\npath = "a"', 'keystores[0].type: is required (one of "pem", "pkcs12"'),
        (
            '[[keystores]]\nalias = "a"\ntype = "jks"',
            'keystores[0].path: is required for type "jks" (the JKS file)',
        ),
        (
            '[[keystores]]\nalias = "a"\ntype = "jks"\npath = "a"\npasword_env = "X"',
            'keystores[0].pasword_env = "X": unknown key; did you mean "password_env"?',
        ),
        (
            '[[keystores]]\nalias = "a"\ntype = "jks"\npath = "a"\npassword_env = "X"\npassword_file = "f"',
            'keystores[0].password_file = "f": give password_env or password_file, not both',
        ),
        (
            '[[keystores]]\nalias = "a"\ntype = "jks"\npath = "a"\npassword_env = "MY-PW"',
            'keystores[0].password_env = "MY-PW": must be an environment variable name',
        ),
        ('[[keystores]]\nalias = "a"\ntype = "pem"', 'keystores[0].keys: is required for type "pem"'),
        (
            '[[keystores]]\nalias = "a"\ntype = "pem"\npath = "p"\n[keystores.keys.k]\ncert = "c"\nkey = "k"',
            'keystores[0].path = "p": is not used by type "pem"',
        ),
        (
            '[[keystores]]\nalias = "a"\ntype = "pem"\n[keystores.keys.k]\ncert = "c"',
            "keystores[0].keys.k.key: is required (a PEM file path)",
        ),
        (
            '[[keystores]]\nalias = "a"\ntype = "pem"\n[keystores.keys.k]\ncert = "c"\nkey = "k"\ncerts = "x"',
            'keystores[0].keys.k.certs = "x": unknown key; did you mean "cert"?',
        ),
        (
            '[[keystores]]\nalias = "a"\ntype = "pkcs12"\npath = "a"\n[keystores.keys.k]\ncert = "c"\nkey = "k"',
            'keystores[0].keys: is only used by type "pem"',
        ),
        (
            '[[keystores]]\nalias = "a"\ntype = "pkcs11"\npath = "/m.so"',
            "keystores[0].token: is required for type",
        ),
        (
            '[[keystores]]\nalias = "a"\ntype = "pkcs12"\npath = "a"\nkey_password_env = "K"',
            'keystores[0].key_password_env = "K": is only used by type "jks"',
        ),
        ("keystores = 3", "keystores = 3: must be an array of tables ([[keystores]])"),
    ],
)
def test_keystore_shape_errors(toml, expected):
    _items, errors = keystores(toml)
    assert any(line.startswith(f"{SRC}: {expected}") for line in errors), errors


def test_pem_keys_table_and_array_forms_agree():
    table_form = keystores(
        '[[keystores]]\nalias = "m"\ntype = "pem"\n'
        '[keystores.keys.one]\ncert = "1.crt"\nkey = "1.key"\n'
        '[keystores.keys."two words"]\ncert = "2.crt"\nkey = "2.key"\nchain = "ca.pem"\n'
    )
    array_form = keystores(
        '[[keystores]]\nalias = "m"\ntype = "pem"\n'
        '[[keystores.keys]]\nalias = "one"\ncert = "1.crt"\nkey = "1.key"\n'
        '[[keystores.keys]]\nalias = "two words"\ncert = "2.crt"\nkey = "2.key"\nchain = "ca.pem"\n'
    )
    assert table_form == array_form
    (store,), errors = table_form
    assert errors == []
    assert store.keys == (
        PemKeyConfig("one", "1.crt", "1.key"),
        PemKeyConfig("two words", "2.crt", "2.key", "ca.pem"),
    )
    # The writer (wsserver check) writes the array form, which parses back to the same entry.
    written = tomllib.loads(dump_config(Config(keystores=(store,))))["keystores"]
    assert written[0]["keys"][1]["alias"] == "two words"
    assert parse_keystores(written, SRC) == ((store,), [])


def test_truststore_shape():
    items, errors = parse_truststores(
        tomllib.loads(
            '[[truststores]]\nalias = "clients"\ntype = "pem"\npath = "ca.pem"\n'
            '[[truststores]]\nalias = "hsm"\ntype = "pkcs11"\npath = "x"\n'
        )["truststores"],
        SRC,
    )
    assert [t.alias for t in items] == ["clients"]
    assert errors == [
        f'{SRC}: truststores[1].type = "pkcs11": must be one of "pem", "pkcs12", "jks" '
        "(a PKCS#11 keystore serves as its own truststore)"
    ]


# --- the reference pass ---------------------------------------------------------------------


@dataclass(frozen=True)
class ServerTLS:
    keystore: str = ""
    key_alias: str = ""


@dataclass(frozen=True)
class PortTLS:
    keystore: str = ""
    key_alias: str = ""
    client_certs: str = "none"
    truststore: str = ""
    min_version: str = "1.2"
    ciphers: str = ""


@dataclass(frozen=True)
class Port:
    alias: str
    protocol: str = "wss"
    tls: PortTLS | None = None


PEM_MAIN = KeystoreConfig(
    "main", "pem", keys=(PemKeyConfig("a", "a.crt", "a.key"), PemKeyConfig("b", "b.crt", "b.key"))
)


@pytest.mark.parametrize(
    ("server", "ports", "expected"),
    [
        (ServerTLS(), [Port("p")], 'ports[0].protocol = "wss": needs a TLS key: set [ports.tls] keystore'),
        (
            ServerTLS("nope", "a"),
            [],
            'server.tls.keystore = "nope": must name a [[keystores]] entry (known: "main")',
        ),
        (ServerTLS("", "a"), [], 'server.tls.key_alias = "a": needs server.tls.keystore'),
        (
            ServerTLS("main", "zz"),
            [],
            'server.tls.key_alias = "zz": keystore "main" has no key alias "zz" (known: "a", "b")',
        ),
        (
            ServerTLS("main"),
            [],
            'server.tls.key_alias: is required: keystore "main" (server.tls.keystore) holds 2 keys',
        ),
        (
            ServerTLS(),
            [Port("p", tls=PortTLS("main", "c"))],
            'ports[0].tls.key_alias = "c": keystore "main" has no key',
        ),
        (
            ServerTLS("main", "a"),
            [Port("p", tls=PortTLS(key_alias="c"))],
            'ports[0].tls.key_alias = "c": keystore "main"',
        ),
        (ServerTLS("main", "a"), [Port("p", "ws", tls=PortTLS())], "ports[0].tls: is only used by wss ports"),
        (
            ServerTLS("main", "a"),
            [Port("p", tls=PortTLS(client_certs="require", truststore="x"))],
            'ports[0].tls.truststore = "x": must name a [[truststores]] or [[keystores]] entry (known: "main")',
        ),
        (
            ServerTLS("main", "a"),
            [Port("p", tls=PortTLS(truststore="main"))],
            'ports[0].tls.truststore = "main": is only used with client_certs = "request" or "require"',
        ),
        (
            ServerTLS("main", "a"),
            [Port("p", tls=PortTLS(ciphers="NOTHING-REAL"))],
            'ports[0].tls.ciphers = "NOTHING-REAL": must be an OpenSSL cipher list',
        ),
    ],
)
def test_reference_errors(server, ports, expected):
    errors = check_tls_references(server, ports, [PEM_MAIN], [], SRC)
    assert any(line.startswith(f"{SRC}: {expected}") for line in errors), errors


def test_references_fine():
    ports = [
        Port("a", tls=PortTLS("main", "a")),
        Port("b", tls=PortTLS("main", "b", client_certs="require")),
        Port("c"),
        Port("plain", "ws"),
    ]
    assert check_tls_references(ServerTLS("main", "a"), ports, [PEM_MAIN], [], SRC) == []


def test_duplicate_alias_across_tables():
    from wsserver.config.tls_settings import TruststoreConfig

    errors = check_tls_references(
        ServerTLS(), [], [PEM_MAIN], [TruststoreConfig("main", "pem", "ca.pem")], SRC
    )
    assert errors == [
        f'{SRC}: truststores[0].alias = "main": duplicate alias (also keystores[0]); keystores and '
        "truststores share one set of aliases"
    ]


# --- load_tls and the contexts --------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory, ca) -> Path:
    d = tmp_path_factory.mktemp("tls")
    for name in ("a", "b", "default"):
        write_pem_files(d, issue(ca, name))
    write_jks(d / "ks.jks", [issue(ca, "j1"), issue(ca, "j2")])
    (d / "ca.pem").write_bytes(ca.cert_pem.bytes())
    return d


def pem_keystore() -> KeystoreConfig:
    return KeystoreConfig(
        "main", "pem", keys=tuple(PemKeyConfig(n, f"{n}.crt", f"{n}.key") for n in ("a", "b", "default"))
    )


def handshake(ctx: SSL.Context, *, client_cert=None, max_version=None, alpn=(b"http/1.1",), ca=None):
    """A TLS handshake over memory BIOs; returns (server Connection, client Connection)."""
    cctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if max_version is not None:
        cctx.set_max_proto_version(max_version)
        cctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    if client_cert is not None:
        cctx.use_certificate(client_cert.cert)
        cctx.use_privatekey(client_cert.key)
    if alpn:
        cctx.set_alpn_protos(list(alpn))
    server, client = SSL.Connection(ctx, None), SSL.Connection(cctx, None)
    server.set_accept_state()
    client.set_connect_state()
    for _ in range(20):
        done = 0
        for conn in (client, server):
            try:
                conn.do_handshake()
                done += 1
            except SSL.WantReadError:
                pass
        for src, dst in ((client, server), (server, client)):
            try:
                dst.bio_write(src.bio_read(65536))
            except SSL.WantReadError:
                pass
        if done == 2:
            # TLS 1.3: the server checks the client's certificate after the client thinks it is done.
            try:
                server.recv(1)
            except SSL.WantReadError:
                pass
            return server, client
    raise AssertionError("handshake did not finish")


def cn_of(conn: SSL.Connection) -> str:
    cert = conn.get_peer_certificate(as_cryptography=True)
    return cert.subject.rfc4514_string().split(",")[0]


def test_ports_present_their_own_keys(tls_dir):
    ports = [
        Port("pa", tls=PortTLS("main", "a")),
        Port("pb", tls=PortTLS("main", "b")),
        Port("pd"),
        Port("pj", tls=PortTLS("jks", "j2")),
        Port("plain", "ws"),
    ]
    stores = [pem_keystore(), KeystoreConfig("jks", "jks", "ks.jks", password_env="P")]
    material = load_tls(
        ServerTLS("main", "default"), ports, stores, [], SRC, base_dir=tls_dir, environ={"P": PASSWORD}
    )
    assert set(material.ports) == {"pa", "pb", "pd", "pj"}
    presented = {alias: cn_of(handshake(p.context)[1]) for alias, p in material.ports.items()}
    assert presented == {"pa": "CN=a.test", "pb": "CN=b.test", "pd": "CN=default.test", "pj": "CN=j2.test"}
    server, _client = handshake(material.ports["pa"].context)
    assert server.get_alpn_proto_negotiated() == b"http/1.1"
    assert server.get_protocol_version_name() == "TLSv1.3"
    gauge = {(ks, alias) for ks, alias, seconds in material.expiry_seconds() if seconds > 0}
    assert ("main", "a") in gauge and ("jks", "j1") in gauge
    assert any('key "a": subject CN=a.test' in line for line in material.report())


def test_load_tls_collects_every_error(tls_dir):
    ports = [
        Port("p1", tls=PortTLS("main", "zz")),
        Port("p2", tls=PortTLS("jks", "j9")),
        Port("p3", tls=PortTLS("gone", "x")),
    ]
    stores = [
        pem_keystore(),
        KeystoreConfig("jks", "jks", "ks.jks", password_env="P"),
        KeystoreConfig("gone", "jks", "missing.jks", password_env="P"),
    ]
    with pytest.raises(TLSConfigError) as info:
        load_tls(ServerTLS(), ports, stores, [], SRC, base_dir=tls_dir, environ={"P": PASSWORD})
    assert info.value.errors == [
        f'{SRC}: keystores[2]: keystore "gone": path: file not found: {tls_dir}/missing.jks',
        f'{SRC}: ports[0].tls.key_alias = "zz": keystore "main": key alias "zz": no such key alias in the pem store '
        '(aliases: "a", "b", "default")',
        f'{SRC}: ports[1].tls.key_alias = "j9": keystore "jks": key alias "j9": no such key alias in the jks store '
        '(aliases: "j1", "j2")',
    ]


def test_wrong_password_stops_startup(tls_dir):
    stores = [KeystoreConfig("jks", "jks", "ks.jks", password_env="P")]
    with pytest.raises(TLSConfigError) as info:
        load_tls(
            ServerTLS("jks", "j1"), [Port("p")], stores, [], SRC, base_dir=tls_dir, environ={"P": "nopenope"}
        )
    assert info.value.errors == [
        f'{SRC}: keystores[0].password_env: keystore "jks": wrong password for {tls_dir}/ks.jks (from $P)'
    ]


def test_client_certificates(tls_dir, ca):
    stores = [pem_keystore()]
    ports = [
        Port("req", tls=PortTLS("main", "a", client_certs="require")),
        Port("opt", tls=PortTLS("main", "a", client_certs="request")),
    ]
    material = load_tls(ServerTLS(), ports, stores, [], SRC, base_dir=tls_dir)
    good = issue(ca, "alice")
    stranger = issue(trustme.CA(), "mallory")
    required = material.ports["req"].context
    server, _ = handshake(required, client_cert=good)
    assert cn_of(server) == "CN=alice.test"
    with pytest.raises(SSL.Error):
        handshake(required)
    with pytest.raises(SSL.Error):
        handshake(required, client_cert=stranger)
    optional = material.ports["opt"].context
    server, _ = handshake(optional)
    assert server.get_peer_certificate() is None
    with pytest.raises(SSL.Error):
        handshake(optional, client_cert=stranger)


def test_min_version(tls_dir):
    entry = _entry(tls_dir, "a")
    with pytest.raises(SSL.Error):
        handshake(build_server_context(entry), max_version=SSL.TLS1_1_VERSION)
    server, _ = handshake(build_server_context(entry), max_version=SSL.TLS1_2_VERSION)
    assert server.get_protocol_version_name() == "TLSv1.2"
    assert server.get_cipher_name().startswith("ECDHE-")
    with pytest.raises(SSL.Error):
        handshake(build_server_context(entry, min_version="1.3"), max_version=SSL.TLS1_2_VERSION)


def test_alpn_without_http11_is_not_fatal(tls_dir):
    server, _ = handshake(build_server_context(_entry(tls_dir, "a")), alpn=(b"h2",))
    assert server.get_alpn_proto_negotiated() == b""


def _entry(tls_dir: Path, name: str) -> KeyEntry:
    from wsserver.security.keystores import load_keystore

    return load_keystore(pem_keystore(), tls_dir).key(name)


def test_describe_certificate(ca):
    now = datetime.datetime.now(datetime.UTC)
    soon = issue(ca, "soon", "soon.test", "127.0.0.1", not_after=now + datetime.timedelta(days=10))
    info = describe_certificate(soon.cert, now)
    assert info.subject.startswith("CN=soon.test")
    assert info.sans == ("DNS:soon.test", "IP:127.0.0.1")
    assert 9.9 * 86400 < info.seconds_left <= 10 * 86400
    assert info.expires_within(30) and not info.expired
    lines = certificate_lines(info)
    assert lines[1] == "SANs DNS:soon.test, IP:127.0.0.1"
    assert lines[-1].startswith("warning: certificate expires in 10.0 days (less than 30)")
    later = describe_certificate(issue(ca, "later").cert, now)
    assert not any(line.startswith("warning") for line in certificate_lines(later))


def test_context_rejects_unusable_settings(tls_dir):
    entry = _entry(tls_dir, "a")
    with pytest.raises(ValueError, match="needs a truststore"):
        build_server_context(entry, client_certs="require")
    with pytest.raises(ValueError):
        build_server_context(entry, min_version="1.1")
    assert isinstance(crypto.X509.from_cryptography(entry.certificate), crypto.X509)


def test_client_identity(ca):
    from wsserver.security.tls import client_identity

    cert = issue(ca, "alice", "alice@example.com", "alice.example").cert
    ident = client_identity(cert)
    assert ident.common_name == "alice.test"
    assert ident.sans == ("email:alice@example.com", "DNS:alice.example")
    assert ident.names() == ("alice.test", "alice@example.com", "alice.example")
