"""Small edits of a config file that keep the operator's comments and layout (tomlkit).

Every edit is validated with :func:`parse_config` before it is written, and written with
:func:`write_atomic`: the file on disk is the old one or the new one, never half, never invalid.
"""

from __future__ import annotations

import os
from typing import Any

from wsserver.config.loader import ConfigError, parse_config
from wsserver.config.writer import write_atomic

# The endpoint access keys of [ports.access]; the IP keys are left alone.
ENDPOINT_ACCESS_KEYS = ("mode", "deny_endpoints", "allow_endpoints")


class EditError(Exception):
    """The edit cannot be made (unknown alias, unreadable file, result invalid)."""


def _port_table(doc: Any, alias: str) -> Any:
    ports = doc.get("ports")
    if ports is None:
        raise EditError("the file has no [[ports]]")
    for port in ports:
        if port.get("alias") == alias:
            return port
    known = ", ".join(str(p.get("alias")) for p in ports)
    raise EditError(f"no port with alias {alias!r} (known: {known})")


def reset_access_text(text: str, alias: str, source: str = "<string>") -> tuple[str, bool]:
    """``text`` with the port's endpoint access mode and lists removed (back to "allow all").

    Returns (new text, whether anything changed). Comments and formatting elsewhere stay.
    """
    import tomlkit

    try:
        doc = tomlkit.parse(text)
    except Exception as exc:
        raise EditError(f"{source}: invalid TOML: {exc}") from None
    try:
        port = _port_table(doc, alias)
    except EditError as exc:
        raise EditError(f"{source}: {exc}") from None
    access = port.get("access")
    changed = False
    if access is not None:
        for key in ENDPOINT_ACCESS_KEYS:
            if key in access:
                del access[key]
                changed = True
        if changed and len(access) == 0:
            del port["access"]
    new_text = tomlkit.dumps(doc) if changed else text
    try:
        parse_config(new_text, source)
    except ConfigError as exc:
        raise EditError(str(exc)) from None
    return new_text, changed


def reset_port_access(path: str | os.PathLike[str], alias: str) -> bool:
    """Restore the default endpoint access (allow every endpoint) of port ``alias`` in a file."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise EditError(f"{source}: cannot read config file: {exc}") from None
    new_text, changed = reset_access_text(text, alias, source)
    if changed:
        write_atomic(source, new_text)
    return changed
