"""Searching the audit log as a role may: the service the API, the regulator's page and nothing else call.

    page, labels = await svc.audit_search.search_for(principal, AuditQuery(number="T110..."), organisation="建设")
    rows = [svc.audit_search.view(item, labels, principal) for item in page.items]

Rules kept here, once: searching by a holder's ID number, and seeing it in the results, is for regulators
only (PIPL: the ID number is personal data; admins run the service, regulators supervise it); an
organisation is searched by its key's label (part of it, any case), never by the key's hex id, and shown
by its label.
"""

from __future__ import annotations

from typing import Any

from aggregator.audit import (
    AuditEntry,
    AuditLog,
    AuditPage,
    AuditQuery,
    BadAuditQuery,
    JobGroup,
    action_text,
    role_text,
)
from aggregator.audit import search as search_log
from aggregator.audit.search import organisation as organisation_of
from aggregator.web.keys import KeyStore
from aggregator.web.problems import Forbidden, Unprocessable
from aggregator.web.roles import Principal, Role

HOLDER_SEARCHERS = frozenset({Role.REGULATOR})
HOLDER_SEARCH = "按身份证号检索审计日志 / search the audit log by holder ID number"


class AuditService:
    def __init__(self, log: AuditLog, keys: KeyStore) -> None:
        self._log = log
        self._keys = keys

    async def labels(self) -> dict[str, str]:
        return {k.key_id: k.label for k in await self._keys.list_keys()}

    async def search_for(
        self, principal: Principal, query: AuditQuery, *, organisation: str | None = None
    ) -> tuple[AuditPage, dict[str, str]]:
        """One page of the search, and the key labels to show its organisations by."""
        if query.holder_id_number and principal.role not in HOLDER_SEARCHERS:
            raise Forbidden(principal.role.value, HOLDER_SEARCH)
        labels = await self.labels()
        if organisation and organisation.strip():
            wanted = organisation.strip().casefold()
            ids = tuple(k for k, label in labels.items() if wanted in label.casefold())
            query = AuditQuery(**{**query.__dict__, "key_ids": ids})
        try:
            page = await search_log(self._log.engine, query)
        except BadAuditQuery as e:
            raise Unprocessable(e.zh, e.en) from e
        return page, labels

    @staticmethod
    def view(item: AuditEntry | JobGroup, labels: dict[str, str], principal: Principal) -> dict[str, Any]:
        """One result as JSON: with its organisation, role and action in words; the holder's ID number only
        for regulators."""
        out = item.as_dict()
        out["kind"] = "job" if isinstance(item, JobGroup) else "entry"
        out["organisation"] = organisation_of(item.key_id, labels)
        out["role_text"] = role_text(item.role)
        out["action_text"] = action_text(item.action)
        if isinstance(item, AuditEntry):
            out["detail_text"] = "，".join(f"{k} {v}" for k, v in item.details().items() if v is not None)
            if principal.role not in HOLDER_SEARCHERS:
                out["holder_id_number"] = None
        return out

    @staticmethod
    def shows_holder(principal: Principal) -> bool:
        return principal.role in HOLDER_SEARCHERS
