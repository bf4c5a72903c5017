"""OCSP stapling for a wss port's own certificate (``[ports.tls] ocsp_stapling = true``).

A client that asks for the certificate status (the TLS ``status_request`` extension, e.g.
``openssl s_client -status``, browsers) gets a recent OCSP response for the server's
certificate inside the handshake, so it need not ask the CA's responder itself (privacy,
latency, and a responder outage no longer breaks clients that insist on a status).

Where the response is fetched: in every worker, by a background greenlet of its own. The
TLS contexts are built in the master and inherited by the workers, so the status callback is
set on the context there; but the response must be refreshed for as long as a worker lives,
and a refresh in the master would have to reach the already forked workers through shared
memory. An OCSP response is public and small: each worker asking the responder once per
refresh period is a few requests, the way each nginx worker process keeps its own staple.
The callback, which OpenSSL calls inside the handshake, only returns the bytes already held:
no handshake ever waits for the responder. A fresh worker's first handshakes (until its first
fetch is answered, normally milliseconds) go without a staple, as do all while the responder
is unreachable and the last response has passed its nextUpdate.

Like nginx (``ssl_stapling_verify``), only a verified response saying "good" is stapled: it
must be successful, signed by the issuer (or a delegated OCSPSigning responder the issuer
certified), about this certificate, and within its validity. Refreshed halfway to nextUpdate
(at least every hour); after a failure it is retried with a growing pause (5 s .. 5 min) and
the previous response is served until its nextUpdate.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from OpenSSL import SSL

from wsserver.adapters.balancer import Timeouts
from wsserver.adapters.ocsp import aia_responders, find_issuer
from wsserver.logs import log

logger = logging.getLogger("wsserver.tls")

FETCH_TIMEOUT = Timeouts(connect=5.0, request=5.0)
MAX_RESPONSE_BYTES = 1 << 20
REFRESH_MAX = 3600.0  # refresh at least hourly, and when a response has no nextUpdate
REFRESH_MIN = 5.0  # never ask more often, however short a response's validity
RETRY_MIN, RETRY_MAX = 5.0, 300.0

_STAPLERS: weakref.WeakKeyDictionary[SSL.Context, Stapler] = weakref.WeakKeyDictionary()
# A port's context -> the contexts of its SNI keys (they staple too, see link_stapling).
_SNI_CONTEXTS: weakref.WeakKeyDictionary[SSL.Context, list[SSL.Context]] = weakref.WeakKeyDictionary()


class StapleError(Exception):
    """No response to staple: the responder failed or its answer is not usable."""


class Stapler:
    """The current OCSP response for one port's certificate, and the loop that refreshes it."""

    def __init__(
        self,
        port_alias: str,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        url: str,
        wall: Any = time.time,
    ) -> None:
        self.port_alias = port_alias
        self.certificate = certificate
        self.issuer = issuer
        self.url = url
        self.wall = wall
        self.der = b""  # the DER response being stapled; b"" = none
        self.next_update: float | None = None
        self.failures = 0
        self._greenlet: Any = None
        self._pid = 0
        self._context: ssl.SSLContext | None = None
        self._fetched_before = False

    # --- inside the handshake (OpenSSL's status callback): never waits ----------------------

    def callback(self, _conn: SSL.Connection, _data: Any) -> bytes:
        der = self.der
        if der and (self.next_update is None or self.wall() < self.next_update):
            return der
        return b""  # no staple: OpenSSL sends none and the handshake goes on

    # --- fetching -----------------------------------------------------------------------------

    def fetch(self) -> tuple[bytes, float | None]:
        """Ask the responder; the DER response and its nextUpdate (epoch seconds), or StapleError."""
        from wsserver.adapters import _http

        request = (
            ocsp.OCSPRequestBuilder().add_certificate(self.certificate, self.issuer, hashes.SHA1()).build()
        )
        headers = [("Content-Type", "application/ocsp-request"), ("Accept", "application/ocsp-response")]
        if self.url.lower().startswith("https:") and self._context is None:
            self._context = ssl.create_default_context()
        try:
            answer = _http.request(
                self.url,
                "POST",
                headers,
                request.public_bytes(serialization.Encoding.DER),
                FETCH_TIMEOUT,
                self._context,
                max_body=MAX_RESPONSE_BYTES,
            )
        except _http.HTTPFailure as exc:
            raise StapleError(exc.detail) from None
        if answer.status != 200:
            raise StapleError(f"HTTP {answer.status}")
        try:
            response = ocsp.load_der_ocsp_response(answer.body)
        except ValueError as exc:
            raise StapleError(f"not an OCSP response: {exc}") from None
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise StapleError(f"responder status {response.response_status.name}")
        verifier = _verifier(self.wall)
        problem = verifier._verify_signature(response, self.issuer)
        if problem:
            raise StapleError(problem)
        single = next((r for r in response.responses if verifier._matches(r, request)), None)
        if single is None:
            raise StapleError("the response does not cover the port's certificate")
        outcome = verifier._classify(single)
        if outcome.result.value != "accepted":
            raise StapleError(f"certificate status: {outcome.detail}")
        return answer.body, outcome.attributes.get("next_update")

    def refresh(self) -> float:
        """One fetch; seconds until the next one. Keeps a still valid response when it fails."""
        now = self.wall()
        try:
            der, next_update = self.fetch()
        except StapleError as exc:
            self.failures += 1
            keep = bool(self.der) and (self.next_update is None or now < self.next_update)
            revoked = str(exc).startswith("certificate status: revoked")
            if revoked or not keep:
                self.der, self.next_update = b"", None
            log(
                logger,
                "error" if revoked else "warning",
                "ocsp stapling: no new response",
                port=self.port_alias,
                responder=self.url,
                error=str(exc),
                serving="previous response" if self.der else "no staple",
                failures=self.failures,
            )
            pause = min(RETRY_MAX, RETRY_MIN * 2 ** min(self.failures - 1, 10))
            if self.der and self.next_update is not None:
                pause = max(RETRY_MIN, min(pause, self.next_update - now))  # one more try before it lapses
            return pause
        recovered, self.failures = self.failures, 0
        self.der, self.next_update = der, next_update
        log(
            logger,
            "info" if recovered or not self._fetched_before else "debug",
            "ocsp stapling: response fetched",
            port=self.port_alias,
            responder=self.url,
            next_update=_when(next_update) if next_update is not None else "none",
        )
        self._fetched_before = True
        if next_update is None:
            return REFRESH_MAX
        return max(REFRESH_MIN, min(REFRESH_MAX, (next_update - now) / 2))

    def run(self) -> None:
        import gevent

        while True:
            try:
                pause = self.refresh()
            except Exception:  # a bug here must not end stapling for the worker's lifetime
                log(logger, "error", "ocsp stapling failed", exc_info=True, port=self.port_alias)
                pause = RETRY_MAX
            gevent.sleep(pause)

    def start(self) -> None:
        """Start refreshing in this process (a worker, after gevent's monkey-patching)."""
        import gevent

        if self._pid != os.getpid():  # state copied from the master by fork is not this process's
            self._greenlet, self._pid = None, os.getpid()
            self.der, self.next_update, self.failures = b"", None, 0
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self.run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _verifier(wall: Any) -> Any:
    # The OCSP adapter's checks of a response (signer, CertID, thisUpdate/nextUpdate), so a
    # stapled response is believed on exactly the terms a client certificate's answer is.
    from wsserver.adapters.ocsp import OcspBackend
    from wsserver.config.adapter_settings import AdapterSettings, OcspOptions

    return OcspBackend(AdapterSettings(name="stapling", type="ocsp", ocsp=OcspOptions()), wall=wall)


# --- wiring ---------------------------------------------------------------------------------------


def attach_stapling(
    context: SSL.Context, entry: Any, tls: Any, path: str, source: str, port_alias: str, material: Any = None
) -> str | None:
    """Set the status callback of a port's context (no network here: this runs in the master
    and in ``wsserver check``). An error line when stapling cannot work, else None.

    ``entry`` is the port's ``KeyEntry``; the issuer is looked for in its chain, then among the
    certificates of ``material``'s truststores and keystores (a ``security.tls.TLSMaterial``).
    """
    cert = entry.certificate
    candidates: list[x509.Certificate] = []
    if material is not None:
        for holder in [*material.truststores.values(), *material.keystores.values()]:
            candidates += holder.trust_certificates()
    head = f'{source}: {path}.ocsp_stapling: key "{entry.alias}" of keystore "{entry.keystore}"'
    issuer = find_issuer(cert, [*entry.chain, *candidates])
    if issuer is None:
        return (
            f"{head}: the issuer of its certificate ({cert.issuer.rfc4514_string()}) is in neither its chain "
            "nor a truststore; stapling needs the issuer to ask for the status"
        )
    url = getattr(tls, "ocsp_stapling_responder", "") or next(iter(aia_responders(cert)), "")
    if not url:
        return (
            f"{head}: its certificate names no OCSP responder (Authority Information Access); "
            f"set {path}.ocsp_stapling_responder"
        )
    stapler = Stapler(port_alias, cert, issuer, url)
    context.set_ocsp_server_callback(stapler.callback)
    _STAPLERS[context] = stapler
    return None


def link_stapling(port_context: Any, sni_context: Any) -> bool:
    """Note ``sni_context`` (an SNI key's context of the port) so that the worker refreshes its
    staple with the port's; False when it was noted already (one key for several names)."""
    linked = _SNI_CONTEXTS.setdefault(port_context, [])
    if sni_context in linked:
        return False
    linked.append(sni_context)
    return True


def stapler_for(context: Any) -> Stapler | None:
    return _STAPLERS.get(context) if context is not None else None


def start_stapling(contexts: Sequence[Any]) -> list[Stapler]:
    """A worker's hook: start refreshing the staples of its ports' contexts and of their SNI
    keys' contexts."""
    started = []
    for context in contexts:
        if context is None:
            continue  # a ws port
        for each in [context, *_SNI_CONTEXTS.get(context, ())]:
            stapler = stapler_for(each)
            if stapler is not None and stapler not in started:
                stapler.start()
                started.append(stapler)
    return started


def stop_stapling(staplers: Sequence[Stapler]) -> None:
    for stapler in staplers:
        stapler.stop()
