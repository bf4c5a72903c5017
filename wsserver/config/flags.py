"""Command-line flags from the settings registry (gunicorn's model): a setting declared with
``cli="--workers"`` is a ``wsserver serve`` flag. Its value is checked by the settings engine, in
the file's words, and applied to every load of the file (reloads included), so a flag stays in
force until the master stops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from wsserver.config.settings import TABLE, Builder, ConfigError, Errors, Key, join, keys

T = TypeVar("T")


def cli_keys(cls: type, path: str = "") -> list[tuple[str, Key]]:
    """(dotted path, key) of every setting below ``cls`` that has a command-line flag; arrays of
    tables are not entered (one flag cannot set a key of every [[ports]] entry)."""
    out = []
    for key in keys(cls).values():
        if key.meta("cli"):
            out.append((join(path, key.name), key))
        elif key.kind == TABLE and key.table is not None:
            out += cli_keys(key.table, join(path, key.name))
    return out


def flag_metavar(key: Key) -> str | None:
    """How the flag's value is shown in help: N, LEVEL|..., PID_FILE; None for a switch."""
    if key.types == (bool,):
        return None
    if key.choices:
        return "{" + ",".join(str(c) for c in key.choices) + "}"
    return "N" if key.types == (int,) else key.name.upper()


def apply_overrides(config: T, overrides: Mapping[str, Any]) -> T:
    """``config`` with the command line's values: ``{"server.workers": 4}``.

    Each value is checked as the file's would be; a bad one raises ConfigError naming its flag
    (``--workers = 999: must be an integer 0..256``). The flags' keys have no rules across keys,
    so nothing else needs checking again.
    """
    for path, value in check_overrides(type(config), overrides).items():
        config = _replace(config, path.split("."), value)
    return config


def check_overrides(cls: type, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The command line's values, checked and built; raises ConfigError naming each bad flag."""
    errors = Errors("")
    by_path = dict(cli_keys(cls))
    built = {}
    for path, value in overrides.items():
        key = by_path[path]
        _ok, built[path] = Builder(errors).value(key, value, key.meta("cli"))
    if errors.lines:
        raise ConfigError(errors.lines)
    return built


def _replace(obj: Any, parts: list[str], value: Any) -> Any:
    """``obj`` (a frozen table) with the key at ``parts`` set to ``value``."""
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    return dataclasses.replace(obj, **{parts[0]: _replace(getattr(obj, parts[0]), parts[1:], value)})
