"""JSON Web Tokens (RFC 7519) signed with HS256, RS256 or ES256 (RFC 7518), verified strictly.

- The algorithm comes from the configuration, never from the token alone: a token's ``alg``
  must be one of ``algorithms``, ``none`` never is, and one key is either an HMAC secret or a
  public key, so the RS256-key-as-HS256-secret confusion cannot happen.
- ``exp`` (required unless ``require_exp = false``) and ``nbf`` are checked with ``leeway``;
  ``aud`` must contain the configured audience, and a token carrying an audience is refused
  when none is configured (RFC 7519 §4.1.3); ``iss`` must equal the configured issuer.
- Duplicate JSON member names and unknown ``crit`` headers are refused (RFC 7515 §4.1.11, §5.2).

Errors carry a short reason for counting and logs, never the token or its claims.
A leaf module (stdlib and ``cryptography``) so the config loader can check keys with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = [
    "ALGORITHMS",
    "MIN_HMAC_KEY_BYTES",
    "JWTError",
    "JWTKeyError",
    "JWTVerifier",
    "load_key_material",
    "parse_key",
    "sign",
]

ALGORITHMS = ("HS256", "RS256", "ES256")
MIN_HMAC_KEY_BYTES = 32  # RFC 7518 §3.2: a key at least as long as the hash
MIN_RSA_BITS = 2048
MAX_TOKEN_LENGTH = 16384
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class JWTError(Exception):
    """The token is not acceptable. ``reason`` is short and free of token content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JWTKeyError(ValueError):
    """The configured key cannot be used; the message names the problem, not the key."""


# --- keys -----------------------------------------------------------------------------------


def load_key_material(
    key: str, key_file: str, key_env: str, environ: Mapping[str, str] | None = None
) -> bytes:
    """The key bytes from exactly one of ``key``, ``key_file``, ``key_env``."""
    given = [name for name, value in (("key", key), ("key_file", key_file), ("key_env", key_env)) if value]
    if len(given) != 1:
        raise JWTKeyError(
            "set exactly one of key, key_file, key_env" + (f" (found {', '.join(given)})" if given else "")
        )
    if key:
        return key.encode("utf-8")
    if key_env:
        env = os.environ if environ is None else environ
        value = env.get(key_env)
        if not value:
            raise JWTKeyError(f"environment variable {key_env} is not set or empty")
        return value.encode("utf-8")
    try:
        with open(key_file, "rb") as f:
            data = f.read(1 << 20)
    except OSError as exc:
        raise JWTKeyError(f"cannot read key_file: {exc.strerror or exc}") from None
    # A secret written with `echo` ends with a newline that is not part of it.
    return data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data


def parse_key(material: bytes, algorithms: Sequence[str]) -> Any:
    """The verification key for ``algorithms``: bytes for HS256, a public key object otherwise."""
    if not algorithms:
        raise JWTKeyError("algorithms must not be empty")
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown:
        raise JWTKeyError(f"unknown algorithm {unknown[0]!r}; allowed: {', '.join(ALGORITHMS)}")
    looks_pem = material.lstrip().startswith(b"-----BEGIN")
    if "HS256" in algorithms:
        if len(set(algorithms)) > 1:
            raise JWTKeyError("HS256 cannot be combined with RS256/ES256: a key is a secret or a public key")
        if looks_pem:
            raise JWTKeyError("HS256 needs a shared secret, not a PEM key")
        if len(material) < MIN_HMAC_KEY_BYTES:
            raise JWTKeyError(f"an HS256 secret must be at least {MIN_HMAC_KEY_BYTES} bytes")
        return material
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if not looks_pem:
        raise JWTKeyError("RS256/ES256 need a PEM public key (or certificate)")
    public: PublicKeyTypes  # a certificate's key types are a subset of a PEM key's
    try:
        if b"-----BEGIN CERTIFICATE-----" in material:
            public = x509.load_pem_x509_certificate(material).public_key()
        else:
            public = load_pem_public_key(material)
    except ValueError:
        raise JWTKeyError(
            "not a PEM public key or certificate (a private key does not belong here)"
        ) from None
    if isinstance(public, rsa.RSAPublicKey):
        if set(algorithms) != {"RS256"}:
            raise JWTKeyError("an RSA key verifies RS256 only")
        if public.key_size < MIN_RSA_BITS:
            raise JWTKeyError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
        return public
    if isinstance(public, ec.EllipticCurvePublicKey):
        if set(algorithms) != {"ES256"}:
            raise JWTKeyError("an EC key verifies ES256 only")
        if not isinstance(public.curve, ec.SECP256R1):
            raise JWTKeyError("ES256 needs a P-256 key")
        return public
    raise JWTKeyError("unsupported public key type; use RSA (RS256) or EC P-256 (ES256)")


# --- encoding -------------------------------------------------------------------------------


def _b64url_decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise JWTError("malformed")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JWTError("malformed") from None


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JWTError("malformed")
        out[key] = value
    return out


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JWTError("malformed") from None
    if not isinstance(value, dict):
        raise JWTError("malformed")
    return value


def sign(
    claims: Mapping[str, Any], key: Any, algorithm: str = "HS256", header: Mapping[str, Any] | None = None
) -> str:
    """Make a token (for tests and tools): ``key`` is the secret bytes or a private key."""
    head = {"alg": algorithm, "typ": "JWT", **(header or {})}
    signing_input = (
        _b64url_encode(json.dumps(head, separators=(",", ":")).encode())
        + "."
        + _b64url_encode(json.dumps(dict(claims), separators=(",", ":")).encode())
    )
    data = signing_input.encode("ascii")
    if algorithm == "HS256":
        sig = hmac.new(key, data, hashlib.sha256).digest()
    elif algorithm == "RS256":
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif algorithm == "ES256":
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        raise ValueError(f"cannot sign with {algorithm!r}")
    return signing_input + "." + _b64url_encode(sig)


# --- verification ---------------------------------------------------------------------------


def _number(value: Any) -> bool:
    """A NumericDate (RFC 7519 §2): a finite JSON number. NaN, Infinity and 1e999 (which JSON
    parsing turns into inf) would make a token that never expires."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


@dataclass(frozen=True)
class JWTVerifier:
    algorithms: tuple[str, ...]
    key: Any = None
    audience: str = ""
    issuer: str = ""
    leeway: float = 30.0
    require_exp: bool = True

    def __repr__(self) -> str:  # the key stays out of logs
        return f"JWTVerifier(algorithms={self.algorithms!r})"

    @classmethod
    def from_config(cls, cfg: Any, environ: Mapping[str, str] | None = None) -> JWTVerifier:
        """From a ``[ports.jwt]`` table; raises JWTKeyError if its key cannot be used."""
        material = load_key_material(cfg.key, cfg.key_file, cfg.key_env, environ)
        key = parse_key(material, cfg.algorithms)
        return cls(tuple(cfg.algorithms), key, cfg.audience, cfg.issuer, float(cfg.leeway_s), cfg.require_exp)

    def verify(self, token: str, now: float) -> dict[str, Any]:
        """The claims of a valid token; JWTError otherwise."""
        if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise JWTError("malformed")
        head_b64, body_b64, sig_b64 = token.split(".")
        header = _json_object(_b64url_decode(head_b64))
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise JWTError("algorithm")
        if "crit" in header:
            raise JWTError("crit")
        self._check_signature(alg, (head_b64 + "." + body_b64).encode("ascii"), _b64url_decode(sig_b64))
        claims = _json_object(_b64url_decode(body_b64))
        self._check_claims(claims, now)
        return claims

    def _check_signature(self, alg: str, data: bytes, sig: bytes) -> None:
        if alg == "HS256":
            if not hmac.compare_digest(hmac.new(self.key, data, hashlib.sha256).digest(), sig):
                raise JWTError("signature")
            return
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        try:
            if alg == "RS256":
                self.key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
            else:  # ES256: JWS carries r || s, 32 bytes each (RFC 7518 §3.4)
                if len(sig) != 64:
                    raise JWTError("signature")
                der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
                self.key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise JWTError("signature") from None

    def _check_claims(self, claims: dict[str, Any], now: float) -> None:
        exp = claims.get("exp")
        if exp is None:
            if self.require_exp:
                raise JWTError("no_exp")
        elif not _number(exp):
            raise JWTError("malformed")
        elif now > exp + self.leeway:
            raise JWTError("expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _number(nbf):
                raise JWTError("malformed")
            if now + self.leeway < nbf:
                raise JWTError("not_yet_valid")
        aud = claims.get("aud")
        if self.audience:
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if self.audience not in [a for a in audiences if isinstance(a, str)]:
                raise JWTError("audience")
        elif aud is not None:
            raise JWTError("audience")
        if self.issuer and claims.get("iss") != self.issuer:
            raise JWTError("issuer")
