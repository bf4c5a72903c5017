"""Adapters' client TLS from the keystore registry: an adapter's ``truststore``, ``keystore`` and
``key_alias`` name ``[[keystores]]``/``[[truststores]]`` entries (PEM, PKCS#12, JKS), which the
master opened once (:mod:`wsserver.security.tls`). :class:`RegistrySetup` is the ``TLSSetup``
the workers hand to :func:`wsserver.adapters.tls.client_context`; :func:`check_adapter_tls` is
preflight's check of every adapter's TLS.

It lives in security/, not adapters/: it joins the two, and adapters/ imports nothing of
security/ (the keystores) so that the two packages form no import cycle.
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Iterable

from cryptography import x509

from wsserver.adapters.tls import (
    StoreReferenceError,
    TLSConfigError,
    client_context,
    is_path,
    load_verify_path,
)
from wsserver.security.keystores import KeyEntry, KeystoreError, load_keystore, load_truststore
from wsserver.security.tls import TLSConfigError as StoresError
from wsserver.security.tls import TLSMaterial, tls_for_config, uses_tls


def _no_password() -> bytes:
    return b""


def _pem(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_key_entry(context: ssl.SSLContext, entry: KeyEntry) -> None:
    """Give ``context`` a registry key (cryptography objects) as its client key and chain.

    ``load_cert_chain`` only reads files: the PEM goes through an anonymous in-memory file
    (memfd), so the unencrypted key never touches a disk.
    """
    from cryptography.hazmat.primitives import serialization

    key = entry.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem = key + "".join(_pem(c) for c in (entry.certificate, *entry.chain)).encode()
    fd = os.memfd_create("wsserver-adapter-key", os.MFD_CLOEXEC)
    try:
        view = memoryview(pem)
        while view:
            view = view[os.write(fd, view) :]
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class RegistrySetup:
    """The ``TLSSetup`` of a configuration: resolves adapter ``truststore``/``keystore`` aliases
    in its keystore registry (``wsserver.security.tls.TLSMaterial``: PEM, PKCS#12 and JKS alike).

    - ``keystore`` + ``key_alias``: the client key for mutual TLS (no alias = the store's only key).
    - ``truststore``: its certificates are the trust anchors (every one, intermediates included,
      as in a Java truststore). A ``[[keystores]]`` alias works too: its trusted-certificate
      entries and its keys' CA certificates.
    - No truststore: the keystore serves as truststore; with neither, the system CAs.
    - A value containing "/" is a PEM file path (relative to the config file's directory): a CA
      bundle or hashed directory for ``truststore``, key + certificate chain for ``keystore``.

    ``failed`` are store aliases that could not be opened (reported on their own config line).
    """

    def __init__(
        self, material: TLSMaterial, base_dir: str | None = None, failed: Iterable[str] = ()
    ) -> None:
        self.material = material
        self.base_dir = base_dir
        self.failed = frozenset(failed)

    def __call__(self, context: ssl.SSLContext, truststore: str, keystore: str, key_alias: str) -> None:
        if keystore:
            self._client_key(context, keystore, key_alias)
        name = truststore or keystore
        setting = "truststore" if truststore else "keystore"
        if not name:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
            return
        if is_path(name):
            self._trust_path(context, setting, name)
            return
        material = self.material
        holder = material.truststores.get(name) or material.keystores.get(name)
        if holder is None:
            raise StoreReferenceError(
                setting, name, self._missing(name, truststore=True), reported=name in self.failed
            )
        kind = "truststore" if name in material.truststores else "keystore"
        certs = holder.trust_certificates()
        if not certs:
            hint = "" if truststore else "; name a truststore"
            raise StoreReferenceError(setting, name, f'{kind} "{name}" holds no certificates to trust{hint}')
        now = datetime.datetime.now(datetime.UTC)
        if not any(c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in certs):
            last = max(c.not_valid_after_utc for c in certs)
            raise StoreReferenceError(
                setting,
                name,
                f'{kind} "{name}": every certificate has expired or is not '
                f"valid yet (the last expired on {last:%Y-%m-%d %H:%M:%S} UTC)",
            )
        context.load_verify_locations(cadata="".join(_pem(c) for c in certs))
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN

    def _client_key(self, context: ssl.SSLContext, keystore: str, key_alias: str) -> None:

        if is_path(keystore):
            if key_alias:
                raise StoreReferenceError(
                    "key_alias",
                    key_alias,
                    "a PEM file keystore holds one key; name a [[keystores]] alias to choose a key by alias",
                )
            path = self._path(keystore)
            try:
                # An encrypted PEM key has no password setting here: fail rather than prompt on a tty.
                context.load_cert_chain(path, password=_no_password)
            except (OSError, ssl.SSLError) as exc:
                raise StoreReferenceError(
                    "keystore", keystore, f"cannot load a PEM key and certificate from {path}: {exc}"
                ) from None
            return
        store = self.material.keystores.get(keystore)
        if store is None:
            raise StoreReferenceError(
                "keystore",
                keystore,
                self._missing(keystore, truststore=False),
                reported=keystore in self.failed,
            )
        try:
            entry = store.key(key_alias)
        except KeystoreError as exc:
            raise StoreReferenceError(
                "key_alias" if key_alias else "keystore", key_alias or keystore, str(exc)
            ) from None
        try:
            load_key_entry(context, entry)
        except (OSError, ssl.SSLError) as exc:
            raise StoreReferenceError(
                "key_alias" if key_alias else "keystore",
                key_alias or keystore,
                f'keystore "{keystore}": key alias "{entry.alias}": the TLS library refuses the key: {exc}',
            ) from None

    def _trust_path(self, context: ssl.SSLContext, setting: str, value: str) -> None:
        path = self._path(value)
        try:
            load_verify_path(context, path)
        except (OSError, ssl.SSLError) as exc:
            raise StoreReferenceError(
                setting, value, f"cannot load PEM certificates from {path}: {exc}"
            ) from None

    def _path(self, value: str) -> str:
        if os.path.isabs(value) or self.base_dir is None:
            return value
        return os.path.join(self.base_dir, value)

    def _missing(self, name: str, *, truststore: bool) -> str:
        material = self.material
        if name in self.failed:
            return "the store could not be opened"
        if truststore:
            known = [*material.truststores, *material.keystores]
            what = "no [[truststores]] or [[keystores]] entry with this alias"
        else:
            known = list(material.keystores)
            what = "no [[keystores]] entry with this alias"
        listed = ", ".join(f'"{k}"' for k in known) if known else "none configured"
        return f'{what} (aliases: {listed}); a PEM file path must contain a "/", e.g. "./{name}"'


def _config_dir(config: object) -> str | None:
    source = getattr(config, "source", "<string>")
    return None if source.startswith("<") else os.path.dirname(os.path.abspath(source))


def registry_setup(config: object) -> RegistrySetup:
    """The ``TLSSetup`` the workers give their adapters: the configuration's loaded keystores
    (the master opened and checked them; a forked worker finds them loaded)."""

    material = tls_for_config(config) if uses_tls(config) else TLSMaterial()
    return RegistrySetup(material, _config_dir(config))


def _partial_material(config: object) -> tuple[TLSMaterial, set[str]]:
    """The stores that open, and the aliases of those that do not (for checking references
    while the stores' own errors are reported by the TLS check)."""

    if not uses_tls(config):
        return TLSMaterial(), set()
    try:
        return tls_for_config(config), set()
    except StoresError:
        pass
    base_dir = _config_dir(config)
    material, failed = TLSMaterial(), set[str]()
    for kcfg in getattr(config, "keystores", ()):
        try:
            material.keystores[kcfg.alias] = load_keystore(kcfg, base_dir)
        except KeystoreError:
            failed.add(kcfg.alias)
    for tcfg in getattr(config, "truststores", ()):
        try:
            material.truststores[tcfg.alias] = load_truststore(tcfg, base_dir)
        except KeystoreError:
            failed.add(tcfg.alias)
    return material, failed


def check_adapter_tls(config: object) -> list[str]:
    """Build every adapter's client TLS context as a worker would: one error line per problem
    (a missing alias, a key alias the keystore lacks, an expired or mismatched key, a wrong key
    password, an unreadable PEM path), naming the adapter key, the adapter and the store.

    A store that cannot be opened at all (a wrong store password, a missing file) is reported
    once, on its own ``keystores[i]``/``truststores[i]`` line, by the TLS check.
    """
    from wsserver.adapters.service import needs_tls

    adapters = [(i, s) for i, s in enumerate(getattr(config, "adapters", ()) or ()) if needs_tls(s)]
    if not adapters:
        return []
    material, failed = _partial_material(config)
    setup = RegistrySetup(material, _config_dir(config), failed)
    source = getattr(config, "source", "<string>")
    lines: list[str] = []
    for index, settings in adapters:
        attempts = [(settings.truststore, settings.keystore, settings.key_alias)]
        if settings.truststore and settings.keystore:
            attempts.append((settings.truststore, "", ""))  # the trust side too when the key fails
        for truststore, keystore, key_alias in attempts:
            try:
                client_context(truststore, keystore, key_alias, settings.tls_min_version, setup)
                break
            except StoreReferenceError as exc:
                if not exc.reported:
                    lines.append(
                        f'{source}: adapters[{index}].{exc.setting} = "{exc.value}": adapter '
                        f'"{settings.name}": {exc.message}'
                    )
                if exc.setting == "truststore":
                    break
            except (TLSConfigError, OSError, ssl.SSLError) as exc:
                lines.append(
                    f'{source}: adapters[{index}]: adapter "{settings.name}": cannot build its TLS '
                    f"context: {exc}"
                )
                break
    return lines
