"""The settings engine (wsserver/config/settings.py): kinds read from annotations, tagged unions,
keyed tables, command-line flags, and writing back what it parsed."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from tests.support.configs import EVERY_TABLE
from wsserver.cli import build_parser
from wsserver.config import Config, ConfigError, dump_config, parse_config
from wsserver.config.adapter_settings import AdapterSettings, LdapOptions, RadiusOptions
from wsserver.config.flags import apply_overrides, check_overrides, cli_keys
from wsserver.config.schema import PortConfig, ServerConfig
from wsserver.config.settings import (
    ARRAY,
    MAP,
    SCALAR,
    TABLE,
    TABLES,
    Builder,
    Errors,
    keys,
    setting,
)
from wsserver.config.tls_settings import KeystoreConfig, PemKeyConfig


def build(cls: type, data: dict) -> tuple[object, list[str]]:
    errors = Errors("t.toml")
    return Builder(errors).table(cls, data, "x"), errors.lines


def test_kinds_come_from_the_annotations() -> None:
    port = keys(PortConfig)
    assert (port["backlog"].kind, port["backlog"].types) == (SCALAR, (int,))
    assert port["compression"].types == (bool,)
    assert (port["pool"].kind, port["tls"].kind, port["tls"].optional) == (TABLE, TABLE, True)
    assert keys(Config)["ports"].kind == TABLES and keys(Config)["adapters"].table is AdapterSettings
    assert keys(port["access"].table)["ip_deny"].kind == ARRAY  # type: ignore[arg-type]
    assert (
        keys(RadiusOptions)["attributes"].types == (str, int)
        and keys(RadiusOptions)["attributes"].kind == MAP
    )
    assert keys(ServerConfig)["graceful_timeout"].types == (int, float)


def test_a_number_is_stored_as_a_float_and_a_bool_is_not_an_int() -> None:
    server, errors = build(ServerConfig, {"graceful_timeout": 5, "workers": True})
    assert isinstance(server.graceful_timeout, float) and server.graceful_timeout == 5.0  # type: ignore[attr-defined]
    assert errors == ["t.toml: x.workers = true: must be an integer 0..256"]


def test_an_annotation_without_a_toml_kind_is_refused_when_read() -> None:
    @dataclasses.dataclass(frozen=True)
    class Odd:
        when: complex = setting(0j)

    with pytest.raises(TypeError, match="setting when: the settings engine has no TOML kind"):
        keys(Odd)


def test_tagged_union_fills_the_chosen_variant_and_refuses_the_others() -> None:
    adapter, errors = build(AdapterSettings, {"name": "a", "type": "ldap"})
    assert errors == []
    assert adapter.ldap == LdapOptions() and adapter.radius is None  # type: ignore[attr-defined]
    adapter, errors = build(
        AdapterSettings,
        {"name": "a", "type": "ldap", "radius": {"secret_env": "S"}, "ldap": {"search_scope": "all"}},
    )
    assert errors == [
        't.toml: x.ldap.search_scope = "all": must be one of "subtree", "one"',
        't.toml: x.radius: is for type = "radius", but this adapter has type = "ldap"',
    ]
    # The tag's choices are the variants' names; a bad tag says so, and nothing else.
    _adapter, errors = build(AdapterSettings, {"name": "a", "type": "kerberos", "ldap": {}})
    assert errors == [
        't.toml: x.type = "kerberos": must be one of "ldap", "radius", "http", "ocsp", "gemalto"'
    ]


def test_keyed_tables_read_both_forms_and_refuse_duplicates() -> None:
    table_form, errors = build(
        KeystoreConfig, {"alias": "k", "type": "pem", "keys": {"a": {"cert": "a.crt", "key": "a.key"}}}
    )
    assert errors == []
    array_form, errors = build(
        KeystoreConfig,
        {"alias": "k", "type": "pem", "keys": [{"alias": "a", "cert": "a.crt", "key": "a.key"}]},
    )
    assert errors == [] and table_form == array_form
    assert array_form.keys == (PemKeyConfig("a", "a.crt", "a.key"),)  # type: ignore[attr-defined]
    _store, errors = build(
        KeystoreConfig,
        {
            "alias": "k",
            "type": "pem",
            "keys": [
                {"alias": "a", "cert": "a.crt", "key": "a.key"},
                {"alias": "a", "cert": "b.crt", "key": "b.key"},
            ],
        },
    )
    assert errors == ['t.toml: x.keys[1].alias = "a": duplicate alias (also x.keys[0])']


def test_map_values_are_checked_by_their_annotation() -> None:
    _options, errors = build(RadiusOptions, {"attributes": {"Service-Type": "Login-User", "NAS-Port": [7]}})
    assert errors == ["t.toml: x.attributes.NAS-Port = [7]: must be a string or an integer"]


def test_secret_values_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config('[[users]]\nname = "u"\ntoken = 12345\n[cluster]\nbroker = "redis://:pw@host"\n')
    text = str(exc.value)
    assert "users[0].token: must be a string" in text and "12345" not in text
    assert "cluster.broker: must be" in text and "pw@host" not in text


def test_flags_come_from_the_registry() -> None:
    flags = {key.meta("cli"): path for path, key in cli_keys(Config)}
    assert flags == {
        "--workers": "server.workers",
        "--log-level": "server.log_level",
        "--log-format": "server.log_format",
        "--pid": "server.pid_file",
        "--reuse-port": "server.reuse_port",
    }
    serve = build_parser().parse_args(["serve", "--workers", "3", "--reuse-port"])
    assert serve.setting__server__workers == 3 and serve.setting__server__reuse_port is True
    assert serve.setting__server__log_level is None


def test_overrides_are_checked_like_the_file_and_applied_once() -> None:
    cfg = parse_config('[server]\nworkers = 4\nlog_level = "info"\n')
    changed = apply_overrides(cfg, {"server.workers": 2, "server.log_level": "debug"})
    assert (changed.server.workers, changed.server.log_level) == (2, "debug")
    assert changed.server.graceful_timeout == cfg.server.graceful_timeout and changed.ports == cfg.ports
    with pytest.raises(ConfigError) as exc:
        check_overrides(Config, {"server.workers": 300, "server.log_level": "loud"})
    assert exc.value.errors == [
        "--workers = 300: must be an integer 0..256",
        '--log-level = "loud": must be one of "debug", "info", "warning", "error", "critical"',
    ]


def test_adapters_keystores_and_sni_are_written_back_and_read_again() -> None:
    cfg = parse_config(EVERY_TABLE)
    assert [a.type for a in cfg.adapters] == [
        "radius",
        "ldap",
        "gemalto",
        "ocsp",
    ]  # "otp" is gemalto's other name
    text = dump_config(cfg)
    assert parse_config(text) == cfg
    data = tomllib.loads(text)
    assert data["keystores"][0]["keys"][1] == {
        "alias": "two words",
        "cert": "two.crt",
        "key": "two.key",
        "chain": "ca.pem",
    }
    assert "ldap" not in data["adapters"][0] and data["adapters"][2]["gemalto"]["first_factor"] == "corp"


@pytest.mark.parametrize(("value", "shown"), [("{}", ""), ("[1]", " = [1]"), ("3", " = 3")])
def test_a_tag_of_the_wrong_type_is_an_error_line_not_a_crash(value: str, shown: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(f'[[adapters]]\nname = "a"\ntype = {value}\n')
    assert exc.value.errors == [
        f'<string>: adapters[0].type{shown}: must be one of "ldap", "radius", "http", "ocsp", "gemalto"'
    ]


def test_a_bad_array_of_stores_is_not_reported_again_by_its_references() -> None:
    """keystores = 3 is one error: the port naming a keystore is not also told it names none."""
    with pytest.raises(ConfigError) as exc:
        parse_config(
            'keystores = 3\n[[ports]]\nalias = "p"\nport = 1\nprotocol = "wss"\n[ports.tls]\nkeystore = "k"\n'
        )
    assert exc.value.errors == ["<string>: keystores = 3: must be an array of tables ([[keystores]])"]
