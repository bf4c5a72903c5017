"""The [admin] table: defaults, its address, its TLS key reference."""

from __future__ import annotations

import pytest

from wsserver.config import ConfigError, parse_config

ADMIN_USER = '[[users]]\nname = "root"\npassword_hash = "{h}"\nconnection_types = ["admin"]\n'


@pytest.fixture(scope="module")
def user() -> str:
    from wsserver.security.passwords import hash_password

    return ADMIN_USER.format(h=hash_password("pw", scrypt_n=2**10))


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "wsserver.toml")
    return info.value.errors


def test_defaults() -> None:
    admin = parse_config("").admin
    assert (admin.enabled, admin.bind, admin.port, admin.tls.keystore) == (True, "127.0.0.1", 9100, "")


def test_the_admin_address_is_its_own(user: str) -> None:
    text = '[[ports]]\nalias = "a"\nport = 9100\nbind = "127.0.0.1"\n'
    parse_config(text)  # nobody may administer: the listener does not open, no conflict
    assert errors_of(text + user) == [
        'wsserver.toml: admin.port = 9100: bind "127.0.0.1" port 9100 conflicts with ports[0] (bind "127.0.0.1")'
    ]
    parse_config(text + user + "[admin]\nport = 9101\n")
    parse_config(text + user + "[admin]\nenabled = false\n")
    assert (
        "conflicts with metrics" in errors_of(user + "[admin]\nport = 9108\n[metrics]\nenabled = true\n")[0]
    )


def test_bind_and_tls_references() -> None:
    assert errors_of('[admin]\nbind = "not an address"\n')[0].startswith(
        'wsserver.toml: admin.bind = "not an address"'
    )
    assert errors_of('[admin.tls]\nkeystore = "nope"\n') == [
        'wsserver.toml: admin.tls.keystore = "nope": must name a [[keystores]] entry (no [[keystores]] configured)'
    ]
    assert "needs admin.tls.keystore" in errors_of('[admin.tls]\nkey_alias = "k"\n')[0]
    assert "unknown key" in errors_of("[admin]\nport = 9100\nusers = 3\n")[0]
