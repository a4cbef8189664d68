"""Issuing a receipt for an answer already looked up and masked for a role (the web service and `certq lookup
--receipt` both end here, so a receipt is made one way).

    stored, check = await issue_receipt(store, key, settings, answer, view, role="public", base_url=url, name=name)
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aggregator.models import Answer
from aggregator.receipts import document
from aggregator.receipts.keys import ReceiptSettings, SigningKey
from aggregator.receipts.store import ReceiptStore, StoredReceipt


def show_matched_names(answer: Answer, view: MutableMapping[str, Any], name: str | None) -> None:
    """In `view` (the masked answer), the holder's name in full where the caller supplied `name` and it matched
    that certificate's holder: the caller knows it already, and a receipt should say whom it was checked for."""
    if not (name and name.strip()):
        return
    for raw, shown in zip(answer.certificates, view.get("certificates", []), strict=False):
        if raw.name_matches is True and raw.holder_name:
            shown["holder_name"] = raw.holder_name


async def issue_receipt(
    store: ReceiptStore,
    key: SigningKey,
    settings: ReceiptSettings,
    answer: Answer,
    view: MutableMapping[str, Any],
    *,
    role: str,
    key_id: str | None = None,
    name: str | None = None,
    base_url: str | None = None,
    now: datetime | None = None,
) -> tuple[StoredReceipt, document.ReceiptCheck]:
    """Sign `view` (the answer as `role` may see it) as a receipt, keep it, and return it with its check."""
    await store.publish(key)
    show_matched_names(answer, view, name)
    # 128 random bits in lower-case base32 (26 characters of a-z2-7): never starts with "-" (which a command line
    # would take for an option: `certq receipts show ID`), reads aloud and types from a printed receipt
    receipt_id = base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()
    issued_at = (now or datetime.now(UTC)).replace(microsecond=0)
    valid_until = issued_at + timedelta(days=settings.valid_days)
    vc = document.credential(
        receipt_id, view, issuer=settings.issuer_url(base_url), issued_at=issued_at, valid_until=valid_until
    )
    token = document.sign(vc, key)
    stored = StoredReceipt(
        id=receipt_id,
        token=token,
        kid=key.kid,
        number=answer.query.number,
        verdict=answer.verdict.value,
        role=role,
        key_id=key_id,
        issued_at=issued_at,
        valid_until=valid_until,
    )
    await store.save(stored, answer.certificates)
    return stored, document.verify(token, {"keys": [key.public_jwk()]}, now=issued_at)
