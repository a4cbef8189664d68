"""Searching the audit log: filters, cursor paging that holds still, job lookups folded, CSV.

    page = await search(engine, AuditQuery(number="T110105199003071239", limit=50))
    page.items          # AuditEntry, or JobGroup (one line per job: its lookups counted), newest first
    page.cursor         # pass back as AuditQuery(cursor=...) for the next page; None on the last
    text = to_csv(page.items, labels={"3f9a...": "某建筑公司"}, show_holder=True)

Filters: certificate number, holder ID number, keys (an organisation's label is resolved to its key ids by
the caller: the audit log stores ids, people search by label), role, action, verdict, purpose (contains), a
date range (UTC days, both ends included), one job. Who may use which filter (the holder ID number: regulators
only) is the caller's rule (`web.services.audit`).

Paging: newest first by id; a cursor carries the id to continue below and the newest id the first page saw,
so entries written while someone pages do not shift what the later pages hold. With `group_jobs` (the
default, unless a job is asked for), entries with a `job_id` come back as one `JobGroup` per job, placed at
its newest entry.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.audit.entry import ACTION_ZH, ROLE_ZH, AuditEntry, action_text, role_text
from aggregator.numbers import normalise
from aggregator.records.schema import audit_log
from aggregator.render import neutralise

MAX_LIMIT = 1000
MAX_TEXT = 200


class BadAuditQuery(ValueError):
    """A search the audit log cannot run (bad cursor, dates the wrong way round ...); zh/en say why."""

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(en)
        self.zh, self.en = zh, en


@dataclass(frozen=True)
class AuditQuery:
    number: str | None = None
    holder_id_number: str | None = None
    key_ids: tuple[str, ...] | None = None  # None: any key; (): an organisation with no key (nothing matches)
    role: str | None = None
    action: str | None = None
    verdict: str | None = None
    purpose: str | None = None  # contains
    since: date | None = None  # UTC day, included
    until: date | None = None  # UTC day, included
    job_id: str | None = None
    group_jobs: bool = True
    limit: int = 50
    cursor: str | None = None

    def checked(self) -> AuditQuery:
        """The query with its texts normalised; `BadAuditQuery` for what cannot be searched."""
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadAuditQuery(f"limit 应在 1 与 {MAX_LIMIT} 之间", f"limit must be 1..{MAX_LIMIT}")
        for name in ("number", "holder_id_number", "purpose", "job_id", "verdict"):
            value = getattr(self, name)
            if value is not None and (len(value) > MAX_TEXT or "\x00" in value):
                raise BadAuditQuery(f"{name} 过长或含有无效字符", f"{name} is too long or contains a NUL character")
        if self.role is not None and self.role not in ROLE_ZH:
            raise BadAuditQuery(f"没有这个角色：{self.role}", f"no such role: {self.role} ({', '.join(ROLE_ZH)})")
        if self.action is not None and self.action not in ACTION_ZH:
            raise BadAuditQuery(f"没有这个操作：{self.action}", f"no such action: {self.action} ({', '.join(ACTION_ZH)})")
        if self.since and self.until and self.since > self.until:
            raise BadAuditQuery("起始日期晚于结束日期", "the start date is after the end date")
        return replace(
            self,
            number=normalise(self.number) or None if self.number else None,
            holder_id_number=normalise(self.holder_id_number) or None if self.holder_id_number else None,
            purpose=(self.purpose or "").strip() or None,
            job_id=(self.job_id or "").strip() or None,
        )


@dataclass(frozen=True)
class JobGroup:
    """The lookups one job made that match the search, as one line."""

    job_id: str
    count: int
    first_at: datetime
    last_at: datetime
    last_id: int  # where it sits in the log (its newest entry)
    key_id: str
    role: str
    action: str
    purpose: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "job", "job_id": self.job_id, "count": self.count, "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(), "last_id": self.last_id, "key_id": self.key_id, "role": self.role,
            "action": self.action, "purpose": self.purpose,
        }  # fmt: skip


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditEntry | JobGroup]
    cursor: str | None  # the next page's, None on the last


def _encode(before: int, upto: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([before, upto]).encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, int]:
    try:
        before, upto = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(before, int) and isinstance(upto, int) and 0 <= before <= upto + 1:
            return before, upto
    except (ValueError, TypeError, binascii.Error):
        pass
    raise BadAuditQuery("翻页标记无效，请从第一页重新查询", "the cursor is not valid; search again from the first page")


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _filters(q: AuditQuery) -> list[sa.ColumnElement[bool]]:
    c = audit_log.c
    out: list[sa.ColumnElement[bool]] = []
    if q.number:
        out.append(c.number == q.number)
    if q.holder_id_number:
        h = q.holder_id_number  # recorded with the entry, or the number itself (an ID, or MEM's T + ID)
        out.append(sa.or_(c.holder_id_number == h, c.number == h, c.number == "T" + h))
    if q.key_ids is not None:
        out.append(c.key_id.in_(q.key_ids) if q.key_ids else sa.false())
    if q.role:
        out.append(c.role == q.role)
    if q.action:
        out.append(c.action == q.action)
    if q.verdict:
        out.append(c.verdict == q.verdict)
    if q.purpose:
        escaped = q.purpose.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        out.append(c.purpose.like(f"%{escaped}%", escape="\\"))
    if q.since:
        out.append(c.at >= _day_start(q.since))
    if q.until:
        out.append(c.at < _day_start(q.until + timedelta(days=1)))
    if q.job_id:
        out.append(c.job_id == q.job_id)
    return out


async def search(engine: AsyncEngine, query: AuditQuery) -> AuditPage:
    """One page of entries matching `query`, newest first."""
    q = query.checked()
    c = audit_log.c
    async with engine.connect() as conn:
        if q.cursor:
            before, upto = _decode(q.cursor)
        else:
            upto = int((await conn.execute(sa.select(sa.func.max(c.id)))).scalar() or 0)
            before = upto + 1
        where = [*_filters(q), c.id <= upto]
        grouping = q.group_jobs and not q.job_id
        entries = sa.select(audit_log).where(*where, c.id < before).order_by(c.id.desc()).limit(q.limit + 1)
        if grouping:
            entries = entries.where(c.job_id.is_(None))
        items: list[tuple[int, AuditEntry | JobGroup]] = [
            (int(r.id), AuditEntry.from_row(r._mapping)) for r in (await conn.execute(entries)).all()
        ]
        if grouping:
            last_id = sa.func.max(c.id)
            groups = (
                sa.select(
                    c.job_id, sa.func.count().label("n"), sa.func.min(c.at).label("first_at"),
                    sa.func.max(c.at).label("last_at"), last_id.label("last_id"), sa.func.min(c.key_id).label("key_id"),
                    sa.func.min(c.role).label("role"), sa.func.min(c.action).label("action"),
                    sa.func.min(c.purpose).label("purpose"),
                )  # fmt: skip
                .where(*where, c.job_id.is_not(None))
                .group_by(c.job_id)
                .having(last_id < before)
                .order_by(last_id.desc())
                .limit(q.limit + 1)
            )
            for g in (await conn.execute(groups)).all():
                group = JobGroup(
                    g.job_id, int(g.n), _utc(g.first_at), _utc(g.last_at), int(g.last_id), g.key_id, g.role,
                    g.action, g.purpose,
                )  # fmt: skip
                items.append((group.last_id, group))
            items.sort(key=lambda pair: pair[0], reverse=True)
    page = items[: q.limit]
    more = len(items) > q.limit
    return AuditPage([item for _, item in page], _encode(page[-1][0], upto) if more and page else None)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


CSV_HEADER = (
    "时间(UTC) Time", "机构 Organisation", "角色 Role", "操作 Action", "编号 Number", "身份证号 Holder ID",
    "结论 Verdict", "姓名核对 Name check", "用途 Purpose", "IP", "作业 Job", "条数 Count", "详情 Detail",
    "链位置 Seq", "哈希 Hash",
)  # fmt: skip


def organisation(key_id: str, labels: Mapping[str, str]) -> str:
    """Whose key, as people know it: the key's label (never its hex id)."""
    if key_id == "-":
        return "公众（无密钥） public, no key"
    if key_id == "cli":
        return "命令行 command line"
    return labels.get(key_id) or "已删除的密钥 removed key"


def to_csv(items: Sequence[AuditEntry | JobGroup], *, labels: Mapping[str, str], show_holder: bool) -> str:
    """The items as CSV with Chinese headers, spreadsheet formulas neutralised; the holder's ID number only
    when `show_holder` (regulators)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for item in items:
        if isinstance(item, JobGroup):
            row: list[object] = [
                item.last_at.strftime("%Y-%m-%d %H:%M:%S"), organisation(item.key_id, labels), role_text(item.role),
                action_text(item.action), "", "", "", "", item.purpose, "", item.job_id, item.count, "", "", "",
            ]  # fmt: skip
        else:
            row = [
                item.at.strftime("%Y-%m-%d %H:%M:%S"), organisation(item.key_id, labels), role_text(item.role),
                action_text(item.action), item.number, item.holder_id_number if show_holder else "",
                item.verdict, item.name_check, item.purpose, item.client_ip, item.job_id, 1, item.detail,
                item.seq, item.hash,
            ]  # fmt: skip
        writer.writerow([neutralise(v) for v in row])
    return out.getvalue()
