"""One audit entry, and the words people read for its role and action (Chinese first).

    AuditEntry.now(principal, action="lookup", number="T110...", name_given=False, id_number_given=False,
                   verdict="valid", purpose="抽查", client_ip="10.0.0.8", holder_id_number="110105199003071239")
    AuditEntry.action_by(principal, "key_create", detail={"key_id": "3f9a0c1d2e4b", "role": "employer"})

An entry is a lookup (`lookup`, `verification`) or another audited action (uploads, keys, webhooks, campaign
runs: `ACTIONS`). The holder's name is never logged, only whether one was given and what became of it
(`name_check`). `holder_id_number` is the ID number a lookup was about (given, or the holder's of the one
certificate found), so a regulator can ask who looked a holder up. `job_id` marks the lookups a background
job made (a roster run, a campaign), which searches fold into one line per job. `seq`, `prev_hash` and `hash`
are the tamper-evident chain (see `chain.py`), set by the writer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

MAX_PURPOSE = 500
MAX_DETAIL = 4000
ANONYMOUS_KEY_ID = "-"  # audit_log.key_id of a public (keyless) caller's entry
CLI_KEY_ID = "cli"  # audit_log.key_id of an action taken with `certq` on the database itself

#: Roles as people read them (the web layer's roles, by value; the audit log stores the value).
ROLE_ZH = {
    "public": "公众",
    "employer": "用人单位",
    "regulator": "监管部门",
    "department": "部门",
    "admin": "管理员",
}

#: Every action the audit log records, as people read it.
ACTION_ZH = {
    "lookup": "查询",
    "verification": "批量核验",
    "upload": "上传记录",
    "key_create": "创建密钥",
    "key_revoke": "吊销密钥",
    "webhook_change": "变更回调",
    "campaign_run": "运行抽查",
    "roster_run": "名册核验",
    "roster_change": "变更名册",
}
LOOKUP_ACTIONS = frozenset({"lookup", "verification"})
ACTIONS = tuple(ACTION_ZH)


def role_text(role: str) -> str:
    """'监管部门 regulator'."""
    return f"{ROLE_ZH[role]} {role}" if role in ROLE_ZH else role


def action_text(action: str) -> str:
    """'吊销密钥 key_revoke'."""
    return f"{ACTION_ZH[action]} {action}" if action in ACTION_ZH else action


class Actor(Protocol):
    """Who acts: a web principal, or `Actor`-shaped anything with a key id (None: the public) and a role."""

    @property
    def key_id(self) -> str | None: ...

    @property
    def role(self) -> Any: ...  # a StrEnum or its value


@dataclass(frozen=True)
class CliActor:
    """An action taken with `certq` directly on the database (keys created or revoked from the shell)."""

    key_id: str | None = CLI_KEY_ID
    role: str = "admin"


CLI = CliActor()


def _role_value(role: Any) -> str:
    return str(getattr(role, "value", role))


@dataclass(frozen=True)
class AuditEntry:
    """One audited lookup or action. `id`, `seq`, `prev_hash` and `hash` are set once stored."""

    at: datetime
    key_id: str
    role: str
    action: str  # see ACTIONS
    number: str  # the number looked up ("" for an action about no number)
    name_given: bool
    id_number_given: bool
    verdict: str | None
    purpose: str | None = None
    client_ip: str | None = None
    name_check: str | None = None  # match | mismatch | unknown | not_checked; None: no name given
    holder_id_number: str | None = None  # the holder the lookup was about, when known
    job_id: str | None = None  # the job (roster run, campaign) that made this lookup
    detail: str | None = None  # JSON object: what an action did (which key, which batch ...)
    seq: int | None = field(default=None, compare=False)
    prev_hash: str | None = field(default=None, compare=False)
    hash: str | None = field(default=None, compare=False)
    id: int | None = field(default=None, compare=False)

    @classmethod
    def now(
        cls,
        principal: Actor,
        *,
        action: str,
        number: str,
        name_given: bool,
        id_number_given: bool,
        verdict: str | None,
        purpose: str | None,
        client_ip: str | None,
        name_check: str | None = None,
        holder_id_number: str | None = None,
        job_id: str | None = None,
    ) -> AuditEntry:
        return cls(
            at=datetime.now(UTC),
            key_id=principal.key_id or ANONYMOUS_KEY_ID,
            role=_role_value(principal.role),
            action=action,
            number=number[:64],
            name_given=name_given,
            id_number_given=id_number_given,
            verdict=verdict,
            purpose=(purpose or None) and purpose[:MAX_PURPOSE],
            client_ip=client_ip,
            name_check=name_check,
            holder_id_number=(holder_id_number or None) and holder_id_number[:18],
            job_id=(job_id or None) and str(job_id)[:64],
        )

    @classmethod
    def action_by(
        cls,
        actor: Actor,
        action: str,
        *,
        detail: dict[str, Any] | None = None,
        number: str = "",
        purpose: str | None = None,
        client_ip: str | None = None,
        job_id: str | None = None,
    ) -> AuditEntry:
        """An audited action that is not a lookup (`ACTIONS`); `detail` says what it did (JSON, no secrets)."""
        if action not in ACTION_ZH:
            raise ValueError(f"unknown audit action {action!r}; known: {', '.join(ACTIONS)}")
        text = json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str) if detail else None
        if text is not None and len(text) > MAX_DETAIL:
            raise ValueError(f"audit detail longer than {MAX_DETAIL} characters")
        return cls(
            at=datetime.now(UTC),
            key_id=actor.key_id or ANONYMOUS_KEY_ID,
            role=_role_value(actor.role),
            action=action,
            number=number[:64],
            name_given=False,
            id_number_given=False,
            verdict=None,
            purpose=(purpose or None) and purpose[:MAX_PURPOSE],
            client_ip=client_ip,
            job_id=(job_id or None) and str(job_id)[:64],
            detail=text,
        )

    def details(self) -> dict[str, Any]:
        return json.loads(self.detail) if self.detail else {}

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = self.at.isoformat()
        return out

    def row(self) -> dict[str, Any]:
        """The columns to insert (the chain's are added by the writer). Every field is a plain value, so no
        `asdict` (which deep-copies) is needed."""
        out = {k: getattr(self, k) for k in _ROW_FIELDS}
        out["at"] = self.at.astimezone(UTC)
        return out

    @classmethod
    def from_row(cls, mapping: Any) -> AuditEntry:
        m = {k: v for k, v in dict(mapping).items() if k in _FIELDS}
        at = m["at"]
        m["at"] = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
        return cls(**m)


_FIELDS = frozenset(AuditEntry.__dataclass_fields__)
_ROW_FIELDS = tuple(k for k in AuditEntry.__dataclass_fields__ if k not in ("id", "seq", "prev_hash", "hash"))
