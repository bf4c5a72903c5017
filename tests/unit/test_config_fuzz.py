"""Broken files never crash the validator: random mutations of a config that uses every kind of
table (adapters of each shape, PEM and PKCS#12 keystores, SNI, users, a cluster) either parse or
raise ConfigError whose every line names the file and a key, and a valid result writes back to
the same config. Deterministic (a fixed seed), pure logic, about a second."""

from __future__ import annotations

import copy
import random
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.configs import EVERY_TABLE as BASE
from wsserver.config import ConfigError, dump_config, parse_config
from wsserver.config.tomltext import toml_key, toml_value

VALUES: list[Any] = [
    0,
    -1,
    1,
    70000,
    3.5,
    True,
    "",
    "x",
    "a b",
    "127.0.0.1",
    "ldap://h",
    "radius://h:1",
    "/p",
    "a:B",
    [],
    ["x"],
    [1],
    {},
    {"a": 1},
    "none",
    "wss",
    "tls",
    "pem",
    "jks",
    "pkcs11",
    "2xx",
    "users",
    "otp",
    "ocsp",
    "require",
    "1.3",
    "HS256",
    "admin",
    "sha256:" + "0" * 64,
]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield (*path, key)
        yield from _paths(value, (*path, key))


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{toml_key(k)} = {_inline(v)}" for k, v in value.items()) + " }"
            if value
            else "{}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return toml_value(value)


def _mutants(count: int, seed: int = 17) -> Iterator[str]:
    rng = random.Random(seed)
    data = tomllib.loads(BASE)
    for _ in range(count):
        mutant = copy.deepcopy(data)
        for _ in range(rng.choice((1, 1, 2, 3))):
            path = rng.choice(list(_paths(mutant)))
            parent: Any = mutant
            for key in path[:-1]:
                parent = parent[key]
            roll = rng.random()
            if roll < 0.25 and isinstance(parent, dict):
                del parent[path[-1]]
            elif roll < 0.35 and isinstance(parent, dict):
                parent[f"{path[-1]}z"] = copy.deepcopy(rng.choice(VALUES))
            elif roll < 0.45 and isinstance(parent, list):
                parent.append(copy.deepcopy(parent[path[-1]]))
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
        yield "".join(f"{toml_key(k)} = {_inline(v)}\n" for k, v in mutant.items())


def test_the_base_config_is_valid() -> None:
    cfg = parse_config(BASE, "w.toml")
    assert parse_config(dump_config(cfg), "w.toml") == cfg


@pytest.mark.parametrize("chunk", range(4))
def test_mutated_configs_parse_or_fail_in_one_line_per_problem(chunk: int) -> None:
    for text in _mutants(150, seed=chunk):
        try:
            cfg = parse_config(text, "w.toml")
        except ConfigError as exc:
            assert exc.errors, text
            for line in exc.errors:
                assert line.startswith("w.toml: ") and "\n" not in line, (line, text)
        else:
            assert parse_config(dump_config(cfg), "w.toml") == cfg, text
