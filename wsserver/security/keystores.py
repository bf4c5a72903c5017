"""Keystores and truststores: files (PEM, PKCS#12, JKS) -> private keys and certificates.

A keystore holds several keys, each selected by its key alias: the PKCS#12 friendly name, the
JKS alias, or the name of a ``[keystores.keys.ALIAS]`` table of a PEM keystore.

    store = load_keystore(cfg, base_dir="/etc/wsserver")
    entry = store.key("demo")          # KeyEntry(alias, private_key, certificate, chain)

Every problem raises :class:`KeystoreError`, whose message names the keystore alias and, where
it applies, the key alias: a missing file, a wrong password, an unknown alias, an expired
certificate, a key that does not match its certificate.

PKCS#12 stores with several keys: ``cryptography``'s ``load_pkcs12`` returns only the first
private key. The SafeBags are therefore walked here (a small DER/BER reader): every shrouded
key bag is decrypted on its own with its friendly name, and certificates come from
``load_pkcs12`` (which decrypts the certificate safe with any algorithm OpenSSL knows).
JKS and JCEKS stores are read with ``pyjks``.

Why one long module: three file formats end in one KeyEntry model with the same error lines;
each format is a small section below, and their shared checks (expiry, key matching the
certificate, chain order) would otherwise be imported back and forth.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from wsserver.config.tls_settings import KeystoreConfig, TruststoreConfig, resolve_path

# --- errors ---------------------------------------------------------------------------------


class KeystoreError(Exception):
    """A keystore or truststore cannot be used. ``str()`` names the store and the key alias."""

    def __init__(
        self,
        store: str,
        message: str,
        key_alias: str | None = None,
        *,
        kind: str = "keystore",
        setting: str = "",
    ) -> None:
        self.store = store
        self.key_alias = key_alias
        self.kind = kind
        self.setting = setting  # the config key at fault (e.g. "password_env"), if one is
        self.message = message
        where = f'{kind} "{store}"'
        if key_alias is not None:
            where += f': key alias "{key_alias}"'
        super().__init__(f"{where}: {message}")


# --- what a keystore holds ------------------------------------------------------------------


@dataclass(frozen=True)
class KeyEntry:
    """One private key with its certificate and the chain sent after it."""

    alias: str
    private_key: PrivateKeyTypes
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    keystore: str = ""


@dataclass(frozen=True)
class Keystore:
    """A loaded keystore. ``problems`` maps key aliases that cannot be served to the reason.

    An unusable key is only an error when something selects it: :meth:`key` raises then.
    """

    alias: str
    type: str
    entries: Mapping[str, KeyEntry]
    trusted: tuple[x509.Certificate, ...] = ()  # certificate-only entries
    problems: Mapping[str, str] = field(default_factory=dict)

    def aliases(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.entries, *self.problems]))

    def key(self, alias: str = "") -> KeyEntry:
        """The entry of ``alias``; "" = the store's only key. Raises KeystoreError."""
        aliases = self.aliases()
        if not alias:
            if len(aliases) != 1:
                raise KeystoreError(
                    self.alias, f"holds {len(aliases)} keys ({_names(aliases)}); name one with key_alias"
                )
            alias = aliases[0]
        found = self._lookup(alias)
        if found is None:
            raise KeystoreError(
                self.alias, f"no such key alias in the {self.type} store ({_names(aliases)})", alias
            )
        if found in self.problems:
            raise KeystoreError(self.alias, self.problems[found], found)
        return self.entries[found]

    def _lookup(self, alias: str) -> str | None:
        if alias in self.entries or alias in self.problems:
            return alias
        if self.type == "pem":
            return None
        # keytool lower-cases JKS aliases: accept another case when it is unambiguous.
        matches = [a for a in self.aliases() if a.lower() == alias.lower()]
        return matches[0] if len(matches) == 1 else None

    def trust_certificates(self) -> tuple[x509.Certificate, ...]:
        """What this keystore trusts when it serves as a truststore: its certificate entries and
        the CA certificates of its keys' chains."""
        certs: list[x509.Certificate] = list(self.trusted)
        for entry in self.entries.values():
            certs.extend(entry.chain)
        return _unique(certs)


@dataclass(frozen=True)
class Truststore:
    alias: str
    type: str
    certificates: tuple[x509.Certificate, ...]

    def trust_certificates(self) -> tuple[x509.Certificate, ...]:
        return self.certificates


def _names(aliases: Iterable[str]) -> str:
    aliases = list(aliases)
    return "aliases: " + ", ".join(f'"{a}"' for a in aliases) if aliases else "it holds no keys"


def _unique(certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    seen: dict[bytes, x509.Certificate] = {}
    for cert in certs:
        seen.setdefault(cert.fingerprint(_SHA256), cert)
    return tuple(seen.values())


_SHA256 = hashes.SHA256()


# --- passwords and files --------------------------------------------------------------------


def read_secret(
    store: KeystoreConfig | TruststoreConfig,
    base_dir: str | os.PathLike[str] | None = None,
    prefix: str = "",
    kind: str = "keystore",
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The password from ``{prefix}password_env`` or ``{prefix}password_file``; None if neither."""
    environ = os.environ if environ is None else environ
    env = getattr(store, f"{prefix}password_env", "")
    pfile = getattr(store, f"{prefix}password_file", "")
    if env:
        value = environ.get(env)
        if value is None:
            raise KeystoreError(
                store.alias,
                f"{prefix}password_env: environment variable {env} is not set",
                kind=kind,
                setting=f"{prefix}password_env",
            )
        return value
    if pfile:
        path = resolve_path(pfile, base_dir)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise KeystoreError(
                store.alias,
                f"{prefix}password_file: cannot read {path}: {reason}",
                kind=kind,
                setting=f"{prefix}password_file",
            ) from None
        return text.removesuffix("\n").removesuffix("\r")
    return None


def _read_file(
    store: str, path: str, what: str, kind: str = "keystore", key_alias: str | None = None
) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise KeystoreError(store, f"{what}: file not found: {path}", key_alias, kind=kind) from None
    except IsADirectoryError:
        raise KeystoreError(
            store, f"{what}: is a directory, not a file: {path}", key_alias, kind=kind
        ) from None
    except OSError as exc:
        raise KeystoreError(
            store, f"{what}: cannot read {path}: {exc.strerror or exc}", key_alias, kind=kind
        ) from None


def _password_hint(store: KeystoreConfig | TruststoreConfig, prefix: str = "") -> str:
    env = getattr(store, f"{prefix}password_env", "")
    pfile = getattr(store, f"{prefix}password_file", "")
    if env:
        return f" (from ${env})"
    if pfile:
        return f" (from {pfile})"
    return f" (no password given; set {prefix}password_env or {prefix}password_file)"


# --- checks of one key ----------------------------------------------------------------------


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def key_matches(private_key: PrivateKeyTypes, certificate: x509.Certificate) -> bool:
    try:
        return _spki(private_key.public_key()) == _spki(certificate.public_key())
    except Exception:
        return False


def _utc(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def subject_text(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def entry_problem(
    private_key: PrivateKeyTypes, certificate: x509.Certificate, now: datetime.datetime | None = None
) -> str | None:
    """Why a key and certificate cannot be served, or None."""
    now = now or datetime.datetime.now(datetime.UTC)
    subject = subject_text(certificate)
    if not key_matches(private_key, certificate):
        return f"private key does not match its certificate ({subject})"
    if certificate.not_valid_after_utc < now:
        return f"certificate expired on {_utc(certificate.not_valid_after_utc)} ({subject})"
    if certificate.not_valid_before_utc > now:
        return f"certificate is not valid before {_utc(certificate.not_valid_before_utc)} ({subject})"
    return None


def _entry(
    store: str,
    alias: str,
    key: PrivateKeyTypes,
    certs: list[x509.Certificate],
    entries: dict[str, KeyEntry],
    problems: dict[str, str],
    now: datetime.datetime | None,
) -> None:
    if not certs:
        problems[alias] = "no certificate for this key"
        return
    problem = entry_problem(key, certs[0], now)
    if problem:
        problems[alias] = problem
    else:
        entries[alias] = KeyEntry(alias, key, certs[0], tuple(certs[1:]), store)


# --- PEM ------------------------------------------------------------------------------------


def _pem_certificates(
    store: str, data: bytes, path: str, what: str, kind: str = "keystore", key_alias: str | None = None
) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise KeystoreError(
            store, f"{what}: no PEM certificate (-----BEGIN CERTIFICATE-----) in {path}", key_alias, kind=kind
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise KeystoreError(
            store, f"{what}: unreadable PEM certificate in {path}: {exc}", key_alias, kind=kind
        ) from None


def _pem_key(store: KeystoreConfig, alias: str, path: str, password: str | None) -> PrivateKeyTypes:
    data = _read_file(store.alias, path, "key", key_alias=alias)
    if b"PRIVATE KEY-----" not in data:
        raise KeystoreError(
            store.alias, f"key: no PEM private key (-----BEGIN ... PRIVATE KEY-----) in {path}", alias
        )
    encrypted = b"ENCRYPTED" in data
    try:
        return serialization.load_pem_private_key(
            data, password.encode() if (encrypted and password) else None
        )
    except TypeError:
        # Encrypted without a password given.
        raise KeystoreError(
            store.alias,
            f"key: {path} is encrypted; set password_env or password_file",
            alias,
            setting="password_env",
        ) from None
    except ValueError as exc:
        if encrypted:
            raise KeystoreError(
                store.alias,
                f"key: wrong password for {path}{_password_hint(store)}",
                alias,
                setting="password_env",
            ) from None
        raise KeystoreError(store.alias, f"key: unreadable private key in {path}: {exc}", alias) from None
    except Exception as exc:  # unsupported key types raise UnsupportedAlgorithm
        raise KeystoreError(store.alias, f"key: unusable private key in {path}: {exc}", alias) from None


def _load_pem_keystore(
    store: KeystoreConfig,
    base_dir: str | os.PathLike[str] | None,
    password: str | None,
    now: datetime.datetime | None,
) -> Keystore:
    entries: dict[str, KeyEntry] = {}
    problems: dict[str, str] = {}
    for key_cfg in store.keys:
        cert_path = resolve_path(key_cfg.cert, base_dir)
        certs = _pem_certificates(
            store.alias,
            _read_file(store.alias, cert_path, "cert", key_alias=key_cfg.alias),
            cert_path,
            "cert",
            key_alias=key_cfg.alias,
        )
        if key_cfg.chain:
            chain_path = resolve_path(key_cfg.chain, base_dir)
            certs += _pem_certificates(
                store.alias,
                _read_file(store.alias, chain_path, "chain", key_alias=key_cfg.alias),
                chain_path,
                "chain",
                key_alias=key_cfg.alias,
            )
        key = _pem_key(store, key_cfg.alias, resolve_path(key_cfg.key, base_dir), password)
        _entry(store.alias, key_cfg.alias, key, certs, entries, problems, now)
    return Keystore(store.alias, "pem", entries, (), problems)


# --- PKCS#12 --------------------------------------------------------------------------------

_OID_DATA = "1.2.840.113549.1.7.1"
_OID_KEY_BAG = "1.2.840.113549.1.12.10.1.1"
_OID_SHROUDED_KEY_BAG = "1.2.840.113549.1.12.10.1.2"
_OID_FRIENDLY_NAME = "1.2.840.113549.1.9.20"
_OID_LOCAL_KEY_ID = "1.2.840.113549.1.9.21"


class _DerError(ValueError):
    pass


@dataclass(frozen=True)
class _Tlv:
    tag: int
    content: bytes  # for indefinite lengths: the concatenated encodings of the children
    raw: bytes  # the whole encoding

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def children(self) -> list[_Tlv]:
        out, pos = [], 0
        while pos < len(self.content):
            tlv, pos = _read_tlv(self.content, pos)
            out.append(tlv)
        return out

    def octets(self) -> bytes:
        """An OCTET STRING's bytes, joining the pieces of a constructed (BER) one."""
        if self.constructed:
            return b"".join(child.octets() for child in self.children())
        return self.content


def _read_tlv(data: bytes, pos: int) -> tuple[_Tlv, int]:
    start = pos
    if pos + 2 > len(data):
        raise _DerError("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise _DerError("multi-byte tag")
    length = data[pos + 1]
    pos += 2
    if length == 0x80:  # BER indefinite length: children up to an end-of-contents marker
        if not tag & 0x20:
            raise _DerError("indefinite length on a primitive value")
        children_start = pos
        while data[pos : pos + 2] != b"\x00\x00":
            _, pos = _read_tlv(data, pos)
        return _Tlv(tag, data[children_start:pos], data[start : pos + 2]), pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise _DerError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise _DerError("truncated")
    return _Tlv(tag, data[pos:end], data[start:end]), end


def _oid(tlv: _Tlv) -> str:
    if tlv.tag != 0x06 or not tlv.content:
        raise _DerError("expected an OID")
    body = tlv.content
    parts = [body[0] // 40, body[0] % 40] if body[0] < 80 else [2, body[0] - 80]
    value = 0
    for byte in body[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _explicit(tlv: _Tlv) -> _Tlv:
    """The value inside an ``[0] EXPLICIT`` tag."""
    if tlv.tag != 0xA0:
        raise _DerError("expected [0]")
    inner = tlv.children()
    if len(inner) != 1:
        raise _DerError("bad [0] content")
    return inner[0]


@dataclass(frozen=True)
class _KeyBag:
    friendly_name: str | None
    local_key_id: bytes | None
    der: bytes  # an EncryptedPrivateKeyInfo (shrouded) or a PrivateKeyInfo (plain key bag)
    shrouded: bool


def _bag_attributes(tlv: _Tlv | None) -> tuple[str | None, bytes | None]:
    name, key_id = None, None
    if tlv is None:
        return name, key_id
    for attribute in tlv.children():
        parts = attribute.children()
        if len(parts) != 2:
            continue
        oid, values = _oid(parts[0]), parts[1].children()
        if not values:
            continue
        if oid == _OID_FRIENDLY_NAME and values[0].tag == 0x1E:  # BMPString
            name = values[0].content.decode("utf-16-be", errors="replace")
        elif oid == _OID_LOCAL_KEY_ID and values[0].tag == 0x04:
            key_id = values[0].content
    return name, key_id


def _pkcs12_key_bags(data: bytes) -> list[_KeyBag]:
    """Every key bag of the unencrypted safes of a PFX (keys are shrouded on their own).

    Raises _DerError when the file is not a PFX this reader understands.
    """
    pfx, _ = _read_tlv(data, 0)
    if pfx.tag != 0x30:
        raise _DerError("not a SEQUENCE")
    parts = pfx.children()
    if len(parts) < 2 or parts[0].tag != 0x02:
        raise _DerError("not a PFX")
    content_info = parts[1].children()
    if _oid(content_info[0]) != _OID_DATA:
        raise _DerError("public-key integrity mode is not supported")
    auth_safe, _ = _read_tlv(_explicit(content_info[1]).octets(), 0)
    bags: list[_KeyBag] = []
    for info in auth_safe.children():
        fields_ = info.children()
        if _oid(fields_[0]) != _OID_DATA:
            continue  # encryptedData: certificates (read by load_pkcs12) or, rarely, keys
        safe_contents, _ = _read_tlv(_explicit(fields_[1]).octets(), 0)
        for bag in safe_contents.children():
            items = bag.children()
            bag_id = _oid(items[0])
            if bag_id not in (_OID_KEY_BAG, _OID_SHROUDED_KEY_BAG):
                continue
            name, key_id = _bag_attributes(items[2] if len(items) > 2 else None)
            bags.append(_KeyBag(name, key_id, _explicit(items[1]).raw, bag_id == _OID_SHROUDED_KEY_BAG))
    return bags


def _magic_hint(data: bytes, expected: str) -> str:
    if data[:4] in (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce") and expected != "jks":
        return '; this is a JKS/JCEKS file: use type = "jks"'
    if data[:1] == b"\x30" and expected == "jks":
        return '; this looks like a PKCS#12 file: use type = "pkcs12"'
    if b"-----BEGIN" in data[:4096]:
        return '; this is a PEM file: use type = "pem" (or "pem" for a truststore)'
    return ""


def _load_pkcs12(
    store: KeystoreConfig | TruststoreConfig, path: str, data: bytes, password: str | None, kind: str
) -> pkcs12.PKCS12KeyAndCertificates:
    attempts = [password.encode()] if password is not None else [None, b""]
    for secret in attempts:
        try:
            return pkcs12.load_pkcs12(data, secret)
        except ValueError:
            continue
    try:
        _read_tlv(data, 0)
        readable = data[:1] == b"\x30"
    except _DerError:
        readable = False
    if not readable:
        raise KeystoreError(
            store.alias, f"{path} is not a PKCS#12 file{_magic_hint(data, 'pkcs12')}", kind=kind
        )
    raise KeystoreError(
        store.alias,
        f"wrong password for {path}{_password_hint(store)} (or a damaged PKCS#12 file)",
        kind=kind,
        setting="password_env",
    )


def _load_pkcs12_keystore(
    store: KeystoreConfig, path: str, data: bytes, password: str | None, now: datetime.datetime | None
) -> Keystore:
    p12 = _load_pkcs12(store, path, data, password, "keystore")
    certs: list[tuple[str | None, x509.Certificate]] = []
    if p12.cert is not None:
        certs.append((_name(p12.cert.friendly_name), p12.cert.certificate))
    certs += [(_name(c.friendly_name), c.certificate) for c in p12.additional_certs]
    all_certs = [c for _, c in certs]

    keys: list[tuple[str | None, PrivateKeyTypes]] = []
    try:
        bags = _pkcs12_key_bags(data)
    except (_DerError, IndexError):
        bags = []
    fallback = p12.key  # what load_pkcs12 decrypted: used for one key cryptography refuses below
    for bag in bags:
        try:
            key = serialization.load_der_private_key(
                bag.der, password.encode() if (bag.shrouded and password) else (b"" if bag.shrouded else None)
            )
        except Exception as exc:
            if fallback is None or password:
                name: str | None = bag.friendly_name or "(no friendly name)"  # the loop below reuses it
                raise KeystoreError(
                    store.alias, f"cannot decrypt the private key in {path}: {exc}", name
                ) from None
            # An empty password: cryptography will not decrypt a shrouded bag with b"".
            key, fallback = fallback, None
        keys.append((bag.friendly_name, key))
    if not keys and p12.key is not None:
        # Keys inside an encrypted safe (unusual): load_pkcs12 gives the first one.
        keys.append((_name(p12.cert.friendly_name) if p12.cert else None, p12.key))

    entries: dict[str, KeyEntry] = {}
    problems: dict[str, str] = {}
    used: set[bytes] = set()
    for index, (name, key) in enumerate(keys):
        leaf = next((c for c in all_certs if key_matches(key, c)), None)
        named = next((c for n, c in certs if name is not None and n == name), None)
        alias = name or (_name(_friendly_of(certs, leaf)) if leaf is not None else None) or f"key{index + 1}"
        if leaf is None:
            if named is not None:
                problems[alias] = f"private key does not match its certificate ({subject_text(named)})"
            else:
                problems[alias] = "no certificate for this key in the store"
            continue
        chain = [leaf, *_build_chain(leaf, all_certs)]
        used.update(c.fingerprint(_SHA256) for c in chain)
        _entry(store.alias, alias, key, chain, entries, problems, now)
    # Certificate-only entries (trusted certificates): neither a key's certificate nor in its chain.
    trusted = _unique(
        c
        for c in all_certs
        if c.fingerprint(_SHA256) not in used and not any(key_matches(k, c) for _, k in keys)
    )
    return Keystore(store.alias, "pkcs12", entries, trusted, problems)


def _name(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _friendly_of(certs: list[tuple[str | None, x509.Certificate]], cert: x509.Certificate) -> str | None:
    return next((n for n, c in certs if c is cert), None)


def _build_chain(leaf: x509.Certificate, pool: list[x509.Certificate]) -> list[x509.Certificate]:
    """The issuers of ``leaf`` found in ``pool``, nearest first, up to a self-signed root."""
    chain: list[x509.Certificate] = []
    current = leaf
    while current.issuer != current.subject and len(chain) < 10:
        issuer = next(
            (
                c
                for c in pool
                if c.subject == current.issuer
                and c is not current
                and c not in chain
                and _signed_by(current, c)
            ),
            None,
        )
        if issuer is None:
            break
        chain.append(issuer)
        current = issuer
    return chain


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:
        return False


# --- JKS ------------------------------------------------------------------------------------


def _load_jks(
    store: KeystoreConfig | TruststoreConfig, path: str, data: bytes, password: str | None, kind: str
) -> Any:  # a jks.KeyStore: pyjks has no type information
    import jks  # pyjks

    if data[:4] not in (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce"):
        raise KeystoreError(
            store.alias, f"{path} is not a JKS or JCEKS keystore{_magic_hint(data, 'jks')}", kind=kind
        )
    if password is None:
        raise KeystoreError(
            store.alias,
            f"{path}: a JKS store needs its password; set password_env or password_file",
            kind=kind,
            setting="password_env",
        )
    try:
        return jks.KeyStore.loads(data, password)
    except jks.util.KeystoreSignatureException:
        raise KeystoreError(
            store.alias,
            f"wrong password for {path}{_password_hint(store)}",
            kind=kind,
            setting="password_env",
        ) from None
    except Exception as exc:
        raise KeystoreError(store.alias, f"unreadable JKS keystore {path}: {exc}", kind=kind) from None


def _load_jks_keystore(
    store: KeystoreConfig,
    path: str,
    data: bytes,
    password: str | None,
    key_password: str | None,
    now: datetime.datetime | None,
) -> Keystore:
    import jks

    ks = _load_jks(store, path, data, password, "keystore")
    entries: dict[str, KeyEntry] = {}
    problems: dict[str, str] = {}
    for alias, pk in ks.private_keys.items():
        if not pk.is_decrypted():
            try:
                pk.decrypt(key_password if key_password is not None else password)
            except jks.util.DecryptionFailureException:
                hint = (
                    _password_hint(store, "key_")
                    if key_password is not None
                    else " (it differs from the store password; set key_password_env or key_password_file)"
                )
                problems[alias] = f"wrong key password{hint}"
                continue
        try:
            key = serialization.load_der_private_key(pk.pkey_pkcs8, None)
            certs = [x509.load_der_x509_certificate(der) for _type, der in pk.cert_chain]
        except Exception as exc:
            problems[alias] = f"unusable key entry: {exc}"
            continue
        _entry(store.alias, alias, key, certs, entries, problems, now)
    trusted = tuple(x509.load_der_x509_certificate(tc.cert) for tc in ks.certs.values())
    return Keystore(store.alias, "jks", entries, trusted, problems)


# --- public entry points --------------------------------------------------------------------


def load_keystore(
    store: KeystoreConfig,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    now: datetime.datetime | None = None,
    environ: Mapping[str, str] | None = None,
) -> Keystore:
    """Open one ``[[keystores]]`` entry. Raises KeystoreError for store-wide problems; per-key
    problems are kept in ``Keystore.problems`` and raised when the key is selected."""
    password = read_secret(store, base_dir, environ=environ)
    if store.type == "pem":
        return _load_pem_keystore(store, base_dir, password, now)
    if store.type == "pkcs11":
        raise KeystoreError(store.alias, PKCS11_UNSUPPORTED)
    path = resolve_path(store.path, base_dir)
    data = _read_file(store.alias, path, "path")
    if store.type == "pkcs12":
        return _load_pkcs12_keystore(store, path, data, password, now)
    if store.type == "jks":
        key_password = read_secret(store, base_dir, prefix="key_", environ=environ)
        return _load_jks_keystore(store, path, data, password, key_password, now)
    raise KeystoreError(store.alias, f"unknown keystore type {store.type!r}")


PKCS11_UNSUPPORTED = (
    'type "pkcs11" is not available in this build: the OpenSSL inside pyOpenSSL/cryptography has no '
    "ENGINE support and exposes no provider or OSSL_STORE calls, and no PKCS#11 provider "
    "(pkcs11-provider) is installed; export the key to a PKCS#12 or PEM keystore, or terminate TLS "
    "with the token's key in nginx in front of a ws port (deploy/nginx/wss-pkcs11.conf, docs/tls.md)"
)


def load_truststore(
    store: TruststoreConfig,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Truststore:
    """Open one ``[[truststores]]`` entry: its certificates (private keys in it are ignored)."""
    kind = "truststore"
    password = read_secret(store, base_dir, kind=kind, environ=environ)
    path = resolve_path(store.path, base_dir)
    if store.type == "pem":
        certs = _pem_truststore(store, path)
    elif store.type == "pkcs12":
        p12 = _load_pkcs12(store, path, _read_file(store.alias, path, "path", kind), password, kind)
        certs = ([p12.cert.certificate] if p12.cert else []) + [c.certificate for c in p12.additional_certs]
    elif store.type == "jks":
        ks = _load_jks(store, path, _read_file(store.alias, path, "path", kind), password, kind)
        certs = [x509.load_der_x509_certificate(tc.cert) for tc in ks.certs.values()]
        for pk in ks.private_keys.values():
            certs += [x509.load_der_x509_certificate(der) for _type, der in pk.cert_chain]
    else:
        raise KeystoreError(store.alias, f"unknown truststore type {store.type!r}", kind=kind)
    if not certs:
        raise KeystoreError(store.alias, f"{path} holds no certificates", kind=kind)
    return Truststore(store.alias, store.type, _unique(certs))


def _pem_truststore(store: TruststoreConfig, path: str) -> list[x509.Certificate]:
    kind = "truststore"
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith((".pem", ".crt", ".cer")))
        if not names:
            raise KeystoreError(
                store.alias, f"directory {path} holds no *.pem, *.crt or *.cer files", kind=kind
            )
        certs: list[x509.Certificate] = []
        for name in names:
            file = os.path.join(path, name)
            certs += _pem_certificates(
                store.alias, _read_file(store.alias, file, "path", kind), file, "path", kind
            )
        return certs
    return _pem_certificates(store.alias, _read_file(store.alias, path, "path", kind), path, "path", kind)
