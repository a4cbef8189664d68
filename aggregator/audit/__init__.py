"""The audit log: who looked up which number, in what role, why, with what answer; and who uploaded,
created or revoked a key, changed a webhook, ran a campaign. Below the web layer, so background jobs write to
it too.

    from aggregator.audit import AuditEntry, AuditLog, AuditQuery

    log = AuditLog(engine)
    await log.write([AuditEntry.now(principal, action="lookup", number=..., ..., job_id=None)])   # entry.py, log.py
    await log.record_action(principal, "key_revoke", detail={"key_id": "3f9a0c1d2e4b"})
    page = await search(engine, AuditQuery(number="T110...", since=date(2026, 1, 1)))              # search.py
    report = await verify(engine)                                                                  # chain.py

Modules: `entry` (one entry; roles and actions in Chinese), `log` (the writer, group-committed onto the hash
chain; `AuditUnavailable`), `chain` (the tamper-evident chain and its verification), `search` (filters, cursor
paging, job grouping, CSV).
"""

from __future__ import annotations

from aggregator.audit.chain import ChainProblem, ChainReport, verify
from aggregator.audit.entry import (
    ACTION_ZH,
    ACTIONS,
    ANONYMOUS_KEY_ID,
    CLI,
    MAX_PURPOSE,
    ROLE_ZH,
    AuditEntry,
    action_text,
    role_text,
)
from aggregator.audit.log import MAX_READ, AuditLog, AuditUnavailable
from aggregator.audit.search import AuditPage, AuditQuery, BadAuditQuery, JobGroup, search, to_csv

__all__ = [
    "ACTIONS",
    "ACTION_ZH",
    "ANONYMOUS_KEY_ID",
    "CLI",
    "MAX_PURPOSE",
    "MAX_READ",
    "ROLE_ZH",
    "AuditEntry",
    "AuditLog",
    "AuditPage",
    "AuditQuery",
    "AuditUnavailable",
    "BadAuditQuery",
    "ChainProblem",
    "ChainReport",
    "JobGroup",
    "action_text",
    "role_text",
    "search",
    "to_csv",
    "verify",
]
