"""Merge what every source said into one answer: the certificates, the conflicts, the verdict.

Rules, in the order they apply:

- The same certificate (department, number and, where one number covers several cards, the operation
  item) from several sources is merged field by field. Where two sources give different values, the
  conflict is listed and the merged certificate shows the value of the source with the freshest data
  (a live site asked just now beats last quarter's upload); nothing is silently dropped.
- With a name (or ID number) in the query, certificates of another holder do not count. If every
  certificate found belongs to someone else, the verdict is `name_mismatch` and the recorded name is not
  shown.
- The verdict is the best status among the holder's certificates (valid > suspended > expired > revoked).
- A source that could hold the number but did not answer makes the answer incomplete. Nothing found and
  a source unavailable is `inconclusive`, never `not_found`.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta, timezone

from aggregator.config import RecognitionCatalogue
from aggregator.models import (
    CERTIFICATE_FIELDS,
    DEPARTMENT_SHORT_NAMES,
    LIVE_MODES,
    Answer,
    Certificate,
    CertStatus,
    Conflict,
    ConflictValue,
    MergedCertificate,
    Mode,
    Outcome,
    Query,
    QueryEcho,
    SourceResult,
    SourceStatus,
    Verdict,
)
from aggregator.numbers import Classification, classify, issuers
from aggregator.recognition import recognise_all

# Fields compared between sources: all but what identifies the certificate and the source's own wording.
COMPARED_FIELDS = tuple(f for f in CERTIFICATE_FIELDS if f not in ("number", "kind", "department", "status_text"))

# Which status decides the verdict when a holder has several certificates: the one closest to valid.
_VERDICT_ORDER = (CertStatus.VALID, CertStatus.SUSPENDED, CertStatus.EXPIRED, CertStatus.REVOKED)
_STATUS_VERDICT = {
    CertStatus.VALID: Verdict.VALID,
    CertStatus.SUSPENDED: Verdict.SUSPENDED,
    CertStatus.EXPIRED: Verdict.EXPIRED,
    CertStatus.REVOKED: Verdict.REVOKED,
}
_VERDICT_TEXT = {
    Verdict.VALID: "证书合法有效 (the certificate is valid)",
    Verdict.SUSPENDED: "证书被暂扣 (the certificate is suspended)",
    Verdict.EXPIRED: "证书已过期 (the certificate has expired)",
    Verdict.REVOKED: "证书已吊销/撤销/注销 (the certificate is revoked)",
    Verdict.NOT_FOUND: "各数据源均未查到此证书 (no source holds this certificate)",
    Verdict.NAME_MISMATCH: "证书存在，但持证人与所填姓名/身份证号不符 (the certificate exists but not for this holder)",
    Verdict.INCONCLUSIVE: "无法得出结论 (no conclusion could be reached)",
}
_NAME_SEPARATORS = str.maketrans("", "", " \u3000·•・‧.")


def normalise_name(name: str) -> str:
    """Names compare after NFKC, without spaces, the middle dot of names such as 阿卜杜·热合曼 and invisible
    format characters (a zero-width space pasted with a name, a byte-order mark)."""
    text = unicodedata.normalize("NFKC", name).translate(_NAME_SEPARATORS).upper()
    if not text.isascii():
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return text


def _field_text(value: object) -> str | None:
    if value is None or value == []:
        return None
    if isinstance(value, list):  # SAMR item codes: FeⅡ and FeII, upper- or mixed-case, are one code
        return "和".join(sorted(unicodedata.normalize("NFKC", str(v)).upper() for v in value))
    if isinstance(value, date):
        return value.isoformat()
    text = unicodedata.normalize("NFKC", str(getattr(value, "value", value))).strip()
    return text or None


def _freshness(result: SourceResult) -> datetime:
    return result.data_as_of or result.fetched_at or datetime.min.replace(tzinfo=UTC)


def merge_certificates(
    results: list[SourceResult], today: date
) -> tuple[list[MergedCertificate], list[Conflict]]:
    groups: dict[tuple[str, str, str], list[tuple[SourceResult, Certificate]]] = defaultdict(list)
    for r in results:
        if r.outcome != Outcome.FOUND:
            continue
        for c in r.certificates:
            groups[c.key()].append((r, c))

    merged: list[MergedCertificate] = []
    conflicts: list[Conflict] = []
    for entries in groups.values():
        entries.sort(key=lambda rc: _freshness(rc[0]), reverse=True)
        chosen_result, chosen = entries[0]
        data = chosen.model_dump()
        # A certificate from one source alone has no other value to fill a gap from or to disagree with.
        for field in COMPARED_FIELDS if len(entries) > 1 else ():
            values = [(r, _field_text(getattr(c, field))) for r, c in entries]
            present = [(r, v) for r, v in values if v is not None]
            if data.get(field) in (None, []) and present:
                donor = next(c for r, c in entries if _field_text(getattr(c, field)) is not None)
                data[field] = getattr(donor, field)
            distinct = {v for _, v in present}
            if len(distinct) > 1:
                owner = chosen_result if _field_text(getattr(chosen, field)) is not None else present[0][0]
                conflicts.append(
                    Conflict(
                        certificate=chosen.number,
                        department=chosen.department,
                        field=field,
                        values=[ConflictValue(source=r.source, value=v, data_as_of=_freshness(r)) for r, v in present],
                        chosen_source=owner.source,
                        reason="采用数据最新的来源 (shown: the source with the freshest data)",
                    )
                )
        m = MergedCertificate(**data, sources=sorted({r.source for r, _ in entries}))
        m.effective = m.effective_status(today)
        merged.append(m)
    merged.sort(key=lambda m: (_VERDICT_ORDER.index(m.effective) if m.effective in _VERDICT_ORDER else 9, m.number))
    return merged, conflicts


def _issuer_decides(certs: list[MergedCertificate]) -> tuple[list[MergedCertificate], list[Conflict]]:
    """Where two departments' records claim one number, the department that issues numbers of its format
    decides: the other claim (a MEM T+ID number in SAMR's records, uploaded before uploads were checked) is
    dropped from the answer and listed as a conflict. A number that fits no format, or that no issuing
    department holds, is left as it is."""
    by_number: dict[str, list[MergedCertificate]] = defaultdict(list)
    for c in certs:
        by_number[c.number].append(c)
    dropped: set[int] = set()
    conflicts: list[Conflict] = []
    for number, group in by_number.items():
        if len({c.department for c in group}) < 2:
            continue
        owners = issuers(classify(number))
        issued = [c for c in group if c.department in owners]
        foreign = [c for c in group if owners and c.department not in owners]
        if not issued or not foreign:
            continue
        dropped.update(id(c) for c in foreign)
        chosen = issued[0]
        conflicts.append(
            Conflict(
                certificate=number,
                department=chosen.department,
                field="department",
                values=[
                    ConflictValue(source=source, value=f"{c.department.value}: {c.effective.value}")
                    for c in issued + foreign
                    for source in c.sources
                ],
                chosen_source=chosen.sources[0] if chosen.sources else chosen.department.value,
                reason="此编号由发证部门的数据决定，其他部门上报的同号记录不计 "
                "(the issuing department's data decide; another department's record of this number is ignored)",
            )
        )
    return [c for c in certs if id(c) not in dropped], conflicts


def _mark_subject(certs: list[MergedCertificate], query: Query, classification: Classification) -> None:
    """Which certificates the query is about. A certificate number asks about that certificate; an ID
    number asks about every certificate of that person."""
    by_person = bool(classification.names & {"id18", "id15"})
    for c in certs:
        about = c.number == query.number or (by_person and query.number in (c.holder_id_number, c.number[1:]))
        c.matched_by = "number" if about else "holder"


def _holder_check(certs: list[MergedCertificate], query: Query) -> None:
    """Set `name_matches` on each certificate: True / False, or None where nothing can be compared."""
    if not query.name and not query.id_number:
        return
    for c in certs:
        checks: list[bool] = []
        if query.name and c.holder_name:
            checks.append(normalise_name(query.name) == normalise_name(c.holder_name))
        if query.id_number and c.holder_id_number:
            checks.append(query.id_number == c.holder_id_number)
        c.name_matches = all(checks) if checks else None


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "?"


def _freshness_notes(results: list[SourceResult], today: date | None = None) -> list[str]:
    """What the answer rests on when that is not a fresh answer of every live source: a live source's last
    answer used because the source is unavailable now; an upload that holds a certificate which a newer
    live answer of the same department does not know; a department's uploaded records that are overdue (the
    next quarter has not arrived in time: what they are as of, and since when they are overdue; `today` in
    China time by default, as quarters are)."""
    notes: list[str] = []
    today = today or datetime.now(timezone(timedelta(hours=8))).date()
    records = [
        r for r in results if r.mode == Mode.RECORDS and r.outcome in (Outcome.FOUND, Outcome.NOT_FOUND) and r.upload
    ]
    # What the answer rests on: the departments whose records hold the certificate; where none does, every
    # department's "not found".
    resting = [r for r in records if r.outcome == Outcome.FOUND] or records
    overdue: dict[str, SourceResult] = {}
    for r in resting:
        if r.upload is not None and today >= r.upload.overdue_from:
            overdue.setdefault(r.department.value, r)
    if overdue:
        zh = "；".join(
            f"{DEPARTMENT_SHORT_NAMES.get(r.department, r.department.value)}截至 {r.upload.quarter}"
            f"（{r.upload.uploaded_at:%Y-%m-%d} 上报，下一季度自 {r.upload.overdue_from.isoformat()} 起逾期）"
            for r in overdue.values()
            if r.upload is not None
        )
        en = "; ".join(
            f"{r.department.value} as of {r.upload.quarter}, uploaded {r.upload.uploaded_at:%Y-%m-%d}, "
            f"next quarter overdue since {r.upload.overdue_from.isoformat()}"
            for r in overdue.values()
            if r.upload is not None
        )
        notes.append(f"上报数据逾期未更新：{zh} (overdue uploads: {en})")
    live = [r for r in results if r.mode in LIVE_MODES]
    stale = [r for r in live if r.stale and r.outcome in (Outcome.FOUND, Outcome.NOT_FOUND)]
    if stale:
        names = "、".join(f"{r.source}（{_when(r.fetched_at)}）" for r in stale)
        notes.append(f"以下数据源暂不可用，采用其上次的实时结果：{names} (unavailable live sources: their last answers are used)")
    for upload in results:
        if upload.mode != Mode.RECORDS or upload.outcome != Outcome.FOUND or upload.data_as_of is None:
            continue
        for r in live:
            if (
                r.department == upload.department
                and r.outcome == Outcome.NOT_FOUND
                and r.fetched_at is not None
                and r.fetched_at > upload.data_as_of
            ):
                notes.append(
                    f"{upload.source} 的上报数据（{_when(upload.data_as_of)}）有此证书，但更新的实时查询 {r.source}"
                    f"（{_when(r.fetched_at)}）未查到 (the upload holds it, but a newer live answer of {r.source} does not)"
                )
    return notes


def status_line(r: SourceResult) -> SourceStatus:
    return SourceStatus(
        source=r.source,
        department=r.department,
        mode=r.mode,
        outcome=r.outcome,
        found=len(r.certificates),
        error_kind=r.error_kind,
        message=r.message,
        elapsed_ms=round(r.elapsed_ms, 1),
        fetched_at=r.fetched_at,
        data_as_of=r.data_as_of,
        from_cache=r.from_cache,
        stale=r.stale,
        link=r.link,
    )


def build_answer(
    query: Query,
    classification: Classification,
    results: list[SourceResult],
    catalogue: RecognitionCatalogue,
    today: date,
    *,
    elapsed_ms: float = 0.0,
) -> Answer:
    certs, conflicts = merge_certificates(results, today)
    certs, claims = _issuer_decides(certs)
    conflicts += claims
    _mark_subject(certs, query, classification)
    _holder_check(certs, query)
    unavailable = [r for r in results if r.outcome == Outcome.UNAVAILABLE]
    answered = [r for r in results if r.outcome in (Outcome.FOUND, Outcome.NOT_FOUND)]
    manual = [r for r in results if r.outcome == Outcome.MANUAL]
    complete = not unavailable

    subject = [c for c in certs if c.matched_by == "number"]
    holders = [c for c in subject if c.name_matches is not False]
    # Never show a certificate whose recorded holder differs from the one the caller named.
    shown = [c for c in certs if c.name_matches is not False]
    notes: list[str] = []
    if subject and not holders:
        verdict = Verdict.NAME_MISMATCH
        # Say that the certificate exists, but not whose it is.
        shown = [c.model_copy(update={"holder_name": None, "holder_id_number": None}) for c in subject]
    elif holders:
        best = next((s for s in _VERDICT_ORDER if any(c.effective == s for c in holders)), None)
        verdict = _STATUS_VERDICT[best] if best else Verdict.INCONCLUSIVE
        if best is None:
            notes.append("证书状态不明 (the certificate's status is unknown)")
        if any(c.name_matches is None for c in holders) and (query.name or query.id_number):
            notes.append("部分数据源未记录持证人姓名，无法核对 (some sources record no holder name to compare)")
    else:
        verdict = Verdict.INCONCLUSIVE if unavailable or not answered else Verdict.NOT_FOUND
        if shown:
            notes.append(
                "未查到此编号的证书；以下为同一持证人的其他证书 "
                "(this number was not found; shown: other certificates of the same holder)"
            )

    notes.extend(_freshness_notes(results))
    if unavailable:
        names = "、".join(f"{r.source}({r.error_kind.value if r.error_kind else 'error'})" for r in unavailable)
        notes.append(f"以下数据源暂不可用：{names} (sources unavailable: the answer may be incomplete)")
    if manual and verdict in (Verdict.NOT_FOUND, Verdict.INCONCLUSIVE):
        notes.append("可前往部门公开查询网站人工核实 (a person can check the public sites linked below)")
    if classification.warnings:
        notes.extend(classification.warnings)
    reason = _VERDICT_TEXT[verdict] + ("；" + "；".join(notes) if notes else "")

    recognitions = [] if verdict == Verdict.NAME_MISMATCH else recognise_all(catalogue, shown, today)
    return Answer(
        query=QueryEcho(
            number=query.number,
            formats=classification.formats,
            warnings=classification.warnings,
            name_given=bool(query.name),
            id_number_given=bool(query.id_number),
        ),
        verdict=verdict,
        verdict_reason=reason,
        complete=complete,
        certificates=shown,
        sources=[status_line(r) for r in results],
        conflicts=conflicts if verdict != Verdict.NAME_MISMATCH else [],
        recognitions=recognitions,
        answered_at=datetime.now(UTC),
        elapsed_ms=round(elapsed_ms, 1),
    )
