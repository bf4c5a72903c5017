"""The OCSP keys of [ports.tls] (ocsp, ocsp_stapling, ocsp_stapling_responder): one error line each."""

from __future__ import annotations

import pytest

from wsserver.config import ConfigError, parse_config

BASE = """
[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"

[[keystores]]
alias = "main"
type = "pem"
[keystores.keys.k]
cert = "c.pem"
key = "k.pem"

[[adapters]]
name = "revocation"
type = "ocsp"

[[adapters]]
name = "corp"
type = "http"
[[adapters.servers]]
url = "http://127.0.0.1:9/auth"

[[ports]]
alias = "a"
protocol = "wss"
port = 8443
[ports.tls]
keystore = "main"
"""


def errors_of(tls: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + tls, "wsserver.toml")
    return info.value.errors


def test_valid_settings_parse():
    cfg = parse_config(
        BASE + 'client_certs = "require"\nocsp = "revocation"\nocsp_stapling = true\n'
        'ocsp_stapling_responder = "http://ocsp.example.test/"\n',
        "wsserver.toml",
    )
    tls = cfg.ports[0].tls
    assert (tls.ocsp, tls.ocsp_stapling, tls.ocsp_stapling_responder) == (
        "revocation",
        True,
        "http://ocsp.example.test/",
    )
    assert parse_config(BASE, "x").ports[0].tls.ocsp == ""


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        (
            'client_certs = "require"\nocsp = "revocaton"\n',
            'wsserver.toml: ports[0].tls.ocsp = "revocaton": must name an [[adapters]] entry of type "ocsp"; '
            'did you mean "revocation"?',
        ),
        (
            'client_certs = "request"\nocsp = "zzz"\n',
            'wsserver.toml: ports[0].tls.ocsp = "zzz": must name an [[adapters]] entry of type "ocsp"; '
            'known: "revocation"',
        ),
        (
            'client_certs = "require"\nocsp = "corp"\n',
            'wsserver.toml: ports[0].tls.ocsp = "corp": adapter "corp" is of type "http"; client certificates '
            'are checked by an adapter of type "ocsp" (OCSP adapters: "revocation")',
        ),
        (
            'ocsp = "revocation"\n',
            'wsserver.toml: ports[0].tls.ocsp = "revocation": needs client_certs = "request" or "require" '
            '(without client certificates there is nothing to check; ports[0].tls.client_certs = "none")',
        ),
        (
            'ocsp_stapling_responder = "http://ocsp.example.test/"\n',
            'wsserver.toml: ports[0].tls.ocsp_stapling_responder = "http://ocsp.example.test/": is only used '
            "with ports[0].tls.ocsp_stapling = true",
        ),
        (
            'ocsp_stapling = true\nocsp_stapling_responder = "ldap://x"\n',
            'wsserver.toml: ports[0].tls.ocsp_stapling_responder = "ldap://x": must be an http:// or https:// URL',
        ),
        (
            'ocsp_stapling = "yes"\n',
            'wsserver.toml: ports[0].tls.ocsp_stapling = "yes": must be a boolean (true/false)',
        ),
    ],
)
def test_one_line_per_problem(tls, expected):
    assert errors_of(tls) == [expected]


def test_no_ocsp_adapter_at_all():
    text = BASE.replace(
        'name = "revocation"\ntype = "ocsp"',
        'name = "other"\ntype = "http"\n[[adapters.servers]]\nurl = "http://127.0.0.1:9/x"',
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text + 'client_certs = "require"\nocsp = "revocation"\n', "wsserver.toml")
    assert info.value.errors == [
        'wsserver.toml: ports[0].tls.ocsp = "revocation": must name an [[adapters]] '
        'entry of type "ocsp"; no [[adapters]] entry of type "ocsp" is configured'
    ]


def test_ocsp_on_a_ws_port_is_the_tls_table_error():
    text = BASE.replace('protocol = "wss"', 'protocol = "ws"')
    errors = errors_of_text(text + 'client_certs = "require"\nocsp = "revocation"\n')
    assert any("ports[0].tls: is only used by wss ports" in e for e in errors)


def errors_of_text(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "wsserver.toml")
    return info.value.errors
