"""[metrics] and ports[].health_path in the config; the handshake's plain-GET hook for health checks."""

from __future__ import annotations

import pytest

from wsserver import preflight
from wsserver.config import ConfigError, default_config
from wsserver.protocol import Handshake, HandshakeError

BASE = """
[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"
[[ports]]
alias = "p"
port = 8080
bind = "127.0.0.1"
{port_extra}
{tables}
"""


def config(tables: str = "", port_extra: str = ""):
    return preflight.parse(BASE.format(tables=tables, port_extra=port_extra), "t.toml")


def errors(tables: str = "", port_extra: str = "") -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(tables, port_extra)
    return info.value.errors


def test_defaults():
    cfg = default_config()
    assert (cfg.metrics.enabled, cfg.metrics.bind, cfg.metrics.port) == (True, "127.0.0.1", 9108)
    assert cfg.ports[0].health_path == "/healthz"


def test_metrics_table_is_accepted():
    cfg = config(
        '[metrics]\nenabled = false\nbind = "::1"\nport = 9200\nallow = ["10.0.0.0/8", "::1"]',
        'health_path = ""',
    )
    assert (cfg.metrics.enabled, cfg.metrics.bind, cfg.metrics.port) == (False, "::1", 9200)
    assert cfg.metrics.allow == ("10.0.0.0/8", "::1") and cfg.ports[0].health_path == ""


@pytest.mark.parametrize(
    ("tables", "port_extra", "expected"),
    [
        ("[metrics]\nport = 70000", "", "t.toml: metrics.port = 70000: must be an integer 1..65535"),
        ('[metrics]\nallow = ["10.0.0.300"]', "", "t.toml: metrics.allow[0]"),
        (
            '[metrics]\nuser = "prom"',
            "",
            't.toml: metrics.user = "prom": needs password_hash or password_env',
        ),
        ('[metrics]\npassword_env = "HOME"', "", 't.toml: metrics.user = "": is required with'),
        ('[metrics]\nuser = "p"\npassword_hash = "plain"', "", "t.toml: metrics.password_hash:"),
        (
            '[metrics]\nuser = "p"\npassword_env = "WSSERVER_UNIT_SURELY_UNSET"',
            "",
            'metrics.password_env = "WSSERVER_UNIT_SURELY_UNSET": this environment variable is not set',
        ),
        (
            "[metrics]\nport = 8080",
            "",
            't.toml: metrics.port = 8080: bind "127.0.0.1" port 8080 conflicts with ports[0]',
        ),
        ('[metrics]\nbind = ""\nport = 8080', "", "conflicts with ports[0]"),
        (
            "",
            'health_path = "healthz"',
            't.toml: ports[0].health_path = "healthz": must be "" or an absolute URL path',
        ),
    ],
)
def test_metrics_errors(tables, port_extra, expected):
    found = errors(tables, port_extra)
    assert any(line.startswith(expected) or expected in line for line in found), found


def test_plaintext_password_hash_is_never_shown():
    found = errors('[metrics]\nuser = "p"\npassword_hash = "hunter2-plain"')
    assert not any("hunter2" in line for line in found)


def test_a_disabled_metrics_port_may_equal_a_port():
    assert config("[metrics]\nenabled = false\nport = 8080").metrics.port == 8080


# ---- the protocol hook ------------------------------------------------------------------------


def refused(raw: bytes) -> tuple[int, str | None]:
    hs = Handshake()
    hs.receive_data(raw)
    with pytest.raises(HandshakeError) as info:
        hs.next_request()
    return info.value.status, hs.plain_get_path


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "/healthz"),
        (b"GET /healthz?full=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "/healthz"),
        (b"GET /healthz HTTP/1.0\r\n\r\n", "/healthz"),  # HAProxy's bare httpchk line
        (b"GET /x HTTP/1.1\r\n\r\n", None),  # HTTP/1.1 without Host: malformed (h11)
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", None),
        (b"OPTIONS / HTTP/1.0\r\n\r\n", None),
        (
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            None,
        ),  # no key
    ],
)
def test_plain_get_path(raw, path):
    status, found = refused(raw)
    assert status == 400 and found == path


def test_plain_get_path_is_none_before_a_request():
    hs = Handshake()
    assert hs.plain_get_path is None
    hs.receive_data(b"GARBAGE\r\n\r\n")
    with pytest.raises(HandshakeError):
        hs.next_request()
    assert hs.plain_get_path is None
