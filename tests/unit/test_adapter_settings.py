"""[[adapters]] tables: defaults, and one-line errors naming file, key and allowed values."""

from __future__ import annotations

import tomllib

import pytest

from wsserver.config.adapter_settings import parse_adapter, parse_adapters
from wsserver.preflight import host_checks  # secrets' variables and files, OTP rules

SRC = "wsserver.toml"


def one(text: str) -> tuple[object, list[str]]:
    return parse_adapter(tomllib.loads(text)["adapters"][0], 0, SRC, host_checks())


LDAP = """
[[adapters]]
name = "corp-ldap"
type = "ldap"
servers = [
  { url = "ldap://ldap1.example:389", priority = 1 },
  { url = "ldap://ldap2.example:389", priority = 1 },
  { url = "ldap://ldap-dr.example:389", priority = 2 },
]
[adapters.ldap]
bind_dn_template = "uid={username},ou=people,dc=example,dc=com"
"""


def test_the_example_adapter_with_defaults() -> None:
    settings, errors = one(LDAP)
    assert errors == []
    assert settings.server_list() == [
        ("ldap://ldap1.example:389", 1),
        ("ldap://ldap2.example:389", 1),
        ("ldap://ldap-dr.example:389", 2),
    ]
    lb = settings.load_balancing
    assert (
        lb.connection_timeout_ms,
        lb.request_timeout_ms,
        lb.request_attempts,
        lb.server_request_attempts,
        lb.penalty_limit,
        lb.connection_failure_threshold,
        lb.connection_failure_weight,
        lb.high_load_threshold_ms,
        lb.high_load_weight,
        lb.penalty_decay_per_s,
    ) == (3000, 5000, 2, 1, 100, 4, 50, 1000, 2, 1.0)
    assert settings.security_protocol == "none"
    assert settings.options is settings.ldap


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "[adapters.load_balancing]\npenalty_limit = -1",
            "wsserver.toml: adapters[0].load_balancing.penalty_limit = -1: must be an integer 0..10000",
        ),
        (
            "[adapters.load_balancing]\nrequest_atempts = 3",
            'wsserver.toml: adapters[0].load_balancing.request_atempts = 3: unknown key; did you mean "request_attempts"?',
        ),
        (
            "[adapters.load_balancing]\nserver_request_attempts = 0",
            "wsserver.toml: adapters[0].load_balancing.server_request_attempts = 0: must be an integer 1..100",
        ),
        (
            "[adapters.load_balancing]\npenalty_decay_per_s = -0.5",
            "wsserver.toml: adapters[0].load_balancing.penalty_decay_per_s = -0.5: must be a number 0..10000",
        ),
        (
            '[adapters.radius]\nsecret_env = "X"',
            'wsserver.toml: adapters[0].radius: is for type = "radius", but this adapter has type = "ldap"',
        ),
    ],
)
def test_one_line_errors(extra: str, expected: str) -> None:
    settings, errors = one(LDAP + extra)
    assert settings is None
    assert errors == [expected]


@pytest.mark.parametrize("value", ["TLSv1", "SSLv3", "tlsv1.1"])
def test_old_protocols_are_refused_with_the_reason(value: str) -> None:
    _, errors = one(LDAP.replace('type = "ldap"', f'type = "ldap"\nsecurity_protocol = "{value}"'))
    assert len(errors) == 1
    assert errors[0].startswith(f'wsserver.toml: adapters[0].security_protocol = "{value}": refused:')
    assert "RFC 8996" in errors[0] and '"tls"' in errors[0]


@pytest.mark.parametrize(
    ("servers", "protocol", "message"),
    [
        ('[{ url = "ldaps://h" }]', "none", 'ldaps:// needs security_protocol = "tls"'),
        ('[{ url = "http://h" }]', "none", "must start with ldap:// or ldaps://"),
        ('[{ url = "ldap://" }]', "none", "must name a host"),
        ('[{ url = "ldap://h" }, { url = "ldap://h" }]', "none", "duplicate server (also servers[0])"),
        ("[]", "none", "needs at least one server"),
        ('[{ url = "ldap://h", priority = 0 }]', "none", "must be an integer 1..1000"),
    ],
)
def test_server_lists(servers: str, protocol: str, message: str) -> None:
    text = (
        f'[[adapters]]\nname = "x"\ntype = "ldap"\nsecurity_protocol = "{protocol}"\nservers = {servers}\n'
        '[adapters.ldap]\nbind_dn_template = "uid={username}"\n'
    )
    _, errors = one(text)
    assert len(errors) == 1 and message in errors[0], errors


def test_ldap_with_starttls_is_fine() -> None:
    _, errors = one(LDAP.replace('type = "ldap"', 'type = "ldap"\nsecurity_protocol = "tls"'))
    assert errors == []


def test_radius_needs_a_secret_that_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    text = '[[adapters]]\nname = "r"\ntype = "radius"\nservers = [{ url = "radius://127.0.0.1:1812" }]\n'
    _, errors = one(text)
    assert errors == [
        "wsserver.toml: adapters[0].radius.secret_env: is required (the shared secret's environment "
        "variable), or secret_file"
    ]
    monkeypatch.delenv("NO_SUCH_SECRET", raising=False)
    _, errors = one(text + '[adapters.radius]\nsecret_env = "NO_SUCH_SECRET"\n')
    assert errors == [
        'wsserver.toml: adapters[0].radius.secret_env = "NO_SUCH_SECRET": environment variable '
        "NO_SUCH_SECRET is not set"
    ]
    monkeypatch.setenv("RADIUS_SECRET", "s3cret")
    settings, errors = one(
        text + '[adapters.radius]\nsecret_env = "RADIUS_SECRET"\n'
        'attributes = { Service-Type = "Login-User", NAS-Port = 7 }\n'
    )
    assert errors == []
    assert settings.radius.attributes == {"Service-Type": "Login-User", "NAS-Port": 7}
    _, errors = one(
        text + '[adapters.radius]\nsecret_env = "RADIUS_SECRET"\n[[adapters]]\nname = "r2"\ntype = "radius"\n'
    )
    assert errors == []


def test_radius_over_tls_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S", "x")
    _, errors = one(
        '[[adapters]]\nname = "r"\ntype = "radius"\nsecurity_protocol = "tls"\n'
        'servers = [{ url = "radius://h" }]\n[adapters.radius]\nsecret_env = "S"\n'
    )
    assert errors == [
        'wsserver.toml: adapters[0].servers[0].url = "radius://h": is not TLS but security_protocol = '
        '"tls": RADIUS over TLS (RadSec) is not supported'
    ]


def test_http_statuses() -> None:
    base = '[[adapters]]\nname = "h"\ntype = "http"\nservers = [{ url = "http://127.0.0.1:1/auth" }]\n[adapters.http]\n'
    settings, errors = one(base + 'accept_statuses = ["200", "204"]\nreject_statuses = ["4xx"]\n')
    assert errors == [] and settings.http.reject_statuses == ("4xx",)
    _, errors = one(base + 'reject_statuses = ["2xx"]\n')
    assert errors == ["wsserver.toml: adapters[0].http.reject_statuses: overlaps accept_statuses (e.g. 200)"]
    _, errors = one(base + 'accept_statuses = ["ok"]\n')
    assert errors == [
        'wsserver.toml: adapters[0].http.accept_statuses[0] = "ok": must be HTTP status codes as '
        'strings: "401", or a class such as "2xx"'
    ]


def test_ldap_modes_and_pins() -> None:
    base = '[[adapters]]\nname = "l"\ntype = "ldap"\nservers = [{ url = "ldap://h" }]\n'
    _, errors = one(base)
    assert errors == [
        "wsserver.toml: adapters[0].ldap: needs exactly one of bind_dn_template (simple bind) and "
        "search_base (search-then-bind)"
    ]
    _, errors = one(base + '[adapters.ldap]\nsearch_base = "dc=x"\nservice_dn = "cn=svc"\n')
    assert errors == [
        'wsserver.toml: adapters[0].ldap.service_dn = "cn=svc": needs service_password_env or '
        "service_password_file"
    ]
    _, errors = one(
        base + 'pinned_sha256 = ["ab:cd"]\n[adapters.ldap]\nbind_dn_template = "uid={username}"\n'
    )
    assert errors == [
        'wsserver.toml: adapters[0].pinned_sha256[0] = "ab:cd": must be a SHA-256 digest in hex '
        "(64 digits, colons allowed)"
    ]


def test_ocsp_may_use_the_aia() -> None:
    settings, errors = one('[[adapters]]\nname = "o"\ntype = "ocsp"\n[adapters.ocsp]\nfail_mode = "open"\n')
    assert errors == [] and settings.servers == () and settings.ocsp.fail_mode == "open"


def test_names_are_unique_and_errors_keep_their_index() -> None:
    tables = tomllib.loads(
        LDAP + LDAP.replace("ldap1", "x") + '[[adapters]]\nname = "bad name!"\ntype = "nope"\n'
    )
    settings, errors = parse_adapters(tables["adapters"], SRC, host_checks())
    assert [s.name for s in settings] == ["corp-ldap"]
    assert errors == [
        'wsserver.toml: adapters[2].name = "bad name!": must be 1-255 characters of a-z A-Z 0-9 _ . -',
        'wsserver.toml: adapters[2].type = "nope": must be one of "ldap", "radius", "http", "ocsp", "gemalto"',
        'wsserver.toml: adapters[1].name = "corp-ldap": duplicate adapter name (also adapters[0])',
    ]
