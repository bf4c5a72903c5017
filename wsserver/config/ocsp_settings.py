"""Rules of the OCSP keys of ``[ports.tls]``: ``ocsp``, ``ocsp_stapling``, ``ocsp_stapling_responder``.

Checked by the config loader with the other rules that span tables; every problem is one line
in the loader's format::

    wsserver.toml: ports[1].tls.ocsp = "ocps": must name an [[adapters]] entry of type "ocsp"; did you mean "ocsp"?
    wsserver.toml: ports[1].tls.ocsp = "corp-ldap": adapter "corp-ldap" is of type "ldap"; ...
    wsserver.toml: ports[1].tls.ocsp = "ocsp": needs client_certs = "request" or "require" ...

What needs the keystores (the port certificate's issuer and AIA for stapling) is checked when
they are opened, in :func:`wsserver.security.stapling.attach_stapling`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def check_port_ocsp(ports: Sequence[Any], adapters: Sequence[Any], errors: Any) -> None:
    """Add an error line to ``errors`` (the loader's ``_Errors``) for each bad OCSP setting."""
    by_name = {a.name: a for a in adapters}
    ocsp_names = [a.name for a in adapters if a.type == "ocsp"]
    for i, port in enumerate(ports):
        tls = port.tls
        path = f"ports[{i}].tls"
        if tls is None or errors.is_bad(path):
            continue
        if tls.ocsp:
            key = f"{path}.ocsp"
            found = by_name.get(tls.ocsp)
            if found is None:
                close = difflib.get_close_matches(tls.ocsp, ocsp_names or list(by_name), n=1)
                if close:
                    hint = f'did you mean "{close[0]}"?'
                elif ocsp_names:
                    hint = f"known: {_quoted(ocsp_names)}"
                else:
                    hint = 'no [[adapters]] entry of type "ocsp" is configured'
                errors.add(key, f'must name an [[adapters]] entry of type "ocsp"; {hint}', tls.ocsp)
            elif found.type != "ocsp":
                others = f" (OCSP adapters: {_quoted(ocsp_names)})" if ocsp_names else ""
                errors.add(
                    key,
                    f'adapter "{found.name}" is of type "{found.type}"; client certificates are '
                    f'checked by an adapter of type "ocsp"{others}',
                    tls.ocsp,
                )
            if tls.client_certs == "none":
                errors.add(
                    key,
                    'needs client_certs = "request" or "require" (without client certificates '
                    f'there is nothing to check; {path}.client_certs = "none")',
                    tls.ocsp,
                )
        if tls.ocsp_stapling_responder:
            key = f"{path}.ocsp_stapling_responder"
            url = urlsplit(tls.ocsp_stapling_responder)
            if url.scheme.lower() not in ("http", "https") or not url.hostname:
                errors.add(key, "must be an http:// or https:// URL", tls.ocsp_stapling_responder)
            elif not tls.ocsp_stapling:
                errors.add(key, f"is only used with {path}.ocsp_stapling = true", tls.ocsp_stapling_responder)
