"""OCSP adapter: is a client certificate revoked? (RFC 6960, ``cryptography``'s OCSP builder)

Responders come from ``servers`` or, when none is configured, from the certificate's
Authority Information Access extension. A request is POSTed (``application/ocsp-request``).
The answer is checked before it is believed: successful status, a signature by the issuer or
by a delegated responder certificate that the issuer signed and marked ``OCSPSigning``, the
CertID of the asked certificate, thisUpdate/nextUpdate within ``clock_skew_s``, and the nonce
when one was sent and echoed.

good -> ACCEPTED; revoked -> REJECTED; unknown -> REJECTED (the responder does not vouch for
it); any responder problem -> FAILED (the balancer tries the next responder). Answers with a
nextUpdate are cached until then (``ocsp.cache``); the service applies ``fail_mode`` when every
responder failed.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from wsserver.adapters import _http
from wsserver.adapters.balancer import Outcome, Timeouts
from wsserver.adapters.tls import normalize_pins
from wsserver.config.adapter_settings import AdapterSettings

MAX_RESPONSE_BYTES = 1 << 20


def key_hash(certificate: x509.Certificate) -> bytes:
    """SHA-1 of the subject public key bits (the OCSP ResponderID / CertID key hash)."""
    return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest


def aia_responders(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
        and d.access_location.value.lower().startswith(("http://", "https://"))
    )


def find_issuer(certificate: x509.Certificate, candidates: list[x509.Certificate]) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def load_pem_certificates(path: str) -> list[x509.Certificate]:
    if not path:
        return []
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


def _verify(public_key: Any, signature: bytes, data: bytes, hash_algorithm: Any) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
    elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public_key.verify(signature, data)
    else:
        raise InvalidSignature(f"unsupported responder key type {type(public_key).__name__}")


class OcspBackend:
    def __init__(
        self, settings: AdapterSettings, context: ssl.SSLContext | None = None, wall: Any = time.time
    ) -> None:
        self.settings = settings
        assert settings.ocsp is not None  # parse_adapter() fills in the table of the adapter's type
        self.options = settings.ocsp
        self.context = context
        self.pins = normalize_pins(settings.pinned_sha256)
        self.wall = wall
        self.issuers = load_pem_certificates(self.options.issuers)
        self.hash = hashes.SHA256() if self.options.hash == "sha256" else hashes.SHA1()
        self._cache: OrderedDict[tuple[bytes, int], tuple[Outcome, float]] = OrderedDict()
        self._lock = threading.Lock()

    # --- cache ------------------------------------------------------------------------------

    def cached(self, certificate: x509.Certificate, issuer: x509.Certificate) -> Outcome | None:
        if not self.options.cache:
            return None
        key = (key_hash(issuer), certificate.serial_number)
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if self.wall() >= entry[1]:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return entry[0]

    def remember(self, certificate: x509.Certificate, issuer: x509.Certificate, outcome: Outcome) -> None:
        until = outcome.attributes.get("next_update")
        if not self.options.cache or until is None or outcome.result.value == "failed":
            return
        key = (key_hash(issuer), certificate.serial_number)
        with self._lock:
            self._cache[key] = (outcome, until)
            self._cache.move_to_end(key)
            while len(self._cache) > self.options.cache_max_entries:
                self._cache.popitem(last=False)

    # --- one responder ----------------------------------------------------------------------

    def check(
        self, server_url: str, certificate: x509.Certificate, issuer: x509.Certificate, timeout: Timeouts
    ) -> Outcome:
        builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, self.hash)
        nonce = os.urandom(16) if self.options.nonce else None
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        request = builder.build()
        headers = [("Content-Type", "application/ocsp-request"), ("Accept", "application/ocsp-response")]
        try:
            answer = _http.request(
                server_url,
                "POST",
                headers,
                request.public_bytes(serialization.Encoding.DER),
                timeout,
                self.context,
                self.pins,
                max_body=MAX_RESPONSE_BYTES,
            )
        except _http.HTTPFailure as exc:
            return Outcome.failed(exc.detail, exc.kind)
        if answer.status != 200:
            return Outcome.failed(f"HTTP {answer.status}", "server")
        try:
            response = ocsp.load_der_ocsp_response(answer.body)
        except ValueError as exc:
            return Outcome.failed(f"not an OCSP response: {exc}", "protocol")
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            return Outcome.failed(f"responder status {response.response_status.name}", "server")
        problem = self._verify_signature(response, issuer)
        if problem:
            return Outcome.failed(problem, "protocol")
        if nonce is not None:
            problem = self._check_nonce(response, nonce)
            if problem:
                return Outcome.failed(problem, "protocol")
        single = next((r for r in response.responses if self._matches(r, request)), None)
        if single is None:
            return Outcome.failed("the response does not cover the certificate asked for", "protocol")
        return self._classify(single)

    def _matches(self, single: Any, request: ocsp.OCSPRequest) -> bool:
        return (
            single.serial_number == request.serial_number
            and single.issuer_key_hash == request.issuer_key_hash
            and single.issuer_name_hash == request.issuer_name_hash
        )

    def _check_nonce(self, response: ocsp.OCSPResponse, nonce: bytes) -> str:
        try:
            echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            return ""  # many responders (and caches in front of them) do not echo nonces
        return "" if echoed == nonce else "nonce mismatch (replayed response?)"

    def _verify_signature(self, response: ocsp.OCSPResponse, issuer: x509.Certificate) -> str:
        signer = self._signer(response, issuer)
        if signer is None:
            return "response signed by an unauthorized responder"
        try:
            _verify(
                signer.public_key(),
                response.signature,
                response.tbs_response_bytes,
                response.signature_hash_algorithm,
            )
        except (InvalidSignature, ValueError, TypeError):
            return "bad response signature"
        return ""

    def _signer(self, response: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate | None:
        def is_responder(cert: x509.Certificate) -> bool:
            if response.responder_name is not None:
                return response.responder_name == cert.subject
            return response.responder_key_hash == key_hash(cert)

        if is_responder(issuer):
            return issuer
        now = datetime.fromtimestamp(self.wall(), UTC)
        for cert in response.certificates:
            if not is_responder(cert) or find_issuer(cert, [issuer]) is None:
                continue
            if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
                continue
            try:
                usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                continue
            if ExtendedKeyUsageOID.OCSP_SIGNING in usages:
                return cert
        return None

    def _classify(self, single: Any) -> Outcome:
        now = datetime.fromtimestamp(self.wall(), UTC)
        skew = timedelta(seconds=self.options.clock_skew_s)
        if single.this_update_utc > now + skew:
            return Outcome.failed("response thisUpdate is in the future", "protocol")
        next_update = single.next_update_utc
        if next_update is not None and next_update < now - skew:
            return Outcome.failed("response is stale (nextUpdate passed)", "protocol")
        until = next_update.timestamp() if next_update is not None else None
        status = single.certificate_status
        if status == ocsp.OCSPCertStatus.GOOD:
            return Outcome.accepted("good", next_update=until)
        if status == ocsp.OCSPCertStatus.REVOKED:
            reason = single.revocation_reason.name if single.revocation_reason is not None else "unspecified"
            return Outcome.rejected(f"revoked ({reason})", next_update=until)
        return Outcome.rejected("unknown to the responder", next_update=until)
