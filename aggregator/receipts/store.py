"""Receipts and public signing keys in the records database (tables `receipts`, `receipt_certificates`,
`signing_keys`; migration 0005).

    store = ReceiptStore(engine)
    await store.publish(key)                       # the signing key's public half, kept for good
    jwks = await store.jwks()                      # every public key that ever signed: /.well-known/jwks.json
    await store.save(stored, certificates)         # a receipt issued, and the certificates it shows
    stored = await store.get(receipt_id)           # None when there is no such receipt
    n = await store.supersede(answer)              # after any lookup: receipts this answer makes out of date

`supersede` is the hook every lookup passes through (the web's service layer, `certq lookup`): an answer with
no suspended or revoked certificate costs nothing (no query at all); one with such a certificate costs one
indexed UPDATE, marking every unexpired, not yet superseded receipt that showed that certificate with another
status.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.models import Answer, CertStatus, MergedCertificate
from aggregator.receipts.keys import SigningKey
from aggregator.records.database import write_transaction
from aggregator.records.reads import as_utc
from aggregator.records.schema import receipt_certificates, receipts, signing_keys

SUPERSEDING = (CertStatus.SUSPENDED, CertStatus.REVOKED)


def cert_key(cert: MergedCertificate) -> str:
    """One certificate's identity across lookups (department, number, item), as stored."""
    return "|".join(cert.key())[:300]


@dataclass(frozen=True)
class StoredReceipt:
    id: str
    token: str
    kid: str
    number: str
    verdict: str
    role: str
    key_id: str | None
    issued_at: datetime
    valid_until: datetime
    superseded_at: datetime | None = None
    superseded_by: str | None = None  # "<status>|<cert key>"

    @property
    def superseded_status(self) -> str | None:
        return self.superseded_by.split("|", 1)[0] if self.superseded_by else None

    def expired(self, now: datetime | None = None) -> bool:
        return self.valid_until <= (now or datetime.now(UTC))


class ReceiptStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._published: set[str] = set()

    # --- keys ---------------------------------------------------------------------------------------------

    async def publish(self, key: SigningKey) -> None:
        """Keep `key`'s public half (once; later calls in this process cost nothing). Publishing a new key
        retires the ones before it (they still verify, they no longer sign)."""
        if key.kid in self._published:
            return
        now = datetime.now(UTC)
        async with write_transaction(self.engine) as conn:
            known = (await conn.execute(sa.select(signing_keys.c.kid).where(signing_keys.c.kid == key.kid))).first()
            if known is None:
                await conn.execute(
                    signing_keys.update().where(signing_keys.c.retired_at.is_(None)).values(retired_at=now)
                )
                await conn.execute(
                    signing_keys.insert().values(kid=key.kid, public_jwk=json.dumps(key.public_jwk()), created_at=now)
                )
        self._published.add(key.kid)

    async def public_keys(self) -> list[dict[str, Any]]:
        """Every published key (JWK), oldest first: retired keys too, since they still verify what they signed."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(signing_keys.c.public_jwk).order_by(signing_keys.c.created_at))).all()
        return [json.loads(r.public_jwk) for r in rows]

    async def jwks(self) -> dict[str, Any]:
        return {"keys": await self.public_keys()}

    # --- receipts -----------------------------------------------------------------------------------------

    async def save(self, stored: StoredReceipt, certificates: Iterable[MergedCertificate]) -> None:
        shown: dict[str, dict[str, Any]] = {}
        for c in certificates:
            shown.setdefault(
                cert_key(c), {"receipt_id": stored.id, "number": c.number, "cert_key": cert_key(c),
                              "status": c.effective.value}  # fmt: skip
            )
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                receipts.insert().values(
                    id=stored.id,
                    token=stored.token,
                    kid=stored.kid,
                    number=stored.number,
                    verdict=stored.verdict,
                    role=stored.role,
                    key_id=stored.key_id,
                    issued_at=stored.issued_at,
                    valid_until=stored.valid_until,
                )
            )
            if shown:
                await conn.execute(receipt_certificates.insert(), list(shown.values()))

    async def get(self, receipt_id: str) -> StoredReceipt | None:
        if not receipt_id or len(receipt_id) > 32:
            return None
        async with self.engine.connect() as conn:
            await conn.execution_options(certq_single_read=True)
            row = (await conn.execute(sa.select(receipts).where(receipts.c.id == receipt_id))).first()
        if row is None:
            return None
        return StoredReceipt(
            id=row.id,
            token=row.token,
            kid=row.kid,
            number=row.number,
            verdict=row.verdict,
            role=row.role,
            key_id=row.key_id,
            issued_at=as_utc(row.issued_at),
            valid_until=as_utc(row.valid_until),
            superseded_at=as_utc(row.superseded_at) if row.superseded_at else None,
            superseded_by=row.superseded_by,
        )

    async def certificates(self, receipt_id: str) -> dict[str, str]:
        """cert key -> the status the receipt showed."""
        async with self.engine.connect() as conn:
            await conn.execution_options(certq_single_read=True)
            rows = await conn.execute(
                sa.select(receipt_certificates.c.cert_key, receipt_certificates.c.status).where(
                    receipt_certificates.c.receipt_id == receipt_id
                )
            )
            return {r.cert_key: r.status for r in rows}

    async def supersede(self, answer: Answer, *, now: datetime | None = None) -> int:
        """Mark superseded every unexpired receipt that showed a certificate this answer finds suspended or
        revoked with another status; how many were marked. No such certificate: nothing is asked at all."""
        found = {cert_key(c): c for c in answer.certificates if c.effective in SUPERSEDING}
        if not found:
            return 0
        now = now or datetime.now(UTC)
        rc = receipt_certificates.c
        changed = sa.or_(
            *(
                sa.and_(rc.number == c.number, rc.cert_key == key, rc.status != c.effective.value)
                for key, c in found.items()
            )
        )
        first_key, first = next(iter(found.items()))
        why = f"{first.effective.value}|{first_key}"[:200]
        statement = (
            receipts.update()
            .where(
                receipts.c.superseded_at.is_(None),
                receipts.c.valid_until > now,
                receipts.c.id.in_(sa.select(rc.receipt_id).where(changed)),
            )
            .values(superseded_at=now, superseded_by=why)
        )
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(statement)
        return int(result.rowcount or 0)
