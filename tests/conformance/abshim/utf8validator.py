"""``autobahn.websocket.utf8validator``: an incremental, strict UTF-8 validator.

Python's own UTF-8 codec is strict in the same way as Autobahn's DFA (no overlong forms, no
surrogates, nothing above U+10FFFF) and rejects a sequence at the first octet that cannot continue it.
"""

from __future__ import annotations

import codecs

from .compat import py2bytes


class Utf8Validator:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._valid = True
        self._total = 0

    def validate(self, data: bytes | str) -> tuple[bool, bool, int, int]:
        """(valid so far, ends on a code point boundary, octets consumed now, octets consumed in all)."""
        octets = py2bytes(data)
        if not self._valid:
            return (False, False, 0, self._total)
        try:
            self._decoder.decode(octets, final=False)
        except UnicodeDecodeError as exc:
            self._valid = False
            self._total += exc.start
            return (False, False, exc.start, self._total)
        self._total += len(octets)
        pending = self._decoder.getstate()[0]
        return (True, pending == b"", len(octets), self._total)
