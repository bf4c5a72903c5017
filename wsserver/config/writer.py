"""Write configuration: the effective config as TOML text, and atomic file replacement.

``dump_config`` is the inverse of ``parse_config``: every key is written with its value
(defaults included, so the operator sees what is really in force), and
``parse_config(dump_config(cfg)) == cfg`` for every valid ``cfg``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import Any

from wsserver.config.schema import Config
from wsserver.config.settings import TABLE, TABLES, Key, keys
from wsserver.config.tomltext import toml_key, toml_string, toml_value

__all__ = ["REDACTED", "dump_config", "toml_key", "toml_string", "toml_value", "write_atomic"]

# Values shorter than this are followed by their comment on the same column, like the
# example file; longer ones get two spaces.
_COMMENT_COLUMN = 30
# Inline arrays longer than this are written one item per line.
_MAX_INLINE = 100
REDACTED = "<redacted>"


# --- dump_config ----------------------------------------------------------------------------


def _comment(key: Key) -> str:
    """The allowed choices and the help text, as the example file writes them."""
    parts = []
    if key.choices:
        parts.append(" | ".join(str(c) for c in key.choices))
    if key.help:
        parts.append(key.help)
    return "; ".join(parts).replace("\n", " ")


def _assignment(key: str, value: Any, comment: str) -> list[str]:
    text = f"{toml_key(key)} = {toml_value(value)}"
    if isinstance(value, tuple) and value and len(text) > _MAX_INLINE:
        items = [f"    {toml_value(v)}," for v in value]
        return [f"{toml_key(key)} = [", *items, "]"]
    if comment:
        text = (
            f"{text:<{_COMMENT_COLUMN}} # {comment}"
            if len(text) < _COMMENT_COLUMN
            else f"{text}  # {comment}"
        )
    return [text]


def _emit(lines: list[str], obj: Any, name: str, array: bool, redact: bool = False) -> None:
    """Write one table: its keys, then its sub-tables, then its arrays of tables.

    Keyed arrays of tables ([keystores.keys.NAME]) are written in their array form, with the
    key's name as a key of each table.
    """
    table_keys = keys(type(obj))
    if name:
        lines.append("")
        lines.append(f"[[{name}]]" if array else f"[{name}]")
    for key in table_keys.values():
        if key.kind not in (TABLE, TABLES):
            value = getattr(obj, key.name)
            if redact and value and key.meta("redact"):
                value = REDACTED
            lines.extend(_assignment(key.name, value, _comment(key)))
    for key in table_keys.values():
        sub = f"{name}.{key.name}" if name else key.name
        value = getattr(obj, key.name)
        if key.kind == TABLE and value is not None:  # None: an optional table left out (ports.tls)
            _emit(lines, value, sub, array=False, redact=redact)
        elif key.kind == TABLES:
            for item in value:
                _emit(lines, item, sub, array=True, redact=redact)


def dump_config(cfg: Config, redact: bool = False) -> str:
    """The effective configuration as readable TOML: every key with its value.

    ``redact`` replaces secrets (tokens, JWT secrets) with "<redacted>", for display.
    """
    source = cfg.source.replace("\n", " ")
    lines = [
        f"# wsserver effective configuration (source: {source}).",
        "# Every key is written with its value in force, defaults included.",
    ]
    _emit(lines, cfg, "", array=False, redact=redact)
    return "\n".join(lines) + "\n"


# --- write_atomic ---------------------------------------------------------------------------


def _fsync_directory(directory: str) -> None:
    # The rename lives in the directory entry: without this a power cut can forget it.
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_owner_and_mode(tmp: str, old: os.stat_result | None, new_mode: int) -> None:
    if old is None:
        os.chmod(tmp, new_mode)
        return
    os.chmod(tmp, stat.S_IMODE(old.st_mode))
    if (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
        # Only root may give a file away; anyone else keeps the file as their own.
        with contextlib.suppress(PermissionError):
            os.chown(tmp, old.st_uid, old.st_gid)


def write_atomic(path: str | os.PathLike[str], text: str, *, new_mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or the new file, never half.

    Writes a temp file in the same directory (rename is only atomic within a file system),
    fsyncs it, renames it over the target, then fsyncs the directory. The old file's mode
    is kept; a new file gets ``new_mode``, by default 0600 because configs may hold
    password hashes. A symlink is followed, so the link stays and its target is replaced.
    """
    target = os.path.realpath(os.fspath(path))
    directory = os.path.dirname(target)
    try:
        old: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        _copy_owner_and_mode(tmp, old, new_mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)
