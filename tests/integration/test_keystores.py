"""Keystores and truststores made here (PEM, PKCS#12 with keytool, JKS with pyjks), each with
two keys: the right key per alias, and a clear error naming keystore and alias for each problem."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest
import trustme
from cryptography.x509.oid import NameOID

from tests.support.tlsstores import (
    PASSWORD,
    ca_cert,
    issue,
    keytool,
    write_jks,
    write_pem_files,
    write_pkcs12_multi,
    write_pkcs12_single,
    write_pkcs12_truststore,
)
from wsserver.config.tls_settings import KeystoreConfig, PemKeyConfig, TruststoreConfig
from wsserver.security.keystores import KeystoreError, key_matches, load_keystore, load_truststore

pytestmark = pytest.mark.integration

ENV = {"KS_PASSWORD": PASSWORD}
NOW = datetime.datetime.now(datetime.UTC)

needs_keytool = pytest.mark.skipif(keytool() is None, reason="keytool (default-jre-headless) not installed")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def keys(ca):
    return issue(ca, "alpha"), issue(ca, "beta", key_type=trustme.KeyType.RSA)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, ca, keys) -> dict[str, Path]:
    """One file of each kind, made once per module (keytool takes about a second)."""
    d = tmp_path_factory.mktemp("stores")
    out = {"jks": write_jks(d / "two.jks", list(keys))}
    if keytool():
        out["p12"] = write_pkcs12_multi(d / "two.p12", list(keys))
    for issued in keys:
        write_pem_files(d / "pem", issued, password=PASSWORD)
    return out | {"dir": d}


def cn(cert) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def pem_store(d: Path, **kw) -> KeystoreConfig:
    keys = tuple(PemKeyConfig(alias=n, cert=f"pem/{n}.crt", key=f"pem/{n}.key") for n in ("alpha", "beta"))
    return KeystoreConfig(alias="main", type="pem", password_env="KS_PASSWORD", keys=keys, **kw)


# --- the right key for each alias -----------------------------------------------------------


def _check_two_keys(store, keys) -> None:
    for issued in keys:
        entry = store.key(issued.name)
        assert entry.alias == issued.name
        assert entry.keystore == store.alias
        assert cn(entry.certificate) == f"{issued.name}.test"
        assert key_matches(entry.private_key, entry.certificate)
        assert entry.certificate == issued.cert
        assert issued.chain[-1] in entry.chain  # the CA travels with the key
    assert set(store.aliases()) == {"alpha", "beta"}


def test_pem_keystore_two_aliases(stores, keys):
    store = load_keystore(pem_store(stores["dir"]), stores["dir"], environ=ENV)
    _check_two_keys(store, keys)


@needs_keytool
def test_pkcs12_keystore_two_aliases(stores, keys):
    """cryptography's load_pkcs12 alone would drop the second key: each alias gets its own."""
    cfg = KeystoreConfig(alias="p12", type="pkcs12", path=str(stores["p12"]), password_env="KS_PASSWORD")
    store = load_keystore(cfg, environ=ENV)
    _check_two_keys(store, keys)
    assert store.key("alpha").private_key.public_key() != store.key("beta").private_key.public_key()


def test_jks_keystore_two_aliases(stores, keys):
    cfg = KeystoreConfig(alias="j", type="jks", path=str(stores["jks"]), password_env="KS_PASSWORD")
    _check_two_keys(load_keystore(cfg, environ=ENV), keys)


def test_jks_alias_case_insensitive(stores):
    cfg = KeystoreConfig(alias="j", type="jks", path=str(stores["jks"]), password_env="KS_PASSWORD")
    assert load_keystore(cfg, environ=ENV).key("ALPHA").alias == "alpha"


def test_jks_separate_key_password(tmp_path, keys):
    path = write_jks(tmp_path / "kp.jks", list(keys), key_password="keypass1")
    base = dict(alias="j", type="jks", path=str(path), password_env="KS_PASSWORD")
    store = load_keystore(KeystoreConfig(**base), environ=ENV)
    with pytest.raises(
        KeystoreError, match=r'keystore "j": key alias "alpha": wrong key password .*key_password_env'
    ):
        store.key("alpha")
    store = load_keystore(KeystoreConfig(**base, key_password_env="KP"), environ=ENV | {"KP": "keypass1"})
    _check_two_keys(store, keys)


def test_single_key_pkcs12_by_cryptography(tmp_path, keys):
    path = write_pkcs12_single(tmp_path / "one.p12", keys[0])
    store = load_keystore(
        KeystoreConfig(alias="one", type="pkcs12", path=str(path), password_env="KS_PASSWORD"), environ=ENV
    )
    assert store.aliases() == ("alpha",)
    assert store.key().certificate == keys[0].cert  # "" = the only key


def test_pkcs12_without_password(tmp_path, keys):
    path = write_pkcs12_single(tmp_path / "nopw.p12", keys[1], password=None)
    store = load_keystore(KeystoreConfig(alias="np", type="pkcs12", path=str(path)))
    assert store.key("beta").certificate == keys[1].cert


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_pkcs12_legacy_3des(tmp_path, keys):
    """Old exporters (openssl -legacy, Windows) shroud keys with PKCS#12 PBE-3DES, not PBES2."""
    cert, key = write_pem_files(tmp_path, keys[0])
    out = tmp_path / "legacy.p12"
    result = subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-export",
            "-legacy",
            "-in",
            str(cert),
            "-inkey",
            str(key),
            "-name",
            "Legacy Key",
            "-passout",
            f"pass:{PASSWORD}",
            "-out",
            str(out),
        ],
        capture_output=True,
        timeout=30,
    )
    if result.returncode != 0:
        pytest.skip("openssl without -legacy")
    store = load_keystore(
        KeystoreConfig(alias="leg", type="pkcs12", path=str(out), password_env="KS_PASSWORD"), environ=ENV
    )
    assert store.key("Legacy Key").certificate == keys[0].cert


def test_keystore_serves_as_truststore(stores, ca):
    cfg = KeystoreConfig(alias="j", type="jks", path=str(stores["jks"]), password_env="KS_PASSWORD")
    assert ca_cert(ca) in load_keystore(cfg, environ=ENV).trust_certificates()


# --- errors name keystore and alias ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["jks", "p12", "pem"])
def test_wrong_password(stores, kind):
    env = {"KS_PASSWORD": "wrong-password"}
    if kind == "pem":
        cfg = pem_store(stores["dir"])
        match = (
            r'keystore "main": key alias "alpha": key: wrong password for .*alpha.key \(from \$KS_PASSWORD\)'
        )
    else:
        if kind not in stores:
            pytest.skip("keytool not installed")
        cfg = KeystoreConfig(
            alias="ks",
            type="pkcs12" if kind == "p12" else "jks",
            path=str(stores[kind]),
            password_env="KS_PASSWORD",
        )
        match = r'keystore "ks": wrong password for .* \(from \$KS_PASSWORD\)'
    with pytest.raises(KeystoreError, match=match):
        load_keystore(cfg, stores["dir"], environ=env)


def test_missing_alias_lists_known(stores):
    cfg = KeystoreConfig(alias="j", type="jks", path=str(stores["jks"]), password_env="KS_PASSWORD")
    store = load_keystore(cfg, environ=ENV)
    with pytest.raises(KeystoreError) as info:
        store.key("gamma")
    assert (
        str(info.value) == 'keystore "j": key alias "gamma": no such key alias in the jks store '
        '(aliases: "alpha", "beta")'
    )
    with pytest.raises(KeystoreError, match=r'keystore "j": holds 2 keys .* name one with key_alias'):
        store.key("")


@pytest.mark.parametrize("when", ["expired", "not_yet_valid"])
def test_expired_or_future_certificate(tmp_path, ca, when):
    day = datetime.timedelta(days=1)
    if when == "expired":
        issued = issue(ca, "old", not_before=NOW - 10 * day, not_after=NOW - day)
        match = (
            r'keystore "main": key alias "old": certificate expired on \d{4}-\d\d-\d\d .*UTC \(CN=old.test'
        )
    else:
        issued = issue(ca, "old", not_before=NOW + day, not_after=NOW + 10 * day)
        match = r'keystore "main": key alias "old": certificate is not valid before \d{4}-'
    write_pem_files(tmp_path, issued)
    cfg = KeystoreConfig(alias="main", type="pem", keys=(PemKeyConfig("old", "old.crt", "old.key"),))
    store = load_keystore(cfg, tmp_path)
    with pytest.raises(KeystoreError, match=match):
        store.key("old")


def test_expired_in_jks(tmp_path, ca):
    old = issue(
        ca, "old", not_before=NOW - datetime.timedelta(days=9), not_after=NOW - datetime.timedelta(days=2)
    )
    good = issue(ca, "good")
    path = write_jks(tmp_path / "mixed.jks", [old, good])
    store = load_keystore(
        KeystoreConfig(alias="j", type="jks", path=str(path), password_env="KS_PASSWORD"), environ=ENV
    )
    assert store.key("good").certificate == good.cert  # one bad key does not spoil the others
    with pytest.raises(KeystoreError, match=r'keystore "j": key alias "old": certificate expired on'):
        store.key("old")


def test_key_not_matching_certificate(tmp_path, keys):
    write_pem_files(tmp_path, keys[0])
    write_pem_files(tmp_path, keys[1])
    cfg = KeystoreConfig(alias="main", type="pem", keys=(PemKeyConfig("mixed", "alpha.crt", "beta.key"),))
    with pytest.raises(
        KeystoreError,
        match=r'keystore "main": key alias "mixed": private key does not match its '
        r"certificate \(CN=alpha.test",
    ):
        load_keystore(cfg, tmp_path).key("mixed")


@pytest.mark.parametrize("kind", ["pem_cert", "pem_key", "jks", "pkcs12"])
def test_missing_file(tmp_path, keys, kind):
    write_pem_files(tmp_path, keys[0])
    if kind == "pem_cert":
        cfg = KeystoreConfig(alias="m", type="pem", keys=(PemKeyConfig("a", "nope.crt", "alpha.key"),))
        match = r'keystore "m": key alias "a": cert: file not found: .*nope.crt'
    elif kind == "pem_key":
        cfg = KeystoreConfig(alias="m", type="pem", keys=(PemKeyConfig("a", "alpha.crt", "nope.key"),))
        match = r'keystore "m": key alias "a": key: file not found: .*nope.key'
    else:
        cfg = KeystoreConfig(alias="m", type=kind, path="nope.store", password_env="KS_PASSWORD")
        match = r'keystore "m": path: file not found: .*nope.store'
    with pytest.raises(KeystoreError, match=match):
        load_keystore(cfg, tmp_path, environ=ENV)


def test_password_sources(tmp_path, stores):
    cfg = KeystoreConfig(alias="j", type="jks", path=str(stores["jks"]), password_env="NOT_SET_ANYWHERE")
    with pytest.raises(
        KeystoreError,
        match=r'keystore "j": password_env: environment variable NOT_SET_ANYWHERE '
        "is not set",
    ) as info:
        load_keystore(cfg, environ={})
    assert info.value.setting == "password_env"
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    cfg = KeystoreConfig(alias="j", type="jks", path=str(stores["jks"]), password_file="pw")
    assert load_keystore(cfg, tmp_path).key("alpha")
    cfg = KeystoreConfig(alias="j", type="jks", path=str(stores["jks"]), password_file="missing-pw")
    with pytest.raises(KeystoreError, match=r'keystore "j": password_file: cannot read .*missing-pw'):
        load_keystore(cfg, tmp_path)


def test_encrypted_pem_key_without_password(stores):
    cfg = pem_store(stores["dir"])
    cfg = KeystoreConfig(alias=cfg.alias, type="pem", keys=cfg.keys)  # no password_env
    with pytest.raises(
        KeystoreError, match=r'key alias "alpha": key: .*alpha.key is encrypted; set password_env'
    ):
        load_keystore(cfg, stores["dir"])


@needs_keytool
def test_wrong_type_hints(stores):
    jks_as_p12 = KeystoreConfig(alias="x", type="pkcs12", path=str(stores["jks"]), password_env="KS_PASSWORD")
    with pytest.raises(
        KeystoreError, match=r'is not a PKCS#12 file; this is a JKS/JCEKS file: use type = "jks"'
    ):
        load_keystore(jks_as_p12, environ=ENV)
    p12_as_jks = KeystoreConfig(alias="x", type="jks", path=str(stores["p12"]), password_env="KS_PASSWORD")
    with pytest.raises(KeystoreError, match=r'looks like a PKCS#12 file: use type = "pkcs12"'):
        load_keystore(p12_as_jks, environ=ENV)


def test_pkcs11_explains_itself():
    cfg = KeystoreConfig(alias="hsm", type="pkcs11", path="/usr/lib/softhsm/libsofthsm2.so", token="t")
    with pytest.raises(KeystoreError, match=r'keystore "hsm": type "pkcs11" is not available in this build'):
        load_keystore(cfg)


# --- truststores ----------------------------------------------------------------------------


def test_truststores_of_every_type(tmp_path, ca, keys):
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(ca.cert_pem.bytes())
    other = trustme.CA()
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.pem").write_bytes(ca.cert_pem.bytes())
    (tmp_path / "dir" / "b.crt").write_bytes(other.cert_pem.bytes())
    (tmp_path / "dir" / "ignored.txt").write_text("not a certificate")
    p12 = write_pkcs12_truststore(tmp_path / "trust.p12", [ca_cert(ca), ca_cert(other)])
    jks_path = write_jks(tmp_path / "trust.jks", [], trusted=(ca_cert(ca),))
    cases = [
        (TruststoreConfig("t1", "pem", "ca.pem"), {ca_cert(ca)}),
        (TruststoreConfig("t2", "pem", "dir"), {ca_cert(ca), ca_cert(other)}),
        (
            TruststoreConfig("t3", "pkcs12", str(p12), password_env="KS_PASSWORD"),
            {ca_cert(ca), ca_cert(other)},
        ),
        (TruststoreConfig("t4", "jks", str(jks_path), password_env="KS_PASSWORD"), {ca_cert(ca)}),
    ]
    for cfg, expected in cases:
        assert set(load_truststore(cfg, tmp_path, environ=ENV).certificates) == expected, cfg.alias


def test_truststore_errors(tmp_path):
    (tmp_path / "empty.pem").write_text("hello\n")
    with pytest.raises(KeystoreError, match=r'truststore "t": path: no PEM certificate .* in .*empty.pem'):
        load_truststore(TruststoreConfig("t", "pem", "empty.pem"), tmp_path)
    with pytest.raises(KeystoreError, match=r'truststore "t": path: file not found: .*absent.pem'):
        load_truststore(TruststoreConfig("t", "pem", "absent.pem"), tmp_path)
