"""docs/configuration.md is generated from the schema and must be up to date."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from wsserver.config import Config
from wsserver.config.loader import settings
from wsserver.config.reference import config_reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_configuration_md_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == config_reference_markdown(), (
        "docs/configuration.md is stale; regenerate it with "
        "`.venv/bin/python -m wsserver.config.reference docs/configuration.md`"
    )


def _all_tables(cls: type) -> list[type]:
    found = []
    for f in settings(cls).values():
        sub = f.metadata.get("item_kind") if f.metadata["kind"] is list else f.metadata["kind"]
        if dataclasses.is_dataclass(sub):
            found += [sub, *_all_tables(sub)]
    return found


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
    ):
        assert f"## `{header}`" in text
    for cls in _all_tables(Config):
        for name, f in settings(cls).items():
            kind = f.metadata["kind"]
            if not (dataclasses.is_dataclass(kind) or dataclasses.is_dataclass(f.metadata.get("item_kind"))):
                assert f"| `{name}` |" in text, (cls.__name__, name)
    assert "| `backlog` | `6000` | an integer 1..65535 |" in text
