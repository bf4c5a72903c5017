"""``python -m tests.support.wss_shim serve ...``: wsserver with [[keystores]]/[[truststores]] and
wss ports accepted, for the TLS tests, until the config loader knows them itself.

When ``Config`` has a ``keystores`` field (the loader wires wsserver.config.tls_settings in),
this does nothing but run ``wsserver``. Until then it patches the loader in this process (the
master; workers are forked from it):

* ``[[keystores]]`` / ``[[truststores]]`` are taken out of the TOML before the loader sees it,
  parsed by :mod:`wsserver.config.tls_settings`, and set on the Config as ``keystores`` /
  ``truststores``;
* the loader's "wss is not supported" rule is replaced by ``check_tls_references``;
* the keystores are opened (``tls_for_config``) as part of validation, so a wrong password or
  an expired certificate stops the server with exit code 2 and one line per problem.
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib
import types
from typing import Any


def install() -> bool:
    """Patch the loader if it does not know keystores yet; True when patched."""
    from wsserver.config import loader
    from wsserver.config.schema import Config

    if "keystores" in {f.name for f in dataclasses.fields(Config)}:
        return False
    from wsserver.config.tls_settings import check_tls_references, parse_keystores, parse_truststores
    from wsserver.security.tls import TLSConfigError, tls_for_config

    side: dict[str, Any] = {}

    def loads(text: str) -> dict[str, Any]:
        data = tomllib.loads(text)
        side["keystores"] = data.pop("keystores", None)
        side["truststores"] = data.pop("truststores", None)
        return data

    loader.tomllib = types.SimpleNamespace(loads=loads, TOMLDecodeError=tomllib.TOMLDecodeError)  # type: ignore[attr-defined]

    def reject_nothing(cfg: Any, errors: Any) -> None:
        source = errors.source
        keystores, ks_errors = parse_keystores(side.get("keystores"), source)
        truststores, ts_errors = parse_truststores(side.get("truststores"), source)
        errors.lines += ks_errors + ts_errors
        errors.lines += check_tls_references(cfg.server.tls, cfg.ports, keystores, truststores, source,
                                             keystores_complete=not ks_errors, truststores_complete=not ts_errors)
        side["parsed"] = (keystores, truststores)

    loader._reject_tls = reject_nothing  # type: ignore[attr-defined]
    original = loader.parse_config

    def parse_config(text: str, source: str = "<string>") -> Any:
        cfg = original(text, source)
        keystores, truststores = side.pop("parsed", ((), ()))
        object.__setattr__(cfg, "keystores", keystores)
        object.__setattr__(cfg, "truststores", truststores)
        try:
            tls_for_config(cfg)
        except TLSConfigError as exc:
            raise loader.ConfigError(exc.errors) from None
        return cfg

    loader.parse_config = parse_config  # type: ignore[assignment]
    return True


def main(argv: list[str] | None = None) -> int:
    install()
    from wsserver.cli import main as wsserver_main

    return wsserver_main(argv)


if __name__ == "__main__":
    sys.exit(main())
