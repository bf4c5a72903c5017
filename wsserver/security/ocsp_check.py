"""OCSP checks of client certificates on a wss port (``[ports.tls] ocsp = "ADAPTER"``).

When: in the worker's handshake greenlet (the dispatcher's), right after the TLS handshake
has completed and before the HTTP request is read or routed, so no endpoint code runs and no
request parsing happens for a refused certificate. Not in OpenSSL's verify callback: that runs
inside ``SSL_do_handshake`` on the hub's stack, where a responder round trip would stall
every connection of the worker (a gevent switch out of a C callback is not possible either).
After the handshake the greenlet may wait on the responder cooperatively (the adapter's
sockets are gevent's), while the other connections go on.

How a refusal looks: like nginx with ``ssl_ocsp on``, the TLS handshake completes and the
HTTP request gets an error answer rather than a TLS alert: a TLS 1.3 client learns of a
refused certificate only after its handshake anyway, and an HTTP status tells a WebSocket
client (and its user) what happened where an alert reads as a network error. nginx answers
400 ("The SSL certificate error"); wsserver answers ``403 Forbidden`` for a revoked or
unknown certificate (the credentials are refused, asking again will not help) and ``503``
when no responder answered and the adapter's ``fail_mode = "closed"``, as adapters do
elsewhere. Each refusal is counted in ``wsserver_connections_rejected_total{reason}`` as
``ocsp_revoked``, ``ocsp_unknown`` (the responder does not know the certificate, or its issuer
was not found) or ``ocsp_unavailable``.

Caching: the adapter caches answers until their nextUpdate, in each worker process (a
worker's first connection with a certificate asks the responder, later ones in that worker
do not until nextUpdate).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from wsserver.adapters.balancer import Decision
from wsserver.logs import log

logger = logging.getLogger("wsserver.tls")

MIN_CHECK_SECONDS = 0.05  # a check gets at least this long even when the handshake is nearly out of time


@dataclass(frozen=True)
class OcspRefusal:
    status: int  # 403 | 503
    reason: str  # ocsp_revoked | ocsp_unknown | ocsp_unavailable
    detail: str


def _reason(decision: Decision, detail: str) -> tuple[int, str]:
    if decision is Decision.UNAVAILABLE:
        return 503, "ocsp_unavailable"
    return 403, "ocsp_revoked" if detail.startswith("revoked") else "ocsp_unknown"


class ClientCertificateCheck:
    """The OCSP check of one wss port; ``check`` runs in the handshake greenlet."""

    def __init__(
        self, adapter: Any, port_alias: str, trust: Sequence[x509.Certificate] = (), timeout: float = 2.0
    ) -> None:
        self.adapter = adapter  # wsserver.adapters.service.Adapter of type "ocsp"
        self.port_alias = port_alias
        self.trust = list(trust)  # where an issuer is looked for when the client sent no chain
        self.timeout = timeout

    def check(self, tls_sock: Any, peer_text: str, deadline: float | None = None) -> OcspRefusal | None:
        """Complete the TLS handshake of ``tls_sock`` (a ``runtime.tls.TLSSocket``) and check the
        client's certificate: None = go on (good, no certificate, or fail-open), else why not.

        ``deadline`` (monotonic) is when the whole handshake must be done: the responder
        requests stop before it, so an unanswered check ends as "unavailable" and the
        adapter's ``fail_mode`` decides rather than the handshake timer.
        """
        tls_sock.do_handshake()
        conn = tls_sock.connection
        certificate = conn.get_peer_certificate(as_cryptography=True)
        if certificate is None:  # client_certs = "request" and none sent: nothing to check
            return None
        verified = conn.get_verified_chain(as_cryptography=True) or []
        candidates = [c for c in verified if c != certificate] + self.trust
        timeout = self.timeout
        if deadline is not None:
            timeout = max(MIN_CHECK_SECONDS, min(timeout, deadline - time.monotonic() - MIN_CHECK_SECONDS))
        result = self.adapter.check_certificate(certificate, chain=candidates, timeout=timeout)
        if result.decision is Decision.ACCEPTED:
            return None
        status, reason = _reason(result.decision, result.detail)
        log(
            logger,
            "info",
            "client certificate refused",
            port=self.port_alias,
            peer=peer_text,
            adapter=self.adapter.name,
            subject=result.user,
            serial=f"{certificate.serial_number:x}",
            reason=reason,
            detail=result.detail,
        )
        return OcspRefusal(status, reason, result.detail)


def client_check_for(port: Any, adapters: dict[str, Any], material: Any) -> ClientCertificateCheck | None:
    """The check of a wss port with ``[ports.tls] ocsp`` (None without); ``material`` is the
    config's ``security.tls.TLSMaterial``. The loader has made sure the adapter exists."""
    tls = port.tls
    name = getattr(tls, "ocsp", "") if tls is not None else ""
    if not name or port.protocol != "wss":
        return None
    trust: list[x509.Certificate] = []
    port_tls = material.ports.get(port.alias)
    if port_tls is not None:
        holder_name = port_tls.options.truststore or port_tls.options.key.keystore
        holder = material.truststores.get(holder_name) or material.keystores.get(holder_name)
        if holder is not None:
            trust = list(holder.trust_certificates())
    return ClientCertificateCheck(adapters[name], port.alias, trust, port.auth_timeout_ms / 1000)
