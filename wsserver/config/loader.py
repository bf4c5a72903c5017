"""Load wsserver.toml: read the file, parse the TOML, and validate it into the frozen dataclasses
of :mod:`.schema`.

Validation has two passes. The shape pass (:mod:`.settings`, the engine) walks the TOML tables
along the schema: every key must be known and every value must have the right type, range,
choice or pattern; it builds the dataclasses. The rules pass (:mod:`.rules`) then checks what
spans several keys (unique aliases, references, ...) on the built ``Config``. Every problem is
collected, so the operator fixes the file in one round, and each is one line:

    wsserver.toml: ports[1].backlog = 70000: must be an integer 1..65535
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tomllib

from wsserver.config.adapter_settings import prepare_adapters
from wsserver.config.host import PURE, HostChecks
from wsserver.config.rules import check_rules
from wsserver.config.schema import Config
from wsserver.config.settings import Builder, ConfigError, Errors

__all__ = [
    "DEFAULT_CONFIG_TOML",
    "ConfigError",
    "default_config",
    "load_config",
    "parse_config",
    "require_ports",
]

DEFAULT_CONFIG_TOML = """\
# wsserver's built-in configuration, used when no file is given:
# one plain WebSocket port on the loopback address with the echo endpoint.

[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"

[[ports]]
alias = "default_ws"
protocol = "ws"
bind = "127.0.0.1"
port = 8080
"""


# --- public API -----------------------------------------------------------------------------


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, source: str) -> ConfigError:
    # Python 3.11's TOMLDecodeError has no line attribute: the place is in the message.
    message = str(exc)
    where = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if where:
        place = f"line {where[1]}, column {where[2]}"
        message = message[: where.start()]
    elif message.endswith(" (at end of document)"):
        place = f"line {max(len(text.splitlines()), 1)} (end of file)"
        message = message.removesuffix(" (at end of document)")
    else:
        place = "line ?"
    return ConfigError([f"{source}: {place}: invalid TOML: {message}"])


def parse_config(text: str, source: str = "<string>", *, host: HostChecks = PURE) -> Config:
    """Parse and validate TOML text. Raises ConfigError listing every problem found.

    Reads nothing but ``text``: the rules that need the environment, files or ``security/``
    run only with ``host`` (:func:`wsserver.preflight.parse` passes the real ones).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text, source) from None
    except RecursionError:
        raise ConfigError([f"{source}: invalid TOML: arrays or inline tables nested too deeply"]) from None
    errors = Errors(source, host)
    if "adapters" in data:
        data["adapters"] = prepare_adapters(data["adapters"], errors)
    cfg = check_rules(Builder(errors).table(Config, data, ""), errors)
    if errors.lines:
        raise ConfigError(errors.lines)
    return dataclasses.replace(cfg, source=source)


def load_config(path: str | os.PathLike[str] | None, *, host: HostChecks = PURE) -> Config:
    """Read and validate a config file; ``None`` gives the built-in default config.

    ``host`` as for :func:`parse_config`; :func:`wsserver.preflight.load` passes the real checks.
    """
    if path is None:
        return default_config()
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read config file: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{source}: line {line}: invalid TOML: not UTF-8 text"]) from None
    return require_ports(parse_config(text, source, host=host), source)


def require_ports(config: Config, source: str) -> Config:
    """A config *file* with no [[ports]] is refused unless ``[server] allow_no_ports = true``.

    Such a file is most often a truncated or wrong one (a full disk, an editor crash): refusing
    it makes a reload keep what runs, and ``wsserver check`` and the admin API say the same.
    """
    if not config.ports and not config.server.allow_no_ports:
        raise ConfigError(
            [
                f"{source}: ports: no [[ports]] declared, the server would serve nothing: "
                "declare one, or set [server] allow_no_ports = true if that is intended"
            ]
        )
    return config


@functools.cache
def default_config() -> Config:
    """The built-in config: one ws port on 127.0.0.1:8080 serving /echo.

    Cached: a Config is immutable all the way down, so every caller can share one.
    """
    return parse_config(DEFAULT_CONFIG_TOML, "<built-in>")
