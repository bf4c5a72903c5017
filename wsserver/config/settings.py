"""The settings engine: each TOML key is declared once, and this module validates it, describes
it (error lines, docs/configuration.md, `wsserver check`) and makes command-line flags of it.

A table is a frozen dataclass whose fields are declared with :func:`setting`. What a key holds
is read from the field's annotation, never repeated beside it:

=========================  =====================================================================
annotation                 TOML
=========================  =====================================================================
``bool``, ``int``, ``str``  a boolean, an integer, a string
``float``                  a number (an integer is accepted and stored as a float)
``tuple[str, ...]``        an array of strings (likewise ``int``)
``dict[str, str]``         a table of free names to strings (``[ports.tls.sni]``)
``Table``                  a table (``[server]``)
``Table | None``           an optional table (``[cluster]``), None when absent
``tuple[Table, ...]``      an array of tables (``[[ports]]``); with ``keyed_by="alias"`` also a
                           table of tables keyed by that field (``[keystores.keys.NAME]``)
=========================  =====================================================================

A tagged union is a table with one ``tag`` field and ``variant`` fields (optional tables named
after the tag's values): ``[[adapters]] type = "ldap"`` takes ``[adapters.ldap]``, gets it with
its defaults when it is absent, and refuses ``[adapters.radius]``.

Every problem is one line naming the source, the key, the value and what is allowed::

    wsserver.toml: ports[1].backlog = 70000: must be an integer 1..65535

Rules that span several keys are not declared here: they are :mod:`wsserver.config.rules`.
Command-line flags are :mod:`wsserver.config.flags`.

Why one long module: the registry, the descriptions, the error lines and the builder are one
engine whose parts call each other for every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from wsserver.config.host import PURE, HostChecks
from wsserver.config.tomltext import toml_value

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration is invalid. ``errors`` holds every problem, one line each."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: list[str] = list(errors)
        super().__init__("\n".join(self.errors))


@dataclasses.dataclass(frozen=True)
class ValueRule:
    """A check of one value beyond its type, range, choices and pattern."""

    check: Callable[[Any], bool]
    allowed: str  # worded to follow "must be"


def setting(
    default: Any = None,
    *,
    min: int | float | None = None,  # the operator's word
    max: int | float | None = None,
    choices: tuple[Any, ...] | None = None,
    pattern: str | None = None,
    pattern_help: str | None = None,
    required: bool = False,
    help: str = "",
    factory: Callable[[], Any] | None = None,
    rule: ValueRule | None = None,
    secret: bool = False,
    redact: bool = False,
    keyed_by: str | None = None,
    tag: str | None = None,
    variant: bool = False,
    cli: str | None = None,
) -> Any:
    """Declare one config key: its default and the values it allows (its kind is its annotation).

    ``rule``: a further check of the value (of each item of an array). ``secret``: error lines
    never show the value; ``redact``: nor does ``wsserver check``. ``keyed_by``: an array of
    tables may also be written as a table of tables keyed by that field. ``tag``: this field
    chooses the table's variant; its text names the table in messages ("adapter").
    ``variant``: an optional table chosen by the tag. ``cli``: the ``wsserver serve`` flag that
    overrides this key.

    Returns a ``dataclasses.field`` (pyproject.toml tells ruff's RUF009 so).
    """
    meta = {
        "setting": True,
        "min": min,
        "max": max,
        "choices": choices,
        "pattern": pattern,
        "pattern_help": pattern_help,
        "required": required,
        "help": help,
        "rule": rule,
        "secret": secret,
        "redact": redact,
        "keyed_by": keyed_by,
        "tag": tag,
        "variant": variant,
        "cli": cli,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# --- the registry: each table's keys, their kinds read from the annotations ------------------

SCALAR = "scalar"
ARRAY = "array"  # of scalars
MAP = "map"  # free names -> scalars
TABLE = "table"
TABLES = "tables"  # an array of tables

_PLURALS: dict[tuple[type, ...], str] = {(str,): "strings", (int,): "integers", (bool,): "booleans"}
_SINGULARS: dict[tuple[type, ...], str] = {
    (str,): "a string",
    (int,): "an integer",
    (bool,): "a boolean (true/false)",
}
_SCALAR_TYPES: dict[Any, tuple[type, ...]] = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}


@dataclasses.dataclass(frozen=True)
class Key:
    """One TOML key of a table: its field, its kind and what it allows."""

    name: str
    field: dataclasses.Field[Any]
    kind: str  # SCALAR, ARRAY, MAP, TABLE or TABLES
    types: tuple[type, ...] = ()  # SCALAR: the value's; ARRAY/MAP: each item's
    table: type | None = None  # TABLE/TABLES: the dataclass
    optional: bool = False  # TABLE: None when absent
    choices: tuple[Any, ...] | None = None

    def meta(self, name: str) -> Any:
        return self.field.metadata.get(name)

    @property
    def help(self) -> str:
        text: str = self.meta("help") or ""
        return text

    @property
    def required(self) -> bool:
        return bool(self.meta("required"))

    def default(self) -> Any:
        f = self.field
        if f.default is not dataclasses.MISSING:
            return f.default
        factory = typing.cast(Callable[[], Any], f.default_factory)
        return factory()


def _scalar_types(hint: Any) -> tuple[type, ...] | None:
    if hint in _SCALAR_TYPES:
        return _SCALAR_TYPES[hint]
    if isinstance(hint, types.UnionType) and all(a in _SCALAR_TYPES for a in hint.__args__):
        return tuple(t for a in hint.__args__ for t in _SCALAR_TYPES[a])
    return None


def _key(f: dataclasses.Field[Any], hint: Any) -> Key:
    scalar = _scalar_types(hint)
    if scalar is not None:
        return Key(f.name, f, SCALAR, types=scalar, choices=f.metadata.get("choices"))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if dataclasses.is_dataclass(args[0]):
            return Key(f.name, f, TABLES, table=typing.cast(type, args[0]))
        item = _scalar_types(args[0])
        if item is not None:
            return Key(f.name, f, ARRAY, types=item, choices=f.metadata.get("choices"))
    if origin is dict and args and args[0] is str:
        if args[1] is Any:  # free values: a rule checks them ([ports.tls.sni])
            return Key(f.name, f, MAP)
        item = _scalar_types(args[1])
        if item is not None:
            return Key(f.name, f, MAP, types=item)
    if dataclasses.is_dataclass(hint):
        return Key(f.name, f, TABLE, table=typing.cast(type, hint))
    if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        table = next(a for a in args if a is not type(None))
        if dataclasses.is_dataclass(table):
            return Key(f.name, f, TABLE, table=typing.cast(type, table), optional=True)
    raise TypeError(f"setting {f.name}: the settings engine has no TOML kind for {hint!r}")


_KEYS: dict[type, dict[str, Key]] = {}


def keys(cls: type) -> dict[str, Key]:
    """The TOML keys of a table, in declaration order (fields not declared with setting() are not)."""
    if cls not in _KEYS:
        _KEYS[cls] = _read_keys(cls)
    return _KEYS[cls]


def _read_keys(cls: type) -> dict[str, Key]:
    hints = typing.get_type_hints(cls)
    out = {f.name: _key(f, hints[f.name]) for f in dataclasses.fields(cls) if f.metadata.get("setting")}
    tag = tag_of(out)
    if tag is not None and out[tag].choices is None:
        variants = tuple(k.name for k in out.values() if k.meta("variant"))
        out[tag] = dataclasses.replace(out[tag], choices=variants)
    return out


def tag_of(table_keys: Mapping[str, Key]) -> str | None:
    return next((k.name for k in table_keys.values() if k.meta("tag")), None)


def walk(cls: type, path: str = "", holder: Key | None = None) -> Iterator[tuple[str, type, Key | None]]:
    """(TOML header path, table class, the key holding it) for ``cls`` and every table below it,
    parents before children; the key is None for ``cls`` itself."""
    yield path, cls, holder
    for key in keys(cls).values():
        if key.table is not None:
            yield from walk(key.table, join(path, key.name), key)


# --- describing what a key allows ------------------------------------------------------------


def _range(key: Key) -> str:
    low, high = key.meta("min"), key.meta("max")
    if low is not None and high is not None:
        return f" {low}..{high}"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def _plural(kinds: tuple[type, ...]) -> str:
    if kinds == (str, int):
        return "strings or integers"
    return _PLURALS.get(kinds, "values")


def describe(key: Key) -> str:
    """What a key allows, worded to follow "must be" (also the docs' "Allowed" column)."""
    if key.choices and key.kind == SCALAR:
        return one_of(key.choices)
    pattern_help: str | None = key.meta("pattern_help")
    if pattern_help:
        return pattern_help
    if key.kind == SCALAR:
        if float in key.types:
            return "a number" + _range(key)
        if key.types == (int,):
            return "an integer" + _range(key)
        return _one_value(key.types)
    if key.kind == ARRAY:
        return f"an array of {_plural(key.types)}"
    if key.kind == MAP:
        return f"a table of {_plural(key.types)}"
    if key.kind == TABLES:
        return "an array of tables"
    return "a table"


def allowed(key: Key) -> str:
    """What a key allows with its rule: the docs' "Allowed" column."""
    rule: ValueRule | None = key.meta("rule")
    if key.kind == ARRAY and key.choices:
        return f"{describe(key)}, each {_describe_item(key)}"
    if rule is None:
        return describe(key)
    return f"{describe(key)}, each {rule.allowed}" if key.kind == ARRAY else rule.allowed


def _describe_item(key: Key) -> str:
    """What each item of an array or a table of free names must be."""
    return one_of(key.choices) if key.choices else _one_value(key.types)


def _one_value(kinds: tuple[type, ...]) -> str:
    if kinds == (str, int):
        return "a string or an integer"
    return _SINGULARS.get(kinds, "a valid value")


def one_of(choices: Iterable[Any]) -> str:
    """'one of "a", "b"': choices as the operator writes them."""
    return "one of " + ", ".join(toml_value(c) for c in choices)


def known_names(names: Iterable[str], what: str) -> str:
    """'known: "a", "b"' for a reference to a name that is not configured, or "no WHAT configured"."""
    names = list(names)
    return "known: " + ", ".join(toml_value(n) for n in names) if names else f"no {what} configured"


# --- error lines ------------------------------------------------------------------------------

_NO_VALUE = object()


def _shown(value: Any) -> str:
    """A value as the operator wrote it (TOML-like), cut short when long."""
    if isinstance(value, str) and len(value) > 48:
        return toml_value(value[:40])[:-1] + f'..." ({len(value)} characters)'
    try:
        text = toml_value(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= 80 else text[:72] + "..."


def _is_table_like(value: Any) -> bool:
    """Tables are not repeated in messages: the key path already points at them."""
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


class Errors:
    """Collects one-line errors ``SOURCE: PATH = VALUE: MESSAGE`` and remembers bad key paths.

    The rules pass skips bad paths: a port whose alias is invalid must not also be reported as
    a duplicate of another port with an invalid alias. ``host`` carries the checks beyond the
    text (config/host.py). An empty ``source`` leaves the prefix out (command-line flags).
    """

    def __init__(self, source: str, host: HostChecks = PURE) -> None:
        self.source = source
        self.host = host
        self.lines: list[str] = []
        self.bad: set[str] = set()
        self.secret: set[str] = set()  # paths whose values are never shown

    def add(self, path: str, message: str, value: Any = _NO_VALUE) -> None:
        if path in self.secret:
            value = _NO_VALUE
        shown = "" if value is _NO_VALUE or _is_table_like(value) else f" = {_shown(value)}"
        prefix = f"{self.source}: " if self.source else ""
        self.lines.append(f"{prefix}{path}{shown}: {message}")

    def bad_value(self, path: str, message: str, value: Any = _NO_VALUE) -> None:
        """The value at ``path`` is unusable for the rules pass."""
        self.add(path, message, value)
        self.taint(path)

    def taint(self, path: str) -> None:
        self.bad.add(path)

    def is_bad(self, *paths: str) -> bool:
        """Whether any of ``paths``, or a table containing one, was found bad."""
        return any(self._bad_one(path) for path in paths)

    def has_bad_within(self, path: str) -> bool:
        """Whether ``path`` or any key inside it was found bad."""
        return self.is_bad(path) or any(b.startswith((path + ".", path + "[")) for b in self.bad)

    def _bad_one(self, path: str) -> bool:
        return any(path == b or path.startswith((b + ".", b + "[")) for b in self.bad)


def usable(errors: Errors, items: Sequence[Any], name: str) -> tuple[tuple[Any, ...], bool]:
    """The entries of ``[[name]]`` without errors, and whether that is all of them."""
    good = tuple(item for i, item in enumerate(items) if not errors.has_bad_within(f"{name}[{i}]"))
    return good, not errors.has_bad_within(name)


# --- building: TOML tables -> frozen dataclasses -----------------------------------------------


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def path_key(name: str) -> str:
    """A free table name (an SNI host, a PEM key alias) as it appears in a key path."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else toml_value(name)


def table_name(path: str) -> str:
    """ports[0].pool -> ports.pool, the name the operator writes in the table header."""
    return re.sub(r"\[\d+\]", "", path)


def _type_ok(types_: tuple[type, ...], value: Any) -> bool:
    if isinstance(value, bool):  # bool is an int subclass: port = true is a mistake
        return bool in types_
    return isinstance(value, types_)


def _in_bounds(key: Key, value: Any) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False  # nan compares false with everything and would pass min/max
    low, high, pattern = key.meta("min"), key.meta("max"), key.meta("pattern")
    if low is not None and value < low:
        return False
    if high is not None and value > high:
        return False
    if key.choices and value not in key.choices:
        return False
    return not (pattern and re.fullmatch(pattern, value) is None)


class Builder:
    """The shape pass: walks TOML tables along the registry, reports every bad key or value,
    and builds the dataclasses (a bad value leaves its default in place, its path tainted)."""

    def __init__(self, errors: Errors) -> None:
        self.errors = errors

    def table(self, cls: type[T], data: Mapping[str, Any], path: str) -> T:
        table_keys = keys(cls)
        for name, value in data.items():
            if name not in table_keys:
                self._unknown(name, value, path, table_keys)
        values: dict[str, Any] = {}
        for name, key in table_keys.items():
            if key.meta("variant"):
                continue  # after the tag, below
            sub = join(path, name)
            if name in data:
                ok, value = self.value(key, data[name], sub)
                if ok:
                    values[name] = value
            elif key.required:
                self.errors.bad_value(sub, f"is required ({describe(key)})")
        tag = tag_of(table_keys)
        if tag is not None:
            self._variants(table_keys, tag, data, values, path)
        return cls(**values)

    def _unknown(self, name: str, value: Any, path: str, table_keys: Mapping[str, Key]) -> None:
        close = difflib.get_close_matches(name, table_keys, n=1)
        hint = f'did you mean "{close[0]}"?' if close else "known keys: " + ", ".join(table_keys)
        self.errors.bad_value(join(path, name), f"unknown key; {hint}", value)

    def _variants(
        self,
        table_keys: Mapping[str, Key],
        tag: str,
        data: Mapping[str, Any],
        values: dict[str, Any],
        path: str,
    ) -> None:
        """A tagged union: build the variant the tag names (defaults when absent), refuse the others."""
        chosen = values.get(tag)
        if chosen is None:  # the tag is missing or bad: its error says enough
            return
        what = table_keys[tag].meta("tag")
        for name, key in table_keys.items():
            if not key.meta("variant"):
                continue
            sub = join(path, name)
            if name != chosen:
                if name in data:
                    self.errors.add(sub, f'is for {tag} = "{name}", but this {what} has {tag} = "{chosen}"')
                continue
            assert key.table is not None  # a variant is an optional table
            if name in data:
                ok, value = self.value(key, data[name], sub)
                values[name] = value if ok else key.table()
            else:
                values[name] = key.table()

    def value(self, key: Key, value: Any, path: str) -> tuple[bool, Any]:
        """One key's value: (whether it is usable, the built value)."""
        if key.meta("secret"):
            self.errors.secret.add(path)
        if key.kind == TABLE:
            assert key.table is not None
            if not isinstance(value, dict):
                self.errors.bad_value(path, f"must be a table ([{table_name(path)}])", value)
                return False, None
            return True, self.table(key.table, value, path)
        if key.kind == TABLES:
            assert key.table is not None
            return self.tables(key.table, value, path, key.meta("keyed_by"))
        if key.kind == ARRAY:
            return self._array(key, value, path)
        if key.kind == MAP:
            return self._map(key, value, path)
        return self._scalar(key, value, path)

    def _scalar(self, key: Key, value: Any, path: str) -> tuple[bool, Any]:
        if not (_type_ok(key.types, value) and _in_bounds(key, value)):
            self.errors.bad_value(path, "must be " + describe(key), value)
            return False, None
        rule: ValueRule | None = key.meta("rule")
        if rule is not None and not rule.check(value):
            self.errors.bad_value(path, "must be " + rule.allowed, value)
            return False, None
        return True, float(value) if float in key.types and not isinstance(value, bool) else value

    def _array(self, key: Key, value: Any, path: str) -> tuple[bool, Any]:
        if not isinstance(value, list):
            self.errors.bad_value(path, "must be " + describe(key), value)
            return False, None
        rule: ValueRule | None = key.meta("rule")
        ok = True
        for i, item in enumerate(value):
            if not _type_ok(key.types, item) or (key.choices and item not in key.choices):
                self.errors.bad_value(f"{path}[{i}]", f"must be {_describe_item(key)}", item)
                ok = False
            elif rule is not None and not rule.check(item):
                self.errors.bad_value(f"{path}[{i}]", f"must be {rule.allowed}", item)
                ok = False
        if not ok:
            self.errors.taint(path)
        return ok, tuple(value)

    def _map(self, key: Key, value: Any, path: str) -> tuple[bool, Any]:
        if not isinstance(value, dict):
            self.errors.bad_value(path, "must be " + describe(key), value)
            return False, None
        ok = True
        for name, item in value.items():
            if key.types and not _type_ok(key.types, item):
                self.errors.bad_value(f"{path}.{path_key(name)}", f"must be {_describe_item(key)}", item)
                ok = False
        return ok, dict(value)

    def tables(
        self, cls: type[T], value: Any, path: str, keyed_by: str | None = None
    ) -> tuple[bool, tuple[T, ...]]:
        """An array of tables; with ``keyed_by`` also a table of tables named by that key."""
        name = table_name(path)
        item_shape = f"[[{name}]]"
        if keyed_by is not None and isinstance(value, dict):
            # [keystores.keys.NAME]: the table's name is the keyed field's value.
            item_shape = f"[{name}.NAME]"
            items = [
                (f"{path}.{path_key(key)}", {keyed_by: key, **table} if isinstance(table, dict) else table)
                for key, table in value.items()
            ]
        elif isinstance(value, list):
            items = [(f"{path}[{i}]", table) for i, table in enumerate(value)]
        else:
            if keyed_by is None:
                message = f"must be an array of tables ([[{name}]])"
            else:
                message = f"must be a table of tables ([{name}.NAME]) or an array of tables ([[{name}]] with {keyed_by})"
            self.errors.bad_value(path, message, value)
            return False, ()
        built: list[T] = []
        for sub, table in items:
            if isinstance(table, dict):
                built.append(self.table(cls, table, sub))
            else:
                self.errors.bad_value(sub, f"must be a table ({item_shape})", table)
                # A stand-in keeps the indexes of the following entries right for the rules pass.
                built.append(cls())
        if keyed_by is not None and isinstance(value, list):
            self._unique(built, keyed_by, path)
        return True, tuple(built)

    def _unique(self, built: Sequence[Any], name: str, path: str) -> None:
        seen: dict[Any, str] = {}
        for i, item in enumerate(built):
            sub = f"{path}[{i}]"
            if self.errors.is_bad(sub):
                continue
            value = getattr(item, name)
            if value in seen:
                self.errors.bad_value(f"{sub}.{name}", f"duplicate {name} (also {seen[value]})", value)
            else:
                seen[value] = sub
