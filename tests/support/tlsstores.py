"""Keystores and truststores made in the tests: a trustme CA, keys issued by it, and the files
PEM, PKCS#12 (several keys, via keytool) and JKS (via pyjks) keystores are made of."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

PASSWORD = "changeit"  # keytool wants at least 6 characters


@dataclass(frozen=True)
class Issued:
    """A key and its certificate chain (leaf first), as cryptography objects and PEM."""

    name: str
    key: PrivateKeyTypes
    chain: tuple[x509.Certificate, ...]

    @property
    def cert(self) -> x509.Certificate:
        return self.chain[0]

    def cert_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def key_pem(self, password: str | None = None) -> bytes:
        encryption = (
            serialization.BestAvailableEncryption(password.encode())
            if password
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )


def issue(
    ca: trustme.CA,
    name: str,
    *identities: str,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    key_type: trustme.KeyType = trustme.KeyType.ECDSA,
) -> Issued:
    leaf = ca.issue_cert(
        *(identities or (f"{name}.test", "127.0.0.1")),
        common_name=f"{name}.test",
        not_before=not_before,
        not_after=not_after,
        key_type=key_type,
    )
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    chain = tuple(x509.load_pem_x509_certificate(p.bytes()) for p in leaf.cert_chain_pems)
    chain += (x509.load_pem_x509_certificate(ca.cert_pem.bytes()),)
    return Issued(name, key, chain)


def ca_cert(ca: trustme.CA) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.cert_pem.bytes())


def write_pem_files(directory: Path, issued: Issued, password: str | None = None) -> tuple[Path, Path]:
    """``NAME.crt`` (leaf + CA) and ``NAME.key`` (PKCS#8, encrypted when a password is given)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{issued.name}.crt", directory / f"{issued.name}.key"
    cert.write_bytes(issued.cert_pem())
    key.write_bytes(issued.key_pem(password))
    return cert, key


def write_jks(
    path: Path,
    entries: list[Issued],
    password: str = PASSWORD,
    key_password: str | None = None,
    trusted: tuple[x509.Certificate, ...] = (),
) -> Path:
    """A JKS keystore with one PrivateKeyEntry per ``Issued`` (alias = its name), via pyjks."""
    import jks

    items = []
    for e in entries:
        der_key = e.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        certs = [c.public_bytes(serialization.Encoding.DER) for c in e.chain]
        entry = jks.PrivateKeyEntry.new(e.name, certs, der_key, "pkcs8")
        entry.encrypt(key_password or password)
        items.append(entry)
    for i, cert in enumerate(trusted):
        items.append(jks.TrustedCertEntry.new(f"trusted{i}", cert.public_bytes(serialization.Encoding.DER)))
    jks.KeyStore.new("jks", items).save(str(path), password)
    return path


def keytool() -> str | None:
    return shutil.which("keytool")


def write_pkcs12_multi(path: Path, entries: list[Issued], password: str = PASSWORD) -> Path:
    """A PKCS#12 keystore holding several keys (friendly name = alias): keytool converts a JKS."""
    tool = keytool()
    if tool is None:
        raise RuntimeError("keytool not found (apt-get install default-jre-headless)")
    source = path.with_suffix(".src.jks")
    write_jks(source, entries, password)
    subprocess.run(
        [
            tool,
            "-importkeystore",
            "-noprompt",
            "-srckeystore",
            str(source),
            "-srcstoretype",
            "JKS",
            "-srcstorepass",
            password,
            "-destkeystore",
            str(path),
            "-deststoretype",
            "PKCS12",
            "-deststorepass",
            password,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    source.unlink()
    return path


def write_pkcs12_single(path: Path, issued: Issued, password: str | None = PASSWORD) -> Path:
    """A one-key PKCS#12 written by cryptography (no keytool)."""
    encryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            issued.name.encode(),
            issued.key,  # type: ignore[arg-type]
            issued.cert,
            list(issued.chain[1:]),
            encryption,
        )
    )
    return path


def write_pkcs12_truststore(path: Path, certs: list[x509.Certificate], password: str = PASSWORD) -> Path:
    entries = [pkcs12.PKCS12Certificate(c, f"ca{i}".encode()) for i, c in enumerate(certs)]
    path.write_bytes(
        pkcs12.serialize_java_truststore(entries, serialization.BestAvailableEncryption(password.encode()))
    )
    return path
