"""Batch verification: up to 1,000 {number, name} pairs looked up together, JSON or CSV in and out.

    pairs = parse_json_pairs(body, limit=1000)      # or parse_csv_pairs(raw_bytes, limit=1000)
    rows = await verify_all(gateway, pairs, role, concurrency=20, deadline_s=6.0)
    csv_text = rows_to_csv(rows)                    # formula injection neutralised

Every pair is answered, whatever happens to the others: a number that cannot be valid is reported on its
row before any source is asked, and a lookup that fails reports its error on its row. At most
`concurrency` lookups of one batch run at once.

Names are a limited resource (`namebudget.py`): `admit` decides, for the valid rows with a name, which names
are checked; a row whose name is not is looked up without it, and says so (`name_check: not_checked`,
`name_matches` empty, the reason at the end of `verdict_reason`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aggregator.errors import describe
from aggregator.models import Answer, NameCheck
from aggregator.numbers import NumberError, parse_number
from aggregator.render import neutralise
from aggregator.web.masking import mask_answer, overall_name_match
from aggregator.web.namebudget import name_outcome
from aggregator.web.problems import BadRequest, Unprocessable
from aggregator.web.roles import Role

MAX_FIELD = 64
_NUMBER_HEADERS = {"number", "certificate_number", "证书编号", "证号", "证书号", "编号"}
_NAME_HEADERS = {"name", "holder_name", "姓名", "持证人", "持证人姓名"}
_ID_HEADERS = {"id_number", "身份证号", "身份证号码", "公民身份号码"}
CSV_COLUMNS = (
    "row",
    "number",
    "name",
    "verdict",
    "verdict_reason",
    "name_matches",
    "certificates",
    "departments",
    "valid_until",
    "complete",
    "error",
    "name_check",
)
# For each (normalised number, name): None when the name may be checked, else why it is not.
Admit = Callable[[Sequence[tuple[str, str]]], Awaitable[Sequence[str | None]]]


class PairIn(BaseModel):
    """One pair to verify: the certificate number and, usually, the holder's name."""

    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=1, max_length=MAX_FIELD, description="证书编号 (as printed; normalised)")
    name: str | None = Field(None, max_length=MAX_FIELD, description="持证人姓名, checked against the records")
    id_number: str | None = Field(None, max_length=MAX_FIELD, description="身份证号, for sources queried by ID")


class VerificationRequest(BaseModel):
    """A batch of pairs (JSON). The same can be sent as CSV: columns number,name[,id_number]."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[PairIn] = Field(min_length=1, max_length=1000)
    purpose: str | None = Field(None, max_length=500, description="Why (required for regulators)")


@dataclass
class Pair:
    row: int  # 1-based position (CSV: the line in the file)
    number: str
    name: str | None = None
    id_number: str | None = None


@dataclass
class RowResult:
    pair: Pair
    answer: Answer | None = None
    view: dict[str, Any] | None = None  # the answer as the caller's role may see it
    error: dict[str, Any] | None = None  # problem members when the row could not be answered
    looked_up: bool = False  # a lookup ran (so it is audited)
    number_norm: str | None = None
    name_check: NameCheck | None = None  # what became of the name (None: no name, or not looked up)
    refused: str | None = None  # why the name was not checked

    @property
    def name_matches(self) -> bool | None:
        return overall_name_match(self.answer) if self.answer else None

    def as_json(self) -> dict[str, Any]:
        return {
            "row": self.pair.row,
            "number": self.number_norm or self.pair.number,
            "name_given": bool(self.pair.name),
            "verdict": self.answer.verdict.value if self.answer else None,
            "name_matches": self.name_matches,
            "name_check": self.name_check.value if self.name_check else None,
            "answer": self.view,
            "error": self.error,
        }


def _invalid(zh: str, en: str, errors: Any = None) -> Unprocessable:
    return Unprocessable(zh, en, extra={"errors": errors} if errors else None)


def parse_json_pairs(body: bytes, *, limit: int) -> tuple[list[Pair], str | None]:
    """Pairs (and the purpose, if given) from a JSON body: {"pairs": [{"number", "name"}...], "purpose"}."""
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest("请求体不是有效的 JSON", f"the body is not valid JSON: {e}") from e
    if isinstance(data, list):
        data = {"pairs": data}
    try:
        req = VerificationRequest.model_validate(data)
    except ValidationError as e:
        errors = [{"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"]} for err in e.errors()]
        raise _invalid("请求内容不符合要求", "the request does not match the schema", errors) from e
    if len(req.pairs) > limit:
        raise _invalid(f"一次最多核验 {limit} 条", f"at most {limit} pairs per request")
    pairs = [Pair(i, p.number, p.name or None, p.id_number or None) for i, p in enumerate(req.pairs, start=1)]
    return pairs, req.purpose


def _decode(raw: bytes) -> str:
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    raise BadRequest("CSV 不是 UTF-8 或 GB18030 编码", "the CSV is not UTF-8 or GB18030 text")


def _cell(cells: list[str], index: int) -> str | None:
    return cells[index] if 0 <= index < len(cells) and cells[index] else None


def parse_csv_pairs(raw: bytes, *, limit: int) -> list[Pair]:
    """Pairs from CSV: a header row (number/证书编号, name/姓名, id_number/身份证号) or bare number,name rows."""
    text = _decode(raw)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise BadRequest("CSV 格式有误", f"malformed CSV: {e}") from e
    return _pairs_of(enumerate(rows, start=1), limit=limit)


def _cell_text(value: Any) -> str:
    """A workbook cell as the text a person typed: 12345.0 as '12345', a date as 2026-01-02."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        return str(value.isoformat())[:10]
    return str(value)


def parse_workbook_pairs(path: Any, *, limit: int) -> list[Pair]:
    """Pairs from an XLSX/XLS workbook's first visible sheet, laid out as the CSV is. Read by the importer's
    defensive reader (`records.importer.open_table`: a child process with memory and CPU limits that checks
    the zip first), never loaded in this process; what it refuses is `UnreadableFile` (422, the one table)."""
    from aggregator.records.importer import open_table

    source = open_table(path, ["utf-8-sig", "gb18030"])
    try:
        rows = ((line, [_cell_text(c) for c in cells]) for line, cells in source.rows())
        return _pairs_of(rows, limit=limit)
    finally:
        close = getattr(getattr(source, "_reader", None), "close", None)
        if close is not None:
            close()


def is_workbook(head: bytes) -> bool:
    """Whether a file starts as a workbook does (zip: XLSX; OLE: XLS)."""
    return head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0"))


def _pairs_of(rows: Any, *, limit: int) -> list[Pair]:
    columns = {"number": 0, "name": 1, "id_number": 2}
    pairs: list[Pair] = []
    header_seen = False
    for line, row in rows:
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if not header_seen and not pairs:
            header_seen = True
            lowered = [c.lower().lstrip("\ufeff") for c in cells]
            found = {}
            for i, c in enumerate(lowered):
                for key, names in (("number", _NUMBER_HEADERS), ("name", _NAME_HEADERS), ("id_number", _ID_HEADERS)):
                    if c in names and key not in found:
                        found[key] = i
            if found:
                if "number" not in found:
                    raise _invalid("CSV 表头缺少证书编号列", "the CSV header has no number / 证书编号 column")
                columns = {k: found.get(k, -1) for k in ("number", "name", "id_number")}
                continue

        number, name, id_number = (_cell(cells, columns[k]) for k in ("number", "name", "id_number"))
        if not number:
            raise _invalid(f"第 {line} 行缺少证书编号", f"line {line}: no certificate number")
        for value in (number, name, id_number):
            if value and len(value) > MAX_FIELD:
                raise _invalid(
                    f"第 {line} 行有超过 {MAX_FIELD} 字的内容", f"line {line}: a cell is over {MAX_FIELD} characters"
                )
        pairs.append(Pair(line, number, name, id_number))
        if len(pairs) > limit:
            raise _invalid(f"一次最多核验 {limit} 条", f"at most {limit} pairs per request")
    if not pairs:
        raise _invalid("CSV 中没有数据行", "the CSV has no rows")
    return pairs


def _problem_members(exc: BaseException) -> dict[str, Any]:
    err = describe(exc)
    return {"status": err.status, "title": err.title, "detail": err.text, "detail_zh": err.zh, "detail_en": err.en}


async def verify_all(
    gateway: Any,
    pairs: Sequence[Pair],
    role: Role,
    *,
    concurrency: int,
    deadline_s: float | None,
    admit: Admit | None = None,
) -> list[RowResult]:
    """Look every pair up (valid numbers only, at most `concurrency` at once), one result per pair. `admit`
    (default: every name) decides which names are checked, before anything is looked up."""
    results = [RowResult(p) for p in pairs]
    todo: list[RowResult] = []
    for r in results:
        try:
            r.number_norm = parse_number(r.pair.number).number
            if r.pair.id_number:
                parse_number(r.pair.id_number)
        except NumberError as e:
            r.error = _problem_members(e)
            continue
        todo.append(r)

    named = [r for r in todo if r.pair.name and r.pair.name.strip()]
    if named and admit is not None:
        refusals = await admit([(r.number_norm or r.pair.number, r.pair.name or "") for r in named])
        for r, refused in zip(named, refusals, strict=True):
            r.refused = refused

    gate = asyncio.Semaphore(concurrency)

    async def one(r: RowResult) -> None:
        name = r.pair.name if r.pair.name and r.pair.name.strip() else None
        async with gate:
            try:
                r.answer = await gateway.lookup(
                    r.pair.number,
                    name=name if r.refused is None else None,
                    id_number=r.pair.id_number,
                    deadline_s=deadline_s,
                )
            except Exception as e:  # noqa: BLE001 - one failing pair never fails the batch
                r.error = _problem_members(e)
                return
            r.looked_up = True
            if name is not None:
                r.answer = name_outcome(r.answer, name, r.refused)
                r.name_check = r.answer.query.name_check
            typed = {t for t in (r.pair.number, r.pair.id_number) if t}
            r.view = mask_answer(r.answer, role, typed)

    await asyncio.gather(*(one(r) for r in todo))
    return results


def summary(rows: Sequence[RowResult]) -> dict[str, int]:
    counts = Counter(r.answer.verdict.value if r.answer else "error" for r in rows)
    return dict(sorted(counts.items()))



def _yes_no(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def row_cells(r: RowResult) -> list[Any]:
    view = r.view or {}
    certs = view.get("certificates") or []
    return [
        r.pair.row,
        r.number_norm or r.pair.number,
        r.pair.name or "",
        r.answer.verdict.value if r.answer else "error",
        r.answer.verdict_reason if r.answer else "",
        _yes_no(r.name_matches),
        ";".join(str(c.get("number", "")) for c in certs),
        ";".join(sorted({str(c.get("department", "")) for c in certs})),
        ";".join(str(c.get("valid_until") or "") for c in certs),
        _yes_no(r.answer.complete) if r.answer else "",
        (r.error or {}).get("detail", ""),
        r.name_check.value if r.name_check else "",
    ]


def rows_to_csv(rows: Sequence[RowResult]) -> str:
    """The results as CSV (UTF-8 with BOM for spreadsheet programs), every cell neutralised."""
    buf = io.StringIO()
    buf.write("\ufeff")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([neutralise(c) for c in row_cells(r)])
    return buf.getvalue()
