"""The config-file edits behind the admin API: TOML text in, TOML text out.

Every function takes the file's text and returns the new text, made with ``tomlkit`` so the
operator's comments, key order and layout stay where the edit does not touch them. Nothing
here validates the result or writes a file: :mod:`wsserver.admin.store` runs
:func:`~wsserver.config.parse_config` on the new text and writes it atomically.

Patches follow JSON merge patch (RFC 7386): an object merges into a table, ``null`` removes a
key (back to its default), anything else replaces the value.
"""

from __future__ import annotations

import datetime
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import tomlkit
from tomlkit.items import Table

# The tables a package export holds; an import accepts nothing else.
PACKAGE_TABLES = ("packages", "endpoints", "ports", "keystores", "truststores")


class EditError(Exception):
    """The edit cannot be made; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFound(EditError):
    status = 404


def parse(text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except Exception as exc:  # tomlkit raises its own ParseError subclasses
        raise EditError(f"the config file is not valid TOML: {exc}") from None


def _array(doc: Any, name: str) -> list[Any]:
    items = doc.get(name)
    return list(items) if items is not None else []


def find_port(doc: Any, alias: str) -> Any:
    for port in _array(doc, "ports"):
        if port.get("alias") == alias:
            return port
    raise NotFound(f"no port with alias {alias!r}")


def find_package(doc: Any, name: str) -> Any:
    for package in _array(doc, "packages"):
        if package.get("name") == name:
            return package
    raise NotFound(f"no package named {name!r}")


def _new_table(values: dict[str, Any], blank_line: bool = True) -> Table:
    """A table for ``values``: scalars first, then sub-tables as [a.b] tables, then a blank line."""
    table = tomlkit.table()
    for key, value in values.items():
        if not isinstance(value, dict):
            table[key] = value
    for key, value in values.items():
        if isinstance(value, dict):
            table[key] = _new_table(value, blank_line=False)
    if blank_line:
        table.add(tomlkit.nl())
    return table


def _is_table(item: Any) -> bool:
    return isinstance(item, dict)  # tomlkit Table and InlineTable are dicts


def merge(container: Any, patch: dict[str, Any]) -> None:
    """Apply a JSON merge patch to a tomlkit table (in place)."""
    for key, value in patch.items():
        if value is None:
            if key in container:
                del container[key]
        elif isinstance(value, dict):
            current = container.get(key)
            if current is None or not _is_table(current):
                if not value or all(v is None for v in value.values()):
                    continue
                if current is not None:
                    del container[key]
                container[key] = _new_table({k: v for k, v in value.items() if v is not None})
            else:
                merge(current, value)
                if len(current) == 0:
                    del container[key]
        else:
            container[key] = value


# ---- ports ------------------------------------------------------------------------------------


def set_port_enabled(text: str, alias: str, enabled: bool) -> str:
    doc = parse(text)
    find_port(doc, alias)["enabled"] = enabled
    return tomlkit.dumps(doc)


def patch_port(text: str, alias: str, patch: dict[str, Any]) -> str:
    if not isinstance(patch, dict):
        raise EditError("the body must be a JSON object of the port's keys")
    doc = parse(text)
    merge(find_port(doc, alias), patch)
    return tomlkit.dumps(doc)


def add_port(text: str, port: dict[str, Any]) -> str:
    if not isinstance(port, dict):
        raise EditError("the body must be a JSON object of the port's keys (at least alias and port)")
    doc = parse(text)
    alias = port.get("alias")
    if isinstance(alias, str) and any(p.get("alias") == alias for p in _array(doc, "ports")):
        raise EditError(f"a port with alias {alias!r} exists already", status=409)
    _append(doc, "ports", {k: v for k, v in port.items() if v is not None})
    return tomlkit.dumps(doc)


def delete_port(text: str, alias: str) -> str:
    doc = parse(text)
    ports = doc.get("ports")
    find_port(doc, alias)
    assert ports is not None  # find_port raised NotFound otherwise
    index = next(i for i, p in enumerate(ports) if p.get("alias") == alias)
    del ports[index]
    if len(ports) == 0:
        del doc["ports"]
    return tomlkit.dumps(doc)


def _append(doc: Any, name: str, values: dict[str, Any]) -> None:
    table = _new_table(values)
    if name in doc:
        doc[name].append(table)
    else:
        aot = tomlkit.aot()
        aot.append(table)
        doc.append(name, aot)


# ---- packages -----------------------------------------------------------------------------


def set_package_enabled(text: str, name: str, enabled: bool) -> str:
    doc = parse(text)
    find_package(doc, name)["enabled"] = enabled
    return tomlkit.dumps(doc)


def _plain(item: Any) -> Any:
    return item.unwrap() if hasattr(item, "unwrap") else item


def export_package(text: str, name: str, source: str = "") -> str:
    """A self-contained TOML file of the package: its [[packages]] entry, its endpoints, its
    ports, and the keystores/truststores those ports name."""
    doc = parse(text)
    package = _plain(find_package(doc, name))
    endpoints = [_plain(e) for e in _array(doc, "endpoints") if e.get("package") == name]
    ports = [_plain(p) for p in _array(doc, "ports") if p.get("package") == name]
    stores: set[str] = set()
    for port in ports:
        tls = port.get("tls") or {}
        stores.update(v for v in (tls.get("keystore"), tls.get("truststore")) if v)
    out = tomlkit.document()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out.add(
        tomlkit.comment(
            f"wsserver package {name!r}, exported {stamp}" + (f" from {source}" if source else "")
        )
    )
    out.add(tomlkit.comment("Import it on another server: wsserver package import FILE --admin URL"))
    out.add(tomlkit.comment("(ports whose number exists there already are left as they are)."))
    out.add(tomlkit.nl())
    _append(out, "packages", package)
    for endpoint in endpoints:
        _append(out, "endpoints", endpoint)
    for port in ports:
        _append(out, "ports", port)
    for kind in ("keystores", "truststores"):
        for store in _array(doc, kind):
            if store.get("alias") in stores:
                _append(out, kind, _plain(store))
    return tomlkit.dumps(out)


@dataclass
class ImportReport:
    """What an import did (or, dry run, would do), item by item."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, name: str, action: str, detail: str = "", **extra: Any) -> None:
        self.items.append({"type": kind, "name": name, "action": action, "detail": detail, **extra})

    def count(self, action: str) -> int:
        return sum(1 for item in self.items if item["action"] == action)

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.count("created"), "kept": self.count("kept"), "items": self.items}

    def lines(self) -> list[str]:
        return [
            f"{item['action']}: {item['type']} {item['name']}"
            + (f" ({item['detail']})" if item["detail"] else "")
            for item in self.items
        ]


def _read_import(import_text: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(import_text)
    except tomllib.TOMLDecodeError as exc:
        raise EditError(f"import: invalid TOML: {exc}") from None
    except RecursionError:
        raise EditError("import: invalid TOML: nested too deeply") from None
    extra = [k for k in data if k not in PACKAGE_TABLES]
    if extra:
        raise EditError(
            f"import: {', '.join(extra)}: not part of a package export "
            f"(allowed tables: {', '.join(PACKAGE_TABLES)})"
        )
    if not data.get("ports") and not data.get("packages"):
        raise EditError("import: the file has no [[packages]] and no [[ports]]")
    for name in PACKAGE_TABLES:
        items = data.get(name, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise EditError(f"import: {name} must be an array of tables ([[{name}]])")
    return data


def _key_of(items: Iterable[Any], key: str) -> dict[Any, Any]:
    return {item.get(key): item for item in items}


def import_package(text: str, import_text: str) -> tuple[str, ImportReport]:
    """Merge an export into the config: create what is missing, leave what exists untouched.

    Ports are matched by port **number**: a port whose number the server has already keeps
    its settings. Packages, endpoints and stores are matched by name, path and alias.
    """
    data = _read_import(import_text)
    doc = parse(text)
    report = ImportReport()
    for package in data.get("packages", []):
        name = package.get("name")
        if name in _key_of(_array(doc, "packages"), "name"):
            report.add("package", str(name), "kept", "a package of that name exists")
        else:
            _append(doc, "packages", package)
            report.add("package", str(name), "created")
    for endpoint in data.get("endpoints", []):
        path = endpoint.get("path")
        existing = _key_of(_array(doc, "endpoints"), "path").get(path)
        if existing is not None:
            report.add("endpoint", str(path), "kept", f"the path exists (handler {existing.get('handler')})")
        else:
            _append(doc, "endpoints", endpoint)
            report.add("endpoint", str(path), "created")
    for port in data.get("ports", []):
        alias, number = port.get("alias"), port.get("port")
        by_number = _key_of(_array(doc, "ports"), "port")
        if number in by_number:
            report.add(
                "port",
                str(alias),
                "kept",
                f"port {number} exists here as {by_number[number].get('alias')}",
                port=number,
            )
            continue
        other = _key_of(_array(doc, "ports"), "alias").get(alias)
        if other is not None:
            raise EditError(
                f"import: port {alias} ({number}): the alias {alias!r} is taken here by port "
                f"{other.get('port')}; rename it in the file to import it",
                status=409,
            )
        _append(doc, "ports", port)
        report.add("port", str(alias), "created", port=number)
    for kind, what in (("keystores", "keystore"), ("truststores", "truststore")):
        for store in data.get(kind, []):
            alias = store.get("alias")
            if alias in _key_of(_array(doc, kind), "alias"):
                report.add(what, str(alias), "kept", f"a {what} of that alias exists")
            else:
                _append(doc, kind, store)
                report.add(what, str(alias), "created")
    return tomlkit.dumps(doc), report
