"""TLS from the adapters to their backends: client contexts, trust, client keys, pinning.

Contexts are stdlib ``ssl`` contexts created at adapter build time, i.e. after the worker
monkey-patched gevent, so every handshake and read cooperates with the hub. TLS 1.2 is the
floor (``tls_min_version = "1.3"`` raises it); certificate chain and host name are always
verified; ``pinned_sha256`` adds a check of the server certificate's digest on top.

Trust and client keys come from a ``TLSSetup`` callable ``(context, truststore, keystore,
key_alias)``. The workers use :class:`RegistrySetup` (:func:`registry_setup`): ``truststore``
and ``keystore`` name ``[[truststores]]``/``[[keystores]]`` aliases (PEM, PKCS#12, JKS) and
``key_alias`` picks the client key; a value containing "/" is a PEM file path. The keystore
serves as truststore when none is named; with neither, the system CAs are trusted.
:func:`check_adapter_tls` builds every adapter's context for ``wsserver check``/``serve``.
``Adapter(settings)`` without a setup falls back to :func:`load_from_paths` (PEM paths only).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from collections.abc import Callable, Iterable

TLSSetup = Callable[[ssl.SSLContext, str, str, str], None]


class TLSConfigError(Exception):
    """The adapter's TLS material cannot be loaded."""


class PinMismatch(ssl.SSLError):
    """The server's certificate is not one of the pinned SHA-256 digests."""


def load_from_paths(context: ssl.SSLContext, truststore: str, keystore: str, key_alias: str) -> None:
    """The default TLSSetup: ``truststore`` and ``keystore`` are PEM file paths."""
    if keystore:
        try:
            context.load_cert_chain(keystore)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(
                f"keystore {keystore!r}: cannot load a PEM key and certificate: {exc}"
            ) from exc
    trust = truststore or keystore
    if not trust:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return
    try:
        load_verify_path(context, trust)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"truststore {trust!r}: cannot load PEM certificates: {exc}") from exc


def load_verify_path(context: ssl.SSLContext, path: str) -> None:
    """Trust the PEM certificates of a file, or of a hashed directory (``c_rehash``)."""
    if os.path.isdir(path):
        context.load_verify_locations(capath=path)
    else:
        context.load_verify_locations(cafile=path)


def client_context(
    truststore: str = "",
    keystore: str = "",
    key_alias: str = "",
    min_version: str = "1.2",
    setup: TLSSetup | None = None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    (setup or load_from_paths)(context, truststore, keystore, key_alias)
    if context.minimum_version < ssl.TLSVersion.TLSv1_2:
        raise TLSConfigError("the TLS setup lowered the minimum version below TLS 1.2")
    return context


def normalize_pins(pins: Iterable[str]) -> tuple[str, ...]:
    return tuple(p.replace(":", "").lower() for p in pins)


def check_pins(sock: ssl.SSLSocket, pins: tuple[str, ...]) -> None:
    """Raise PinMismatch unless the peer certificate's SHA-256 is pinned (no pins = no check)."""
    if not pins:
        return
    der = sock.getpeercert(binary_form=True)
    digest = hashlib.sha256(der or b"").hexdigest()
    if digest not in pins:
        raise PinMismatch(f"server certificate sha256 {digest} is not pinned")


def wrap(
    sock: socket.socket, context: ssl.SSLContext, host: str, pins: tuple[str, ...], timeout: float
) -> ssl.SSLSocket:
    """Handshake on a connected socket within ``timeout`` seconds, then check the pins."""
    sock.settimeout(timeout)
    tls = context.wrap_socket(sock, server_hostname=host)
    try:
        check_pins(tls, pins)
    except PinMismatch:
        tls.close()
        raise
    return tls


# --- the keystore registry: adapters name [[truststores]] and [[keystores]] by alias -----------


class StoreReferenceError(TLSConfigError):
    """An adapter's ``truststore``, ``keystore`` or ``key_alias`` cannot be used.

    ``setting`` is the adapter key at fault and ``value`` its value. ``reported`` is set when
    the store itself could not be opened: its own config line already says why.
    """

    def __init__(self, setting: str, value: str, message: str, *, reported: bool = False) -> None:
        self.setting = setting
        self.value = value
        self.message = message
        self.reported = reported
        super().__init__(f'{setting} = "{value}": {message}')


def is_path(value: str) -> bool:
    """Whether an adapter's ``truststore``/``keystore`` value is a PEM file path, not an alias.

    Store aliases cannot contain "/" (``ALIAS_PATTERN``), so a path always does ("./ca.pem").
    """
    return "/" in value
