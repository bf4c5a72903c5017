"""Python 2 string semantics for the converted case modules.

A Python 2 ``str`` is a byte string.  In the converted modules it is a Python 3 ``str`` whose code
points are the octets (latin-1): the converter reads the sources as latin-1, so ``"µ"`` in a
UTF-8 source file is the two octets ``\\xc2\\xb5``, exactly as Python 2 saw it.  The client turns
such strings into octets with :func:`py2bytes` and hands received payloads to the cases with
:func:`py2str`.  ``x.encode(...)`` / ``x.decode(...)`` calls are rewritten to the two helpers below so
that encoding Unicode gives a byte string again, and ``binascii`` / ``hashlib`` accept byte strings.
"""

from __future__ import annotations

import binascii as _binascii
import hashlib as _hashlib
from types import SimpleNamespace
from typing import Any


def py2bytes(value: Any) -> bytes:
    """The octets of a Python 2 byte string (latin-1 ``str``), or of real bytes."""
    if isinstance(value, str):
        return value.encode("latin-1")
    if value is None:
        return b""
    return bytes(value)


def py2str(octets: bytes) -> str:
    """Octets as a Python 2 byte string (one code point per octet)."""
    return octets.decode("latin-1")


def _py2_encode(obj: Any, *args: Any, **kwargs: Any) -> Any:
    """``unicode.encode(...)``: the result is a byte string (latin-1 ``str``)."""
    if isinstance(obj, str):
        return obj.encode(*args, **kwargs).decode("latin-1")
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("ascii").encode(*args, **kwargs).decode("latin-1")
    return obj.encode(*args, **kwargs)


def _py2_decode(obj: Any, *args: Any, **kwargs: Any) -> Any:
    """``str.decode(...)``: decode the octets of a byte string to Unicode."""
    if isinstance(obj, str):
        return obj.encode("latin-1").decode(*args, **kwargs)
    return obj.decode(*args, **kwargs)


def _hex(data: Any) -> str:
    return _binascii.hexlify(py2bytes(data)).decode("ascii")


binascii = SimpleNamespace(
    b2a_hex=_hex,
    hexlify=_hex,
    a2b_hex=lambda s: py2str(_binascii.unhexlify(py2bytes(s))),
    unhexlify=lambda s: py2str(_binascii.unhexlify(py2bytes(s))),
)


class _Hash:
    def __init__(self, name: str, data: Any = None) -> None:
        self._h = _hashlib.new(name)
        if data is not None:
            self.update(data)

    def update(self, data: Any) -> None:
        self._h.update(py2bytes(data))

    def digest(self) -> bytes:
        return self._h.digest()

    def hexdigest(self) -> str:
        return self._h.hexdigest()


hashlib = SimpleNamespace(
    sha1=lambda data=None: _Hash("sha1", data),
    md5=lambda data=None: _Hash("md5", data),
    sha256=lambda data=None: _Hash("sha256", data),
    new=lambda name, data=None: _Hash(name, data),
)
