"""The authentication step of a handshake, on the gevent side of the house.

The decision itself is pure (``wsserver.security.auth``); this module runs it:

- the rate-limit gate and the bookkeeping run on the dispatcher's greenlet (the hub);
- checking the credentials runs on the port's executor pool when the dispatcher has one
  (an adapter call there may block); password hashing, which is CPU-heavy and releases the
  GIL, goes to gevent's thread pool so a greenlet-mode pool does not stall the hub for it;
- the whole step runs under ``gevent.Timeout(auth_timeout_ms)``: late is a 503.

Logs name the port, peer, path, method, result, a fixed reason word and a configured user
name; never a password, token, JWT, cookie or Authorization header.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent

from wsserver.logs import log
from wsserver.protocol import HandshakeRequest
from wsserver.security.auth import AuthDecision, Authenticator

logger = logging.getLogger("wsserver.auth")


def _threadpool_apply(fn: Any, *args: Any) -> Any:
    return gevent.get_hub().threadpool.apply(fn, args)


def _direct(fn: Any, *args: Any) -> Any:
    return fn(*args)


def run_auth(
    auth: Authenticator,
    request: HandshakeRequest,
    peer: tuple[str, int],
    peer_text: str,
    pool: Any = None,
    certificate: Any = None,
) -> AuthDecision:
    """Authenticate one upgrade request within the port's ``auth_timeout_ms``."""
    if auth.trivial:
        return AuthDecision(200)
    started = time.monotonic()
    decision = auth.gate(peer[0])
    if decision is None:
        in_threads = getattr(pool, "mode", "greenlet") == "thread"
        # In a pool thread the hash runs right there; elsewhere it goes to a real thread.
        run_blocking = _direct if in_threads else _threadpool_apply
        timeout = gevent.Timeout(auth.timeout)
        timeout.start()
        try:
            if pool is not None:
                outcome = pool.call(auth.verify, request, run_blocking, certificate)
            else:
                outcome = auth.verify(request, run_blocking, certificate)
        except gevent.Timeout:  # ours, or one from a backend call inside: late either way
            decision = auth.timed_out(time.monotonic() - started)
        except Exception as exc:
            # The type only: an exception message might quote what the client sent.
            log(
                logger,
                "error",
                "auth failed",
                port=auth.port.alias,
                peer=peer_text,
                path=request.path,
                method=auth.method,
                error=type(exc).__name__,
            )
            decision = auth.failed_internally(time.monotonic() - started)
        else:
            decision = auth.finish(outcome, peer[0], time.monotonic() - started)
        finally:
            timeout.close()
    fields: dict[str, Any] = {
        "port": auth.port.alias,
        "peer": peer_text,
        "path": request.path,
        "method": decision.method,
        "result": decision.result,
    }
    if decision.reason:
        fields["reason"] = decision.reason
    if decision.user:
        fields["user"] = decision.user
    if decision.ok:
        log(logger, "debug", "auth ok", **fields)
    else:
        log(logger, "info", "auth refused", status=decision.status, **fields)
    return decision
