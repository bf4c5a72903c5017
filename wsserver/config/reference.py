"""The configuration reference (docs/configuration.md), generated from the schema metadata.

One registry drives validation and the docs, so they cannot disagree; a unit test fails
when docs/configuration.md is not what this module generates. Regenerate with:

    .venv/bin/python -m wsserver.config.reference docs/configuration.md
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

from wsserver.config.loader import (
    DEFAULT_CONFIG_TOML,
    FUTURE_CLIENT_AUTH,
    NOT_SUPPORTED,
    UNSUPPORTED_TABLES,
    VALUE_RULES,
    describe,
    settings,
)
from wsserver.config.schema import AccessConfig, Config, EndpointConfig, PortConfig
from wsserver.config.writer import toml_value, write_atomic

# Keys whose schema allows more than this version accepts (see loader._reject_*).
_NOT_YET = {
    (PortConfig, "protocol"): f'"wss" is {NOT_SUPPORTED} (needs TLS keystores)',
    (PortConfig, "client_auth"): f'only "none"; {", ".join(FUTURE_CLIENT_AUTH)} are {NOT_SUPPORTED}',
    (PortConfig, "no_auth_user"): f'only ""; it names a [[users]] entry, {NOT_SUPPORTED}',
}

# Keys whose values must match other keys (see loader._check_*_refs).
_REFERS_TO = {
    (AccessConfig, "deny_endpoints"): "each a configured endpoint path",
    (AccessConfig, "allow_endpoints"): "each a configured endpoint path",
    (PortConfig, "package"): '"" or the name of a [[packages]] entry',
    (EndpointConfig, "package"): '"" or the name of a [[packages]] entry',
}

_RULES = (
    "`ports[].alias` is unique.",
    '`(bind, port)` is unique among ports; `bind = ""` (every address) conflicts with any bind '
    'on the same port, and so do `"0.0.0.0"` / `"::"` with any address of their family.',
    "`endpoints[].path` is unique; `packages[].name` is unique.",
    "`pool.min` is at most `pool.max`.",
    "A port's or endpoint's non-empty `package` names a `[[packages]]` entry.",
    "Every entry of `access.deny_endpoints` and `access.allow_endpoints` is a configured endpoint path.",
    "`endpoints[].handler` is only checked for its `module:Class` form here; it is imported when "
    "the server starts.",
)

_INTRO = """\
# Configuration reference

<!-- Generated from wsserver/config/schema.py by
     `python -m wsserver.config.reference docs/configuration.md`; do not edit by hand. -->

wsserver reads one TOML file: `wsserver serve -c wsserver.toml`. Without a file it runs
this built-in configuration:

```toml
{default}```

Every problem in a file is reported at once, one line each, naming the file, the key
(arrays of tables are indexed from 0), the value and what is allowed:

```text
wsserver.toml: ports[1].backlog = 70000: must be an integer 1..65535
wsserver.toml: ports[0].alias: is required (1-255 characters of a-z A-Z 0-9 _ . -)
wsserver.toml: ports[0].backlg = 6000: unknown key; did you mean "backlog"?
```

Unknown keys are errors, not ignored: a typo must not silently leave a default in force.
"""


def _tables(cls: type, name: str) -> Iterator[tuple[str, type, str]]:
    """(header, dataclass, help) for each table below ``cls``, parents before children."""
    for key, f in settings(cls).items():
        kind, item = f.metadata["kind"], f.metadata.get("item_kind")
        sub = f"{name}.{key}" if name else key
        if dataclasses.is_dataclass(kind):
            yield f"[{sub}]", kind, f.metadata.get("help", "")
            yield from _tables(kind, sub)
        elif kind is list and dataclasses.is_dataclass(item):
            yield f"[[{sub}]]", item, f.metadata.get("help", "")
            yield from _tables(item, sub)


def _cell(text: str) -> str:
    # Table cells: a | would end the cell, and <name> would vanish as an HTML tag.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


def _default(f: dataclasses.Field) -> str:
    if f.metadata.get("required"):
        return "(required)"
    value: Any = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    # In a code span only | needs escaping (GFM tables); &lt; would show literally.
    return "`" + toml_value(value).replace("|", "\\|") + "`"


def _allowed(cls: type, f: dataclasses.Field) -> str:
    """The "Allowed" column: the schema's wording, refined by the loader's extra checks."""
    key = (cls, f.name)
    is_list = f.metadata["kind"] is list
    text = describe(f.metadata)
    if key in VALUE_RULES:
        rule = VALUE_RULES[key].allowed
        text = f"an array of strings, each {rule}" if is_list else rule
    if key in _REFERS_TO:
        text = f"{text}, {_REFERS_TO[key]}" if is_list else _REFERS_TO[key]
    if key in _NOT_YET:
        text += f"; for now: {_NOT_YET[key]}"
    return _cell(text)


def _table_section(header: str, cls: type, help_text: str) -> list[str]:
    lines = ["", f"## `{header}`", ""]
    if help_text:
        lines += [f"_{help_text}._", ""]
    lines += ["| Key | Default | Allowed | Description |", "|---|---|---|---|"]
    for name, f in settings(cls).items():
        kind, item = f.metadata["kind"], f.metadata.get("item_kind")
        if dataclasses.is_dataclass(kind) or (kind is list and dataclasses.is_dataclass(item)):
            continue  # a table of its own section
        lines.append(
            f"| `{name}` | {_default(f)} | {_allowed(cls, f)} | {_cell(f.metadata.get('help', ''))} |"
        )
    return lines


def config_reference_markdown() -> str:
    """docs/configuration.md: every key with its default, allowed values and meaning."""
    lines = [_INTRO.format(default=DEFAULT_CONFIG_TOML).rstrip("\n")]
    for header, cls, help_text in _tables(Config, ""):
        lines += _table_section(header, cls, help_text)
    lines += ["", "## Rules across keys", ""]
    lines += [f"- {rule}" for rule in _RULES]
    tables = ", ".join(f"`{name}`" for name in UNSUPPORTED_TABLES)
    lines += [
        "",
        "## Not supported by this version",
        "",
        f"These tables of the operator's vocabulary are rejected ({NOT_SUPPORTED}): {tables}.",
        'So are `protocol = "wss"`, a non-empty `keystore` in `[server.tls]` or `[ports.tls]`,',
        '`client_auth` other than `"none"` and a non-empty `no_auth_user`. They are errors rather',
        "than ignored: configuring something that is not enforced would be a lie.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = config_reference_markdown()
    if argv:
        write_atomic(argv[0], text, new_mode=0o644)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
