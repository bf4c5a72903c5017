"""docs/configuration.md is generated from the schema and must be up to date."""

from __future__ import annotations

from pathlib import Path

from wsserver.config import Config
from wsserver.config.reference import config_reference_markdown
from wsserver.config.settings import TABLE, TABLES, keys, walk

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_configuration_md_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == config_reference_markdown(), (
        "docs/configuration.md is stale; regenerate it with "
        "`.venv/bin/python -m wsserver.config.reference docs/configuration.md`"
    )


def test_reference_lists_every_key() -> None:
    text = config_reference_markdown()
    for header in (
        "[server]",
        "[server.tls]",
        "[[packages]]",
        "[[endpoints]]",
        "[[ports]]",
        "[ports.pool]",
        "[ports.access]",
        "[ports.origin]",
        "[ports.tls]",
        "[[adapters]]",
        "[adapters.ldap]",
        "[adapters.gemalto]",
        "[[keystores]]",
        "[[keystores.keys]]",
        "[[truststores]]",
    ):
        assert f"## `{header}`" in text
    for _path, cls, _holder in walk(Config):
        for name, key in keys(cls).items():
            if key.kind not in (TABLE, TABLES):
                assert f"| `{name}` |" in text, (cls.__name__, name)
    assert "| `backlog` | `6000` | an integer 1..65535 |" in text
