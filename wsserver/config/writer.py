"""Write configuration: the effective config as TOML text, and atomic file replacement.

``dump_config`` is the inverse of ``parse_config``: every key is written with its value
(defaults included, so the operator sees what is really in force), and
``parse_config(dump_config(cfg)) == cfg`` for every valid ``cfg``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import re
import stat
import tempfile
from typing import Any

from wsserver.config.schema import Config
from wsserver.config.tls_settings import keystore_to_toml

# Values shorter than this are followed by their comment on the same column, like the
# example file; longer ones get two spaces.
_COMMENT_COLUMN = 30
# Inline arrays longer than this are written one item per line.
_MAX_INLINE = 100

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


# --- TOML values ----------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string: escapes quote, backslash and every control character."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value: Any) -> str:
    """One value in TOML syntax (also used to show values in error messages)."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date subclass
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


# --- dump_config ----------------------------------------------------------------------------


def _kind(f: dataclasses.Field[Any]) -> Any:
    return f.metadata.get("kind")


def _is_table(f: dataclasses.Field[Any]) -> bool:
    return dataclasses.is_dataclass(_kind(f))


def _is_table_array(f: dataclasses.Field[Any]) -> bool:
    return _kind(f) is list and dataclasses.is_dataclass(f.metadata.get("item_kind"))


def _settings(obj: Any) -> list[dataclasses.Field[Any]]:
    # Fields without a kind (Config.source) are bookkeeping, not TOML keys.
    return [f for f in dataclasses.fields(obj) if _kind(f) is not None]


def _comment(f: dataclasses.Field[Any]) -> str:
    """The allowed choices and the help text, as the example file writes them."""
    parts = []
    if f.metadata.get("choices"):
        parts.append(" | ".join(str(c) for c in f.metadata["choices"]))
    if f.metadata.get("help"):
        parts.append(f.metadata["help"])
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


# Keys whose values are secrets (a bearer token, an HS256 JWT secret): `wsserver check` shows
# that they are set, never what they are.
_SECRET_KEYS = {("users", "token"), ("ports.jwt", "key")}
REDACTED = "<redacted>"


def _emit(lines: list[str], obj: Any, name: str, array: bool, redact: bool = False) -> None:
    """Write one table: its keys, then its sub-tables, then its arrays of tables."""
    fields = _settings(obj)
    if name:
        lines.append("")
        lines.append(f"[[{name}]]" if array else f"[{name}]")
    for f in fields:
        if not (_is_table(f) or _is_table_array(f)):
            value = getattr(obj, f.name)
            if redact and value and (name, f.name) in _SECRET_KEYS:
                value = REDACTED
            lines.extend(_assignment(f.name, value, _comment(f)))
    for f in fields:
        sub = f"{name}.{f.name}" if name else f.name
        value = getattr(obj, f.name)
        if _is_table(f) and value is not None:  # None: an optional table left out (ports.tls)
            _emit(lines, value, sub, array=False, redact=redact)
        elif _is_table_array(f):
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
    for name in ("keystores", "truststores"):
        for store in getattr(cfg, name):
            _emit_store(lines, name, keystore_to_toml(store))
    return "\n".join(lines) + "\n"


def _emit_store(lines: list[str], name: str, table: dict[str, Any]) -> None:
    """A [[keystores]] / [[truststores]] entry; a PEM keystore's keys as [[keystores.keys]]."""
    lines += ["", f"[[{name}]]"]
    nested = {k: v for k, v in table.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    for key, value in table.items():
        if key not in nested:
            lines.append(f"{key} = {toml_value(value)}")
    for key, items in nested.items():
        for item in items:
            lines += ["", f"[[{name}.{key}]]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]


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
