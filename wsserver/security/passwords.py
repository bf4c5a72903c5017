"""Password hashes: scrypt (stdlib) and argon2 (argon2-cffi, when installed).

A stored hash describes itself, so its cost can change without breaking older entries:

    scrypt$N$r$p$SALT$HASH     N, r, p the scrypt costs; SALT and HASH base64 without padding
    $argon2id$v=19$m=...,t=...,p=...$SALT$HASH   argon2-cffi's (PHC) format

Verification is constant-time in the password (``hmac.compare_digest``), and
:func:`verify_dummy` spends the same time for a user that does not exist, so the timing of a
refusal tells neither whether the user exists nor how much of the password was right.

This module is a leaf: stdlib and optionally argon2-cffi, no other wsserver module, so the
config loader can use it to refuse a malformed (or plain-text) ``password_hash``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = [
    "SCRYPT_DEFAULTS",
    "HashFormatError",
    "argon2_available",
    "check_hash",
    "hash_password",
    "main",
    "verify",
    "verify_dummy",
]

# N = 2**15, r = 8, p = 1: 32 MiB and about 0.1 s per check on one core. OWASP's minimum is
# N = 2**17; a WebSocket server checks a password on every connect, so we sit lower and let
# `wsserver hash-password --scrypt-n` raise it.
SCRYPT_DEFAULTS = (2**15, 8, 1)
SALT_BYTES = 16
HASH_BYTES = 32
# Limits for hashes read from the config: a typo (or a hostile file) must not make every
# login allocate gigabytes.
MAX_SCRYPT_MEMORY = 1 << 30  # bytes: 128 * N * r
MAX_SCRYPT_P = 64

ARGON2_HELP = "argon2 hashes need the argon2-cffi package (pip install argon2-cffi)"


class HashFormatError(ValueError):
    """A password_hash that is not one of our formats. The message never repeats the value."""


@dataclass(frozen=True)
class _Scrypt:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _b64decode(text: str) -> bytes:
    if not text or any(c not in _B64_CHARS for c in text):
        raise ValueError("not base64")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _parse_scrypt(text: str) -> _Scrypt:
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise HashFormatError("a scrypt hash has 6 fields: scrypt$N$r$p$salt$hash")
    costs = parts[1:4]
    if not all(x.isascii() and x.isdigit() and len(x) <= 10 for x in costs):
        raise HashFormatError("scrypt N, r and p must be positive integers")
    n, r, p = (int(x) for x in costs)
    if n < 2 or n & (n - 1):
        raise HashFormatError("scrypt N must be a power of two >= 2")
    if r < 1 or p < 1 or p > MAX_SCRYPT_P or 128 * n * r > MAX_SCRYPT_MEMORY:
        raise HashFormatError(
            f"scrypt costs out of range (r >= 1, 1 <= p <= {MAX_SCRYPT_P}, 128*N*r <= 1 GiB)"
        )
    try:
        salt, digest = _b64decode(parts[4]), _b64decode(parts[5])
    except (ValueError, binascii.Error):
        raise HashFormatError("scrypt salt and hash must be base64") from None
    if len(salt) < 8 or len(digest) < 16:
        raise HashFormatError("scrypt salt must be >= 8 bytes and the hash >= 16 bytes")
    return _Scrypt(n, r, p, salt, digest)


def _scrypt(password: bytes, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    # maxmem must cover 128*N*r (plus OpenSSL's slack) or hashlib refuses.
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=128 * n * r + (1 << 20), dklen=length)


def _argon2() -> Any:
    """The argon2 module (argon2-cffi, optional), or None when it is not installed."""
    try:
        import argon2  # type: ignore[import-not-found]  # optional: the test extras do not install it
    except ImportError:
        return None
    return argon2


def argon2_available() -> bool:
    return _argon2() is not None


def check_hash(text: str) -> str:
    """The algorithm of a well-formed stored hash ("scrypt" or "argon2"); HashFormatError if not."""
    if text.startswith("scrypt$"):
        _parse_scrypt(text)
        return "scrypt"
    if text.startswith("$argon2"):
        argon2 = _argon2()
        if argon2 is None:
            raise HashFormatError(ARGON2_HELP)
        try:
            argon2.extract_parameters(text)
        except Exception:
            raise HashFormatError(
                "not a valid argon2 hash ($argon2id$v=19$m=...,t=...,p=...$salt$hash)"
            ) from None
        return "argon2"
    raise HashFormatError(
        "must be a hash made by `wsserver hash-password` (scrypt$... or $argon2id$...); "
        "plain passwords are refused"
    )


def _encode(password: str | bytes) -> bytes:
    return password.encode("utf-8") if isinstance(password, str) else password


def hash_password(
    password: str | bytes,
    algorithm: str = "scrypt",
    *,
    scrypt_n: int | None = None,
    scrypt_r: int | None = None,
    scrypt_p: int | None = None,
) -> str:
    """A new salted hash of ``password`` in the self-describing format."""
    secret = _encode(password)
    if algorithm == "argon2":
        argon2 = _argon2()
        if argon2 is None:
            raise RuntimeError(ARGON2_HELP)
        return argon2.PasswordHasher().hash(secret)
    if algorithm != "scrypt":
        raise ValueError(f"unknown algorithm {algorithm!r}; use scrypt or argon2")
    n = scrypt_n or SCRYPT_DEFAULTS[0]
    r = scrypt_r or SCRYPT_DEFAULTS[1]
    p = scrypt_p or SCRYPT_DEFAULTS[2]
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(secret, n, r, p, salt, HASH_BYTES)
    text = f"scrypt${n}${r}${p}${_b64encode(salt)}${_b64encode(digest)}"
    _parse_scrypt(text)  # refuses costs out of range, as the loader would
    return text


def verify(stored: str, password: str | bytes) -> bool:
    """Whether ``password`` matches ``stored``. Never raises for a wrong or malformed input.

    CPU-heavy (about 0.1 s with the defaults) and releases the GIL: run it in a thread.
    """
    secret = _encode(password)
    try:
        if stored.startswith("scrypt$"):
            h = _parse_scrypt(stored)
            candidate = _scrypt(secret, h.n, h.r, h.p, h.salt, len(h.digest))
            return hmac.compare_digest(candidate, h.digest)
        if stored.startswith("$argon2"):
            argon2 = _argon2()
            if argon2 is None:
                return False
            try:
                return bool(argon2.PasswordHasher().verify(stored, secret))
            except argon2.exceptions.VerificationError:
                return False
    except (HashFormatError, ValueError, MemoryError):
        return False
    return False


_DUMMY: list[str] = []


def verify_dummy(password: str | bytes, template: str = "") -> bool:
    """Spend the time of a real check and return False: for users that do not exist.

    ``template`` is a configured hash, so the costs match the real ones; without it a hash
    with the default costs (made once) is used.
    """
    if not template:
        if not _DUMMY:
            _DUMMY.append(hash_password(os.urandom(16)))
        template = _DUMMY[0]
    verify(template, password)
    return False


# --- `wsserver hash-password` ---------------------------------------------------------------


def _read_password(stdin_mode: bool, getpass: Callable[[str], str], stdin: TextIO) -> str:
    if stdin_mode:
        line = stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass("Password: ")
    second = getpass("Repeat password: ")
    if first != second:
        raise ValueError("the passwords do not match")
    return first


def main(
    args: Sequence[str] | object,
    *,
    getpass: Callable[[str], str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Print a hash for a password read from the terminal (twice) or, with --stdin, one line.

    The password is never taken from the command line: other users could read it in ``ps``.
    ``args`` is the argparse namespace of the CLI (algorithm, stdin, scrypt_n/r/p).
    """
    import getpass as getpass_module

    getpass = getpass or getpass_module.getpass
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    use_stdin = bool(getattr(args, "stdin", False)) or not stdin.isatty()
    try:
        password = _read_password(use_stdin, getpass, stdin)
    except (ValueError, EOFError, KeyboardInterrupt) as exc:
        print(f"hash-password: {exc or 'cancelled'}", file=sys.stderr)
        return 2
    if not password:
        print("hash-password: empty password refused", file=sys.stderr)
        return 2
    try:
        text = hash_password(
            password,
            getattr(args, "algorithm", "scrypt") or "scrypt",
            scrypt_n=getattr(args, "scrypt_n", None),
            scrypt_r=getattr(args, "scrypt_r", None),
            scrypt_p=getattr(args, "scrypt_p", None),
        )
    except (RuntimeError, ValueError) as exc:
        print(f"hash-password: {exc}", file=sys.stderr)
        return 2
    print(text, file=stdout)
    return 0
