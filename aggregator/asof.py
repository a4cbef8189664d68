"""Validity on a past date: the answer as certq knew it at the end of that day (UTC).

    answer = await lookup_as_of(gateway, "T110105199003071239", on=date(2026, 8, 1), name="张小三")
    answer.as_of.rests_on        # per source: the upload or the live answer the answer rests on, or why none

A separate, read-only path beside `Gateway.lookup` (nothing here touches the live fan-out, the cache or the
runner): every source's result is rebuilt from what the database kept, then merged by `merge.build_answer`
exactly as a live answer is, with expiry judged on that date.

- uploaded records: per department the upload in force then (the newest quarter uploaded by then; see
  `records.asof.upload_in_force`); its data is as of the earlier of its quarter's end and its upload time.
  A department that had uploaded nothing by then answers not found, as certq would have answered then.
- live sources (api / html): the last answer first seen on or before that day (`live_answers`, one row per
  change); none kept from then: unavailable for that date.
- link-outs: a public site can only be asked about today: skipped.
- a date before certq's oldest data: inconclusive, and the reason says from when certq has data.
- a date after today: `FutureDate` (HTTP 422, CLI exit 2).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from aggregator.merge import build_answer
from aggregator.models import LIVE_MODES, Answer, Mode, Outcome, Query, SourceResult, Verdict
from aggregator.numbers import parse_number
from aggregator.records.asof import live_answer_then, oldest_data, upload_in_force
from aggregator.selection import holder_id_for, select_sources

if TYPE_CHECKING:
    from aggregator.config import SourceConfig
    from aggregator.gateway import Gateway


class FutureDate(ValueError):
    """A date after today: nobody knows yet what a certificate's status will be."""

    def __init__(self, on: date, today: date) -> None:
        self.on, self.today = on, today
        super().__init__(f"日期 {on} 晚于今天（{today}） (the date {on} is after today, {today})")


class InvalidDate(ValueError):
    """A date that is not written YYYY-MM-DD."""

    def __init__(self, text: str) -> None:
        self.text = text[:40]
        super().__init__(f"日期应写作 YYYY-MM-DD，例如 2026-08-01 (a date is written YYYY-MM-DD, not {self.text!r})")


def parse_date(text: str) -> date:
    """A YYYY-MM-DD date (surrounding spaces ignored); anything else raises `InvalidDate`."""
    value = text.strip()
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidDate(text) from None


class Basis(BaseModel):
    """What one source's part of a past answer rests on."""

    source: str
    kind: str = Field(description="upload | live_answer | none (certq held nothing from then) | not_applicable")
    quarter: str | None = Field(None, description="upload: the quarter in force then")
    batch_id: int | None = Field(None, description="upload: the batch in force then")
    uploaded_at: datetime | None = Field(None, description="upload: when that batch was uploaded")
    data_as_of: datetime | None = Field(None, description="upload: the earlier of its quarter's end and its upload")
    first_seen: datetime | None = Field(None, description="live answer: when the source first gave it")
    last_seen: datetime | None = Field(None, description="live answer: when the source last confirmed it")
    text: str = Field(description="The same in words (Chinese, then English)")


class AsOf(BaseModel):
    """Which date the answer is for and what it rests on."""

    date: date
    data_until: datetime = Field(description="Data that arrived before this moment counts (the day's end, UTC)")
    oldest_data: datetime | None = Field(None, description="When certq's oldest upload or live answer arrived")
    rests_on: list[Basis] = Field(default_factory=list)


class PastAnswer(Answer):
    """An answer as certq knew it on a past date (`as_of` says which, and what each part rests on)."""

    as_of: AsOf


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def check_date(on: date, today: date) -> None:
    if on > today:
        raise FutureDate(on, today)


async def lookup_as_of(
    gateway: Gateway,
    number: str,
    *,
    on: date,
    name: str | None = None,
    id_number: str | None = None,
) -> PastAnswer:
    """The answer to `number` as certq knew it at the end of day `on` (UTC). Raises `numbers.NumberError` on
    bad input and `FutureDate` for a date after today."""
    started = time.monotonic()
    check_date(on, gateway.today())
    classification = parse_number(number)
    id_norm = parse_number(id_number).number if id_number and id_number.strip() else None
    query = Query(number=classification.number, name=(name or "").strip() or None, id_number=id_norm)
    until = datetime(on.year, on.month, on.day, tzinfo=UTC) + timedelta(days=1)
    engine = gateway.store.engine

    ask, skipped = select_sources(gateway.settings.sources, classification, query)
    results: list[SourceResult] = []
    rests_on: list[Basis] = []
    holder_id = holder_id_for(query, classification)
    for source in ask:
        result, basis = await _source_then(engine, source, query, holder_id, on, until)
        results.append(result)
        rests_on.append(basis)
    results += skipped
    order = {s.id: i for i, s in enumerate(gateway.settings.sources)}
    results.sort(key=lambda r: order.get(r.source, 0))
    rests_on.sort(key=lambda b: order.get(b.source, 0))

    answer = build_answer(
        query,
        classification,
        results,
        gateway.settings.recognition,
        on,
        elapsed_ms=(time.monotonic() - started) * 1000,
    )
    oldest = await oldest_data(engine)
    lead = f"按 {on} 当日所知 (as certq knew it on {on})"
    if oldest is None or oldest >= until:
        since = f"certq 最早的数据始于 {_when(oldest)}" if oldest else "certq 尚无任何数据"
        since_en = f"certq's oldest data is of {_when(oldest)}" if oldest else "certq holds no data yet"
        lead = f"{lead}；{since}，{on} 之前没有可依据的数据 ({since_en}: nothing to go on for {on})"
    fields = dict(answer)
    if oldest is None or oldest >= until:  # nothing was known then: never "not found"
        fields.update(verdict=Verdict.INCONCLUSIVE, complete=False, certificates=[], conflicts=[], recognitions=[])
        fields["verdict_reason"] = f"{lead}；无法得出结论 (no conclusion can be reached)"
    else:
        fields["verdict_reason"] = f"{lead}；{answer.verdict_reason}"
    return PastAnswer(
        **fields,
        as_of=AsOf(date=on, data_until=until, oldest_data=oldest, rests_on=rests_on),
    )


async def _source_then(
    engine: object, source: SourceConfig, query: Query, holder_id: str | None, on: date, until: datetime
) -> tuple[SourceResult, Basis]:
    base = {"source": source.id, "department": source.department, "mode": source.mode}
    if source.mode == Mode.RECORDS:
        upload = await upload_in_force(engine, source.department, until, number=query.number, id_number=holder_id)  # type: ignore[arg-type]
        if upload is None:  # what certq answered then: this department's uploads held nothing
            text = f"{on} 时该部门尚无上报数据 (no upload of this department by {on})"
            return (
                SourceResult(**base, outcome=Outcome.NOT_FOUND, message=text),
                Basis(source=source.id, kind="none", text=text),
            )
        text = (
            f"{upload.quarter} 季度上报数据（批次 {upload.batch_id}，上传于 {_when(upload.uploaded_at)}，"
            f"数据截至 {_when(upload.data_as_of)}） (the {upload.quarter} upload, batch {upload.batch_id}, "
            f"uploaded {_when(upload.uploaded_at)}, data as of {_when(upload.data_as_of)})"
        )
        result = SourceResult(
            **base,
            outcome=Outcome.FOUND if upload.certificates else Outcome.NOT_FOUND,
            certificates=upload.certificates,
            message=text,
            fetched_at=upload.uploaded_at,
            data_as_of=upload.data_as_of,
        )
        basis = Basis(
            source=source.id,
            kind="upload",
            quarter=upload.quarter,
            batch_id=upload.batch_id,
            uploaded_at=upload.uploaded_at,
            data_as_of=upload.data_as_of,
            text=text,
        )
        return result, basis
    if source.mode in LIVE_MODES:
        kept = await live_answer_then(engine, source.id, query, until)  # type: ignore[arg-type]
        if kept is None:
            text = f"未保存该数据源 {on} 及之前的回答 (no answer of this source is kept from {on} or before)"
            return (
                SourceResult(**base, outcome=Outcome.UNAVAILABLE, message=text),
                Basis(source=source.id, kind="none", text=text),
            )
        text = (
            f"该数据源 {_when(kept.first_seen)} 起给出的回答（最后确认于 {_when(kept.last_seen)}） "
            f"(its answer first given {_when(kept.first_seen)}, last confirmed {_when(kept.last_seen)})"
        )
        result = kept.result.model_copy(
            update={
                "message": text,
                "fetched_at": kept.first_seen,
                # confirmed until last_seen; when that is after the day, only its first answer is surely "by then"
                "data_as_of": kept.last_seen if kept.last_seen < until else kept.first_seen,
                "from_cache": False,
                "stale": False,
                "elapsed_ms": 0.0,
            }
        )
        basis = Basis(
            source=source.id, kind="live_answer", first_seen=kept.first_seen, last_seen=kept.last_seen, text=text
        )
        return result, basis
    text = "公开查询网站只能查询当前状态 (a public site can only be asked about today)"
    return (
        SourceResult(**base, outcome=Outcome.SKIPPED, message=text),
        Basis(source=source.id, kind="not_applicable", text=text),
    )


def _register_errors() -> None:
    from aggregator.errors import register

    register(FutureDate, 422, 2, "future-date", "日期 {exc.on} 晚于今天（{exc.today}）", "the date {exc.on} is after today ({exc.today})")
    register(InvalidDate, 422, 2, "invalid-date", "日期应写作 YYYY-MM-DD，例如 2026-08-01", "a date is written YYYY-MM-DD, not {exc.text!r}")


_register_errors()
