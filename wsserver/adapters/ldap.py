"""LDAP adapter (ldap3): simple bind with a DN template, or search-then-bind.

- ``ldap.bind_dn_template = "uid={username},ou=people,dc=example,dc=com"``: one bind as the
  user (the name is escaped as an RDN value, RFC 4514).
- ``ldap.search_base`` (+ ``search_filter``, ``service_dn``): bind as the service account
  (or anonymously), search the user's DN (the name is escaped for filters, RFC 4515),
  then bind as that DN on the same connection.
- ``ldap.group_dn``: the user must be a member (checked with the service account when there
  is one, else as the user).

``ldaps://`` is TLS from the first byte; ``ldap://`` with ``security_protocol = "tls"`` uses
StartTLS before any credentials are sent. invalidCredentials (49), inappropriateAuthentication
(48) and unwillingToPerform (53) are technically correct rejects; connection errors, time-outs
and other result codes (busy, unavailable, a failing service account) are failures of that
server. Empty passwords never reach this module (an LDAP "unauthenticated bind" may succeed).
"""

from __future__ import annotations

import os
import ssl
import warnings
from typing import Any
from urllib.parse import urlsplit

with warnings.catch_warnings():  # ldap3 2.9 + pyasn1 0.6: tagMap/typeMap deprecations at import
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core import exceptions as lx
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import escape_rdn

from wsserver.adapters.balancer import Outcome, Timeouts
from wsserver.adapters.tls import check_pins, normalize_pins
from wsserver.config.adapter_settings import AdapterSettings

REJECT_CODES = {48: "inappropriateAuthentication", 49: "invalidCredentials", 53: "unwillingToPerform"}
MAX_SECRET_BYTES = 4096


class _ContextTls(ldap3.Tls):
    """ldap3's Tls with our ssl context: TLS 1.2+, host name check, pinning."""

    def __init__(self, context: ssl.SSLContext, pins: tuple[str, ...]) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self.context = context
        self.pins = pins

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        sock = self.context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )
        if do_handshake:
            check_pins(sock, self.pins)
        connection.socket = sock


def read_service_password(settings: AdapterSettings) -> str:
    o = settings.ldap
    assert o is not None  # parse_adapter() fills in the table of the adapter's type
    if o.service_password_file:
        with open(o.service_password_file, encoding="utf-8") as f:
            return f.read(MAX_SECRET_BYTES + 1).strip()
    if o.service_password_env:
        return os.environ.get(o.service_password_env, "")
    return ""


class _Reject(Exception):
    pass


class _Fail(Exception):
    def __init__(self, detail: str, kind: str = "server") -> None:
        super().__init__(detail)
        self.detail, self.kind = detail, kind


class LdapBackend:
    def __init__(self, settings: AdapterSettings, context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        assert settings.ldap is not None  # parse_adapter() fills in the table of the adapter's type
        self.options = settings.ldap
        self.context = context
        self.pins = normalize_pins(settings.pinned_sha256)
        self.service_password = read_service_password(settings) if self.options.service_dn else ""

    def precheck(self, username: str, password: str) -> str:
        if len(username) > 256:
            return "user name longer than 256 characters"
        return ""

    def _server(self, server_url: str, timeout: Timeouts) -> tuple[ldap3.Server, bool]:
        parts = urlsplit(server_url)
        ldaps = parts.scheme.lower() == "ldaps"
        use_tls = ldaps or self.settings.security_protocol == "tls"
        if use_tls and self.context is None:
            raise _Fail("TLS requested but no TLS context", "tls")
        # The context is not None when use_tls (refused above); the test narrows it for the checker.
        tls = _ContextTls(self.context, self.pins) if use_tls and self.context is not None else None
        assert parts.hostname is not None  # url_problem() refuses server URLs without a host
        server = ldap3.Server(
            parts.hostname,
            port=parts.port or (636 if ldaps else 389),
            use_ssl=ldaps,
            tls=tls,
            get_info=ldap3.NONE,
            connect_timeout=timeout.connect,
        )
        return server, use_tls and not ldaps

    def authenticate(self, server_url: str, username: str, password: str, timeout: Timeouts) -> Outcome:
        conn = None
        try:
            server, start_tls = self._server(server_url, timeout)
            o = self.options
            service = bool(o.service_dn)
            conn = ldap3.Connection(
                server,
                user=o.service_dn or None,
                password=self.service_password or None,
                authentication=ldap3.SIMPLE if service else ldap3.ANONYMOUS,
                receive_timeout=None,
                raise_exceptions=False,
                auto_referrals=False,
                read_only=True,
                client_strategy=ldap3.SYNC,
            )
            conn.open(read_server_info=False)  # connect (and the ldaps handshake) under the connect time-out
            # ldap3's receive_timeout takes whole seconds only (it packs SO_RCVTIMEO); a socket
            # time-out keeps sub-second precision and is what gevent's sockets honour.
            conn.socket.settimeout(timeout.request)
            if start_tls and not conn.start_tls(read_server_info=False):
                raise _Fail(f"StartTLS failed: {conn.last_error or conn.result}", "tls")
            if o.search_base:
                if service and not conn.bind(read_server_info=False):
                    raise _Fail(f"service account bind failed: {_describe(conn.result)}")
                user_dn = self._search(conn, username)
                if o.group_dn and service:
                    self._check_group(conn, user_dn, username)
            else:
                user_dn = o.bind_dn_template.replace("{username}", escape_rdn(username))
            if not conn.rebind(user=user_dn, password=password, read_server_info=False):
                code = (conn.result or {}).get("result")
                if code in REJECT_CODES:
                    return Outcome.rejected(REJECT_CODES[code])
                raise _Fail(f"bind answered {_describe(conn.result)}")
            if o.group_dn and not (o.search_base and service):
                self._check_group(conn, user_dn, username)
            return Outcome.accepted("bind ok", user=user_dn)
        except _Reject as exc:
            return Outcome.rejected(str(exc))
        except _Fail as exc:
            return Outcome.failed(exc.detail, exc.kind)
        except lx.LDAPSocketOpenError as exc:
            return Outcome.failed(f"cannot connect: {exc}", "connect")
        except lx.LDAPStartTLSError as exc:
            return Outcome.failed(f"StartTLS: {exc}", "tls")
        except (
            lx.LDAPSocketReceiveError,
            lx.LDAPResponseTimeoutError,
            lx.LDAPSessionTerminatedByServerError,
            lx.LDAPSocketSendError,
        ) as exc:
            kind = (
                "timeout"
                if "timed out" in str(exc).lower() or isinstance(exc, lx.LDAPResponseTimeoutError)
                else "protocol"
            )
            return Outcome.failed(f"{type(exc).__name__}: {exc}", kind)
        except (lx.LDAPException, ssl.SSLError, OSError) as exc:
            return Outcome.failed(f"{type(exc).__name__}: {exc}", "error")
        finally:
            if conn is not None:
                try:
                    conn.unbind()
                except Exception:
                    pass

    def _search(self, conn: ldap3.Connection, username: str) -> str:
        o = self.options
        query = o.search_filter.replace("{username}", escape_filter_chars(username))
        scope = ldap3.SUBTREE if o.search_scope == "subtree" else ldap3.LEVEL
        conn.search(o.search_base, query, search_scope=scope, attributes=[], size_limit=2)
        code = (conn.result or {}).get("result")
        if code not in (0, 4):  # success, sizeLimitExceeded
            raise _Fail(f"user search answered {_describe(conn.result)}")
        entries = [e for e in conn.response or () if e.get("type") == "searchResEntry"]
        if not entries:
            raise _Reject("no such user")
        if len(entries) > 1:
            raise _Reject("user name matches several entries")
        return entries[0]["dn"]

    def _check_group(self, conn: ldap3.Connection, user_dn: str, username: str) -> None:
        o = self.options
        value = username if o.group_member_attribute == "memberUid" else user_dn
        query = f"({o.group_member_attribute}={escape_filter_chars(value)})"
        conn.search(o.group_dn, query, search_scope=ldap3.BASE, attributes=[])
        code = (conn.result or {}).get("result")
        if code not in (0, 32):  # success, noSuchObject (treated as "not a member")
            raise _Fail(f"group search answered {_describe(conn.result)}")
        if not any(e.get("type") == "searchResEntry" for e in conn.response or ()):
            raise _Reject("not a member of the required group")


def _describe(result: Any) -> str:
    if not result:
        return "nothing"
    return f"{result.get('result')} {result.get('description')} {result.get('message') or ''}".strip()
