"""Validating uploaded rows: cells in, record tuples (see `RECORD_COLUMNS`) and problems out.

    validator = RowValidator(department_config, header_map, header_cells)
    records, problems = validator.validate_rows([(2, ["T1101...", "张三", ...]), (3, [...])])

This is the importer's hot loop (a million rows a file), so it validates a chunk of rows column by column:
the common case of each rule runs as `map`/`zip` over a column in C, and only the rows that fail a fast
check take the slow path, which gives the reason. Every fast path is an exact subset of its slow path: a
certificate number made only of characters `numbers.parse_number` accepts (so already normalised), an
18-character ID number with a good check character and birth date, a date or status already seen in the
file. Anything else goes through `aggregator.numbers` and `fields`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from itertools import repeat
from operator import eq, itemgetter, lt, mod, not_
from typing import Any

from aggregator.config import DepartmentConfig
from aggregator.models import CertKind, CertStatus, Department
from aggregator.numbers import (
    MAX_INPUT_LENGTH,
    PROVINCE_ABBREVIATIONS,
    NumberError,
    classify,
    foreign_format,
    is_valid_id_number,
    normalise,
    parse_number,
)
from aggregator.records import fields

#: The columns of a validated record, in the order record tuples hold them. Dates are ISO text.
RECORD_COLUMNS: tuple[str, ...] = (
    "number",
    "holder_id_number",
    "kind",
    "issuer",
    "holder_name",
    "gender",
    "category",
    "operation_item",
    "items",
    "level",
    "issued_on",
    "valid_from",
    "valid_until",
    "next_review_on",
    "status",
    "status_text",
    "row_number",
)
DATE_COLUMNS: frozenset[str] = frozenset(fields.DATE_FIELDS)
MAX_TEXT = 500  # a longer cell is a misaligned row or garbage, not data
CACHE_MOST = 200_000  # values remembered per cache of a file: bounded memory on a million distinct spellings

Problem = tuple[int, str | None, str | None, str]  # line, column, value, reason (cheap to collect)

# Numbers of the shapes a department itself issues need no classification (the fast path of
# `numbers.foreign_format` for the million-row files); any other number is classified.
_OWN_SHAPES: dict[Department, re.Pattern[str]] = {
    Department.MEM: re.compile(r"T?\d{17}[\dX]|\d{15}"),
    Department.SAMR: re.compile(r"\d{17}[\dX]|\d{15}"),
    Department.MOHURD: re.compile(rf"[{PROVINCE_ABBREVIATIONS}][A-Z]\d{{12}}"),
    Department.MOHRSS: re.compile(r"[YS]\d{21}|\d{16}"),
}
_FAST_NUMBER = re.compile(rf"[0-9A-Z{PROVINCE_ABBREVIATIONS}]{{6,{MAX_INPUT_LENGTH}}}")
_FAST_ID = re.compile(r"[0-9]{17}[0-9X]")
_ID_CHECK = "10X98765432"
# Lone surrogates are bytes the file's encoding could not decode (read with surrogateescape); control
# characters other than tab and newlines do not belong in a certificate record (PostgreSQL refuses NUL).
_BAD_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\udc80-\udcff]")
_SURROGATE = re.compile("[\udc80-\udcff]")
_TOO_LONG = f"内容过长（超过 {MAX_TEXT} 字） (longer than {MAX_TEXT} characters)"
_DATE_ORDER = ("issued_on", "valid_from", "valid_until", "next_review_on")
_VALID = CertStatus.VALID.value
_BIRTH_DATES: dict[str, bool] = {}
_FIRST_17 = itemgetter(slice(0, 17))
_BIRTH = itemgetter(slice(6, 14))
_LAST = itemgetter(17)
# The GB 11643 weights are 2**17 .. 2**1 mod 11, and 13 = 2 (mod 11), so the weighted sum of the first 17
# digits is 2 * int(first_17, 13) (mod 11): one C-level int() per ID instead of 17 multiplications.
_CHECK_BY_REMAINDER = "".join(_ID_CHECK[2 * r % 11] for r in range(11))  # int(first 17, 13) % 11 -> check
_GOOD_ID = "110105199003071239"  # a stand-in with a valid check character for values that are not 18 digits
_EMPTY_TO_NONE = {"": None}.get  # used as map(_EMPTY_TO_NONE, values, values): "" -> None, others as they are


@dataclass
class Chunk:
    """Up to `size` rows of a file: the valid ones as record tuples, and what was wrong with the others.

    From the columnar lane (`columnar`) the valid rows it checked come as `frame`, a polars DataFrame of
    `RECORD_COLUMNS`, and `records` holds only those of its rows that went through the row-by-row rules:
    `all_records()` gives them all as tuples, in line order (`frame_rows()` as one frame)."""

    records: list[tuple[Any, ...]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rejected: list[tuple[int, list[Any]]] = field(default_factory=list)  # (line, cells as read)
    rows: int = 0  # data rows read (blank rows are not counted)
    bytes_done: int = 0
    frame: Any = None  # polars.DataFrame | None

    @property
    def valid(self) -> int:
        """How many valid rows (records to store) it holds."""
        return len(self.records) + (self.frame.height if self.frame is not None else 0)

    def all_records(self) -> list[tuple[Any, ...]]:
        if self.frame is None:
            return self.records
        # column by column into tuples: cheaper than DataFrame.rows()
        tuples = list(zip(*(series.to_list() for series in self.frame.get_columns()), strict=True))
        if not self.records:
            return tuples
        return sorted(tuples + self.records, key=itemgetter(-1))  # row_number last: back in line order

    def frame_rows(self) -> Any:
        """Every valid row as one polars DataFrame of `RECORD_COLUMNS`, in line order."""
        import polars as pl

        schema = {name: pl.Int64 if name == "row_number" else pl.String for name in RECORD_COLUMNS}
        parts = [self.frame] if self.frame is not None else []
        if self.records:
            parts.append(pl.DataFrame(self.records, schema=schema, orient="row"))
        if not parts:
            return pl.DataFrame(schema=schema)
        return pl.concat(parts, how="vertical_relaxed").sort("row_number") if len(parts) > 1 else parts[0]


def _birth_date_ok(yyyymmdd: str) -> bool:
    ok = _BIRTH_DATES.get(yyyymmdd)
    if ok is None:
        try:
            date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]))
            ok = True
        except ValueError:
            ok = False
        _BIRTH_DATES[yyyymmdd] = ok  # at most 36,525 a century
    return ok


def id_ok(value: str) -> bool:
    """GB 11643 for an already-normalised 18-character ID number: the fast path of
    `numbers.is_valid_id_number` (True here implies True there; False sends the caller to the slow path).

    The weights 7,9,10,5,8,4,2,1,6,3,7,9,10,5,8,4,2 are 2**17..2**1 mod 11, and 13 = 2 (mod 11), so the
    weighted sum is 2 * (the first 17 digits read in base 13) mod 11: one C-level `int` call."""
    return (
        len(value) == 18
        and _FAST_ID.match(value) is not None
        and _ID_CHECK[2 * int(value[:17], 13) % 11] == value[17]
        and _birth_date_ok(value[6:14])
    )


def _positions(values: list[Any], target: Any) -> list[int]:
    """`[k for k, v in enumerate(values) if v == target]` in C-level `list.index` steps (cheap when few are)."""
    out: list[int] = []
    index = values.index
    k = -1
    try:
        while True:
            k = index(target, k + 1)
            out.append(k)
    except ValueError:
        return out


def _ids_not_ok(ids: list[str]) -> list[int]:
    """A superset (in order) of the positions of the values that `id_ok` refuses, found with C-level maps
    (no Python call per cell): every value not listed passes `id_ok`. Empty values are listed, and so is a
    birth date not yet in `_BIRTH_DATES` (the caller's `id_ok` then caches it).

    No list of match objects is kept: the cyclic GC tracks them, and holding 5,000 of them makes it run
    more often."""
    odd: list[int] = []
    if not all(map(_FAST_ID.fullmatch, ids)):  # 18 characters, digits and X: int() below cannot fail
        odd = _positions(list(map(not_, map(_FAST_ID.fullmatch, ids))), True)
        ids = list(ids)
        for k in odd:
            ids[k] = _GOOD_ID
    checked = list(
        map(
            eq,
            map(_CHECK_BY_REMAINDER.__getitem__, map(mod, map(int, map(_FIRST_17, ids), repeat(13)), repeat(11))),
            map(_LAST, ids),
        )
    )
    born = list(map(_BIRTH_DATES.get, map(_BIRTH, ids)))
    if False in checked or not all(born):
        odd = sorted({*odd, *_positions(checked, False), *_positions(born, None), *_positions(born, False)})
    return odd


def _id_reason(value: str) -> str:
    warnings = classify(value).warnings
    if warnings:
        return warnings[0]
    return f"不是有效的身份证号：{value} (not a valid ID number: {value})"


def _none_if_empty(values: list[str]) -> list[str | None]:
    """`[v or None for v in values]` for text cells (`values` itself when none is empty)."""
    if "" not in values:
        return values  # type: ignore[return-value]
    return list(map(_EMPTY_TO_NONE, values, values))


def _nonblank(cells: Iterable[Any]) -> bool:
    return any(c not in ("", None) for c in cells)


class RowValidator:
    """Validates the data rows of one upload against its department's rules and its header."""

    def __init__(
        self,
        department: DepartmentConfig,
        header: fields.HeaderMap,
        header_cells: list[str],
        encoding: str | None = None,
        *,
        text_rows: bool = False,
    ) -> None:
        self.dept = Department(department.id)
        self.labels = header.labels
        self.columns = header.columns
        self.header_cells = header_cells
        self.width = len(header_cells)
        self.encoding = encoding or "utf-8"
        self.text_rows = text_rows  # every cell is a str (CSV): no spreadsheet conversions needed
        self.kind = CertKind(department.kind).value
        self.statuses = fields.status_table(department.status_map)
        self.has_id_column = fields.ID_NUMBER in header.columns
        # Caches of values seen in this file, successes only: text -> canonical value ("" for empty).
        self._dates: dict[Any, str] = {"": ""}
        self._genders: dict[str, str] = {"": ""}
        self._status: dict[str, str] = {"": _VALID}
        self._identifiers = {header.columns[n] for n in (fields.NUMBER, fields.ID_NUMBER) if n in header.columns}
        self._date_columns = {header.columns[n] for n in DATE_COLUMNS if n in header.columns}

    # --- rows ------------------------------------------------------------------------------------

    def validate(self, line: int, cells: list[Any]) -> tuple[tuple[Any, ...] | None, list[Problem]]:
        """One row: its record, or None and its problems."""
        records, problems, _rejected = self.validate_rows([line], [cells])
        return (records[0] if records else None), problems

    def validate_rows(
        self, lines: list[int], rows: list[list[Any]]
    ) -> tuple[list[tuple[Any, ...]], list[Problem], list[int]]:
        """Records for the valid rows (in order), every problem of the others (by line), and the positions
        in `rows` of the rejected ones."""
        if not rows:
            return [], [], []
        bad: dict[int, list[Problem]] = {}  # row position -> its problems
        table, long_rows = self._rectangular(lines, rows, bad)
        blanked = set(bad)  # rows _rectangular replaced by blanks: their problems are already said
        count = len(table)
        # (not zip(*table): its 5,000 list iterators, alive at once, would set off the cyclic GC several times)
        columns = [tuple(map(itemgetter(i), table)) for i in range(self.width)]  # tuples: `_cached` strips them
        empty = ("",) * count

        def column(name: str) -> tuple[Any, ...]:
            index = self.columns.get(name)
            return columns[index] if index is not None else empty

        def flag(position: int, column_name: str | None, value: str | None, reason: str) -> None:
            if position not in blanked:  # not "name is empty" about a blank stand-in for a row with a bad cell
                bad.setdefault(position, []).append((lines[position], column_name, value, reason))

        numbers = self._numbers(column(fields.NUMBER), flag)
        self._foreign_numbers(numbers, flag)
        names = list(map(str.strip, column(fields.NAME)))
        if not all(names):
            for k in [k for k, v in enumerate(names) if not v]:
                flag(k, self.labels[fields.NAME], None, "姓名为空 (name is empty)")
        ids = self._id_numbers(column(fields.ID_NUMBER), numbers, flag)
        genders = self._cached(column("gender"), self._genders, self._gender, "gender", flag)
        categories = list(map(str.strip, column("category")))
        items = list(map(str.strip, column("operation_item")))
        if "occupation" in self.columns:
            for k, occupation in enumerate(map(str.strip, column("occupation"))):
                if occupation and not categories[k]:
                    categories[k] = occupation
                elif occupation and not items[k]:
                    items[k] = occupation
        levels = list(map(str.strip, column("level")))
        issuers = list(map(str.strip, column("issuer")))
        dates = [self._dates_of(name, column(name), flag) for name in _DATE_ORDER]
        valid_from, valid_until = dates[1], dates[2]
        early = []  # an empty valid_until is "less" than any valid_from: the listcomp below sorts those out
        if any(map(lt, valid_until, valid_from)):
            early = [k for k, (a, b) in enumerate(zip(valid_from, valid_until, strict=True)) if a and b and b < a]
        for k in early:
            flag(
                k,
                self.labels["valid_until"],
                valid_until[k],
                f"有效期至 {valid_until[k]} 早于有效期起 {valid_from[k]} "
                f"(valid_until {valid_until[k]} is before valid_from {valid_from[k]})",
            )
        status_texts = list(map(str.strip, column("status")))
        statuses = self._cached(status_texts, self._status, self._status_of, "status", flag)
        self._check_lengths(long_rows, (names, categories, items, levels, issuers), flag)

        kinds: Iterable[str] = repeat(self.kind, count)
        if self.dept is Department.MOHRSS:  # 16-digit numbers are the older qualification certificates
            qualification = CertKind.MOHRSS_QUALIFICATION.value
            kinds = [qualification if n and "mohrss_qual" in classify(n).names else self.kind for n in numbers]
        item_lists: Iterable[str | None] = repeat(None, count)
        if self.dept is Department.SAMR:
            item_lists = [json.dumps(fields.split_items(v), ensure_ascii=False) if v else None for v in items]
        records = list(
            zip(
                numbers,
                ids,
                kinds,
                _none_if_empty(issuers),
                names,
                _none_if_empty(genders),
                _none_if_empty(categories),
                _none_if_empty(items),
                item_lists,
                _none_if_empty(levels),
                *(_none_if_empty(d) for d in dates),
                statuses,
                _none_if_empty(status_texts),
                lines,
                strict=True,
            )
        )
        if not bad:
            return records, [], []
        rejected = sorted(bad)
        problems = [p for k in rejected for p in bad[k]]
        return [r for k, r in enumerate(records) if k not in bad], problems, rejected

    def _rectangular(
        self, lines: list[int], rows: list[list[Any]], bad: dict[int, list[Problem]]
    ) -> tuple[list[list[Any]], Iterable[int]]:
        """Every row exactly as wide as the header and (spreadsheets) as text; rows with undecodable bytes
        or control characters get problems and an empty stand-in. Also: the rows that may hold an overlong
        cell (CSV: those longer than `MAX_TEXT` in all)."""
        width = self.width
        blank = [""] * width
        table = rows
        if self.text_rows:  # the common case, checked with C-level maps over the whole chunk
            lengths = list(map(len, rows))
            odd = [k for k, n in enumerate(lengths) if n != width] if lengths.count(width) != len(lengths) else []
            joined = list(map(",".join, rows))
            # isprintable() is False for every character _BAD_TEXT finds (controls, surrogates) and for a few
            # harmless ones (tabs, newlines, unusual spaces): only then is each row searched
            suspects = []
            if not ",".join(joined).isprintable():
                suspects = [k for k, m in enumerate(map(_BAD_TEXT.search, joined)) if m]
            row_lengths = list(map(len, joined))
            long_rows: Iterable[int] = []
            if max(row_lengths) > MAX_TEXT:
                long_rows = [k for k, n in enumerate(row_lengths) if n > MAX_TEXT]
        else:
            odd = [k for k, cells in enumerate(rows) if len(cells) != width]
            suspects = list(range(len(rows)))
            long_rows = range(len(rows))
        if odd or suspects:
            table = list(rows)
        for k in odd:
            cells = rows[k]
            if len(cells) > width and _nonblank(cells[width:]):
                bad.setdefault(k, []).append(self._misaligned(lines[k], cells))
            table[k] = (list(cells) + blank)[:width]
        for k in suspects:
            problems: list[Problem] = []
            cells = table[k]
            if not self.text_rows:
                cells = table[k] = self._text_cells(lines[k], cells, problems)
            if any(c.__class__ is str and _BAD_TEXT.search(c) for c in cells):
                problems.extend(self._bad_text(lines[k], cells))
            if problems:
                bad.setdefault(k, []).extend(problems)
        for k in bad:
            table[k] = blank
        return table, long_rows

    # --- columns ---------------------------------------------------------------------------------

    def _numbers(self, values: tuple[str, ...], flag: Callable[..., None]) -> list[str | None]:
        numbers: list[str | None] = list(map(str.strip, values))
        if all(map(_FAST_NUMBER.fullmatch, numbers)):  # type: ignore[arg-type]
            return numbers
        for k in _positions(list(map(not_, map(_FAST_NUMBER.fullmatch, numbers))), True):  # type: ignore[arg-type]
            raw = numbers[k]
            numbers[k] = None
            if not raw:
                flag(k, self.labels[fields.NUMBER], None, "证书编号为空 (certificate number is empty)")
                continue
            try:
                numbers[k] = parse_number(raw).number
            except NumberError as e:
                flag(k, self.labels[fields.NUMBER], raw, e.reason)
        return numbers

    def _foreign_numbers(self, numbers: list[str | None], flag: Callable[..., None]) -> None:
        """A department uploads only numbers it can issue: a number of another department's format (a MEM
        T+ID in a SAMR file) would otherwise decide that department's certificate."""
        own = _OWN_SHAPES[self.dept].fullmatch
        if all(map(own, filter(None, numbers))):  # type: ignore[arg-type]
            return
        for k, number in enumerate(numbers):
            if number and not own(number) and (reason := foreign_format(number, self.dept)):
                flag(k, self.labels[fields.NUMBER], number, reason)
                numbers[k] = None

    def _id_numbers(
        self, values: tuple[str, ...], numbers: list[str | None], flag: Callable[..., None]
    ) -> list[str | None]:
        ids: list[str | None] = list(map(str.strip, values))
        suspects = _ids_not_ok(ids)  # type: ignore[arg-type]
        if suspects:
            for k in [k for k in suspects if ids[k] and not id_ok(ids[k])]:  # type: ignore[arg-type]
                raw: str = ids[k]  # type: ignore[assignment]
                normal = normalise(raw)
                if id_ok(normal) or is_valid_id_number(normal):
                    ids[k] = normal
                else:
                    ids[k] = None
                    flag(k, self.labels[fields.ID_NUMBER], raw, _id_reason(normal))
        if not all(ids):
            ids = [v or None for v in ids]
        # MEM numbers are T + the holder's ID number, SAMR numbers the ID number itself: fill a missing ID
        # column from them, and (MEM) report a number whose ID part contradicts the ID column.
        if self.dept is Department.MEM:
            if all(map(eq, numbers, map("T".__add__, ids))) if all(ids) else False:  # type: ignore[arg-type]
                return ids  # every number is T + the ID column: nothing to fill or contradict
            embedded = [n[1:] if n and n[0] == "T" else None for n in numbers]
        elif self.dept is Department.SAMR:
            embedded = list(numbers)
        else:
            return ids
        for k in [k for k, (e, i) in enumerate(zip(embedded, ids, strict=True)) if e and e != i]:
            inner: str = embedded[k]  # type: ignore[assignment]
            if not id_ok(inner):
                continue
            if not self.has_id_column:
                ids[k] = inner
            elif ids[k] is not None and self.dept is Department.MEM:
                flag(
                    k,
                    self.labels[fields.NUMBER],
                    numbers[k],
                    f"证书编号（T+身份证号）与身份证号 {ids[k]} 不一致 "
                    f"(the number is T + an ID number that differs from the ID column {ids[k]})",
                )
        return ids

    def _dates_of(self, name: str, values: tuple[Any, ...], flag: Callable[..., None]) -> list[str]:
        """ISO dates ("" for empty) of one date column."""
        if self.text_rows or all(v.__class__ is str for v in values):
            return self._cached(list(map(str.strip, values)), self._dates, fields.parse_date, name, flag, iso=True)
        out: list[str] = []
        for k, value in enumerate(values):
            if value.__class__ is str:
                out.extend(self._cached([value.strip()], self._dates, fields.parse_date, name, flag, iso=True, at=k))
                continue
            try:
                parsed = fields.parse_date(value)
                out.append(parsed.isoformat() if parsed else "")
            except fields.FieldError as e:
                flag(k, self.labels[name], str(value), e.reason)
                out.append("")
        return out

    def _cached(
        self,
        values: Iterable[str],
        cache: dict[Any, str],
        convert: Callable[[str], Any],
        name: str,
        flag: Callable[..., None],
        *,
        iso: bool = False,
        at: int = 0,
    ) -> list[str]:
        """`values` mapped through `cache`; misses go through `convert` (which raises `FieldError`) and
        successes are remembered. Failed cells become "" and are flagged."""
        values = values if isinstance(values, list) else list(map(str.strip, values))
        out: list[str | None] = list(map(cache.get, values))
        if None not in out:
            return out  # type: ignore[return-value]
        for k in _positions(out, None):
            raw = values[k]
            try:
                converted = convert(raw)
            except fields.FieldError as e:
                flag(at + k, self.labels[name], raw, e.reason)
                out[k] = ""
                continue
            if iso:
                converted = converted.isoformat() if converted else ""
            if len(cache) > CACHE_MOST:
                seed = cache[""]
                cache.clear()
                cache[""] = seed
            cache[raw] = out[k] = converted or ""
        return out  # type: ignore[return-value]

    def _gender(self, text: str) -> str:
        return fields.parse_gender(text) or ""

    def _status_of(self, text: str) -> str:
        return fields.map_status(text, self.statuses).value

    def _check_lengths(
        self, long_rows: Iterable[int], columns: tuple[list[str], ...], flag: Callable[..., None]
    ) -> None:
        names = (fields.NAME, "category", "operation_item", "level", "issuer")
        for k in long_rows:
            for name, values in zip(names, columns, strict=True):
                value = values[k]
                if value and len(value) > MAX_TEXT:
                    flag(k, self.labels.get(name, fields.FIELD_LABELS[name]), value[:60] + "…", _TOO_LONG)

    # --- cells -----------------------------------------------------------------------------------

    def _text_cells(self, line: int, cells: list[Any], problems: list[Problem]) -> list[Any]:
        """A spreadsheet row as CSV rows are read: text, except in date columns (kept for `parse_date`);
        identifiers stored as numbers that lost digits, or as dates, are problems."""
        out: list[Any] = []
        for i, value in enumerate(cells):
            if value.__class__ is str:
                out.append(value)
            elif value is None:
                out.append("")
            elif i in self._date_columns:
                out.append(value)
            else:
                try:
                    out.append(fields.cell_text(value, identifier=i in self._identifiers) or "")
                except fields.FieldError as e:
                    problems.append((line, self.column_name(i), str(value), e.reason))
                    out.append("")
        return out

    def column_name(self, index: int) -> str:
        """The header of a column as written in the file (or #n for a cell beyond the header)."""
        return self.header_cells[index] if index < self.width and self.header_cells[index] else f"#{index + 1}"

    def _bad_text(self, line: int, cells: list[Any]) -> list[Problem]:
        problems: list[Problem] = []
        for i, value in enumerate(cells):
            if value.__class__ is not str or not _BAD_TEXT.search(value):
                continue
            shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            if _SURROGATE.search(value):
                raw = "".join(f"\\x{ord(c) - 0xDC00:02x}" for c in value if "\udc80" <= c <= "\udcff")[:40]
                reason = (
                    f"该行含有不能按 {self.encoding} 解码的字节 {raw}（文件混用了编码？） "
                    f"(bytes {raw} are not valid {self.encoding}: the file mixes encodings)"
                )
            else:
                reason = "含有控制字符 (contains control characters)"
            problems.append((line, self.column_name(i), shown, reason))
        return problems

    def _misaligned(self, line: int, cells: list[Any]) -> Problem:
        used = max(i for i, c in enumerate(cells) if c not in ("", None)) + 1
        return (
            line,
            None,
            None,
            f"该行有 {used} 列，多于表头的 {self.width} 列（分隔符或引号错位？） "
            f"(row has {used} cells but the header has {self.width}: misaligned row)",
        )
