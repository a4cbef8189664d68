"""MEM 应急管理部 (特种作业操作证): the generic JSON adapter plus what config cannot say, current vs 历史数据.

The page, and the institutional endpoint shaped after it, lists the holder's current cards and, in a
历史数据 block, older ones (`sjlx = "history"`): a card before its renewal, a lapsed term. A history record is
never reported as the current certificate. The choice made here:

- a history record whose 操作项目 also has a current record is dropped (the current one says it all);
- a 操作项目 that appears only in history is reported once, its latest record, marked: `status_text` reads
  "历史数据：<the source's words>" and its status is never `valid` (a record the source files as history is
  not in force; it stays suspended or revoked when the source says so, otherwise it is expired).

Everything else (request, outcome conditions, field paths, status table) is in config/sources/mem_api.toml.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import Field

from adapters.base import ParseError
from adapters.jsonapi import JsonApiAdapter, JsonApiOptions
from adapters.parsing import MISSING, check_path, clean_text, dotted_get
from aggregator.models import Certificate, CertStatus

HISTORY_PREFIX = "历史数据："


class MemOptions(JsonApiOptions):
    record_type: str = "sjlx"  # path, within a record, of current/history
    current: list[str] = Field(default_factory=lambda: ["current"])
    history: list[str] = Field(default_factory=lambda: ["history", "历史数据"])


def mark_history(cert: Certificate) -> Certificate:
    """A history record as reported when no current record covers its 操作项目."""
    status = cert.status
    if status in (CertStatus.VALID, CertStatus.UNKNOWN):
        status = CertStatus.EXPIRED
    return cert.model_copy(update={"status": status, "status_text": HISTORY_PREFIX + (cert.status_text or "")})


def _term_end(cert: Certificate) -> date:
    return cert.valid_until or cert.issued_on or date.min


class MemAdapter(JsonApiAdapter):
    """MEM's JSON endpoint: one query by ID number, current and history records."""

    options_model = MemOptions
    options: MemOptions

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        check_path(self.options.record_type)

    def is_history(self, record: dict[str, Any], where: str) -> bool:
        raw = dotted_get(record, self.options.record_type)
        if raw is MISSING:
            raise ParseError(f"{where}.{self.options.record_type}", "field missing")
        text = clean_text(raw)
        if text in self.options.current:
            return False
        if text in self.options.history:
            return True
        raise ParseError(
            f"{where}.{self.options.record_type}",
            f"unknown record type {text!r}; expected one of {self.options.current + self.options.history}",
        )

    def finish(self, records: list[Any], certificates: list[Certificate]) -> list[Certificate]:
        current: list[Certificate] = []
        history: list[Certificate] = []
        for i, (record, cert) in enumerate(zip(records, certificates, strict=True)):
            (history if self.is_history(record, f"{self.options.records}[{i}]") else current).append(cert)
        covered = {c.operation_item or c.category for c in current}
        latest: dict[str | None, Certificate] = {}
        for cert in history:
            key = cert.operation_item or cert.category
            if key in covered:
                continue
            best = latest.get(key)
            if best is None or _term_end(cert) > _term_end(best):
                latest[key] = cert
        return current + [mark_history(c) for c in latest.values()]
