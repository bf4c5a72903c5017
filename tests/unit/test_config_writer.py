"""wsserver.config.writer: dump_config round-trips; write_atomic never leaves half a file."""

from __future__ import annotations

import dataclasses
import os
import stat
import tomllib
from pathlib import Path

import pytest

from wsserver.config import (
    Config,
    EndpointConfig,
    PackageConfig,
    default_config,
    dump_config,
    parse_config,
    write_atomic,
)

# wsserver.example.toml without what this version does not support yet
# ([metrics], [admin], users, adapters).
EXAMPLE_LIKE = """
[server]
workers = 4
graceful_timeout = 12.5
worker_timeout = 30
log_level = "debug"
log_format = "json"
pid_file = "/run/wsserver.pid"

[server.tls]
keystore = "main"
key_alias = "default"

[[keystores]]
alias = "main"
type = "pkcs12"
path = "certs/server.p12"
password_env = "WSSERVER_KEYSTORE_PASSWORD"

[[truststores]]
alias = "clients"
type = "pem"
path = "certs/client-ca.pem"

[[packages]]
name = "Demo"
enabled = true
description = "Demo endpoints"

[[packages]]
name = "Off"
enabled = false

[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"
package = "Demo"
subprotocols = ["chat", "superchat"]

[[endpoints]]
path = "/other"
handler = "some.module:Other"

[[ports]]
alias = "demo_ws"
enabled = true
protocol = "wss"
port = 8080
bind = ""
backlog = 6000
description = "the \\"demo\\" port\\nsecond line"
package = ""
idle_timeout_ms = 300000
handshake_timeout_ms = 10000
max_message_size = 1048576
max_header_size = 16384
compression = true
max_connections = 0
max_queue = 32
write_limit = 1048576
ping_interval_ms = 20000
ping_timeout_ms = 20000
close_timeout_ms = 10000
client_auth = "none"
no_auth_user = ""
auth_timeout_ms = 2000

[ports.pool]
min = 10
max = 200
priority = 5
mode = "greenlet"

[ports.access]
mode = "deny"
deny_endpoints = []
allow_endpoints = ["/echo"]
ip_mode = "allow"
ip_deny = ["10.0.0.0/8", "2001:db8::/32", "192.168.1.1"]
ip_allow = []

[ports.origin]
same_origin = true
allowed = ["https://app.example.com", "http://localhost:3000"]
allow_missing = false

[ports.tls]
client_certs = "require"
truststore = "clients"
min_version = "1.3"

[[ports]]
alias = "internal.v2-b"
port = 9000
bind = "::1"
package = "Off"
enabled = false

[ports.pool]
min = 0
max = 1
priority = 10
mode = "thread"
idle_shrink_ms = 0
"""


def test_example_like_config_round_trips() -> None:
    cfg = parse_config(EXAMPLE_LIKE, "wsserver.toml")
    assert cfg.ports[0].tls is not None and cfg.ports[1].tls is None
    assert cfg.ports[0].description == 'the "demo" port\nsecond line'
    text = dump_config(cfg)
    assert parse_config(text) == cfg
    assert dump_config(parse_config(text)) == text.replace("wsserver.toml", "<string>")


def test_default_config_round_trips() -> None:
    cfg = default_config()
    assert parse_config(dump_config(cfg)) == cfg


def test_dump_writes_every_key() -> None:
    data = tomllib.loads(dump_config(parse_config(EXAMPLE_LIKE)))
    assert set(data) == {
        "server",
        "packages",
        "endpoints",
        "ports",
        "keystores",
        "truststores",
        "metrics",
        "admin",
    }
    # Keystores too are written with every key (their empty ones included); a PEM keystore's
    # keys as [[keystores.keys]] (test_tls_settings).
    assert data["keystores"] == [
        {
            "alias": "main",
            "type": "pkcs12",
            "path": "certs/server.p12",
            "password_env": "WSSERVER_KEYSTORE_PASSWORD",
            "password_file": "",
            "key_password_env": "",
            "key_password_file": "",
            "token": "",
        }
    ]
    assert len(data["ports"]) == 2
    port = data["ports"][1]
    names = {f.name for f in dataclasses.fields(type(default_config().ports[0]))}
    assert set(port) == names - {"tls"}  # an absent [ports.tls] stays absent: it means "use [server.tls]"
    assert port["backlog"] == 6000 and port["pool"]["mode"] == "thread"
    tls_keys = {f.name for f in dataclasses.fields(type(parse_config(EXAMPLE_LIKE).ports[0].tls))}
    assert set(data["ports"][0]["tls"]) == tls_keys  # [ports.tls.sni] included, written as an inline table
    assert set(data["server"]["tls"]) == {"keystore", "key_alias"}


def test_dump_is_readable() -> None:
    text = dump_config(default_config())
    assert '[[ports]]\nalias = "default_ws"\nport = 8080\n' in text
    assert 'protocol = "ws"                # ws | wss\n' in text
    assert "\n[ports.pool]\nmin = 10" in text
    assert text.startswith("# wsserver effective configuration (source: <built-in>).")


@pytest.mark.parametrize(
    "awkward",
    [
        'quote " backslash \\ tab \t',
        "newline\nreturn\r",
        "control \x00\x01\x1f\x7f",
        "unicode é 中文 🙂",
        "'''",
    ],
)
def test_strings_round_trip(awkward: str) -> None:
    cfg = dataclasses.replace(
        default_config(),
        packages=(PackageConfig(name="p", description=awkward),),
    )
    assert parse_config(dump_config(cfg)).packages[0].description == awkward


def test_long_arrays_are_written_one_item_per_line() -> None:
    protocols = tuple(f"protocol-number-{i}" for i in range(10))
    cfg = Config(endpoints=(EndpointConfig(path="/x", handler="m:C", subprotocols=protocols),))
    text = dump_config(cfg)
    assert '    "protocol-number-3",\n' in text
    assert parse_config(text) == cfg


# --- write_atomic ---------------------------------------------------------------------------


def test_write_atomic_creates_and_replaces(tmp_path) -> None:
    path = tmp_path / "wsserver.toml"
    write_atomic(path, "one\n")
    assert path.read_text() == "one\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomic(str(path), "two ü\n")
    assert path.read_text(encoding="utf-8") == "two ü\n"
    assert os.listdir(tmp_path) == ["wsserver.toml"]


def test_write_atomic_keeps_the_mode(tmp_path) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text("old\n")
    path.chmod(0o640)
    write_atomic(path, "new\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_text() == "new\n"


def test_write_atomic_follows_a_symlink(tmp_path) -> None:
    target = tmp_path / "real.toml"
    target.write_text("old\n")
    link = tmp_path / "wsserver.toml"
    link.symlink_to(target)
    write_atomic(link, "new\n")
    assert link.is_symlink()
    assert target.read_text() == "new\n"


def test_crash_before_rename_leaves_the_old_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text("old content\n")

    def crash(src: str, dst: str) -> None:
        # The new file is fully written by now: a crash here must not be visible at ``path``.
        assert Path(src).read_text() == "new content\n"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, "new content\n")
    assert path.read_text() == "old content\n"
    assert os.listdir(tmp_path) == ["wsserver.toml"]  # no temp file left behind


def test_crash_while_writing_leaves_the_old_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text("old content\n")

    def crash(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="Input/output"):
        write_atomic(path, "new content\n")
    assert path.read_text() == "old content\n"
    assert os.listdir(tmp_path) == ["wsserver.toml"]
