"""The configuration reference (docs/configuration.md), generated from the schema metadata.

One registry drives validation and the docs, so they cannot disagree; a unit test fails
when docs/configuration.md is not what this module generates. Regenerate with:

    .venv/bin/python -m wsserver.config.reference docs/configuration.md
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from typing import Any, cast

from wsserver.config.loader import (
    DEFAULT_CONFIG_TOML,
    NOT_SUPPORTED,
    UNSUPPORTED_TABLES,
    VALUE_RULES,
    describe,
    settings,
)
from wsserver.config.schema import (
    AccessConfig,
    Config,
    EndpointConfig,
    JWTConfig,
    MetricsConfig,
    PortConfig,
    UserConfig,
)
from wsserver.config.writer import toml_value, write_atomic

# Keys whose schema allows more than this version accepts (see loader._reject_*).
_NOT_YET: dict[tuple[type, str], str] = {}

# Keys whose values must match other keys (see loader._check_*_refs).
_REFERS_TO = {
    (AccessConfig, "deny_endpoints"): "each a configured endpoint path",
    (AccessConfig, "allow_endpoints"): "each a configured endpoint path",
    (PortConfig, "package"): '"" or the name of a [[packages]] entry',
    (EndpointConfig, "package"): '"" or the name of a [[packages]] entry',
    (PortConfig, "client_auth"): '"none", "password" (HTTP Basic), "token" (bearer), "jwt", "certificate" '
                                 '(a verified client certificate; wss with client_certs) or "adapter:<name>" '
                                 "(HTTP Basic checked by an [[adapters]] entry); see docs/security.md",
    (PortConfig, "no_auth_user"): '"" or the name of a [[users]] entry',
    (UserConfig, "password_hash"): '"" or a hash from `wsserver hash-password`: scrypt$N$r$p$salt$hash, '
                                   "or $argon2id$... (needs argon2-cffi); plain passwords are refused",
    (UserConfig, "token"): '"", a token of at least 16 characters of A-Z a-z 0-9 - . _ ~ + /, '
                           'or "sha256:" + 64 hex digits',
    (UserConfig, "ports"): "each a configured port alias",
    (UserConfig, "endpoints"): "each a configured endpoint path",
    (JWTConfig, "key"): "HS256: a secret of at least 32 bytes; RS256/ES256: a PEM public key or certificate "
                        "(RSA >= 2048 bits, EC P-256); exactly one of key, key_file, key_env",
    (MetricsConfig, "password_hash"): '"" or a hash from `wsserver hash-password` (checked in the master: prefer '
                                      "password_env, see docs/metrics.md)",
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
    "`users[].name` is unique, and so is every `users[].token`.",
    '`client_auth = "password"` needs a user with a `password_hash`; `"token"` a user with a `token`.',
    '`client_auth = "jwt"` needs exactly one of `jwt.key`, `jwt.key_file`, `jwt.key_env`, usable with '
    "`jwt.algorithms` (HS256 alone, or RS256 / ES256 with a matching public key), and a way to send "
    "the token (`jwt.bearer`, `jwt.cookie` or `token_query_param`).",
    "`jwt.cookie` needs an Origin check (`origin.same_origin = true` or `origin.allowed`): browsers "
    "attach cookies to cross-site WebSocket requests.",
    '`token_query_param` is only used with `client_auth = "token"` or `"jwt"`.',
    "`metrics.user` needs exactly one of `metrics.password_hash` and `metrics.password_env` (whose variable "
    "must be set), and they need a user; an enabled `[metrics]` address must not be a port's address.",
    "`cluster.password_env`, when set, names an environment variable that is set and not empty.",
    '`proxy_protocol` other than `"off"` needs a non-empty `access.trusted_proxies`; on a wss port the '
    "header comes before the TLS handshake (HAProxy passing TLS through in `mode tcp`).",
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
        kind: type | tuple[type, ...] = f.metadata["kind"]
        item: type | tuple[type, ...] | None = f.metadata.get("item_kind")
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


def _default(f: dataclasses.Field[Any]) -> str:
    if f.metadata.get("required"):
        return "(required)"
    factory = cast(Callable[[], Any], f.default_factory)  # a field without a default has a factory
    value: Any = factory() if f.default is dataclasses.MISSING else f.default
    # In a code span only | needs escaping (GFM tables); &lt; would show literally.
    return "`" + toml_value(value).replace("|", "\\|") + "`"


def _allowed(cls: type, f: dataclasses.Field[Any]) -> str:
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
    lines += [
        "",
        "## Tables described elsewhere",
        "",
        "`[[keystores]]` and `[[truststores]]`: [tls.md](tls.md). `[[adapters]]`: [adapters.md](adapters.md).",
    ]
    if UNSUPPORTED_TABLES:
        tables = ", ".join(f"`{name}`" for name in UNSUPPORTED_TABLES)
        lines += ["", f"These tables are rejected ({NOT_SUPPORTED}): {tables}."]
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
