"""[ports.tls.sni]: host name matching, and the config checks that need no keystore file."""

from __future__ import annotations

import pytest
import trustme
from cryptography import x509

from wsserver import preflight
from wsserver.config import ConfigError, parse_config
from wsserver.config.tls_settings import KeystoreConfig, PemKeyConfig
from wsserver.security.sni import (
    PatternError,
    SNIMap,
    certificate_covers,
    parse_pattern,
    sni_entries,
)

# --- patterns -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app.example.com", ("app.example.com", False)),
        ("App.Example.COM", ("app.example.com", False)),
        ("app.example.com.", ("app.example.com", False)),  # a trailing dot names the same host
        ("*.example.com", ("example.com", True)),
        ("*.Example.com", ("example.com", True)),
        ("localhost", ("localhost", False)),
        ("xn--bcher-kva.example", ("xn--bcher-kva.example", False)),  # punycode as given
        ("*.xn--bcher-kva.example", ("xn--bcher-kva.example", True)),
        ("_acme.example.com", ("_acme.example.com", False)),
    ],
)
def test_good_patterns(text: str, expected: tuple[str, bool]) -> None:
    assert parse_pattern(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "is empty"),
        (".", "is empty"),
        ("*.*.example.com", '"*" only as the whole first label'),
        ("a*.example.com", '"*" only as the whole first label'),
        ("*example.com", '"*" only as the whole first label'),
        ("app.*.example.com", '"*" only as the whole first label'),
        ("*", "a wildcard of one label"),
        ("*.", "a wildcard of one label"),
        ("a..example.com", "labels of 1-63"),
        ("-a.example.com", "labels of 1-63"),
        ("a b.example.com", "labels of 1-63"),
        ("a" * 64 + ".example.com", "labels of 1-63"),
        ("127.0.0.1", "is an IP address"),
        ("::1", "is an IP address"),
        ("10.0.0.300", "all digits"),
        ("bücher.example", '"xn--bcher-kva.example"'),
    ],
)
def test_bad_patterns(text: str, fragment: str) -> None:
    with pytest.raises(PatternError) as info:
        parse_pattern(text)
    assert fragment in str(info.value)


# --- matching -------------------------------------------------------------------------------

MAP = SNIMap(
    [
        ("app.example.com", "app"),
        ("*.example.com", "wild"),
        ("*.b.example.com", "wild-b"),
        ("x.b.example.com", "x-b"),
        ("Upper.Example.org", "upper"),
        ("xn--bcher-kva.example", "idn"),
    ]
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("app.example.com", "app"),  # exact wins over the wildcard that also matches
        (b"app.example.com", "app"),  # raw SNI bytes, as OpenSSL hands them over
        ("APP.example.COM", "app"),
        ("app.example.com.", "app"),
        ("other.example.com", "wild"),
        ("b.example.com", "wild"),
        ("y.b.example.com", "wild-b"),
        ("x.b.example.com", "x-b"),
        ("a.y.example.com", None),  # a wildcard covers one label only
        ("example.com", None),  # ... and not the domain itself
        ("upper.example.org", "upper"),
        ("xn--bcher-kva.example", "idn"),
        ("XN--BCHER-KVA.example", "idn"),
        ("unknown.test", None),
        ("", None),
        (None, None),  # no SNI
        (b"\xff.example.com", None),  # not ASCII: the default key
    ],
)
def test_lookup(name: str | bytes | None, expected: str | None) -> None:
    assert MAP.lookup(name) == expected


def test_map_counts_and_rejects_bad_patterns() -> None:
    assert len(MAP) == 6
    with pytest.raises(PatternError):
        SNIMap([("a*.example.com", 1)])


# --- certificate coverage (wsserver check's warning) -------------------------------------------


@pytest.fixture(scope="module")
def certs() -> dict[str, x509.Certificate]:
    ca = trustme.CA()

    def make(*names: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate(ca.issue_cert(*names).cert_chain_pems[0].bytes())

    return {
        "app": make("app.example.com"),
        "wild": make("*.example.com"),
        "two": make("a.example.org", "b.test"),
    }


def test_certificate_covers(certs: dict[str, x509.Certificate]) -> None:
    assert certificate_covers(certs["app"], "app.example.com")
    assert certificate_covers(certs["app"], "APP.example.com.")
    assert not certificate_covers(certs["app"], "other.example.com")
    assert not certificate_covers(certs["app"], "*.example.com")  # one name does not cover them all
    assert certificate_covers(certs["wild"], "*.example.com")
    assert certificate_covers(certs["wild"], "x.example.com")
    assert not certificate_covers(certs["wild"], "x.y.example.com")
    assert not certificate_covers(certs["wild"], "example.com")
    assert certificate_covers(certs["two"], "b.test")


# --- the config's reference pass ----------------------------------------------------------------


def _pem_store(alias: str, *keys: str) -> KeystoreConfig:
    return KeystoreConfig(
        alias=alias, type="pem", keys=tuple(PemKeyConfig(k, f"{k}.crt", f"{k}.key") for k in keys)
    )


class _Errors:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, message: str, value: object = None) -> None:
        self.lines.append(f"{path}{'' if value is None else f' = {value!r}'}: {message}")


def test_entries_resolve_port_keystore_and_keystore_prefix() -> None:
    stores = {"main": _pem_store("main", "default", "app"), "other": _pem_store("other", "api", "x:y")}
    errors = _Errors()
    table = {"app.example.com": "app", "api.example.org": "other:api", "c.test": "main:app"}
    entries = sni_entries(errors, "ports[0].tls.sni", table, "main", stores)
    assert errors.lines == []
    assert [(e.keystore, e.key_alias) for e in entries] == [
        ("main", "app"),
        ("other", "api"),
        ("main", "app"),
    ]
    assert entries[0].path == 'ports[0].tls.sni."app.example.com"'
    # "x:y" is a key alias when "x" names no keystore
    entries = sni_entries(errors, "p", {"d.test": "x:y"}, "other", stores)
    assert errors.lines == [] and (entries[0].keystore, entries[0].key_alias) == ("other", "x:y")


TOML = """
[server.tls]
keystore = "main"
key_alias = "default"

[[keystores]]
alias = "main"
type = "pem"
[keystores.keys.default]
cert = "d.crt"
key = "d.key"
[keystores.keys.app]
cert = "a.crt"
key = "a.key"

[[keystores]]
alias = "jks"
type = "jks"
path = "x.jks"

[[ports]]
alias = "p"
protocol = "wss"
port = 8443
[ports.tls]
[ports.tls.sni]
{sni}
"""


def _errors(sni: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        preflight.parse(TOML.format(sni=sni), "wsserver.toml")
    return info.value.errors


def test_config_accepts_sni_and_keeps_it() -> None:
    cfg = parse_config(
        TOML.format(sni='"app.example.com" = "app"\n"*.example.com" = "jks:wild"'), "wsserver.toml"
    )
    assert cfg.ports[0].tls.sni == {"app.example.com": "app", "*.example.com": "jks:wild"}


@pytest.mark.parametrize(
    ("sni", "line"),
    [
        (
            '"app.example.com" = "ap"',
            'wsserver.toml: ports[0].tls.sni."app.example.com" = "ap": keystore "main" has no key alias "ap"; '
            'did you mean "app"? (aliases: "default", "app")',
        ),
        (
            '"app.example.com" = "nothing"',
            'wsserver.toml: ports[0].tls.sni."app.example.com" = "nothing": keystore "main" has no key alias "nothing" '
            '(aliases: "default", "app"); a key of another keystore is "KEYSTORE:ALIAS" (keystores: jks)',
        ),
        (
            '"*.*.example.com" = "app"',
            'wsserver.toml: ports[0].tls.sni."*.*.example.com" = "app": must be a host name ("app.example.com") or a '
            'wildcard of one label ("*.example.com"): "*" only as the whole first label, once',
        ),
        ('"a*.example.com" = "app"', 'ports[0].tls.sni."a*.example.com" = "app": must be a host name'),
        ('"" = "app"', 'ports[0].tls.sni."" = "app": is empty; expected a host name'),
        (
            '"App.example.com" = "app"\n"app.example.com." = "default"',
            'ports[0].tls.sni."app.example.com." = "default": duplicate host name (also "App.example.com"',
        ),
        ('"a.example.com" = 3', 'ports[0].tls.sni."a.example.com": must be a key alias'),
        ('"a.example.com" = ""', 'ports[0].tls.sni."a.example.com" = "": must be a key alias'),
        (
            'app.example.com = "app"',
            'ports[0].tls.sni."app.example.com": quote the host name: "app.example.com" = "KEY_ALIAS"',
        ),
    ],
)
def test_config_errors_one_line_each(sni: str, line: str) -> None:
    errors = _errors(sni)
    assert len(errors) == 1, errors
    assert line in errors[0]


def test_config_error_unquoted_names_one_line_each() -> None:
    errors = _errors('www.a.test = "app"\nwww.b.test = "app"')
    assert [e.split(": ", 2)[1] for e in errors] == [
        'ports[0].tls.sni."www.a.test"',
        'ports[0].tls.sni."www.b.test"',
    ]


def test_config_error_sni_not_a_table() -> None:
    text = TOML.format(sni="").replace("[ports.tls.sni]\n", 'sni = "app"\n')
    with pytest.raises(ConfigError) as info:
        preflight.parse(text, "wsserver.toml")
    assert info.value.errors == [
        'wsserver.toml: ports[0].tls.sni = "app": must be a table of "host name" = '
        '"key alias" ([ports.tls.sni])'
    ]


def test_config_error_sni_on_ws_port() -> None:
    text = TOML.format(sni='"app.example.com" = "app"').replace('protocol = "wss"', 'protocol = "ws"')
    with pytest.raises(ConfigError) as info:
        preflight.parse(text, "wsserver.toml")
    assert any("ports[0].tls: is only used by wss ports" in line for line in info.value.errors), (
        info.value.errors
    )


def test_non_pem_aliases_are_left_to_the_load() -> None:
    # a JKS store's aliases are only known once it is opened (wsserver/security/tls.py)
    cfg = parse_config(TOML.format(sni='"a.example.com" = "jks:whatever"'), "wsserver.toml")
    assert cfg.ports[0].tls.sni["a.example.com"] == "jks:whatever"


# --- the load: contexts and the servername callback, in memory ------------------------------------


def _handshake(server_ctx: object, server_name: bytes | None) -> x509.Certificate:
    """A pyOpenSSL client and server over memory BIOs; the certificate the client was shown."""
    from OpenSSL import SSL

    client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    if server_name is not None:
        client.set_tlsext_host_name(server_name)
    client.set_connect_state()
    server = SSL.Connection(server_ctx, None)  # type: ignore[arg-type]
    server.set_accept_state()
    for _ in range(20):
        for conn in (client, server):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
        for src, dst in ((client, server), (server, client)):
            try:
                dst.bio_write(src.bio_read(65536))
            except SSL.WantReadError:
                pass
    cert = client.get_peer_certificate(as_cryptography=True)
    assert cert is not None
    return cert


def test_load_builds_contexts_and_switches_by_name(tmp_path) -> None:
    from cryptography.x509.oid import NameOID

    from wsserver.security.tls import load_tls_for_config

    ca = trustme.CA()
    keys = {"default": ("localhost",), "app": ("app.example.com",), "wild": ("*.example.com",)}
    tables = ""
    for name, sans in keys.items():
        leaf = ca.issue_cert(*sans, common_name=f"{name}.test")
        (tmp_path / f"{name}.crt").write_bytes(leaf.cert_chain_pems[0].bytes())
        (tmp_path / f"{name}.key").write_bytes(leaf.private_key_pem.bytes())
        tables += f'[keystores.keys.{name}]\ncert = "{name}.crt"\nkey = "{name}.key"\n'
    text = (
        f'[server.tls]\nkeystore = "s"\nkey_alias = "default"\n[[keystores]]\nalias = "s"\ntype = "pem"\n{tables}'
        '[[ports]]\nalias = "p"\nprotocol = "wss"\nport = 8443\n[ports.tls]\nmin_version = "1.3"\n'
        '[ports.tls.sni]\n"app.example.com" = "app"\n"*.example.com" = "wild"\n"localhost" = "default"\n'
    )
    path = tmp_path / "wsserver.toml"
    path.write_text(text)
    material = load_tls_for_config(parse_config(text, str(path)))
    port = material.ports["p"]
    assert [(r.pattern, r.entry.alias) for r in port.sni.routes] == [
        ("app.example.com", "app"),
        ("*.example.com", "wild"),
        ("localhost", "default"),
    ]
    assert port.sni.routes[2].context is port.context  # the port's own key: no context of its own
    assert {e.alias for e in material.selected_keys()} == {"default", "app", "wild"}

    def cn_for(name: bytes | None) -> str:
        cert = _handshake(port.context, name)
        return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    assert cn_for(b"app.example.com") == "app.test"
    assert cn_for(b"Other.Example.com") == "wild.test"
    assert cn_for(b"a.b.example.com") == "default.test"
    assert cn_for(None) == "default.test"
    report = material.report()
    assert any(
        line.startswith('port p: sni "app.example.com": key "app" of keystore "s", expires ')
        for line in report
    ), report
    assert not any("warning" in line for line in report), report
