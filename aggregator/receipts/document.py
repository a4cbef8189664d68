"""The receipt itself: a W3C Verifiable Credential 2.0 secured with JOSE (a compact JWS, `typ: vc+jwt`).

    vc = credential(receipt_id, view, issuer=url, issued_at=t, valid_until=t + 30 days)
    token = sign(vc, key)                          # header {alg: Ed25519, kid, typ: vc+jwt, cty: vc}
    check = verify(token, jwks)                    # offline: the token and the issuer's key set, nothing else
    check.signature_ok, check.expired, check.credential

`view` is the answer as the issuing role may see it (`web.masking.mask_answer`, with the name shown only where
the caller supplied it and it matched); the credential keeps what a reader needs and drops the rest (timings,
the number's format analysis). Its subject says which role's view it is.

Verification needs positive evidence: a token that is not three base64url parts, whose header does not name a
known key, or whose signature does not verify is never "valid". Expiry is judged against `validUntil`;
whether a receipt has been superseded since is not in the signed document (it happens later) but in the
issuer's records (`store.ReceiptStore`), which the verify page and `certq receipts show` consult.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from aggregator.receipts.keys import ALGORITHM, SigningKey

VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
CREDENTIAL_TYPE = "CertificateCheckReceipt"
MEDIA_TYPE = "application/vc+jwt"
ISSUER_NAME = "certq 职业技能证书一网通查"
VERIFY_ALGORITHMS = [ALGORITHM, "EdDSA"]
# What the subject keeps of each source's line in the answer.
_SOURCE_FIELDS = ("source", "department", "mode", "outcome", "found", "error_kind", "message", "elapsed_ms",
                  "fetched_at", "data_as_of", "from_cache", "stale", "link")  # fmt: skip


def verify_url(issuer: str, receipt_id: str) -> str:
    return f"{issuer.rstrip('/')}/r/{receipt_id}"


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def credential(
    receipt_id: str, view: Mapping[str, Any], *, issuer: str, issued_at: datetime, valid_until: datetime
) -> dict[str, Any]:
    """The credential for an answer as a role may see it (a JSON-ready dict)."""
    query = view["query"]
    subject: dict[str, Any] = {
        "type": "CertificateCheck",
        "query": {
            "number": query["number"],
            "name_given": query.get("name_given", False),
            "name_check": query.get("name_check"),
            "id_number_given": query.get("id_number_given", False),
        },
        "verdict": view["verdict"],
        "verdict_reason": view["verdict_reason"],
        "complete": view["complete"],
        "answered_at": view["answered_at"],
        "elapsed_ms": view.get("elapsed_ms"),
        "certificates": list(view.get("certificates", [])),
        "sources": [{k: s.get(k) for k in _SOURCE_FIELDS} for s in view.get("sources", [])],
        "conflicts": list(view.get("conflicts", [])),
        "recognitions": list(view.get("recognitions", [])),
        "view": dict(view.get("view") or {}),
    }
    if "name_matches" in view:
        subject["name_matches"] = view["name_matches"]
    return {
        "@context": [VC_CONTEXT],
        "id": verify_url(issuer, receipt_id),
        "type": ["VerifiableCredential", CREDENTIAL_TYPE],
        "issuer": {"id": issuer, "name": ISSUER_NAME},
        "validFrom": _time(issued_at),
        "validUntil": _time(valid_until),
        "credentialSubject": subject,
    }


def sign(vc: Mapping[str, Any], key: SigningKey) -> str:
    """The credential as a compact JWS (vc+jwt) signed with `key`."""
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": "vc+jwt", "cty": "vc"}
    payload = json.dumps(vc, ensure_ascii=False, separators=(",", ":")).encode()
    return jws.serialize_compact(header, payload, key.key, algorithms=[ALGORITHM])


@dataclass
class ReceiptCheck:
    """What verifying a token found. `signature_ok` only with a known key and a signature that verifies."""

    signature_ok: bool
    kid: str | None = None
    problem: str | None = None  # why the signature is not ok (Chinese, then English)
    credential: dict[str, Any] = field(default_factory=dict)  # the payload (also when unverified, to show it)
    expired: bool = False
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    @property
    def receipt_id(self) -> str | None:
        rid = str(self.credential.get("id") or "")
        return rid.rsplit("/r/", 1)[-1] if "/r/" in rid else None


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def key_set(jwks: Mapping[str, Any]) -> dict[str, OKPKey]:
    """The Ed25519 keys of a JWKS document, by kid (other keys are ignored)."""
    out: dict[str, OKPKey] = {}
    for jwk in jwks.get("keys", []) if isinstance(jwks, Mapping) else []:
        if isinstance(jwk, Mapping) and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("kid"):
            try:
                public = {k: jwk[k] for k in ("kty", "crv", "x")}
                out[str(jwk["kid"])] = OKPKey.import_key(public)
            except (JoseError, ValueError, KeyError, TypeError):
                continue
    return out


def verify(token: str, jwks: Mapping[str, Any], *, now: datetime | None = None) -> ReceiptCheck:
    """Check a compact JWS against a key set: signature, key id, and expiry. Never raises for a bad token."""
    now = now or datetime.now(UTC)
    token = token.strip()
    parts = token.split(".")
    if len(parts) != 3:
        return ReceiptCheck(False, problem="不是回执（应为 JWS 紧凑格式） (not a receipt: expected a compact JWS)")
    try:
        header = json.loads(_b64(parts[0]))
        payload = json.loads(_b64(parts[1]))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return ReceiptCheck(False, problem="回执格式损坏 (the receipt is malformed)")
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return ReceiptCheck(False, problem="回执格式损坏 (the receipt is malformed)")
    check = ReceiptCheck(
        False,
        kid=str(header.get("kid")) if header.get("kid") else None,
        credential=payload,
        valid_from=_parse_time(payload.get("validFrom")),
        valid_until=_parse_time(payload.get("validUntil")),
    )
    check.expired = check.valid_until is None or check.valid_until <= now
    keys = key_set(jwks)
    key = keys.get(check.kid or "")
    if key is None:
        check.problem = f"签名密钥 {check.kid} 未在公钥集中 (key {check.kid} is not in the key set)"
        return check
    if header.get("alg") not in VERIFY_ALGORITHMS:
        check.problem = f"不支持的签名算法 {header.get('alg')} (unsupported algorithm)"
        return check
    try:
        verified = jws.deserialize_compact(token, key, algorithms=VERIFY_ALGORITHMS)
    except (JoseError, ValueError):
        check.problem = "签名无效：回执已被改动或不是该密钥签发 (the signature does not verify)"
        return check
    check.credential = json.loads(verified.payload)
    check.signature_ok = True
    return check


def jwks_document(public_keys: list[dict[str, Any]]) -> dict[str, Any]:
    return {"keys": public_keys}


__all__ = ["MEDIA_TYPE", "ReceiptCheck", "credential", "jwks_document", "key_set", "sign", "verify"]
