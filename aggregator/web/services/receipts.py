"""Receipts as a role may issue and read them: the one path from a request (API, page, CLI) to a receipt.

    svc = ReceiptService.on(lookups, engine)               # the app's lifespan (Services.on)
    issued = await svc.issue(principal, number, name=..., purpose=..., client_ip=ip, base_url=url)
    state = await svc.find(receipt_id)                     # None: no such receipt
    again = await svc.check_again(principal, state, client_ip=ip)      # a fresh lookup: what changed since
    data = await svc.pdf(state, source_names)              # the PDF
    jwks = await svc.jwks()                                # every public key that ever signed
    await svc.supersede(answer)                            # the hook every lookup passes through

`issue` makes the lookup through `Lookups.lookup_for` (purpose rule, name budget, audit, masking), so a receipt
never holds more than the same caller's lookup would show: it holds exactly that view, except that a name the
caller supplied and that matched is shown in full instead of masked (the caller knows it already). The signing
key is loaded when the app starts: a configured key that cannot be used stops the start (`SigningKeyInvalid`);
no key at all is `SigningKeyMissing` (503, saying how to make one) when a receipt is asked for.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aggregator.models import CERT_KIND_NAMES, DEPARTMENT_NAMES, VERDICT_LABELS, Answer, Department, Verdict
from aggregator.receipts import document
from aggregator.receipts.issue import issue_receipt
from aggregator.receipts.keys import ReceiptSettings, SigningKey, SigningKeyMissing, load_signing_key
from aggregator.receipts.pdf import find_font, render_pdf
from aggregator.receipts.store import ReceiptStore, StoredReceipt, cert_key
from aggregator.web.masking import mask_answer
from aggregator.web.roles import Principal, Role

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from aggregator.web.services.lookups import Lookups

log = logging.getLogger(__name__)

STATUS_ZH = {"valid": "有效", "expired": "已过期", "suspended": "暂扣", "revoked": "吊销/撤销", "unknown": "状态不明"}


@dataclass
class ReceiptState:
    """A stored receipt and what verifying it now finds."""

    stored: StoredReceipt
    check: document.ReceiptCheck
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def url(self) -> str:
        return str(self.check.credential.get("id") or "")

    @property
    def expired(self) -> bool:
        return self.stored.expired(self.now)

    def as_json(self) -> dict[str, Any]:
        s = self.stored
        superseded = None
        if s.superseded_at is not None:
            superseded = {"at": s.superseded_at.isoformat(), "status": s.superseded_status}
        return {
            "id": s.id,
            "url": self.url,
            "pdf": self.url + ".pdf",
            "token": s.token,
            "media_type": document.MEDIA_TYPE,
            "issued_at": s.issued_at.isoformat(),
            "valid_until": s.valid_until.isoformat(),
            "role": s.role,
            "signature": {"valid": self.check.signature_ok, "kid": self.check.kid, "problem": self.check.problem},
            "expired": self.expired,
            "superseded": superseded,
            "receipt": self.check.credential,
        }


def _verdict_words(value: str) -> str:
    try:
        zh, en = VERDICT_LABELS[Verdict(value)]
    except ValueError:
        return value
    return f"{zh} {en}"


def _cert_words(key: str) -> str:
    """A certificate named without its number (which may carry an ID number): 应急管理部 低压电工作业."""
    department, _, rest = key.partition("|")
    item = rest.partition("|")[2]
    try:
        name = DEPARTMENT_NAMES[Department(department)]
    except ValueError:
        name = department
    return f"{name} {item}".strip()


class ReceiptService:
    def __init__(self, lookups: Lookups, store: ReceiptStore, settings: ReceiptSettings,
                 key: SigningKey | None, missing: SigningKeyMissing | None = None) -> None:  # fmt: skip
        self.lookups = lookups
        self.store = store
        self.settings = settings
        self.key = key
        self._missing = missing

    @classmethod
    def on(cls, lookups: Lookups, engine: AsyncEngine, settings: ReceiptSettings | None = None) -> ReceiptService:
        """Load the signing key now: an unusable configured key raises `SigningKeyInvalid` (a start-up error)."""
        settings = settings or ReceiptSettings.from_env()
        try:
            key: SigningKey | None = load_signing_key(settings)
            missing = None
        except SigningKeyMissing as e:
            key, missing = None, e
            log.warning("no receipt signing key: receipts are refused until one is made (%s)", e.looked)
        return cls(lookups, ReceiptStore(engine), settings, key, missing)

    def signer(self) -> SigningKey:
        if self.key is None:
            raise self._missing or SigningKeyMissing(str(self.settings.home_key_file))
        return self.key

    # --- issuing ------------------------------------------------------------------------------------------

    async def issue(
        self,
        principal: Principal,
        number: str,
        *,
        name: str | None = None,
        id_number: str | None = None,
        purpose: str | None = None,
        client_ip: str | None = None,
        base_url: str | None = None,
    ) -> ReceiptState:
        """Look `number` up as `principal` may, and sign what it may see as a receipt."""
        key = self.signer()
        answer, view = await self.lookups.lookup_for(
            principal, number, name=name, id_number=id_number, purpose=purpose, client_ip=client_ip
        )
        stored, check = await issue_receipt(
            self.store, key, self.settings, answer, view,
            role=principal.role.value, key_id=principal.key_id, name=name, base_url=base_url,
        )  # fmt: skip
        return ReceiptState(stored, check)

    # --- reading ------------------------------------------------------------------------------------------

    async def jwks(self) -> dict[str, Any]:
        if self.key is not None:
            await self.store.publish(self.key)
        return await self.store.jwks()

    async def find(self, receipt_id: str) -> ReceiptState | None:
        """The receipt and its signature checked now against every published key (None: no such receipt)."""
        stored = await self.store.get(receipt_id)
        if stored is None:
            return None
        return ReceiptState(stored, document.verify(stored.token, await self.jwks()))

    async def check_again(self, principal: Principal, state: ReceiptState, *, client_ip: str | None = None,
                          purpose: str | None = None) -> dict[str, Any]:  # fmt: skip
        """The same number looked up now (as `principal` may, without the name) and what changed since."""
        answer, _ = await self.lookups.lookup_for(
            principal, state.stored.number, purpose=purpose or f"核验回执 receipt {state.stored.id}",
            client_ip=client_ip,
        )  # fmt: skip
        before = await self.store.certificates(state.stored.id)
        now = {cert_key(c): c for c in answer.certificates}
        changes: list[str] = []
        name_given = bool((state.check.credential.get("credentialSubject") or {}).get("query", {}).get("name_given"))
        if answer.verdict.value != state.stored.verdict and not (name_given and state.stored.verdict == "name_mismatch"):
            changes.append(f"结论 verdict：{_verdict_words(state.stored.verdict)} → {_verdict_words(answer.verdict.value)}")
        for key, status in before.items():
            c = now.get(key)
            if c is None:
                changes.append(f"{_cert_words(key)}：本次未查到 not found now")
            elif c.effective.value != status:
                changes.append(
                    f"{_cert_words(key)}：{STATUS_ZH.get(status, status)} {status} → "
                    f"{STATUS_ZH.get(c.effective.value, c.effective.value)} {c.effective.value}"
                )
        for key, c in now.items():
            if key not in before:
                changes.append(f"{CERT_KIND_NAMES[c.kind]} {c.operation_item or c.category or ''}".strip()
                               + "：新查到 newly found")  # fmt: skip
        notes = ["姓名未重新核对 the name is not checked again"] if name_given else []
        return {
            "checked_at": answer.answered_at.isoformat(),
            "verdict": answer.verdict.value,
            "verdict_reason": answer.verdict_reason,
            "complete": answer.complete,
            "changed": bool(changes),
            "changes": changes,
            "notes": notes,
        }

    async def pdf(self, state: ReceiptState) -> bytes:
        """The receipt's PDF (rendered in a worker thread: it is CPU work)."""
        font = find_font(self.settings.font_file)
        superseded = None
        if state.stored.superseded_at is not None:
            when = state.stored.superseded_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            superseded = f"已被取代 Superseded since {when}：后来的查询发现证书{STATUS_ZH.get(state.stored.superseded_status or '', '')}"
        return await asyncio.to_thread(
            render_pdf, state.check.credential, verify_url=state.url, kid=state.stored.kid, font=font,
            superseded=superseded, font_cache=self.settings.font_cache,
        )  # fmt: skip

    # --- the hook -----------------------------------------------------------------------------------------

    async def supersede(self, answer: Answer) -> None:
        """After any lookup: supersede the receipts it makes out of date. A failure is logged, never raised: the
        lookup's answer stands, and the next lookup that finds the same tries again."""
        try:
            marked = await self.store.supersede(answer)
        except Exception as e:  # noqa: BLE001 - the answer must not fail because a receipt could not be marked
            log.warning("could not mark receipts superseded for %s: %s", answer.query.number, e)
            return
        if marked:
            log.info("%d receipt(s) for %s superseded", marked, answer.query.number)



async def receipt_for_answer(
    engine: AsyncEngine,
    answer: Answer,
    *,
    role: Role,
    typed: set[str],
    name: str | None = None,
    settings: ReceiptSettings | None = None,
) -> ReceiptState:
    """A receipt for an answer looked up outside the web (`certq lookup --receipt`), as `role` may see it."""
    settings = settings or ReceiptSettings.from_env()
    key = load_signing_key(settings)
    view = mask_answer(answer, role, typed)
    stored, check = await issue_receipt(ReceiptStore(engine), key, settings, answer, view, role=role.value, name=name)
    return ReceiptState(stored, check)
