"""wsserver.security.adapter_tls.RegistrySetup: adapter truststore/keystore aliases in the keystore registry."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
import trustme

from tests.support.tlsstores import PASSWORD, ca_cert, issue, write_jks, write_pem_files
from wsserver.adapters.tls import StoreReferenceError, client_context, is_path
from wsserver.config.tls_settings import KeystoreConfig, TruststoreConfig
from wsserver.security.adapter_tls import RegistrySetup
from wsserver.security.keystores import load_keystore, load_truststore
from wsserver.security.tls import TLSMaterial

ENV = {"P": PASSWORD}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def material(tmp_path: Path, ca: trustme.CA) -> TLSMaterial:
    """Keystore "ks" (JKS: keys "one" and "two" from ``ca``), truststore "cas" (JKS: the CA)."""
    write_jks(tmp_path / "ks.jks", [issue(ca, "one"), issue(ca, "two")])
    write_jks(tmp_path / "cas.jks", [], trusted=(ca_cert(ca),))
    return TLSMaterial(
        keystores={
            "ks": load_keystore(
                KeystoreConfig("ks", "jks", "ks.jks", password_env="P"), tmp_path, environ=ENV
            )
        },
        truststores={
            "cas": load_truststore(
                TruststoreConfig("cas", "jks", "cas.jks", password_env="P"), tmp_path, environ=ENV
            )
        },
    )


def _context(
    setup: RegistrySetup, truststore: str = "", keystore: str = "", key_alias: str = ""
) -> ssl.SSLContext:
    return client_context(truststore, keystore, key_alias, "1.2", setup)


def test_aliases_are_never_paths():
    assert is_path("./ca.pem") and is_path("/etc/ssl/certs/ca-certificates.crt")
    assert not is_path("ca.pem") and not is_path("corp-ca")


def test_truststore_alias_and_keystore_as_truststore(material: TLSMaterial):
    setup = RegistrySetup(material)
    ctx = _context(setup, truststore="cas")
    assert ctx.cert_store_stats()["x509_ca"] == 1
    assert ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN  # every truststore certificate is an anchor
    # no truststore: the keystore's keys' CA certificates are trusted
    assert _context(setup, keystore="ks", key_alias="two").cert_store_stats()["x509_ca"] == 1


def test_missing_aliases_and_key_selection(material: TLSMaterial):
    setup = RegistrySetup(material, failed={"broken"})
    with pytest.raises(StoreReferenceError) as info:
        _context(setup, truststore="nope")
    assert info.value.setting == "truststore" and not info.value.reported
    assert '(aliases: "cas", "ks")' in info.value.message and '"./nope"' in info.value.message
    with pytest.raises(StoreReferenceError) as info:
        _context(setup, keystore="ks")  # two keys and no key_alias
    assert info.value.setting == "keystore" and "name one with key_alias" in info.value.message
    with pytest.raises(StoreReferenceError) as info:
        _context(setup, keystore="ks", key_alias="three")
    assert info.value.setting == "key_alias" and 'aliases: "one", "two"' in info.value.message
    with pytest.raises(StoreReferenceError) as info:
        _context(setup, keystore="broken")  # its own config line says why
    assert info.value.reported


def test_pem_paths_relative_to_the_config(tmp_path: Path, ca: trustme.CA, material: TLSMaterial):
    issued = issue(ca, "pem")
    cert, key = write_pem_files(tmp_path / "certs", issued)
    (tmp_path / "certs" / "client.pem").write_bytes(key.read_bytes() + cert.read_bytes())
    (tmp_path / "certs" / "ca.pem").write_bytes(ca.cert_pem.bytes())
    setup = RegistrySetup(material, str(tmp_path))
    ctx = _context(setup, truststore="certs/ca.pem", keystore="./certs/client.pem")
    assert ctx.cert_store_stats()["x509_ca"] == 1
    with pytest.raises(StoreReferenceError, match="a PEM file keystore holds one key"):
        _context(setup, keystore="./certs/client.pem", key_alias="pem")
    with pytest.raises(StoreReferenceError, match="cannot load PEM certificates"):
        _context(setup, truststore="./certs/missing.pem")


def test_encrypted_pem_key_path_fails_without_prompting(
    tmp_path: Path, ca: trustme.CA, material: TLSMaterial
):
    issued = issue(ca, "locked")
    cert, key = write_pem_files(tmp_path, issued, password="secret")
    (tmp_path / "locked.pem").write_bytes(key.read_bytes() + cert.read_bytes())
    with pytest.raises(StoreReferenceError, match="cannot load a PEM key"):
        _context(RegistrySetup(material, str(tmp_path)), keystore="./locked.pem")


def test_a_truststore_of_expired_certificates_is_refused(tmp_path: Path):
    old_ca = trustme.CA()
    now = dt.datetime.now(dt.UTC)
    leaf = issue(old_ca, "old", not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1))
    write_jks(tmp_path / "old.jks", [], trusted=(leaf.cert,))
    material = TLSMaterial(
        truststores={
            "old": load_truststore(
                TruststoreConfig("old", "jks", "old.jks", password_env="P"), tmp_path, environ=ENV
            )
        }
    )
    with pytest.raises(StoreReferenceError, match="every certificate has expired"):
        _context(RegistrySetup(material), truststore="old")
