"""The admin's config-file edits: TOML text in, TOML text out, comments kept, results valid."""

from __future__ import annotations

import tomllib

import pytest

from wsserver.admin import edits
from wsserver.config import ConfigError, parse_config

CONFIG = """\
# The operator's file: comments and order must survive every edit.
[server]
workers = 2            # two is plenty here

[[packages]]
name = "Demo"          # the demo package
enabled = true
description = "Demo endpoints"

[[packages]]
name = "Other"
enabled = true

[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"
package = "Demo"

[[endpoints]]
path = "/other"
handler = "wsserver.endpoints.echo:Echo"
package = "Other"

# the demo port
[[ports]]
alias = "demo_ws"
port = 8080            # keep this comment
bind = "127.0.0.1"
package = "Demo"

[ports.pool]
min = 1
max = 20

[[ports]]
alias = "other_ws"
port = 8081
package = "Other"

[ports.access]
mode = "deny"
allow_endpoints = ["/other"]
"""


def test_patch_port_merges_and_keeps_comments() -> None:
    text = edits.patch_port(
        CONFIG,
        "demo_ws",
        {
            "backlog": 128,
            "pool": {"max": 50, "min": None},
            "origin": {"allowed": ["https://app.example.com"]},
        },
    )
    cfg = parse_config(text)
    port = cfg.ports[0]
    assert (port.backlog, port.pool.max, port.pool.min) == (128, 50, 10)  # min back to its default
    assert port.origin.allowed == ("https://app.example.com",)
    for comment in ("# keep this comment", "# two is plenty here", "# the demo package", "# the demo port"):
        assert comment in text
    assert text.index('alias = "demo_ws"') < text.index('alias = "other_ws"')  # order kept
    assert cfg.ports[1] == parse_config(CONFIG).ports[1]  # the other port untouched


def test_patch_removing_every_key_of_a_table_removes_the_table() -> None:
    text = edits.patch_port(CONFIG, "other_ws", {"access": {"mode": None, "allow_endpoints": None}})
    assert "[ports.access]" not in text
    assert parse_config(text).ports[1].access.mode == "allow"


def test_unknown_port_and_package() -> None:
    with pytest.raises(edits.NotFound):
        edits.set_port_enabled(CONFIG, "nope", False)
    with pytest.raises(edits.NotFound):
        edits.set_package_enabled(CONFIG, "Nope", False)


def test_add_and_delete_port() -> None:
    text = edits.add_port(
        CONFIG,
        {
            "alias": "new_ws",
            "port": 8082,
            "description": "added",
            "pool": {"max": 5, "min": 1},
            "access": {"mode": "allow"},
        },
    )
    cfg = parse_config(text)
    assert [p.alias for p in cfg.ports] == ["demo_ws", "other_ws", "new_ws"]
    assert cfg.ports[2].pool.max == 5
    assert "[ports.pool]" in text.split('alias = "new_ws"')[1]  # sub-tables, not inline tables
    with pytest.raises(edits.EditError) as info:
        edits.add_port(text, {"alias": "new_ws", "port": 8083})
    assert info.value.status == 409
    text = edits.delete_port(text, "other_ws")
    assert [p.alias for p in parse_config(text).ports] == ["demo_ws", "new_ws"]
    assert "# keep this comment" in text


def test_invalid_result_is_left_to_the_validator() -> None:
    text = edits.patch_port(CONFIG, "demo_ws", {"backlog": 70000})
    with pytest.raises(ConfigError) as info:
        parse_config(text, "wsserver.toml")
    assert info.value.errors == ["wsserver.toml: ports[0].backlog = 70000: must be an integer 1..65535"]


def test_package_enable_disable() -> None:
    text = edits.set_package_enabled(CONFIG, "Demo", False)
    cfg = parse_config(text)
    assert [p.alias for p in cfg.active_ports()] == ["other_ws"]
    assert [e.path for e in cfg.active_endpoints()] == ["/other"]
    assert "# the demo package" in text


def test_export_is_self_contained() -> None:
    exported = edits.export_package(CONFIG, "Demo", "wsserver.toml")
    data = tomllib.loads(exported)
    assert set(data) == {"packages", "endpoints", "ports"}
    assert [p["name"] for p in data["packages"]] == ["Demo"]
    assert [e["path"] for e in data["endpoints"]] == ["/echo"]
    assert [p["alias"] for p in data["ports"]] == ["demo_ws"]
    assert data["ports"][0]["pool"] == {"min": 1, "max": 20}
    cfg = parse_config(exported)  # valid on its own
    assert cfg.ports[0].port == 8080


TARGET = """\
# the target server
[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"

[[ports]]
alias = "mine"
port = 8080          # the same number as demo_ws, other settings
backlog = 77
description = "the target's own"
"""


def test_import_creates_what_is_missing_and_keeps_what_exists() -> None:
    source = edits.add_port(CONFIG, {"alias": "demo2_ws", "port": 9090, "package": "Demo"})
    exported = edits.export_package(source, "Demo")
    text, report = edits.import_package(TARGET, exported)
    cfg = parse_config(text)
    assert [(p.alias, p.port) for p in cfg.ports] == [("mine", 8080), ("demo2_ws", 9090)]
    assert cfg.ports[0].backlog == 77 and cfg.ports[0].description == "the target's own"
    assert cfg.ports[0].package == ""  # untouched: not moved into the package
    assert [p.name for p in cfg.packages] == ["Demo"]
    assert [e.path for e in cfg.endpoints] == ["/echo"]  # the path existed: kept
    actions = {(i["type"], i["name"]): i["action"] for i in report.items}
    assert actions == {
        ("package", "Demo"): "created",
        ("endpoint", "/echo"): "kept",
        ("port", "demo_ws"): "kept",
        ("port", "demo2_ws"): "created",
    }
    assert report.as_dict()["created"] == 2
    assert "# the same number as demo_ws, other settings" in text
    again, report2 = edits.import_package(text, exported)
    assert again == text and report2.count("created") == 0


def test_import_refuses_an_alias_taken_by_another_port_number() -> None:
    target = TARGET.replace('alias = "mine"', 'alias = "demo_ws"').replace("port = 8080", "port = 7070")
    with pytest.raises(edits.EditError) as info:
        edits.import_package(target, edits.export_package(CONFIG, "Demo"))
    assert info.value.status == 409
    assert "alias 'demo_ws' is taken here by port 7070" in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[server]\nworkers = 3\n", "server: not part of a package export"),
        ('[[endpoints]]\npath = "/x"\nhandler = "a:B"\n', "no [[packages]] and no [[ports]]"),
        ("ports = 3\n", "ports must be an array of tables"),
        ("[[ports]\n", "import: invalid TOML"),
    ],
)
def test_import_refuses_what_is_not_a_package_export(text: str, message: str) -> None:
    with pytest.raises(edits.EditError) as info:
        edits.import_package(TARGET, text)
    assert message in str(info.value)
