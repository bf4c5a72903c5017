"""SNI: one wss port, several host names, each served with its own key.

``[ports.tls.sni]`` maps host names to key aliases::

    [ports.tls.sni]
    "app.example.com" = "app"             # a key alias in the port's keystore
    "*.example.com" = "wildcard"          # one label: a.example.com, not a.b.example.com
    "api.example.org" = "other:api"       # KEYSTORE:ALIAS, a key of another [[keystores]] entry

Matching (what nginx's ``server_name`` does for the same names): case-insensitive, a trailing
dot ignored; an exact name wins over a wildcard; ``*.example.com`` covers exactly one label in
front of ``example.com`` (not ``example.com`` itself); a name no entry matches, and a client
that sends no SNI at all, get the port's own key. Internationalised names are written and
matched in their ASCII (punycode, ``xn--``) form, the form clients send.

Every SNI key gets a context of its own, built once when the configuration is loaded by the
same function and with the same settings as the port's context (protocol versions, ciphers,
client certificates and their truststore, ALPN, session id context). The port's context gets
a servername callback that switches the connection to the matching context
(``Connection.set_context``). OpenSSL keeps the first context's verify mode, options and
ciphers on the connection and takes the certificate, the trust store, the client CA names and
the ALPN callback from the new one: identical settings keep both halves in agreement.

The module has three parts: :func:`parse_pattern` / :class:`SNIMap` (pure name matching),
:func:`check_port_sni` (the config's reference pass, no file opened) and :func:`attach_sni`
(the load: keys, contexts, the callback), with :func:`sni_report` for ``wsserver check``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cryptography import x509

T = TypeVar("T")

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
PATTERN_HELP = 'a host name ("app.example.com") or a wildcard of one label ("*.example.com")'
STORE_SEPARATOR = ":"


class PatternError(ValueError):
    """A host pattern that cannot be used; the message follows "must be" style wording."""


def _toml_key(key: str) -> str:
    from wsserver.config.writer import toml_key

    return toml_key(key)


def _quote(text: str) -> str:
    from wsserver.config.writer import toml_string

    return toml_string(text)


def parse_pattern(text: str) -> tuple[str, bool]:
    """``(normalised name, is_wildcard)`` of one ``[ports.tls.sni]`` key; raises PatternError.

    Normalised: lower case, without a trailing dot; a wildcard is returned as its suffix
    (``*.Example.COM`` -> ``("example.com", True)``).
    """
    if not text or text == ".":
        raise PatternError(f"is empty; expected {PATTERN_HELP}")
    if any(ord(ch) > 0x7F for ch in text):
        try:
            ascii_form = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise PatternError(
                "must be an ASCII host name: write an internationalised name in its "
                "punycode (xn--) form, the form clients send"
            ) from None
        raise PatternError(
            f"must be an ASCII host name: write {_quote(ascii_form)} (the punycode form clients send)"
        )
    name = text.lower()
    name = name[:-1] if name.endswith(".") else name
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        raise PatternError(
            "is an IP address: clients do not send addresses as SNI (RFC 6066); a connection "
            "by address gets the port's own key"
        )
    wildcard = name.startswith("*.")
    host = name[2:] if wildcard else name
    if "*" in host:
        raise PatternError(f'must be {PATTERN_HELP}: "*" only as the whole first label, once')
    if not host:
        raise PatternError(f'must be {PATTERN_HELP}: a wildcard needs a domain after "*."')
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise PatternError(
            f"must be {PATTERN_HELP}: labels of 1-63 letters, digits, - and _, separated by dots"
        )
    if re.fullmatch(r"[0-9.]+", host):
        raise PatternError(f"must be {PATTERN_HELP}, not all digits (a mistyped IPv4 address?)")
    return host, wildcard


def normalise_server_name(name: bytes | str | None) -> str | None:
    """The SNI a client sent, as :class:`SNIMap` looks it up; None when absent or not ASCII."""
    if name is None:
        return None
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            return None
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


class SNIMap(Generic[T]):
    """Host names and one-label wildcards -> values; exact names win over wildcards."""

    __slots__ = ("exact", "wildcards")

    def __init__(self, items: Iterable[tuple[str, T]] = ()) -> None:
        self.exact: dict[str, T] = {}
        self.wildcards: dict[str, T] = {}  # the suffix after "*."
        for pattern, value in items:
            host, wildcard = parse_pattern(pattern)
            (self.wildcards if wildcard else self.exact)[host] = value

    def __len__(self) -> int:
        return len(self.exact) + len(self.wildcards)

    def lookup(self, server_name: bytes | str | None) -> T | None:
        """The value for the name a client sent (raw SNI bytes or text), or None (the default)."""
        name = normalise_server_name(server_name)
        if not name:
            return None
        found = self.exact.get(name)
        if found is not None:
            return found
        _, dot, parent = name.partition(".")
        return self.wildcards.get(parent) if dot and parent else None


# --- the reference pass (wsserver/config/tls_settings.py: check_tls_references) ----------------


@dataclass(frozen=True)
class SNIKey:
    """Where one ``[ports.tls.sni]`` entry's key lives."""

    pattern: str  # as written (the config key)
    keystore: str
    key_alias: str
    path: str  # config path of the entry, e.g. 'ports[0].tls.sni."app.example.com"'


def _flatten(table: Mapping[str, Any], prefix: str = "") -> list[str]:
    names = []
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        names += _flatten(value, name) if isinstance(value, dict) else [name]
    return names


def split_key_ref(value: str, port_keystore: str, keystore_aliases: Iterable[str]) -> tuple[str, str]:
    """``"ALIAS"`` -> (the port's keystore, ALIAS); ``"KEYSTORE:ALIAS"`` -> (KEYSTORE, ALIAS) when
    KEYSTORE names a configured keystore (keystore aliases cannot contain ":", key aliases can)."""
    store, sep, alias = value.partition(STORE_SEPARATOR)
    if sep and store in set(keystore_aliases):
        return store, alias
    return port_keystore, value


def sni_entries(
    errors: Any,
    path: str,
    table: Any,
    port_keystore: str,
    keystores: Mapping[str, Any],
    *,
    keystores_complete: bool = True,
) -> list[SNIKey]:
    """Check a port's ``[ports.tls.sni]`` table without opening a file; add one line per problem
    to ``errors`` (a wsserver.config.settings.Errors) and return the usable entries.

    ``keystores``: the configured keystores by alias (their PEM key aliases are known here; the
    other stores' aliases are checked when they are loaded).
    """
    if not isinstance(table, dict):
        errors.add(path, 'must be a table: [ports.tls.sni] with "host name" = "key alias" lines', table)
        return []
    entries: list[SNIKey] = []
    seen: dict[str, str] = {}  # normalised pattern -> the key as written
    for key, value in table.items():
        sub = f"{path}.{_toml_key(key)}"
        if isinstance(value, dict):
            for dotted in _flatten(value, key) or [key]:
                errors.add(
                    f"{path}.{_toml_key(dotted)}",
                    f'quote the host name: {_quote(dotted)} = "KEY_ALIAS" '
                    "(an unquoted TOML key with dots is a nested table)",
                )
            continue
        try:
            host, wildcard = parse_pattern(key)
        except PatternError as exc:
            _add(errors, sub, str(exc), value)
            continue
        normal = ("*." if wildcard else "") + host
        if normal in seen:
            _add(
                errors,
                sub,
                f"duplicate host name (also {_quote(seen[normal])}; names are matched without case "
                "and trailing dot)",
                value,
            )
            continue
        seen[normal] = key
        if not isinstance(value, str) or not value:
            _add(
                errors,
                sub,
                'must be a key alias ("ALIAS" in the port\'s keystore or "KEYSTORE:ALIAS")',
                value,
            )
            continue
        store, alias = split_key_ref(value, port_keystore, keystores)
        ks = keystores.get(store)
        if ks is None:
            if keystores_complete:
                errors.add(sub, f"keystore {_quote(store)} is not configured", value)
            continue
        if ks.type == "pem":
            aliases = ks.key_aliases()
            if alias not in aliases:
                errors.add(
                    sub,
                    f"keystore {_quote(store)} has no key alias {_quote(alias)}"
                    f"{did_you_mean(alias, aliases, keystores, port_keystore)}",
                    value,
                )
                continue
        entries.append(SNIKey(key, store, alias, sub))
    return entries


def _add(errors: Any, path: str, message: str, value: Any) -> None:
    """One error line; the value is shown only when it is a string (tables are named by the path)."""
    if isinstance(value, str):
        errors.add(path, message, value)
    else:
        errors.add(path, message)


def did_you_mean(
    alias: str, aliases: Iterable[str], keystores: Iterable[str] = (), port_keystore: str = ""
) -> str:
    """ "; did you mean "x"? (aliases: ...)" for a key alias that is not there."""
    aliases = list(aliases)
    close = difflib.get_close_matches(alias, aliases, n=1)
    if not close:
        lowered = {a.lower(): a for a in aliases}
        close = [lowered[alias.lower()]] if alias.lower() in lowered else []
    hint = f'; did you mean "{close[0]}"?' if close else ""
    known = ", ".join(_quote(a) for a in aliases) if aliases else "none"
    others = [k for k in keystores if k != port_keystore]
    other = (
        f'; a key of another keystore is "KEYSTORE:ALIAS" (keystores: {", ".join(others)})'
        if others and STORE_SEPARATOR not in alias and not close
        else ""
    )
    return f"{hint} (aliases: {known}){other}"


def check_port_sni(
    errors: Any,
    port: Any,
    index: int,
    options: Any,
    keystores: Iterable[Any],
    *,
    keystores_complete: bool = True,
) -> None:
    """The reference-pass hook for one wss port (``options``: its tls_settings.PortTLSOptions)."""
    table = getattr(port.tls, "sni", None) if port.tls is not None else None
    if not table:
        return
    stores = {ks.alias: ks for ks in keystores}
    sni_entries(
        errors,
        f"ports[{index}].tls.sni",
        table,
        options.key.keystore,
        stores,
        keystores_complete=keystores_complete,
    )


# --- the load (wsserver/security/tls.py: load_tls) -----------------------------------------------


@dataclass(frozen=True)
class SNIRoute:
    """One configured name and the key (and context) it is served with."""

    pattern: str  # as written in the config
    entry: Any  # keystores.KeyEntry
    context: Any  # OpenSSL.SSL.Context; the port's own context when the key is the port's key


@dataclass(frozen=True)
class PortSNI:
    """A wss port's SNI routes and the map its servername callback consults."""

    routes: tuple[SNIRoute, ...]
    contexts: SNIMap[Any]

    def entries(self) -> list[Any]:
        return [route.entry for route in self.routes]

    def callback(self, default_context: Any) -> Callable[[Any], None]:
        lookup = self.contexts.lookup

        def on_server_name(conn: Any) -> None:
            # Runs inside the handshake, once per connection: two dict lookups at most.
            context = lookup(conn.get_servername())
            if context is not None and context is not default_context:
                conn.set_context(context)

        return on_server_name


def attach_sni(
    port: Any,
    index: int,
    options: Any,
    default_entry: Any,
    default_context: Any,
    build: Callable[[Any], Any],
    material: Any,
    source: str,
    failed: Iterable[str] = (),
) -> tuple[PortSNI | None, list[str]]:
    """Build a port's SNI contexts and install the servername callback on its context.

    ``build(entry)`` makes a context with the port's settings (the call that made
    ``default_context``). Returns (the port's SNI, error lines); None when it has no SNI table.
    """
    from OpenSSL import SSL

    from wsserver.config.settings import Errors
    from wsserver.security.keystores import KeystoreError

    table = getattr(port.tls, "sni", None) if port.tls is not None else None
    if not table:
        return None, []
    errors = Errors(source)
    configs = dict(material.keystores)
    path = f"ports[{index}].tls.sni"
    failed = set(failed)
    routes: list[SNIRoute] = []
    built: dict[tuple[str, str], Any] = {(default_entry.keystore, default_entry.alias): default_context}
    for ref in sni_entries(
        errors, path, table, options.key.keystore, _ConfigView(configs, failed), keystores_complete=False
    ):
        store = material.keystores.get(ref.keystore)
        if store is None:
            continue  # a keystore that failed to load: reported with that keystore
        try:
            entry = store.key(ref.key_alias)
        except KeystoreError as exc:
            if "no such key alias" in exc.message:
                errors.add(
                    ref.path,
                    f"keystore {_quote(ref.keystore)} has no key alias {_quote(ref.key_alias)}"
                    f"{did_you_mean(ref.key_alias, store.aliases(), configs, options.key.keystore)}",
                    table[ref.pattern],
                )
            else:
                errors.add(ref.path, str(exc), table[ref.pattern])
            continue
        key = (entry.keystore, entry.alias)
        if key not in built:
            try:
                built[key] = build(entry)
            except (ValueError, SSL.Error) as exc:
                errors.add(
                    ref.path,
                    f'cannot build the TLS context with key "{entry.alias}" of keystore '
                    f'"{entry.keystore}": {exc}',
                    table[ref.pattern],
                )
                continue
        routes.append(SNIRoute(ref.pattern, entry, built[key]))
    if errors.lines:
        return None, errors.lines
    sni = PortSNI(tuple(routes), SNIMap((route.pattern, route.context) for route in routes))
    default_context.set_tlsext_servername_callback(sni.callback(default_context))
    return sni, []


class _ConfigView(dict):
    """Loaded keystores seen as configs for :func:`sni_entries`: every store counts as a
    non-PEM one (the load checks aliases itself, with the store's real aliases)."""

    def __init__(self, stores: Mapping[str, Any], failed: Iterable[str]) -> None:
        super().__init__({alias: _AnyStore() for alias in [*stores, *failed]})


class _AnyStore:
    type = "loaded"


# --- wsserver check ---------------------------------------------------------------------------


def certificate_covers(cert: x509.Certificate, pattern: str) -> bool:
    """Whether ``cert`` is valid for every name ``pattern`` stands for (RFC 6125 matching of
    its DNS SANs, the common name when it has none; a wildcard pattern needs a wildcard SAN)."""
    host, wildcard = parse_pattern(pattern)
    names = dns_names(cert)
    if wildcard:
        return f"*.{host}" in names
    if host in names:
        return True
    _, dot, parent = host.partition(".")
    return bool(dot and parent and f"*.{parent}" in names)


def dns_names(cert: x509.Certificate) -> set[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = sans.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        from cryptography.x509.oid import NameOID

        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return {n.lower().rstrip(".") for n in names}


def sni_report(port_alias: str, sni: PortSNI | None) -> list[str]:
    """``wsserver check`` lines for a port's SNI names; "warning:" for a certificate that does not
    cover its name (served anyway, as nginx does: the client decides)."""
    if sni is None:
        return []
    lines = []
    for route in sni.routes:
        entry = route.entry
        head = f"port {port_alias}: sni {_quote(route.pattern)}"
        lines.append(
            f'{head}: key "{entry.alias}" of keystore "{entry.keystore}", '
            f"expires {entry.certificate.not_valid_after_utc:%Y-%m-%d} UTC"
        )
        if not certificate_covers(entry.certificate, route.pattern):
            names = ", ".join(sorted(dns_names(entry.certificate))) or "no DNS names"
            lines.append(
                f'{head}: warning: the certificate of key "{entry.alias}" does not cover '
                f"{_quote(route.pattern)} (it names {names}); clients checking the host name will refuse it"
            )
    return lines
