"""The configuration reference (docs/configuration.md), generated from the schema metadata.

One registry drives validation and the docs, so they cannot disagree; a unit test fails
when docs/configuration.md is not what this module generates. Regenerate with:

    .venv/bin/python -m wsserver.config.reference docs/configuration.md
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from wsserver.config.flags import cli_keys, flag_metavar
from wsserver.config.loader import DEFAULT_CONFIG_TOML
from wsserver.config.schema import (
    AccessConfig,
    Config,
    EndpointConfig,
    JWTConfig,
    MetricsConfig,
    PortConfig,
    UserConfig,
)
from wsserver.config.settings import SCALAR, TABLE, TABLES, Key, allowed, keys, tag_of, walk
from wsserver.config.writer import toml_value, write_atomic

# Keys whose values must match other keys (see wsserver/config/rules.py).
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
    (
        MetricsConfig,
        "password_hash",
    ): '"" or a hash from `wsserver hash-password` (checked in the master: prefer '
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


def _tables(cls: type) -> Iterator[tuple[str, type, str]]:
    """(header, dataclass, help) for each table below ``cls``, parents before children."""
    seen: dict[str, type] = {}  # path -> table class, to find a variant's parent
    for path, table, holder in walk(cls):
        seen[path] = table
        if holder is None:
            continue  # the file itself
        header = f"[[{path}]]" if holder.kind == TABLES else f"[{path}]"
        note = holder.help
        if holder.meta("variant"):
            tag = tag_of(keys(seen[path.rpartition(".")[0]]))
            note = f"the options of `{tag} = {toml_value(holder.name)}`; absent: all defaults"
        elif holder.meta("keyed_by"):
            note = f"{note}; also written `[{path}.NAME]`, NAME being the `{holder.meta('keyed_by')}`"
        yield header, table, note


def _cell(text: str) -> str:
    # Table cells: a | would end the cell, and <name> would vanish as an HTML tag.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


def _default(key: Key) -> str:
    if key.required:
        return "(required)"
    # In a code span only | needs escaping (GFM tables); &lt; would show literally.
    return "`" + toml_value(key.default()).replace("|", "\\|") + "`"


def _allowed(cls: type, key: Key) -> str:
    """The "Allowed" column: the engine's wording, refined by the rules across keys."""
    text = allowed(key)
    refers = _REFERS_TO.get((cls, key.name))
    if refers:
        text = f"{text}, {refers}" if key.kind != SCALAR else refers
    return _cell(text)


def _table_section(header: str, cls: type, help_text: str) -> list[str]:
    lines = ["", f"## `{header}`", ""]
    if help_text:
        lines += [f"_{help_text}._", ""]
    lines += ["| Key | Default | Allowed | Description |", "|---|---|---|---|"]
    table_keys = keys(cls)
    for name, key in table_keys.items():
        if key.kind in (TABLE, TABLES):
            continue  # a table of its own section
        lines.append(f"| `{name}` | {_default(key)} | {_allowed(cls, key)} | {_cell(key.help)} |")
    return lines


def config_reference_markdown() -> str:
    """docs/configuration.md: every key with its default, allowed values and meaning."""
    lines = [_INTRO.format(default=DEFAULT_CONFIG_TOML).rstrip("\n")]
    for header, cls, help_text in _tables(Config):
        lines += _table_section(header, cls, help_text)
    lines += ["", "## Rules across keys", ""]
    lines += [f"- {rule}" for rule in _RULES]
    lines += [
        "",
        "## Command-line flags",
        "",
        "`wsserver serve` takes these flags; each overrides its key of the file, is checked as the "
        "file's value would be, and stays in force across reloads:",
        "",
        "| Flag | Key | Allowed |",
        "|---|---|---|",
    ]
    for path, key in cli_keys(Config):
        table, _, name = path.rpartition(".")
        metavar = flag_metavar(key)
        flag = f"{key.meta('cli')} {metavar}" if metavar else key.meta("cli")
        lines.append(f"| `{flag}` | `[{table}] {name}` | {_cell(allowed(key))} |")
    lines += [
        "",
        "How keystores and truststores are used: [tls.md](tls.md). How adapters check passwords and "
        "certificates: [adapters.md](adapters.md).",
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
