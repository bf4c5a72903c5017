"""wsserver.preflight: "can this config run here", and parse_config reading nothing but its text."""

from __future__ import annotations

import os

import pytest

from wsserver import preflight
from wsserver.config import ConfigError, parse_config

ECHO = '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n'
PORT = '[[ports]]\nalias = "a"\nport = 8080\n'
UNSET = "WSSERVER_PREFLIGHT_SURELY_UNSET"

# Each is valid text, and cannot run here: a check beyond the text refuses it.
NEEDS_MORE_THAN_TEXT = [
    (
        "plain password",
        ECHO + PORT + '[[users]]\nname = "a"\npassword_hash = "hunter2"\n',
        "wsserver.toml: users[0].password_hash: must be a hash made by `wsserver hash-password`",
    ),
    (
        "short token",
        ECHO + PORT + '[[users]]\nname = "a"\ntoken = "abc"\n',
        "wsserver.toml: users[0].token: must be a bearer token of at least 16 characters",
    ),
    (
        "same token twice",
        ECHO + PORT + '[[users]]\nname = "a"\ntoken = "0123456789abcdefXYZ"\n'
        '[[users]]\nname = "b"\ntoken = "0123456789abcdefXYZ"\n',
        "wsserver.toml: users[1].token: the same token as users[0]",
    ),
    (
        "jwt key variable",
        ECHO + PORT + f'client_auth = "jwt"\n[ports.jwt]\nkey_env = "{UNSET}"\n',
        f"wsserver.toml: ports[0].jwt: environment variable {UNSET} is not set or empty",
    ),
    (
        "cluster password variable",
        ECHO + PORT + f'[cluster]\nbroker = "redis://h"\npassword_env = "{UNSET}"\n',
        f'wsserver.toml: cluster.password_env = "{UNSET}": this environment variable is not set or empty',
    ),
    (
        "metrics password variable",
        ECHO + PORT + f'[metrics]\nuser = "p"\npassword_env = "{UNSET}"\n',
        f'wsserver.toml: metrics.password_env = "{UNSET}": this environment variable is not set or empty',
    ),
    (
        "adapter secret variable",
        ECHO + PORT + '[[adapters]]\nname = "r"\ntype = "radius"\n'
        f'servers = [{{ url = "radius://127.0.0.1:1812" }}]\n[adapters.radius]\nsecret_env = "{UNSET}"\n',
        f'wsserver.toml: adapters[0].radius.secret_env = "{UNSET}": environment variable {UNSET} is not set',
    ),
    (
        "adapter dictionary file",
        ECHO + PORT + '[[adapters]]\nname = "r"\ntype = "radius"\n'
        'servers = [{ url = "radius://127.0.0.1:1812" }]\n[adapters.radius]\nsecret_env = "S"\n'
        'dictionary = "/nonexistent/dictionary"\n',
        'wsserver.toml: adapters[0].radius.dictionary = "/nonexistent/dictionary": file does not exist',
    ),
]


@pytest.mark.parametrize(
    ("text", "line"),
    [(t, line) for _, t, line in NEEDS_MORE_THAN_TEXT],
    ids=[i for i, _, _ in NEEDS_MORE_THAN_TEXT],
)
def test_parse_config_reads_only_its_text_and_preflight_refuses(text: str, line: str) -> None:
    environ = {"S": "secret"}
    parse_config(text, "wsserver.toml")  # the text is fine
    with pytest.raises(ConfigError) as info:
        preflight.parse(text, "wsserver.toml", environ=environ)
    assert line in info.value.errors[0]
    assert len(info.value.errors) == 1


def test_parse_config_reads_no_environment_and_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> object:
        raise AssertionError("parse_config read the environment or a file")

    texts = [text for _, text, _ in NEEDS_MORE_THAN_TEXT]
    monkeypatch.setattr(os.path, "isfile", refused)
    monkeypatch.setattr(os, "environ", _RefusingEnviron())
    for text in texts:
        parse_config(text, "wsserver.toml")


class _RefusingEnviron(dict[str, str]):
    def __getitem__(self, key: str) -> str:
        raise AssertionError(f"parse_config read ${key}")

    def get(self, key: str, default: object = None) -> str:  # type: ignore[override]
        raise AssertionError(f"parse_config read ${key}")

    def __contains__(self, key: object) -> bool:
        raise AssertionError(f"parse_config read ${key}")


def test_the_given_environment_is_the_one_read() -> None:
    text = ECHO + PORT + '[cluster]\nbroker = "redis://h"\npassword_env = "WSSERVER_PREFLIGHT_CLUSTER"\n'
    assert preflight.parse(text, environ={"WSSERVER_PREFLIGHT_CLUSTER": "pw"}).cluster is not None
    with pytest.raises(ConfigError):
        preflight.parse(text, environ={"WSSERVER_PREFLIGHT_CLUSTER": ""})


def test_shape_and_host_errors_in_one_round() -> None:
    text = ECHO + PORT + 'backlog = 0\n[[users]]\nname = "a"\npassword_hash = "hunter2"\n'
    with pytest.raises(ConfigError) as info:
        preflight.parse(text, "wsserver.toml")
    assert [line.split(": ", 2)[1] for line in info.value.errors] == [
        "ports[0].backlog = 0",
        "users[0].password_hash",
    ]


def test_check_text_and_file(tmp_path) -> None:
    good = ECHO + PORT
    result = preflight.check_text(good, "w.toml")
    assert result.ok and result.config is not None and result.errors == [] and result.notes == []
    bad = preflight.check_text(good + '[[users]]\nname = "a"\npassword_hash = "x"\n', "w.toml")
    assert bad.config is None and not bad.ok
    assert bad.errors[0].startswith("w.toml: users[0].password_hash: ")
    no_ports = preflight.check_text(ECHO, "w.toml")
    assert no_ports.errors and "no [[ports]] declared" in no_ports.errors[0]
    path = tmp_path / "wsserver.toml"
    path.write_text(good)
    assert preflight.check_file(path).ok
    assert (
        preflight.check_file(tmp_path / "missing.toml").errors[0].startswith(f"{tmp_path / 'missing.toml'}: ")
    )


def test_endpoints_are_checked_by_the_callers_importer_first() -> None:
    cfg = preflight.parse(ECHO + PORT)
    seen = []

    def importer(config: object) -> str | None:
        seen.append(config)
        return "w.toml: endpoints[0].handler = 'x:Y': cannot import module 'x'"

    assert preflight.preflight(cfg, import_endpoints=importer) == [
        "w.toml: endpoints[0].handler = 'x:Y': cannot import module 'x'"
    ]
    assert seen == [cfg]
    assert preflight.preflight(cfg, import_endpoints=lambda config: None) == []
    assert preflight.preflight(cfg) == []


def test_keystore_problems_are_preflight_errors(tmp_path) -> None:
    text = (
        ECHO + '[[ports]]\nalias = "s"\nport = 8443\nprotocol = "wss"\n[ports.tls]\nkeystore = "main"\n'
        f'[[keystores]]\nalias = "main"\ntype = "pem"\n[keystores.keys.default]\n'
        f'cert = "{tmp_path}/missing.crt"\nkey = "{tmp_path}/missing.key"\n'
    )
    result = preflight.check_text(text, "w.toml")
    assert result.config is not None  # the text is valid; the files are not there
    assert result.errors and all(line.startswith("w.toml: ") for line in result.errors)
    assert result.notes == []
