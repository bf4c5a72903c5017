"""wsserver.security.passwords: self-describing hashes, constant-time checks, the CLI."""

from __future__ import annotations

import base64
import hashlib
import io
import types

import pytest

from wsserver.security import passwords
from wsserver.security.passwords import HashFormatError, check_hash, hash_password, verify

# Cheap costs keep the tests fast; the format and the code path are the same.
FAST = {"scrypt_n": 2**10, "scrypt_r": 8, "scrypt_p": 1}


def test_scrypt_round_trip() -> None:
    stored = hash_password("correct horse", **FAST)
    assert stored.startswith("scrypt$1024$8$1$")
    assert check_hash(stored) == "scrypt"
    assert verify(stored, "correct horse")
    assert verify(stored, b"correct horse")
    assert not verify(stored, "correct hors")
    assert not verify(stored, "")


def test_salts_differ() -> None:
    assert hash_password("pw", **FAST) != hash_password("pw", **FAST)


def test_default_costs() -> None:
    stored = hash_password("pw")
    n, r, p = (int(x) for x in stored.split("$")[1:4])
    assert (n, r, p) == passwords.SCRYPT_DEFAULTS


def test_format_is_plain_scrypt() -> None:
    """A hash made by hand with hashlib verifies: the format is exactly scrypt$N$r$p$salt$hash."""
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"pw", salt=salt, n=1024, r=8, p=1, dklen=32)
    enc = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    assert verify(f"scrypt$1024$8$1${enc(salt)}${enc(digest)}", "pw")


def test_unicode_password() -> None:
    stored = hash_password("pässwörd ✓", **FAST)
    assert verify(stored, "pässwörd ✓")
    assert verify(stored, "pässwörd ✓".encode())
    assert not verify(stored, "password ✓")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hunter2", "plain passwords are refused"),
        ("", "plain passwords are refused"),
        ("scrypt$1024$8$1$abc", "6 fields"),
        ("scrypt$1000$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "power of two"),
        ("scrypt$x$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "positive integers"),
        ("scrypt$1048576$16$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "out of range"),
        ("scrypt$1024$8$100$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "out of range"),
        ("scrypt$1024$8$1$!!!$aGFzaGhhc2hoYXNoaGFzaA", "base64"),
        ("scrypt$1024$8$1$c2E$aGFzaGhhc2hoYXNoaGFzaA", "salt must be >= 8 bytes"),
        ("$argon2id$nonsense", "argon2"),
        ("pbkdf2_sha256$1000$x$y", "plain passwords are refused"),
    ],
)
def test_malformed_hashes_are_refused(text: str, message: str) -> None:
    with pytest.raises(HashFormatError) as info:
        check_hash(text)
    assert message in str(info.value)
    if text:
        assert text not in str(info.value)  # never echo what might be a password
    assert verify(text, "anything") is False  # and verification never raises


def test_argon2() -> None:
    pytest.importorskip("argon2")
    stored = hash_password("pw", "argon2")
    assert stored.startswith("$argon2id$")
    assert check_hash(stored) == "argon2"
    assert verify(stored, "pw")
    assert not verify(stored, "pW")


def test_argon2_missing(monkeypatch) -> None:
    monkeypatch.setattr(passwords, "_argon2", lambda: None)
    with pytest.raises(HashFormatError, match="argon2-cffi"):
        check_hash("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA")
    with pytest.raises(RuntimeError, match="argon2-cffi"):
        hash_password("pw", "argon2")


def test_verify_dummy_is_false_and_uses_the_template() -> None:
    stored = hash_password("pw", **FAST)
    assert passwords.verify_dummy("pw", stored) is False
    assert passwords.verify_dummy("pw") is False


def _args(**kw):
    base = {"algorithm": "scrypt", "stdin": False, "scrypt_n": 1024, "scrypt_r": 8, "scrypt_p": 1}
    return types.SimpleNamespace(**{**base, **kw})


class _Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool = False) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_cli_reads_one_line_from_stdin() -> None:
    out = io.StringIO()
    assert passwords.main(_args(stdin=True), stdin=_Stdin("s3cret pw\nignored\n"), stdout=out) == 0
    stored = out.getvalue().strip()
    assert verify(stored, "s3cret pw")
    assert "s3cret" not in out.getvalue()


def test_cli_asks_twice_on_a_terminal(capsys) -> None:
    answers = iter(["one", "two"])
    code = passwords.main(
        _args(), getpass=lambda prompt: next(answers), stdin=_Stdin("", tty=True), stdout=io.StringIO()
    )
    assert code == 2
    assert "do not match" in capsys.readouterr().err
    answers = iter(["same", "same"])
    out = io.StringIO()
    assert (
        passwords.main(_args(), getpass=lambda prompt: next(answers), stdin=_Stdin("", tty=True), stdout=out)
        == 0
    )
    assert verify(out.getvalue().strip(), "same")


def test_cli_refuses_an_empty_password(capsys) -> None:
    assert passwords.main(_args(stdin=True), stdin=_Stdin("\n"), stdout=io.StringIO()) == 2
    assert "empty password" in capsys.readouterr().err
