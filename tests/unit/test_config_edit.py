"""`wsserver port reset-access`: endpoint access back to the default, comments kept, atomic."""

from __future__ import annotations

import pytest

from wsserver.cli import main
from wsserver.config import ConfigError, load_config
from wsserver.config.edit import EditError, reset_access_text

CONFIG = """\
# operator's notes stay
[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"   # the echo

[[endpoints]]
path = "/admin"
handler = "wsserver.endpoints.echo:Echo"

[[ports]]
alias = "a"
port = 8080

[ports.access]
mode = "deny"                 # only the admin endpoint
allow_endpoints = ["/admin"]
ip_deny = ["10.0.0.0/8"]      # keep this rule

[[ports]]
alias = "b"
port = 8081

[ports.access]
deny_endpoints = ["/admin"]
"""


def test_reset_keeps_ip_rules_and_comments() -> None:
    text, changed = reset_access_text(CONFIG, "a")
    assert changed
    assert "# operator's notes stay" in text and "# the echo" in text and "# keep this rule" in text
    assert 'mode = "deny"' not in text and "allow_endpoints" not in text
    assert 'deny_endpoints = ["/admin"]' in text  # port b untouched


def test_reset_drops_an_emptied_table() -> None:
    text, changed = reset_access_text(CONFIG, "b")
    assert changed
    assert text.count("[ports.access]") == 1


def test_reset_unknown_alias() -> None:
    with pytest.raises(EditError, match="no port with alias 'zz'"):
        reset_access_text(CONFIG, "zz", "wsserver.toml")


def test_cli(tmp_path, capsys) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text(CONFIG)
    path.chmod(0o640)
    assert main(["port", "reset-access", "a", "-c", str(path)]) == 0
    cfg = load_config(path)
    assert (cfg.ports[0].access.mode, cfg.ports[0].access.allow_endpoints) == ("allow", ())
    assert cfg.ports[0].access.ip_deny == ("10.0.0.0/8",)
    assert path.stat().st_mode & 0o777 == 0o640
    assert "reset to the default" in capsys.readouterr().out
    assert main(["port", "reset-access", "a", "-c", str(path)]) == 0
    assert "already at the default" in capsys.readouterr().out
    assert main(["port", "reset-access", "nope", "-c", str(path)]) == 2
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_a_config_nested_too_deeply_is_one_error_line():
    from wsserver.config import ConfigError, parse_config

    try:
        parse_config("a = " + "[" * 50_000 + "]" * 50_000, "deep.toml")
    except ConfigError as exc:
        assert exc.errors == ["deep.toml: invalid TOML: arrays or inline tables nested too deeply"]
    else:
        raise AssertionError("accepted")


def test_check_refuses_a_file_without_ports_unless_allowed(tmp_path, capsys):
    path = tmp_path / "wsserver.toml"
    path.write_text("")
    assert main(["check", "-c", str(path)]) == 2
    assert "no [[ports]] declared" in capsys.readouterr().err
    path.write_text("[server]\nallow_no_ports = true\n")
    assert main(["check", "-c", str(path)]) == 0
    path.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="allow_no_ports = true"):
        load_config(path)
