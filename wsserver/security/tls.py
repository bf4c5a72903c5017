"""TLS server contexts (pyOpenSSL) from keystores, and what ``wsserver check`` says about certificates.

    material = load_tls(cfg.server.tls, cfg.ports, cfg.keystores, cfg.truststores, cfg.source,
                        base_dir=os.path.dirname(cfg.source))
    ctx = material.ports["demo_wss"].context         # an OpenSSL.SSL.Context for that port

:func:`load_tls` opens every keystore and truststore, selects each wss port's key (its own
``[ports.tls]`` key, else ``[server.tls]``) and builds one context per port. Every problem is
collected and raised together as :class:`TLSConfigError`, one line each, naming the config
key, the keystore and the key alias; the server must not start then.

Context defaults, as a security-minded nginx/HAProxy operator would set them: TLS 1.2 minimum
(``min_version = "1.3"`` for TLS 1.3 only); TLS 1.2 ciphers with forward secrecy and AEAD only
(Mozilla's "intermediate" list, :data:`DEFAULT_CIPHERS`); OpenSSL's TLS 1.3 suites; no TLS
compression, no renegotiation; ALPN ``http/1.1``; client certificates ``none``/``request``/
``require`` against the truststore (the keystore itself when none is named), where every
truststore certificate is a trust anchor (intermediates too, like a Java truststore).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL, crypto

from wsserver.config.tls_settings import (
    KeystoreConfig,
    PortTLSOptions,
    TruststoreConfig,
    port_tls_options,
)
from wsserver.security.keystores import (
    KeyEntry,
    Keystore,
    KeystoreError,
    Truststore,
    load_keystore,
    load_truststore,
    subject_text,
)
from wsserver.security.sni import attach_sni, sni_report

# Mozilla "intermediate" (v5.7) TLS 1.2 suites without DHE: forward secrecy and AEAD only.
DEFAULT_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
ALPN_HTTP11 = b"http/1.1"
EXPIRY_WARNING_DAYS = 30

_MIN_VERSION = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
_VERIFY = {
    "none": SSL.VERIFY_NONE,
    "request": SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE,
    "require": SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE,
}


class TLSConfigError(Exception):
    """Keystores or TLS settings cannot be used. ``errors`` holds every problem, one line each."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# --- contexts -------------------------------------------------------------------------------


def _select_alpn(_conn: SSL.Connection, offered: list[bytes]) -> bytes | object:
    # A client that offers ALPN without http/1.1 (h2 only) gets no ALPN rather than an alert:
    # the WebSocket upgrade is HTTP/1.1 and the request itself tells what the client speaks.
    return ALPN_HTTP11 if ALPN_HTTP11 in offered else SSL.NO_OVERLAPPING_PROTOCOLS


def build_server_context(
    entry: KeyEntry,
    *,
    client_certs: str = "none",
    trust: Sequence[x509.Certificate] = (),
    min_version: str = "1.2",
    ciphers: str = "",
    session_id: bytes = b"wsserver",
) -> SSL.Context:
    """A server context presenting ``entry``'s certificate and chain.

    ``client_certs``: ``none``; ``request`` (ask; a certificate that is sent must verify);
    ``require`` (the handshake fails without a certificate that verifies against ``trust``).
    Raises ValueError for settings that cannot work and OpenSSL.SSL.Error from OpenSSL.
    """
    if client_certs not in _VERIFY:
        raise ValueError(f"client_certs must be none, request or require, not {client_certs!r}")
    if min_version not in _MIN_VERSION:
        raise ValueError(f"min_version must be 1.2 or 1.3, not {min_version!r}")
    if client_certs != "none" and not trust:
        raise ValueError(f'client_certs = "{client_certs}" needs a truststore with at least one certificate')
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(_MIN_VERSION[min_version])
    ctx.set_options(
        SSL.OP_NO_COMPRESSION
        | SSL.OP_NO_RENEGOTIATION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_SINGLE_ECDH_USE
        | SSL.OP_SINGLE_DH_USE
    )
    ctx.set_cipher_list((ciphers or DEFAULT_CIPHERS).encode("ascii"))
    ctx.use_certificate(entry.certificate)
    for cert in entry.chain:
        ctx.add_extra_chain_cert(cert)
    # The registry holds RSA, EC and EdDSA keys, which pyOpenSSL takes; its annotation is narrower than
    # the PrivateKeyTypes union (which includes DH and X25519 keys, never in a keystore here).
    ctx.use_privatekey(entry.private_key)  # type: ignore[arg-type]
    ctx.check_privatekey()
    # pyOpenSSL annotates the callback's return as bytes; SSL.NO_OVERLAPPING_PROTOCOLS (no ALPN) is allowed too.
    ctx.set_alpn_select_callback(_select_alpn)  # type: ignore[arg-type]
    # Session resumption needs a context id once peers are verified; 32 bytes at most.
    ctx.set_session_id(hashlib.sha256(session_id).digest()[:32])
    ctx.set_verify(_VERIFY[client_certs])
    if client_certs != "none":
        store = ctx.get_cert_store()
        assert store is not None
        for cert in trust:
            store.add_cert(crypto.X509.from_cryptography(cert))
        # Every truststore certificate is an anchor, intermediates included (Java semantics).
        store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
        for cert in trust:  # the CA names sent in the CertificateRequest, so clients pick a fitting cert
            ctx.add_client_ca(cert)
    return ctx


def peer_certificate(conn: SSL.Connection) -> x509.Certificate | None:
    """The client's verified certificate (cryptography object), or None."""
    return conn.get_peer_certificate(as_cryptography=True)


@dataclass(frozen=True)
class ClientIdentity:
    """What a verified client certificate says about its holder, for ``client_auth = "certificate"``."""

    subject: str  # RFC 4514, e.g. "CN=alice,O=Example"
    common_name: str | None
    sans: tuple[str, ...]  # "DNS:...", "email:...", "URI:...", "IP:..."

    def names(self) -> tuple[str, ...]:
        """Candidate user names: the CN first, then the SAN values (without their kind)."""
        values = [san.split(":", 1)[1] for san in self.sans]
        return tuple(dict.fromkeys([self.common_name, *values] if self.common_name else values))


def client_identity(cert: x509.Certificate) -> ClientIdentity:
    from cryptography.x509.oid import NameOID

    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = cns[0].value if cns else None
    return ClientIdentity(subject_text(cert), cn if isinstance(cn, str) else None, _sans(cert))


# --- certificate descriptions (wsserver check, metrics) -------------------------------------


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    sans: tuple[str, ...]  # "DNS:example.com", "IP:127.0.0.1", "email:...", "URI:..."
    not_before: datetime.datetime
    not_after: datetime.datetime
    seconds_left: float
    sha256: str  # colon-separated hex fingerprint

    @property
    def expired(self) -> bool:
        return self.seconds_left < 0

    def expires_within(self, days: float = EXPIRY_WARNING_DAYS) -> bool:
        return self.seconds_left < days * 86400


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out: list[str] = []
    for name in ext:
        if isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            out.append(f"email:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            out.append(f"URI:{name.value}")
        else:
            out.append(f"{type(name).__name__}:{name.value}")
    return tuple(out)


def describe_certificate(cert: x509.Certificate, now: datetime.datetime | None = None) -> CertificateInfo:
    now = now or datetime.datetime.now(datetime.UTC)
    return CertificateInfo(
        subject=subject_text(cert),
        issuer=cert.issuer.rfc4514_string(),
        sans=_sans(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        seconds_left=(cert.not_valid_after_utc - now).total_seconds(),
        sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    )


def certificate_lines(info: CertificateInfo) -> list[str]:
    """``wsserver check`` lines for one certificate; the last says "warning:" when it is due."""
    days = info.seconds_left / 86400
    lines = [
        f"subject {info.subject}",
        "SANs " + (", ".join(info.sans) if info.sans else "(none)"),
        f"expires {info.not_after:%Y-%m-%d %H:%M:%S} UTC ({days:.0f} days)",
    ]
    if info.expired:
        lines.append("warning: certificate has expired")
    elif info.expires_within():
        lines.append(f"warning: certificate expires in {days:.1f} days (less than {EXPIRY_WARNING_DAYS})")
    return lines


# --- loading everything the config names -----------------------------------------------------


@dataclass(frozen=True)
class PortTLS:
    """What the runtime needs for one wss port."""

    port_alias: str
    context: SSL.Context
    entry: KeyEntry
    options: PortTLSOptions
    sni: Any = None  # wsserver.security.sni.PortSNI: the keys served by host name ([ports.tls.sni])


@dataclass
class TLSMaterial:
    keystores: dict[str, Keystore] = field(default_factory=dict)
    truststores: dict[str, Truststore] = field(default_factory=dict)
    ports: dict[str, PortTLS] = field(default_factory=dict)  # by port alias
    server_default: KeyEntry | None = None

    def selected_keys(self) -> list[KeyEntry]:
        """Every key in use (server default and ports), each once."""
        seen: dict[tuple[str, str], KeyEntry] = {}
        entries = [self.server_default] if self.server_default else []
        entries += [p.entry for p in self.ports.values()]
        entries += [e for p in self.ports.values() if p.sni is not None for e in p.sni.entries()]
        for entry in entries:
            seen.setdefault((entry.keystore, entry.alias), entry)
        return list(seen.values())

    def report(self, now: datetime.datetime | None = None) -> list[str]:
        """``wsserver check`` lines: each keystore key's subject, SANs and expiry; warnings."""
        lines: list[str] = []
        for store in self.keystores.values():
            for alias in store.aliases():
                head = f'keystore "{store.alias}" key "{alias}"'
                if alias in store.problems:
                    lines.append(f"{head}: unusable: {store.problems[alias]}")
                    continue
                info = describe_certificate(store.entries[alias].certificate, now)
                lines += [f"{head}: {line}" for line in certificate_lines(info)]
        for port in self.ports.values():
            entry = port.entry
            lines.append(
                f'port {port.port_alias}: key "{entry.alias}" of keystore "{entry.keystore}", '
                f"min TLS {port.options.min_version}, client certificates {port.options.client_certs}"
            )
            lines += sni_report(port.port_alias, port.sni)
        return lines

    def expiry_seconds(self, now: datetime.datetime | None = None) -> list[tuple[str, str, float]]:
        """(keystore, key_alias, seconds until expiry) of every loadable key: the values of the
        gauge ``wsserver_tls_certificate_expiry_seconds{keystore,key_alias}``."""
        now = now or datetime.datetime.now(datetime.UTC)
        return [
            (store.alias, alias, (entry.certificate.not_valid_after_utc - now).total_seconds())
            for store in self.keystores.values()
            for alias, entry in store.entries.items()
        ]


def _session_id(port_alias: str) -> bytes:
    return f"wsserver:{port_alias}".encode()


def load_tls(
    server_tls: Any,
    ports: Sequence[Any],
    keystores: Sequence[KeystoreConfig],
    truststores: Sequence[TruststoreConfig],
    source: str,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    now: datetime.datetime | None = None,
    environ: Mapping[str, str] | None = None,
    only_active: Sequence[str] | None = None,
) -> TLSMaterial:
    """Open every store and build a context for every wss port; raises TLSConfigError.

    ``ports`` are the config's ports (indexes in messages are their positions); only those with
    ``protocol = "wss"`` (and, with ``only_active``, whose alias is listed) get a context.
    """
    errors: list[str] = []
    material = TLSMaterial()
    failed: set[str] = set()
    for i, cfg in enumerate(keystores):
        try:
            material.keystores[cfg.alias] = load_keystore(cfg, base_dir, now=now, environ=environ)
        except KeystoreError as exc:
            failed.add(cfg.alias)
            errors.append(_line(source, f"keystores[{i}]", exc))
    for i, tcfg in enumerate(truststores):
        try:
            material.truststores[tcfg.alias] = load_truststore(tcfg, base_dir, environ=environ)
        except KeystoreError as exc:
            failed.add(tcfg.alias)
            errors.append(_line(source, f"truststores[{i}]", exc))

    if server_tls.keystore and server_tls.keystore in material.keystores:
        try:
            material.server_default = material.keystores[server_tls.keystore].key(server_tls.key_alias)
        except KeystoreError as exc:
            errors.append(_keyed_line(source, "server.tls.key_alias", server_tls.key_alias, exc))

    for i, port in enumerate(ports):
        if port.protocol != "wss" or (only_active is not None and port.alias not in only_active):
            continue
        options = port_tls_options(port, i, server_tls)
        if options is None:
            errors.append(
                f'{source}: ports[{i}].protocol = "wss": needs a TLS key: set [ports.tls] keystore '
                "or [server.tls] keystore"
            )
            continue
        choice = options.key
        store = material.keystores.get(choice.keystore)
        if store is None:
            if choice.keystore not in failed:
                errors.append(f'{source}: {choice.keystore_key} = "{choice.keystore}": no such keystore')
            continue
        try:
            entry = store.key(choice.key_alias)
        except KeystoreError as exc:
            errors.append(
                _keyed_line(
                    source,
                    choice.key_alias_key if choice.key_alias else choice.keystore_key,
                    choice.key_alias or choice.keystore,
                    exc,
                )
            )
            continue
        trust: Sequence[x509.Certificate] = ()
        if options.client_certs != "none":
            trust_name = options.truststore or choice.keystore
            holder = material.truststores.get(trust_name) or material.keystores.get(trust_name)
            if holder is None:
                if trust_name not in failed:
                    errors.append(f'{source}: {options.truststore_key} = "{trust_name}": no such truststore')
                continue
            trust = holder.trust_certificates()
            if not trust:
                key = options.truststore_key if options.truststore else f"ports[{i}].tls.client_certs"
                errors.append(
                    f'{source}: {key}: {_kind(holder)} "{trust_name}" holds no certificates to '
                    "verify client certificates with; name a truststore"
                )
                continue
        # One builder for the port's context and its SNI contexts: the same settings for every key.
        build = functools.partial(
            build_server_context,
            client_certs=options.client_certs,
            trust=trust,
            min_version=options.min_version,
            ciphers=options.ciphers,
            session_id=_session_id(port.alias),
        )
        try:
            ctx = build(entry)
        except (ValueError, SSL.Error) as exc:
            errors.append(
                f"{source}: ports[{i}].tls: cannot build the TLS context with key "
                f'"{entry.alias}" of keystore "{entry.keystore}": {_ssl_text(exc)}'
            )
            continue
        if getattr(port.tls, "ocsp_stapling", False):  # the status callback only: workers fetch the staple
            from wsserver.security.stapling import attach_stapling

            problem = attach_stapling(ctx, entry, port.tls, f"ports[{i}].tls", source, port.alias, material)
            if problem:
                errors.append(problem)
        sni, sni_errors = attach_sni(port, i, options, entry, ctx, build, material, source, failed)
        errors += sni_errors
        if sni is not None and getattr(port.tls, "ocsp_stapling", False):
            # Each SNI key staples its own certificate's status, refreshed with the port's.
            from wsserver.security.stapling import attach_stapling, link_stapling

            for route in sni.routes:
                if route.context is not ctx and link_stapling(ctx, route.context):
                    problem = attach_stapling(
                        route.context,
                        route.entry,
                        port.tls,
                        f"ports[{i}].tls.sni",
                        source,
                        port.alias,
                        material,
                    )
                    if problem:
                        errors.append(problem)
        material.ports[port.alias] = PortTLS(port.alias, ctx, entry, options, sni)
    if errors:
        raise TLSConfigError(errors)
    return material


def load_tls_for_config(config: Any, *, now: datetime.datetime | None = None) -> TLSMaterial:
    """:func:`load_tls` for a whole Config (``keystores``/``truststores`` may be absent)."""
    source = getattr(config, "source", "<string>")
    base_dir = os.path.dirname(os.path.abspath(source)) if not source.startswith("<") else None
    active = [p.alias for p in config.active_ports()] if hasattr(config, "active_ports") else None
    return load_tls(
        config.server.tls,
        config.ports,
        getattr(config, "keystores", ()),
        getattr(config, "truststores", ()),
        source,
        base_dir=base_dir,
        now=now,
        only_active=active,
    )


def _kind(holder: Keystore | Truststore) -> str:
    return "keystore" if isinstance(holder, Keystore) else "truststore"


def _line(source: str, path: str, exc: KeystoreError) -> str:
    if not exc.setting:
        return f"{source}: {path}: {exc}"
    where = f'{exc.kind} "{exc.store}"' + (
        f': key alias "{exc.key_alias}"' if exc.key_alias is not None else ""
    )
    return f"{source}: {path}.{exc.setting}: {where}: {exc.message.removeprefix(exc.setting + ': ')}"


def _keyed_line(source: str, key: str, value: str, exc: KeystoreError) -> str:
    shown = f' = "{value}"' if value else ""
    return f"{source}: {key}{shown}: {exc}"


def _ssl_text(exc: Exception) -> str:
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        return "; ".join(str(part[2]) for part in exc.args[0] if len(part) > 2) or str(exc)
    return str(exc)


# The last configs' material: the master loads it to validate (and a forked worker then finds
# the same contexts here, ticket keys included, instead of reading the keystores again).
_CACHE: list[tuple[Any, TLSMaterial]] = []


def tls_for_config(config: Any) -> TLSMaterial:
    """:func:`load_tls_for_config`, once per Config object. Raises TLSConfigError."""
    for cfg, material in _CACHE:
        if cfg is config:
            return material
    material = load_tls_for_config(config)
    _CACHE.append((config, material))
    del _CACHE[:-2]
    return material


def uses_tls(config: Any) -> bool:
    """Whether the config has anything for :func:`tls_for_config` to load."""
    return bool(
        getattr(config, "keystores", ())
        or getattr(config, "truststores", ())
        or config.server.tls.keystore
        or any(p.protocol == "wss" for p in config.ports)
    )
