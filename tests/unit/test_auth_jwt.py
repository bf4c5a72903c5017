"""wsserver.security.jwt: HS256/RS256/ES256 verification and claim checks, strictly."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import types

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wsserver.security.jwt import JWTError, JWTKeyError, JWTVerifier, load_key_material, parse_key, sign

SECRET = b"s" * 32
NOW = 1_700_000_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _hs256_by_hand(header: dict, claims: dict, key: bytes = SECRET) -> str:
    """An HS256 token built without wsserver's code (RFC 7515 §A.1 steps)."""
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return signing_input + "." + _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def _verifier(**kw) -> JWTVerifier:
    base = {"algorithms": ("HS256",), "key": SECRET, "leeway": 0.0}
    return JWTVerifier(**{**base, **kw})


def _pem(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def test_hs256_token_made_by_hand() -> None:
    token = _hs256_by_hand({"alg": "HS256", "typ": "JWT"}, {"sub": "alice", "exp": NOW + 60})
    assert _verifier().verify(token, NOW)["sub"] == "alice"


def test_rs256_and_es256(rsa_key, ec_key) -> None:
    rs = JWTVerifier(("RS256",), parse_key(_pem(rsa_key.public_key()), ["RS256"]))
    es = JWTVerifier(("ES256",), parse_key(_pem(ec_key.public_key()), ["ES256"]))
    claims = {"sub": "bob", "exp": NOW + 60}
    assert rs.verify(sign(claims, rsa_key, "RS256"), NOW)["sub"] == "bob"
    assert es.verify(sign(claims, ec_key, "ES256"), NOW)["sub"] == "bob"
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(JWTError, match="signature"):
        es.verify(sign(claims, other, "ES256"), NOW)
    with pytest.raises(JWTError, match="algorithm"):
        rs.verify(sign(claims, ec_key, "ES256"), NOW)


def test_algorithm_confusion_is_impossible(rsa_key) -> None:
    """An HS256 token "signed" with the RSA public key must not pass an RS256 verifier."""
    pem = _pem(rsa_key.public_key())
    rs = JWTVerifier(("RS256",), parse_key(pem, ["RS256"]))
    forged = _hs256_by_hand({"alg": "HS256"}, {"sub": "admin", "exp": NOW + 60}, key=pem)
    with pytest.raises(JWTError, match="algorithm"):
        rs.verify(forged, NOW)
    with pytest.raises(JWTKeyError, match="not a PEM key"):
        parse_key(pem, ["HS256"])
    with pytest.raises(JWTKeyError, match="cannot be combined"):
        parse_key(SECRET, ["HS256", "RS256"])


@pytest.mark.parametrize(
    ("header", "claims", "reason"),
    [
        ({"alg": "none"}, {"sub": "a", "exp": NOW + 60}, "algorithm"),
        ({"alg": "HS512"}, {"sub": "a", "exp": NOW + 60}, "algorithm"),
        ({"alg": "HS256", "crit": ["exp"]}, {"sub": "a", "exp": NOW + 60}, "crit"),
        ({"alg": "HS256"}, {"sub": "a", "exp": NOW - 1}, "expired"),
        ({"alg": "HS256"}, {"sub": "a"}, "no_exp"),
        ({"alg": "HS256"}, {"sub": "a", "exp": "tomorrow"}, "malformed"),
        ({"alg": "HS256"}, {"sub": "a", "exp": True}, "malformed"),
        ({"alg": "HS256"}, {"sub": "a", "exp": NOW + 60, "nbf": NOW + 10}, "not_yet_valid"),
        ({"alg": "HS256"}, {"sub": "a", "exp": NOW + 60, "aud": "someone-else"}, "audience"),
    ],
)
def test_refused_tokens(header: dict, claims: dict, reason: str) -> None:
    with pytest.raises(JWTError) as info:
        _verifier().verify(_hs256_by_hand(header, claims), NOW)
    assert info.value.reason == reason


def test_wrong_signature() -> None:
    token = _hs256_by_hand({"alg": "HS256"}, {"sub": "a", "exp": NOW + 60}, key=b"x" * 32)
    with pytest.raises(JWTError, match="signature"):
        _verifier().verify(token, NOW)
    head, _body, sig = _hs256_by_hand({"alg": "HS256"}, {"sub": "a", "exp": NOW + 60}).split(".")
    tampered = _b64(json.dumps({"sub": "root", "exp": NOW + 60}).encode())
    with pytest.raises(JWTError, match="signature"):
        _verifier().verify(f"{head}.{tampered}.{sig}", NOW)


def test_leeway() -> None:
    token = _hs256_by_hand({"alg": "HS256"}, {"sub": "a", "exp": NOW - 20, "nbf": NOW + 20})
    assert _verifier(leeway=30.0).verify(token, NOW)["sub"] == "a"
    with pytest.raises(JWTError):
        _verifier(leeway=10.0).verify(token, NOW)


def test_audience_and_issuer() -> None:
    v = _verifier(audience="ws", issuer="https://idp")
    ok = {"sub": "a", "exp": NOW + 60, "iss": "https://idp"}
    assert v.verify(_hs256_by_hand({"alg": "HS256"}, {**ok, "aud": "ws"}), NOW)
    assert v.verify(_hs256_by_hand({"alg": "HS256"}, {**ok, "aud": ["x", "ws"]}), NOW)
    for bad in ({**ok, "aud": "wss"}, {**ok, "aud": ["x"]}, ok, {**ok, "aud": "ws", "iss": "https://evil"}):
        with pytest.raises(JWTError):
            v.verify(_hs256_by_hand({"alg": "HS256"}, bad), NOW)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "!!.e30.",
        "e30.e30.e30",
        "W10.e30.",
        "x" * 20000,
        _b64(b'{"alg":"HS256","alg":"none"}') + ".e30.",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.AAAA",
    ],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(JWTError):
        _verifier().verify(token, NOW)


def test_duplicate_claims_are_refused() -> None:
    head = _b64(b'{"alg":"HS256"}')
    body = _b64(f'{{"sub":"a","sub":"admin","exp":{NOW + 60}}}'.encode())
    sig = _b64(hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(JWTError, match="malformed"):
        _verifier().verify(f"{head}.{body}.{sig}", NOW)


def test_key_rules(rsa_key, ec_key) -> None:
    with pytest.raises(JWTKeyError, match="at least 32 bytes"):
        parse_key(b"short", ["HS256"])
    with pytest.raises(JWTKeyError, match="PEM public key"):
        parse_key(b"x" * 40, ["RS256"])
    with pytest.raises(JWTKeyError, match="RS256 only"):
        parse_key(_pem(rsa_key.public_key()), ["ES256"])
    with pytest.raises(JWTKeyError, match="ES256 only"):
        parse_key(_pem(ec_key.public_key()), ["RS256"])
    private_pem = ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(JWTKeyError, match="private key does not belong"):
        parse_key(private_pem, ["ES256"])
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(JWTKeyError, match="2048"):
        parse_key(_pem(small.public_key()), ["RS256"])
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(JWTKeyError, match="P-256"):
        parse_key(_pem(p384.public_key()), ["ES256"])


def test_key_sources(tmp_path) -> None:
    f = tmp_path / "secret"
    f.write_bytes(SECRET + b"\n")
    assert load_key_material("", str(f), "") == SECRET
    assert load_key_material("", "", "JWT_KEY", {"JWT_KEY": SECRET.decode()}) == SECRET
    assert load_key_material(SECRET.decode(), "", "") == SECRET
    with pytest.raises(JWTKeyError, match="exactly one"):
        load_key_material("", "", "")
    with pytest.raises(JWTKeyError, match="exactly one"):
        load_key_material("a", str(f), "")
    with pytest.raises(JWTKeyError, match="JWT_KEY is not set"):
        load_key_material("", "", "JWT_KEY", {})
    with pytest.raises(JWTKeyError, match="cannot read key_file"):
        load_key_material("", str(tmp_path / "missing"), "")


def test_from_config_and_repr() -> None:
    cfg = types.SimpleNamespace(
        key=SECRET.decode(),
        key_file="",
        key_env="",
        algorithms=("HS256",),
        audience="",
        issuer="",
        leeway_s=5,
        require_exp=True,
    )
    v = JWTVerifier.from_config(cfg)
    assert v.leeway == 5.0
    assert SECRET.decode() not in repr(v)


def _raw_claims_token(claims_json: str, key: bytes = SECRET) -> str:
    """HS256 over a claims text written by hand (json.dumps cannot write 1e999)."""
    signing_input = _b64(b'{"alg":"HS256"}') + "." + _b64(claims_json.encode())
    return signing_input + "." + _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("claim", ["exp", "nbf"])
def test_numeric_dates_must_be_finite(claim: str, value: str) -> None:
    """RFC 7519 §2: a NumericDate is a number of seconds; NaN or infinity would never expire."""
    other = f', "exp": {NOW + 60}' if claim == "nbf" else ""
    token = _raw_claims_token(f'{{"sub": "a", "{claim}": {value}{other}}}')
    with pytest.raises(JWTError) as info:
        _verifier().verify(token, NOW)
    assert info.value.reason == "malformed"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e999"])
def test_numeric_dates_must_be_finite_rs256(rsa_key, value: str) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input = _b64(b'{"alg":"RS256"}') + "." + _b64(f'{{"sub": "a", "exp": {value}}}'.encode())
    signature = rsa_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    verifier = JWTVerifier(("RS256",), parse_key(_pem(rsa_key.public_key()), ["RS256"]))
    with pytest.raises(JWTError) as info:
        verifier.verify(signing_input + "." + _b64(signature), NOW)
    assert info.value.reason == "malformed"
