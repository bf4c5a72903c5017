"""wsserver.config.loader: TOML -> validated Config, with one error line per problem."""

from __future__ import annotations

import dataclasses

import pytest

from wsserver import preflight
from wsserver.config import (
    DEFAULT_CONFIG_TOML,
    Config,
    ConfigError,
    PoolConfig,
    PortConfig,
    default_config,
    load_config,
    parse_config,
)

ECHO = """
[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"
"""

PORT = """
[[ports]]
alias = "a"
port = 8080
"""


def errors_of(text: str, source: str = "wsserver.toml") -> list[str]:
    # With the checks beyond the text (wsserver.preflight): the lines `wsserver check` prints.
    with pytest.raises(ConfigError) as info:
        preflight.parse(text, source)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


# (id, file text, substrings the one error line must contain: key path and what is allowed)
INVALID = [
    (
        "duplicate alias",
        ECHO + PORT + '[[ports]]\nalias = "a"\nport = 8081\n',
        ['ports[1].alias = "a": duplicate alias (also ports[0])'],
    ),
    (
        "alias with a space",
        '[[ports]]\nalias = "my port"\nport = 8080\n',
        ['ports[0].alias = "my port": must be 1-255 characters of a-z A-Z 0-9 _ . -'],
    ),
    (
        "alias of 256 characters",
        f'[[ports]]\nalias = "{"x" * 256}"\nport = 8080\n',
        ["ports[0].alias = ", "(256 characters): must be 1-255 characters of a-z A-Z 0-9 _ . -"],
    ),
    (
        "backlog 0",
        PORT + "backlog = 0\n",
        ["ports[0].backlog = 0: must be an integer 1..65535"],
    ),
    (
        "backlog 70000",
        PORT + '[[ports]]\nalias = "b"\nport = 8081\nbacklog = 70000\n',
        ["ports[1].backlog = 70000: must be an integer 1..65535"],
    ),
    (
        "pool min larger than max",
        PORT + "[ports.pool]\nmin = 20\nmax = 10\n",
        ["ports[0]: pool.min = 20 is larger than pool.max = 10"],
    ),
    (
        "priority 11",
        PORT + "[ports.pool]\npriority = 11\n",
        ["ports[0].pool.priority = 11: must be an integer 1..10"],
    ),
    (
        "unknown key with a close match",
        PORT + "backlg = 100\n",
        ['ports[0].backlg = 100: unknown key; did you mean "backlog"?'],
    ),
    (
        "unknown key without a close match",
        PORT + "[ports.pool]\nzzz = 1\n",
        ["ports[0].pool.zzz = 1: unknown key; known keys: min, max, priority, mode, idle_shrink_ms"],
    ),
    (
        "unknown top-level key",
        PORT + "[port]\nalias = 1\n",
        ['port: unknown key; did you mean "ports"?'],
    ),
    (
        "adapters table",
        PORT + '[[adapters]]\nname = "corp"\n',
        ['wsserver.toml: adapters[0].type: is required (one of "ldap", "radius", "http", "ocsp", "gemalto")'],
    ),
    (
        "string for port",
        '[[ports]]\nalias = "a"\nport = "8080"\n',
        ['ports[0].port = "8080": must be an integer 1..65535'],
    ),
    (
        "bool for int",
        '[[ports]]\nalias = "a"\nport = true\n',
        ["ports[0].port = true: must be an integer 1..65535"],
    ),
    (
        "int for bool",
        PORT + "compression = 1\n",
        ["ports[0].compression = 1: must be a boolean (true/false)"],
    ),
    (
        "nan for a number",
        "[server]\ngraceful_timeout = nan\n",
        ["server.graceful_timeout = nan: must be a number 0..3600"],
    ),
    (
        "protocol http",
        PORT + 'protocol = "http"\n',
        ['ports[0].protocol = "http": must be one of "ws", "wss"'],
    ),
    (
        "missing port",
        '[[ports]]\nalias = "a"\n',
        ["ports[0].port: is required (an integer 1..65535)"],
    ),
    (
        "missing alias",
        "[[ports]]\nport = 8080\n",
        ["ports[0].alias: is required (1-255 characters of a-z A-Z 0-9 _ . -)"],
    ),
    (
        "table given a scalar",
        PORT + "pool = 5\n",
        ["ports[0].pool = 5: must be a table ([ports.pool])"],
    ),
    (
        "array of tables given a table",
        '[ports]\nalias = "a"\nport = 8080\n',
        ["ports: must be an array of tables ([[ports]])"],
    ),
    (
        "array of strings given a string",
        PORT + '[ports.access]\nip_deny = "10.0.0.0/8"\n',
        ['ports[0].access.ip_deny = "10.0.0.0/8": must be an array of strings'],
    ),
    (
        "bad CIDR",
        PORT + '[ports.access]\nip_deny = ["10.0.0.0/8", "10.0.0.0/33"]\n',
        ['ports[0].access.ip_deny[1] = "10.0.0.0/33": must be an IPv4 or IPv6 address or CIDR'],
    ),
    (
        "origin with a path",
        PORT + '[ports.origin]\nallowed = ["https://app.example.com/login"]\n',
        [
            'ports[0].origin.allowed[0] = "https://app.example.com/login": '
            "must be scheme://host[:port] with scheme http, https, ws or wss and no path"
        ],
    ),
    (
        "origin with a trailing slash",
        PORT + '[ports.origin]\nallowed = ["https://app.example.com/"]\n',
        ['ports[0].origin.allowed[0] = "https://app.example.com/": must be scheme://host[:port]'],
    ),
    (
        "origin with a space",
        PORT + '[ports.origin]\nallowed = [" https://app.example.com"]\n',
        ['ports[0].origin.allowed[0] = " https://app.example.com": must be scheme://host[:port]'],
    ),
    (
        "origin without scheme",
        PORT + '[ports.origin]\nallowed = ["app.example.com"]\n',
        ['ports[0].origin.allowed[0] = "app.example.com": must be scheme://host[:port]'],
    ),
    (
        "bad bind",
        PORT + 'bind = "[::1]"\n',
        ['ports[0].bind = "[::1]": must be "" (all addresses), an IPv4 or IPv6 address without brackets'],
    ),
    (
        "bind to a mistyped IPv4 address",
        PORT + 'bind = "10.0.0.300"\n',
        ['ports[0].bind = "10.0.0.300": must be "" (all addresses)'],
    ),
    (
        "unknown package",
        '[[packages]]\nname = "Demo"\n' + PORT + 'package = "Dmeo"\n',
        ['ports[0].package = "Dmeo": must name a [[packages]] entry (known: "Demo")'],
    ),
    (
        "package with none configured",
        ECHO + 'package = "Demo"\n',
        ['endpoints[0].package = "Demo": must name a [[packages]] entry (no [[packages]] configured)'],
    ),
    (
        "duplicate package name",
        '[[packages]]\nname = "Demo"\n[[packages]]\nname = "Demo"\n',
        ['packages[1].name = "Demo": duplicate package name (also packages[0])'],
    ),
    (
        "duplicate endpoint path",
        ECHO + ECHO,
        ['endpoints[1].path = "/echo": duplicate endpoint path (also endpoints[0])'],
    ),
    (
        "endpoint path not absolute",
        '[[endpoints]]\npath = "echo"\nhandler = "m:C"\n',
        ['endpoints[0].path = "echo": must be an absolute URL path such as /echo'],
    ),
    (
        "handler without colon",
        '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo.Echo"\n',
        [
            'endpoints[0].handler = "wsserver.endpoints.echo.Echo": '
            "must be module:Class, e.g. wsserver.endpoints.echo:Echo"
        ],
    ),
    (
        "handler with an empty module part",
        '[[endpoints]]\npath = "/echo"\nhandler = "wsserver..echo:Echo"\n',
        ['endpoints[0].handler = "wsserver..echo:Echo": must be module:Class'],
    ),
    (
        "same port on all addresses and one address",
        PORT + '[[ports]]\nalias = "b"\nport = 8080\nbind = "127.0.0.1"\n',
        ['ports[1].port = 8080: bind "127.0.0.1" port 8080 conflicts with ports[0] (bind "")'],
    ),
    (
        "same port on the same address written twice",
        PORT + 'bind = "::1"\n[[ports]]\nalias = "b"\nport = 8080\nbind = "0:0::1"\n',
        ['ports[1].port = 8080: bind "0:0::1" port 8080 conflicts with ports[0] (bind "::1")'],
    ),
    (
        "endpoint access names an unknown path",
        ECHO + PORT + '[ports.access]\ndeny_endpoints = ["/echo", "/chat"]\n',
        ['ports[0].access.deny_endpoints[1] = "/chat": must be a configured endpoint path (known: "/echo")'],
    ),
    (
        "wss without a key",
        PORT + 'protocol = "wss"\n',
        [
            'ports[0].protocol = "wss": needs a TLS key: set [ports.tls] keystore (and key_alias) or the '
            "server's default key in [server.tls]"
        ],
    ),
    (
        "server keystore",
        PORT + '[server.tls]\nkeystore = "main"\n',
        ['server.tls.keystore = "main": must name a [[keystores]] entry (no [[keystores]] configured)'],
    ),
    (
        "tls on a ws port",
        PORT + '[ports.tls]\nkeystore = "main"\n',
        [
            'ports[0].tls: is only used by wss ports (ports[0].protocol = "ws"); set protocol = "wss" or remove '
            "[ports.tls]"
        ],
    ),
    (
        "client_auth certificate on a ws port",
        PORT + 'client_auth = "certificate"\n',
        [
            'ports[0].client_auth = "certificate": needs a wss port with [ports.tls] client_certs = "require" '
            'or "request"'
        ],
    ),
    (
        "client_auth adapter",
        PORT + 'client_auth = "adapter:corp-ldap"\n',
        [
            'ports[0].client_auth = "adapter:corp-ldap": must name an [[adapters]] entry (no [[adapters]] configured)'
        ],
    ),
    (
        "client_auth misspelt",
        PORT + 'client_auth = "nnoe"\n',
        [
            'ports[0].client_auth = "nnoe": must be one of "none", "password", "token", "jwt", "certificate", '
            '"adapter:<name>"'
        ],
    ),
    (
        "no_auth_user without such a user",
        PORT + 'no_auth_user = "guest"\n',
        ['ports[0].no_auth_user = "guest": must be "" or a [[users]] name (no [[users]] configured)'],
    ),
    (
        "TOML syntax error",
        PORT + "backlog = = 5\n",
        ["wsserver.toml: line 5, column 11: invalid TOML: Invalid value"],
    ),
    (
        "TOML error at the end of the file",
        PORT + "backlog =",
        ["wsserver.toml: line 5 (end of file): invalid TOML"],
    ),
    (
        "TOML duplicate key",
        PORT + "port = 8081\n",
        ["wsserver.toml: line ", "invalid TOML: Cannot overwrite a value"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_invalid_config_gives_one_error_line(text: str, expected: list[str]) -> None:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    line = errors[0]
    assert line.startswith("wsserver.toml: ")
    assert "\n" not in line
    for part in expected:
        assert part in line


def test_exact_message_format() -> None:
    text = PORT + '[[ports]]\nalias = "b"\nport = 8081\nbacklog = 70000\n'
    assert errors_of(text) == ["wsserver.toml: ports[1].backlog = 70000: must be an integer 1..65535"]


def test_all_errors_are_collected() -> None:
    text = """
[server]
workers = -1
log_level = "loud"

[[adapters]]
name = "corp"

[[endpoints]]
path = "/echo"
handler = "nocolon"

[[ports]]
alias = "a b"
port = 70000
backlg = 5

[ports.pool]
min = 20
max = 10

[[ports]]
alias = "c"
port = 8081
package = "Nope"

[ports.access]
ip_allow = ["not-an-ip"]
"""
    errors = errors_of(text)
    expected = [
        "server.workers = -1: must be an integer 0..256",
        'server.log_level = "loud": must be one of "debug", "info", "warning", "error", "critical"',
        "adapters[0].type: is required",
        'endpoints[0].handler = "nocolon": must be module:Class',
        'ports[0].alias = "a b": must be 1-255 characters',
        "ports[0].port = 70000: must be an integer 1..65535",
        'ports[0].backlg = 5: unknown key; did you mean "backlog"?',
        "ports[0]: pool.min = 20 is larger than pool.max = 10",
        'ports[1].package = "Nope": must name a [[packages]] entry',
        'ports[1].access.ip_allow[0] = "not-an-ip": must be an IPv4 or IPv6 address or CIDR',
    ]
    assert len(errors) == len(expected), "\n".join(errors)
    for part in expected:
        assert any(part in line for line in errors), part


def test_bad_values_do_not_cause_follow_on_errors() -> None:
    # Two invalid aliases are not also "duplicates"; a port that is not a table adds no noise.
    text = '[[ports]]\nalias = "a b"\nport = 1\n[[ports]]\nalias = "a b"\nport = 2\n'
    assert len(errors_of(text)) == 2
    errors = errors_of("ports = [1, 2]\n")
    assert errors == [
        "wsserver.toml: ports[0] = 1: must be a table ([[ports]])",
        "wsserver.toml: ports[1] = 2: must be a table ([[ports]])",
    ]


def test_default_config() -> None:
    cfg = default_config()
    assert cfg.source == "<built-in>"
    assert cfg == parse_config(DEFAULT_CONFIG_TOML)
    (port,) = cfg.ports
    assert (port.alias, port.protocol, port.bind, port.port) == ("default_ws", "ws", "127.0.0.1", 8080)
    assert port.enabled and port.tls is None
    (endpoint,) = cfg.endpoints
    assert (endpoint.path, endpoint.handler) == ("/echo", "wsserver.endpoints.echo:Echo")
    assert cfg.packages == ()
    assert cfg.active_ports() == cfg.ports


def test_documented_defaults() -> None:
    # design.md section 3 and wsserver.example.toml: the operator relies on these.
    port = PortConfig(alias="a", port=1)
    assert port.backlog == 6000
    assert port.idle_timeout_ms == 300000
    assert (port.pool.min, port.pool.max, port.pool.priority) == (10, 200, 5)
    assert port.bind == "" and port.enabled and port.protocol == "ws"
    assert port.client_auth == "none" and port.no_auth_user == ""
    assert PoolConfig().mode == "greenlet"
    assert (port.access.mode, port.access.ip_mode) == ("allow", "allow")
    assert port.origin.allow_missing and not port.origin.same_origin
    parsed = parse_config(PORT).ports[0]
    assert parsed == dataclasses.replace(port, alias="a", port=8080)


def test_types_are_converted() -> None:
    text = (
        ECHO
        + 'subprotocols = ["chat", "superchat"]\n'
        + PORT
        + '[ports.access]\nip_deny = ["10.0.0.0/8", "::1"]\n'
        + "[server]\ngraceful_timeout = 5\nworker_timeout = 2.5\n"
    )
    cfg = parse_config(text)
    assert cfg.endpoints[0].subprotocols == ("chat", "superchat")
    assert cfg.ports[0].access.ip_deny == ("10.0.0.0/8", "::1")
    assert isinstance(cfg.server.graceful_timeout, float) and cfg.server.graceful_timeout == 5
    assert cfg.server.worker_timeout == 2.5
    assert isinstance(cfg, Config)


def test_valid_edge_values() -> None:
    text = (
        ECHO
        + '[[ports]]\nalias = "x"\nport = 1\nbind = "localhost"\nbacklog = 65535\n'
        + '[ports.origin]\nallowed = ["https://app.example.com", "http://[::1]:8080", "wss://h:443"]\n'
        + '[[ports]]\nalias = "y"\nport = 1\nbind = "::1"\n'
        + '[[ports]]\nalias = "z"\nport = 65535\nbind = "0.0.0.0"\n'
        + f'[[ports]]\nalias = "{"q" * 255}"\nport = 2\nprotocol = "wss"\n'
        + '[ports.tls]\nmin_version = "1.3"\nkeystore = "main"\n'
        + '[[keystores]]\nalias = "main"\ntype = "pem"\n[[keystores.keys]]\nalias = "k"\ncert = "c.pem"\n'
        + 'key = "k.pem"\n'
    )
    cfg = parse_config(text)
    assert [p.port for p in cfg.ports] == [1, 1, 65535, 2]
    assert cfg.ports[3].tls is not None and cfg.ports[3].tls.min_version == "1.3"


def test_wildcard_address_conflicts_with_its_family() -> None:
    text = PORT + 'bind = "0.0.0.0"\n[[ports]]\nalias = "b"\nport = 8080\nbind = "127.0.0.1"\n'
    assert "conflicts with ports[0]" in errors_of(text)[0]
    text = PORT + 'bind = "0.0.0.0"\n[[ports]]\nalias = "b"\nport = 8080\nbind = "::1"\n'
    assert parse_config(text).ports[1].bind == "::1"


def test_load_config(tmp_path) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text(ECHO + PORT, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert cfg.ports[0].alias == "a"
    assert load_config(None) == default_config()


def test_load_config_errors_name_the_file(tmp_path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.errors == [f"{missing}: cannot read config file: No such file or directory"]

    bad = tmp_path / "bad.toml"
    bad.write_text(PORT + "backlog = 0\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"bad\.toml: ports\[0\]\.backlog = 0: must be an integer 1\.\.65535"
    ):
        load_config(str(bad))

    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'alias = "a"\n\xff\n')
    with pytest.raises(ConfigError, match=r"binary\.toml: line 2: invalid TOML: not UTF-8 text"):
        load_config(binary)


# --- users and client authentication (issue 7) ----------------------------------------------

_HASH = "scrypt$1024$8$1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
_USER = f'[[users]]\nname = "alice"\npassword_hash = "{_HASH}"\n'
_JWT_KEY = "k" * 40

AUTH_INVALID = [
    (
        "plain password in password_hash",
        ECHO + PORT + '[[users]]\nname = "alice"\npassword_hash = "hunter2"\n',
        [
            "users[0].password_hash: must be a hash made by `wsserver hash-password`",
            "plain passwords are refused",
        ],
    ),
    (
        "scrypt hash with a bad N",
        ECHO
        + PORT
        + '[[users]]\nname = "alice"\npassword_hash = "scrypt$1000$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"\n',
        ["users[0].password_hash: scrypt N must be a power of two"],
    ),
    (
        "duplicate user",
        ECHO + PORT + _USER + _USER,
        ['users[1].name = "alice": duplicate user name (also users[0])'],
    ),
    (
        "user name with a colon",
        ECHO + PORT + '[[users]]\nname = "a:b"\n',
        ['users[0].name = "a:b": must be 1-255 printable ASCII characters without spaces or :'],
    ),
    (
        "short token",
        ECHO + PORT + '[[users]]\nname = "alice"\ntoken = "abc"\n',
        ["users[0].token: must be a bearer token of at least 16 characters"],
    ),
    (
        "same token twice",
        ECHO + PORT + '[[users]]\nname = "a"\ntoken = "0123456789abcdefXYZ"\n'
        '[[users]]\nname = "b"\ntoken = "0123456789abcdefXYZ"\n',
        ["users[1].token: the same token as users[0]"],
    ),
    (
        "unknown connection type",
        ECHO + PORT + '[[users]]\nname = "alice"\nconnection_types = ["ws", "http"]\n',
        ['users[0].connection_types[1] = "http": must be one of "ws", "wss", "admin"'],
    ),
    (
        "user limited to an unknown port",
        ECHO + PORT + '[[users]]\nname = "alice"\nports = ["b"]\n',
        ['users[0].ports[0] = "b": must be a configured [[ports]] alias (known: "a")'],
    ),
    (
        "user limited to an unknown endpoint",
        ECHO + PORT + '[[users]]\nname = "alice"\nendpoints = ["/chat"]\n',
        ['users[0].endpoints[0] = "/chat": must be a configured endpoint path (known: "/echo")'],
    ),
    (
        "no_auth_user names nobody",
        ECHO + PORT + 'no_auth_user = "guest"\n' + _USER,
        ['ports[0].no_auth_user = "guest": must be "" or a [[users]] name (known: "alice")'],
    ),
    (
        "password auth without any password",
        ECHO + PORT + 'client_auth = "password"\n[[users]]\nname = "alice"\n',
        ['ports[0].client_auth = "password": no [[users]] entry has a password_hash'],
    ),
    (
        "token auth without any token",
        ECHO + PORT + 'client_auth = "token"\n' + _USER,
        ['ports[0].client_auth = "token": no [[users]] entry has a token'],
    ),
    (
        "client_auth adapter without that adapter",
        ECHO + PORT + 'client_auth = "adapter:corp"\n',
        [
            'ports[0].client_auth = "adapter:corp": must name an [[adapters]] entry (no [[adapters]] configured)'
        ],
    ),
    (
        "token_query_param on a password port",
        ECHO + PORT + 'client_auth = "password"\ntoken_query_param = "t"\n' + _USER,
        ['ports[0].token_query_param = "t": is only used with client_auth = "token" or "jwt"'],
    ),
    (
        "jwt without a key",
        ECHO + PORT + 'client_auth = "jwt"\n',
        ["ports[0].jwt: set exactly one of key, key_file, key_env"],
    ),
    (
        "jwt with a short secret",
        ECHO + PORT + 'client_auth = "jwt"\n[ports.jwt]\nkey = "short"\n',
        ["ports[0].jwt: an HS256 secret must be at least 32 bytes"],
    ),
    (
        "jwt key_env not set",
        ECHO + PORT + 'client_auth = "jwt"\n[ports.jwt]\nkey_env = "WSSERVER_TEST_SURELY_UNSET_VAR"\n',
        ["ports[0].jwt: environment variable WSSERVER_TEST_SURELY_UNSET_VAR is not set or empty"],
    ),
    (
        "jwt unknown algorithm",
        ECHO + PORT + f'client_auth = "jwt"\n[ports.jwt]\nkey = "{_JWT_KEY}"\nalgorithms = ["none"]\n',
        ['ports[0].jwt.algorithms[0] = "none": must be one of "HS256", "RS256", "ES256"'],
    ),
    (
        "jwt cookie without an origin check",
        ECHO + PORT + f'client_auth = "jwt"\n[ports.jwt]\nkey = "{_JWT_KEY}"\ncookie = "session"\n',
        ['ports[0].jwt.cookie = "session": cookie authentication needs an Origin check'],
    ),
    (
        "jwt with no way to send it",
        ECHO + PORT + f'client_auth = "jwt"\n[ports.jwt]\nkey = "{_JWT_KEY}"\nbearer = false\n',
        ["ports[0].jwt: no way to send a token"],
    ),
    (
        "rate limit with a bad refill",
        ECHO + PORT + "[ports.auth_rate_limit]\nrefill_per_minute = 0\n",
        ["ports[0].auth_rate_limit.refill_per_minute = 0: must be a number 0.001..1000000"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in AUTH_INVALID], ids=[i for i, _, _ in AUTH_INVALID]
)
def test_invalid_auth_config_gives_one_error_line(text: str, expected: list[str]) -> None:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    for part in expected:
        assert part in errors[0], errors[0]


def test_secrets_are_not_repeated_in_errors() -> None:
    text = (
        ECHO + PORT + '[[users]]\nname = "alice"\npassword_hash = "MyPlainPassw0rd"\ntoken = "short-secret"\n'
    )
    errors = errors_of(text)
    assert len(errors) == 2
    assert not any("MyPlainPassw0rd" in e or "short-secret" in e for e in errors)


def test_valid_auth_config() -> None:
    text = (
        ECHO + PORT + 'client_auth = "jwt"\nno_auth_user = "alice"\ntoken_query_param = "access_token"\n'
        f'[ports.jwt]\nkey = "{_JWT_KEY}"\ncookie = "session"\naudience = "ws"\n'
        "[ports.origin]\nsame_origin = true\n"
        "[ports.auth_rate_limit]\nburst = 3\nrefill_per_minute = 1\n"
        + _USER
        + 'connection_types = ["wss"]\nports = ["a"]\nendpoints = ["/echo"]\n'
    )
    cfg = parse_config(text)
    port, user = cfg.ports[0], cfg.users[0]
    assert (port.client_auth, port.no_auth_user, port.token_query_param) == ("jwt", "alice", "access_token")
    assert (port.jwt.cookie, port.jwt.algorithms, port.jwt.leeway_s) == ("session", ("HS256",), 30)
    assert (port.auth_rate_limit.burst, port.auth_rate_limit.refill_per_minute) == (3, 1.0)
    assert (user.connection_types, user.ports, user.endpoints) == (("wss",), ("a",), ("/echo",))
    assert _HASH not in repr(user)


@pytest.mark.parametrize(
    ("auth", "extra", "expected"),
    [
        (
            "certificate",
            "",
            'ports[0].client_auth = "certificate": needs a wss port with [ports.tls] '
            'client_certs = "require" or "request"',
        ),
        (
            "adapter:nope",
            "",
            'ports[0].client_auth = "adapter:nope": must name an [[adapters]] entry '
            "(no [[adapters]] configured)",
        ),
        (
            "adapter:ocsp",
            '[[adapters]]\nname = "ocsp"\ntype = "ocsp"\n[adapters.load_balancing]\n'
            "server_request_attempts = 1\n",
            'ports[0].client_auth = "adapter:ocsp": an OCSP adapter checks certificates, not passwords: use an '
            'ldap, radius or http adapter (for client certificates: [ports.tls] ocsp = "ocsp")',
        ),
        (
            "kerberos",
            "",
            'ports[0].client_auth = "kerberos": must be one of "none", "password", "token", "jwt", '
            '"certificate", "adapter:<name>"',
        ),
    ],
)
def test_certificate_and_adapter_client_auth_rules(auth, extra, expected):
    text = ECHO + extra + f'[[ports]]\nalias = "a"\nport = 8080\nclient_auth = "{auth}"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, "wsserver.toml")
    assert info.value.errors == [f"wsserver.toml: {expected}"]


# ---- [cluster] ------------------------------------------------------------------------------

BROKER_ALLOWED = "redis://HOST[:PORT][/DB], rediss://HOST[:PORT][/DB] (TLS) or unix:///PATH[?db=DB]"


def test_cluster_is_absent_by_default():
    assert parse_config(ECHO + PORT).cluster is None
    assert default_config().cluster is None


@pytest.mark.parametrize(
    "broker",
    [
        "redis://127.0.0.1:6379/0",
        "redis://redis.internal",
        "rediss://[::1]:6380/2",
        "redis://user@h:1/",
        "unix:///run/redis/redis.sock",
        "unix:///tmp/r.sock?db=3",
    ],
)
def test_cluster_accepts_redis_urls(broker):
    cfg = parse_config(ECHO + PORT + f'[cluster]\nbroker = "{broker}"\n')
    assert cfg.cluster is not None
    assert cfg.cluster.broker == broker
    assert (cfg.cluster.node, cfg.cluster.connect_timeout_ms, cfg.cluster.password_env) == ("", 2000, "")


@pytest.mark.parametrize(
    "broker",
    [
        "http://127.0.0.1:6379",
        "redis://:6379/0",
        "redis://",
        "redis://h:99999",
        "redis://h/x",
        "redis://h?x=1",
        "unix://host/sock",
        "unix://",
        "127.0.0.1:6379",
        "redis://:secret@h:6379/0",
        "redis://u:secret@h/0",
    ],
)
def test_cluster_rejects_bad_broker_urls_in_one_line(broker):
    [line] = errors_of(ECHO + PORT + f'[cluster]\nbroker = "{broker}"\n')
    assert line.startswith("wsserver.toml: cluster.broker: must be ")
    assert BROKER_ALLOWED in line and "password_env" in line
    assert "secret" not in line  # a URL may hold a password: never shown


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("[cluster]\n", "cluster.broker: is required (redis://"),
        (
            '[cluster]\nbrokr = "redis://h"\n',
            'cluster.brokr = "redis://h": unknown key; did you mean "broker"?',
        ),
        (
            '[cluster]\nbroker = "redis://h"\nconnect_timeout_ms = 0\n',
            "cluster.connect_timeout_ms = 0: must be an integer 1..60000",
        ),
        (
            '[cluster]\nbroker = "redis://h"\nnode = "a b"\n',
            'cluster.node = "a b": must be "" or 1-255 characters',
        ),
        (
            '[cluster]\nbroker = "redis://h"\npassword_env = "WSSERVER_TEST_UNSET_VAR"\n',
            'cluster.password_env = "WSSERVER_TEST_UNSET_VAR": this environment variable is not set or empty',
        ),
        ('cluster = "redis://h"\n', 'cluster = "redis://h": must be a table ([cluster])'),
        (
            '[cluster]\nbroker = "redis://h"\ntls_ca_file = "ca.pem"\n',
            'cluster.tls_ca_file = "ca.pem": is only used with a rediss:// broker',
        ),
        (
            '[cluster]\nbroker = "redis://h"\nprefix = "a b"\n',
            'cluster.prefix = "a b": must be 1-64 characters',
        ),
        (
            '[cluster]\nbroker = "redis://h"\npresence_ttl_s = 86401\n',
            "cluster.presence_ttl_s = 86401: must be an integer 0..86400",
        ),
        (
            '[cluster]\nbroker = "redis://h"\nready_requires_broker = "yes"\n',
            'cluster.ready_requires_broker = "yes": must be',
        ),
    ],
)
def test_cluster_errors(table, expected, monkeypatch):
    monkeypatch.delenv("WSSERVER_TEST_UNSET_VAR", raising=False)
    lines = errors_of(table + ECHO + PORT)
    assert all(line.startswith("wsserver.toml: ") for line in lines)
    assert any(expected in line for line in lines), lines


def test_cluster_password_env_set(monkeypatch):
    monkeypatch.setenv("WSSERVER_TEST_REDIS_PW", "s3cret")
    cfg = parse_config(
        ECHO + PORT + '[cluster]\nbroker = "redis://h"\nnode = "n-1"\npassword_env = '
        '"WSSERVER_TEST_REDIS_PW"\nconnect_timeout_ms = 500\n'
    )
    assert cfg.cluster.node == "n-1" and cfg.cluster.connect_timeout_ms == 500


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            'proxy_protocol = "v3"\n',
            'ports[0].proxy_protocol = "v3": must be one of "off", "v1", "v2", "any"',
        ),
        (
            'proxy_protocl = "v1"\n',
            'ports[0].proxy_protocl = "v1": unknown key; did you mean "proxy_protocol"?',
        ),
        ('proxy_protocol = "v1"\n', 'ports[0].proxy_protocol = "v1": needs [ports.access] trusted_proxies'),
        (
            'proxy_protocol = "any"\n[ports.access]\ntrusted_proxies = []\n',
            'ports[0].proxy_protocol = "any": needs [ports.access] trusted_proxies',
        ),
    ],
)
def test_proxy_protocol_errors(extra: str, expected: str) -> None:
    errors = errors_of(PORT + extra)
    assert len(errors) == 1, errors
    assert errors[0].startswith("wsserver.toml: " + expected)


def test_proxy_protocol_accepted_on_wss_ports() -> None:
    text = PORT + 'protocol = "wss"\nproxy_protocol = "v2"\n[ports.access]\ntrusted_proxies = ["10.0.0.5"]\n'
    assert not [e for e in errors_of(text) if "proxy_protocol" in e]


@pytest.mark.parametrize("version", ["off", "v1", "v2", "any"])
def test_proxy_protocol_values(version: str) -> None:
    cfg = parse_config(
        PORT + f'proxy_protocol = "{version}"\n[ports.access]\ntrusted_proxies = ["10.0.0.5"]\n'
    )
    assert cfg.ports[0].proxy_protocol == version
    assert parse_config(PORT).ports[0].proxy_protocol == "off"
