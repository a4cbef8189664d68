"""The receipt document and its keys, offline: a signature round trip, any byte changed fails, a rotated key
still verifies what it signed, expiry, and keys that cannot be used are clear errors."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.receipts import document
from aggregator.receipts.keys import (
    ReceiptSettings,
    SigningKeyInvalid,
    SigningKeyMissing,
    ensure_signing_key,
    load_signing_key,
    rotate_signing_key,
)

ISSUED = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
VIEW = {
    "query": {"number": "T110*************23", "name_given": True, "name_check": "checked", "id_number_given": False},
    "verdict": "valid",
    "verdict_reason": "应急管理部上报数据：有效",
    "complete": True,
    "answered_at": ISSUED.isoformat(),
    "certificates": [{"number": "T110*************23", "holder_name": "张*三", "effective": "valid"}],
    "sources": [{"source": "mem_records", "outcome": "found", "data_as_of": ISSUED.isoformat(), "elapsed_ms": 3.0}],
    "conflicts": [],
    "recognitions": [],
    "view": {"role": "public", "masked": True},
}


def settings_in(home: Path) -> ReceiptSettings:
    return ReceiptSettings(signing_dir=home / "signing")


def make_token(key, *, days: int = 30) -> str:
    vc = document.credential("abc", VIEW, issuer="https://certq.example", issued_at=ISSUED,
                             valid_until=ISSUED + timedelta(days=days))  # fmt: skip
    return document.sign(vc, key)


def test_a_signed_receipt_verifies_with_the_public_key_set_alone(tmp_path: Path) -> None:
    key = ensure_signing_key(settings_in(tmp_path))
    token = make_token(key)
    check = document.verify(token, {"keys": [key.public_jwk()]}, now=ISSUED + timedelta(days=1))
    assert check.signature_ok and check.problem is None and not check.expired
    assert check.kid == key.kid and check.receipt_id == "abc"
    vc = check.credential
    assert vc["type"] == ["VerifiableCredential", "CertificateCheckReceipt"]
    assert vc["id"] == "https://certq.example/r/abc" and vc["validUntil"] == "2027-01-01T08:00:00Z"
    assert vc["credentialSubject"]["certificates"][0]["holder_name"] == "张*三"
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "Ed25519", "kid": key.kid, "typ": "vc+jwt", "cty": "vc"}
    assert "d" not in key.public_jwk()  # the published half holds no private part


def test_any_byte_changed_fails_verification(tmp_path: Path) -> None:
    key = ensure_signing_key(settings_in(tmp_path))
    token = make_token(key)
    jwks = {"keys": [key.public_jwk()]}
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i in range(0, len(token), 7):  # every 7th character of header, payload and signature
        if token[i] == ".":
            continue
        changed = token[:i] + alphabet[(alphabet.index(token[i]) + 1) % 64] + token[i + 1 :]
        check = document.verify(changed, jwks, now=ISSUED)
        assert not check.signature_ok, f"a change at {i} still verified"
        assert check.problem
    # a forged payload with the original signature, and a truncated token
    head, body, sig = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged["credentialSubject"]["verdict"] = "revoked"
    body2 = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    assert not document.verify(f"{head}.{body2}.{sig}", jwks).signature_ok
    assert not document.verify(token.rsplit(".", 1)[0], jwks).signature_ok
    assert not document.verify("not a receipt", jwks).signature_ok


def test_a_rotated_key_still_verifies_old_receipts_and_the_old_private_key_is_gone(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    old = ensure_signing_key(settings)
    old_token = make_token(old)
    new, replaced = rotate_signing_key(settings)
    assert replaced is not None and replaced.kid == old.kid and new.kid != old.kid
    assert load_signing_key(settings).kid == new.kid  # the new one signs from now on
    retired = tmp_path / "signing" / "retired" / f"{old.kid}.public.jwk"
    assert retired.is_file() and '"d"' not in retired.read_text()
    published = {"keys": [old.public_jwk(), new.public_jwk()]}  # what /.well-known/jwks.json keeps serving
    assert document.verify(old_token, published, now=ISSUED).signature_ok
    assert document.verify(make_token(new), published, now=ISSUED).signature_ok
    # without the old public key, the old receipt is not verified (never "valid" by default)
    check = document.verify(old_token, {"keys": [new.public_jwk()]}, now=ISSUED)
    assert not check.signature_ok and old.kid in (check.problem or "")


def test_an_expired_receipt_still_verifies_but_says_it_expired(tmp_path: Path) -> None:
    key = ensure_signing_key(settings_in(tmp_path))
    token = make_token(key, days=30)
    jwks = {"keys": [key.public_jwk()]}
    assert not document.verify(token, jwks, now=ISSUED + timedelta(days=29)).expired
    late = document.verify(token, jwks, now=ISSUED + timedelta(days=30, seconds=1))
    assert late.signature_ok and late.expired


def test_no_key_is_a_clear_error_and_a_bad_configured_key_too(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyMissing, match="signing-key.jwk"):
        load_signing_key(settings_in(tmp_path))
    bad = tmp_path / "bad.jwk"
    bad.write_text("{}", encoding="utf-8")
    with pytest.raises(SigningKeyInvalid):
        load_signing_key(ReceiptSettings(signing_dir=tmp_path, key_file=bad))
    with pytest.raises(SigningKeyInvalid, match="No such file"):
        load_signing_key(ReceiptSettings(signing_dir=tmp_path, key_file=tmp_path / "missing.jwk"))
    key = ensure_signing_key(settings_in(tmp_path))
    with pytest.raises(SigningKeyInvalid, match="public key cannot sign"):
        load_signing_key(ReceiptSettings(signing_dir=tmp_path, key_text=json.dumps(key.public_jwk())))
    # the same key given in the environment (JWK or PEM) has the same id
    pem = key.key.as_pem(private=True).decode()
    assert load_signing_key(ReceiptSettings(signing_dir=tmp_path, key_text=pem)).kid == key.kid
    assert (tmp_path / "signing" / "signing-key.jwk").stat().st_mode & 0o077 == 0  # owner only
