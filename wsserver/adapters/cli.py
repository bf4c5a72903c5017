"""``wsserver adapter test NAME --user U``: try an adapter and show which servers answered.

The lead's CLI parses arguments, reads the password (prompt or ``--password-env``) and calls
:func:`adapter_test`. Exit status: 0 accepted, 1 rejected, 3 unavailable, 2 bad setup.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from wsserver.adapters.balancer import Decision
from wsserver.config.adapter_settings import AdapterSettings

EXIT = {Decision.ACCEPTED: 0, Decision.REJECTED: 1, Decision.UNAVAILABLE: 3}


def adapter_test(
    settings: AdapterSettings,
    user: str,
    password: str,
    *,
    certificate: str = "",
    issuer: str = "",
    timeout: float | None = None,
    out: TextIO | None = None,
    **adapter_kwargs: Any,
) -> int:
    """Authenticate once and print every server tried, in order, with timings.

    For an OCSP adapter ``certificate`` (and optionally ``issuer``) are PEM file paths and
    ``user``/``password`` are ignored.
    """
    from wsserver.adapters.service import Adapter

    out = out or sys.stdout
    try:
        adapter = Adapter(settings, **adapter_kwargs)
        pools = adapter.balancer.pools() if adapter.balancer is not None else []
        shown = (
            "; ".join(f"priority {p}: {', '.join(urls)}" for p, urls in pools) or "responders from the AIA"
        )
        print(f"adapter {settings.name} ({settings.type}): {shown}", file=out)
        if settings.type == "ocsp":
            if not certificate:
                print("error: an OCSP adapter checks a certificate: give its PEM file", file=out)
                return 2
            from cryptography import x509

            with open(certificate, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            chain = []
            if issuer:
                with open(issuer, "rb") as f:
                    chain = x509.load_pem_x509_certificates(f.read())
            result = adapter.check_certificate(cert, chain=chain, timeout=timeout)
        else:
            result = adapter.authenticate(user, password, timeout=timeout)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=out)
        return 2
    width = max((len(t.server) for t in result.tried), default=0)
    for n, t in enumerate(result.tried, 1):
        print(f"  {n}. {t.server:<{width}}  {t.result:<8}  {t.ms:9.1f} ms  {t.detail}", file=out)
    if not result.tried:
        print("  (no backend request)", file=out)
    backend_user = result.attributes.get("backend_user", "")
    user_shown = f" as {backend_user}" if backend_user and result.decision is Decision.ACCEPTED else ""
    print(f"result: {result.decision.value}{user_shown}: {result.detail}", file=out)
    for snap in adapter.snapshot():
        print(f"  penalty {snap.penalty:6.1f}  {snap.url}", file=out)
    return EXIT[result.decision]
