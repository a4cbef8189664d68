"""An employer's roster file read into members: CSV (UTF-8 or GB18030) or a workbook, up to 100,000 rows.

    parsed = read_roster_file(path)                 # RosterFile: members, problems, duplicates, counts
    parsed = parse_members([{"number": ..., "name": ...}, ...])   # the same checks for JSON members
    if parsed.problems: ...                         # line, column, value, reason (records.report.RowProblem)

Columns (Chinese or English headers, compared as the department uploads compare theirs: NFKC, case, spaces):
证书编号 and 姓名 required; 身份证号, 工号/员工编号 (the employer's own reference) and 部门/班组 optional.
A member without a reference is known by its line: "L<line>". Numbers go through `numbers.parse_number` (the
roster keeps them normalised); an ID number must have a good check character.

A row is a problem (line, column as written, value, reason) when a required cell is missing or a cell cannot
be what its column says; duplicates are problems of the later row naming the first: the same reference twice,
or the same certificate number with the same name twice. Workbooks are read by the importer's defensive
reader (a child process under memory and CPU limits, `records.importer.open_table`); a file with more than
`MAX_MEMBERS` data rows is refused (`RosterTooLarge`) as soon as the reader reaches row `MAX_MEMBERS + 1`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator.numbers import NumberError, classify, parse_number
from aggregator.records.fields import COMMON_ALIASES, FieldError, cell_text, normalise_header
from aggregator.records.report import MAX_KEPT_PROBLEMS, RowProblem, UnreadableFile

MAX_MEMBERS = 100_000
MAX_NAME = 64
MAX_REF = 64
MAX_TEAM = 200
HEADER_SEARCH_ROWS = 10
ENCODINGS = ["utf-8", "gb18030"]

NUMBER, NAME, ID_NUMBER, REF, TEAM = "number", "name", "id_number", "ref", "team"
FIELDS = (NUMBER, NAME, ID_NUMBER, REF, TEAM)
REQUIRED = (NUMBER, NAME)
#: The column names a roster file may use for each field (compared after `normalise_header`).
ALIASES: dict[str, tuple[str, ...]] = {
    NUMBER: (*COMMON_ALIASES[NUMBER], "certificate"),
    NAME: (*COMMON_ALIASES[NAME], "员工姓名", "职工姓名"),
    ID_NUMBER: COMMON_ALIASES[ID_NUMBER],
    REF: ("工号", "员工编号", "员工号", "职工编号", "人员编号", "ref", "reference", "employee_id", "employee_no",
          "employee_ref", "staff_id", "staff_no"),
    TEAM: ("部门/班组", "部门", "班组", "所属部门", "部门班组", "team", "department", "group", "crew"),
}
LABELS: dict[str, str] = {NUMBER: "证书编号", NAME: "姓名", ID_NUMBER: "身份证号", REF: "工号", TEAM: "部门/班组"}
_ALIAS_TABLE = {normalise_header(a): f for f, names in ALIASES.items() for a in names}
_BAD_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\udc80-\udcff]")


class RosterTooLarge(Exception):
    """A roster file or request with more than `MAX_MEMBERS` members."""

    def __init__(self, most: int = MAX_MEMBERS) -> None:
        self.most = most
        super().__init__(f"名单最多 {most:,} 人 (a roster holds at most {most:,} members)")


@dataclass(frozen=True)
class MemberIn:
    """One valid member as the roster keeps it."""

    line: int
    ref: str
    number: str  # normalised
    name: str
    id_number: str | None = None
    team: str | None = None

    def as_row(self) -> dict[str, Any]:
        return {"ref": self.ref, "number": self.number, "name": self.name, "id_number": self.id_number,
                "team": self.team}


@dataclass
class RosterFile:
    """What a roster file (or a list of JSON members) held: the valid members and every problem."""

    members: list[MemberIn] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)  # at most MAX_KEPT_PROBLEMS; problems_total counts all
    problems_total: int = 0
    duplicates: int = 0  # rows refused as duplicates of an earlier row (counted in problems too)
    rows_total: int = 0  # data rows read (blank rows not counted)
    file_format: str | None = None
    encoding: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def rejected_lines(self) -> int:
        return self.rows_total - len(self.members)

    def problem(self, line: int, column: str | None, value: str | None, reason: str) -> None:
        self.problems_total += 1
        if len(self.problems) < MAX_KEPT_PROBLEMS:
            self.problems.append(RowProblem(line=line, column=column, value=value, reason=reason))

    def report(self) -> dict[str, Any]:
        """The JSON form of the problems (what a rejected upload answers)."""
        return {
            "file_format": self.file_format,
            "encoding": self.encoding,
            "rows_total": self.rows_total,
            "rows_valid": len(self.members),
            "duplicates": self.duplicates,
            "problems_total": self.problems_total,
            "problems": [p.model_dump() for p in self.problems],
            "warnings": self.warnings,
        }


# --- one row ---------------------------------------------------------------------------------------------------


def _text(value: object, *, identifier: bool = False) -> str | None:
    text = cell_text(value, identifier=identifier)
    if text is None:
        return None
    return unicodedata.normalize("NFKC", text).strip() or None


class _Checker:
    """Validates rows one by one and keeps what it needs to find duplicates."""

    def __init__(self, out: RosterFile, labels: Mapping[str, str]) -> None:
        self.out = out
        self.labels = labels  # field -> the column as written (or the JSON key)
        self.refs: dict[str, int] = {}
        self.pairs: dict[tuple[str, str], int] = {}

    def row(self, line: int, cells: Mapping[str, object]) -> None:
        out, labels = self.out, self.labels
        out.rows_total += 1
        if out.rows_total > MAX_MEMBERS:
            raise RosterTooLarge()
        bad = False
        values: dict[str, str | None] = {}
        for f in FIELDS:
            raw = cells.get(f)
            try:
                values[f] = _text(raw, identifier=f in (NUMBER, ID_NUMBER, REF))
            except FieldError as e:
                out.problem(line, labels.get(f, f), str(raw), e.reason)
                bad = True
                values[f] = None
                continue
            text = values[f]
            if text is not None and _BAD_TEXT.search(text):
                out.problem(line, labels.get(f, f), text.encode("utf-8", "replace").decode("utf-8", "replace"),
                            "含有无法识别的字符（文件编码有误？） (unreadable characters: a wrong encoding?)")
                bad = True
        for f in REQUIRED:
            if not values.get(f) and not any(p.line == line and p.column == labels.get(f, f) for p in out.problems[-5:]):
                out.problem(line, labels.get(f, f), None, f"缺少{LABELS[f]} ({f} is required)")
                bad = True
        number = values.get(NUMBER)
        normalised: str | None = None
        if number:
            try:
                normalised = parse_number(number).number
            except NumberError as e:
                out.problem(line, labels.get(NUMBER, NUMBER), number, e.reason)
                bad = True
        for f, most in ((NAME, MAX_NAME), (REF, MAX_REF), (TEAM, MAX_TEAM)):
            text = values.get(f)
            if text and len(text) > most:
                out.problem(line, labels.get(f, f), text, f"{LABELS[f]}超过 {most} 字 (longer than {most} characters)")
                bad = True
        id_number = values.get(ID_NUMBER)
        if id_number:
            from aggregator.numbers import normalise

            id_number = normalise(id_number)
            kinds = classify(id_number)
            if not kinds.names & {"id18", "id15"}:
                reason = kinds.warnings[0] if kinds.warnings else (
                    f"不是有效的身份证号：{id_number} (not a valid ID number: {id_number})")
                out.problem(line, labels.get(ID_NUMBER, ID_NUMBER), values.get(ID_NUMBER), reason)
                bad = True
        if bad or normalised is None:
            return
        name = "".join(str(values[NAME]).split())  # 张 三 and 张三 are one name
        ref = values.get(REF) or f"L{line}"
        first = self.refs.get(ref)
        if first is not None:
            out.duplicates += 1
            out.problem(line, labels.get(REF, REF), ref,
                        f"工号与第 {first} 行重复 (the same reference as line {first})")
            return
        first = self.pairs.get((normalised, name))
        if first is not None:
            out.duplicates += 1
            out.problem(line, labels.get(NUMBER, NUMBER), number,
                        f"证书编号和姓名与第 {first} 行重复 (the same number and name as line {first})")
            return
        self.refs[ref] = line
        self.pairs[(normalised, name)] = line
        out.members.append(MemberIn(line, ref, normalised, name, id_number, values.get(TEAM)))


# --- files -----------------------------------------------------------------------------------------------------


def _header(cells: Sequence[object]) -> dict[str, int]:
    found: dict[str, int] = {}
    for i, c in enumerate(cells):
        if isinstance(c, str):
            f = _ALIAS_TABLE.get(normalise_header(c.lstrip("\ufeff")))
            if f is not None and f not in found:
                found[f] = i
    return found


def _problem(reason: str, line: int = 1) -> UnreadableFile:
    return UnreadableFile([RowProblem(line=line, reason=reason)])


def read_rows(rows: Iterable[tuple[int, Sequence[object]]], out: RosterFile) -> RosterFile:
    """Members from (line, cells) rows whose first non-blank rows hold the header (a title row may sit above)."""
    it: Iterator[tuple[int, Sequence[object]]] = iter(rows)
    pending: list[tuple[int, Sequence[object]]] = []
    for line, cells in it:
        if any(c not in ("", None) for c in cells):
            pending.append((line, cells))
            if len(pending) >= HEADER_SEARCH_ROWS:
                break
    if not pending:
        raise _problem("文件为空 (the file is empty)")
    columns: dict[str, int] | None = None
    start = 0
    for i, (_line, cells) in enumerate(pending):
        found = _header(cells)
        if all(f in found for f in REQUIRED):
            columns, start = found, i
            break
    if columns is None:
        line, cells = pending[0]
        found = _header(cells)
        missing = "、".join(LABELS[f] for f in REQUIRED if f not in found)
        raise _problem(
            f"表头缺少 {missing} 列（可用列名：证书编号、姓名、身份证号、工号、部门/班组，或 number, name, id_number, ref, team） "
            f"(the header has no {', '.join(f for f in REQUIRED if f not in found)} column)",
            line,
        )
    header_line, header_cells = pending[start]
    labels = {f: str(header_cells[i]).lstrip("\ufeff").strip() for f, i in columns.items()}
    if start:
        out.warnings.append(f"表头在第 {header_line} 行，其上的 {start} 行被跳过 "
                            f"(header found on line {header_line}; {start} row(s) above it skipped)")
    checker = _Checker(out, labels)

    def data() -> Iterator[tuple[int, Sequence[object]]]:
        yield from pending[start + 1:]
        yield from it

    for line, cells in data():
        if not any(c not in ("", None) for c in cells):
            continue
        checker.row(line, {f: (cells[i] if i < len(cells) else None) for f, i in columns.items()})
    return out


def read_roster_file(path: Path | str) -> RosterFile:
    """A roster from a CSV or workbook file (see the module docstring). Raises `UnreadableFile` (type, encoding,
    header, a workbook the reader refused) or `RosterTooLarge`."""
    from aggregator.records.importer import open_table
    from aggregator.records.limits import ImportLimits

    limits = ImportLimits.from_env()
    source = open_table(Path(path), list(ENCODINGS), limits.model_copy(update={"max_rows": MAX_MEMBERS + 1}))
    try:
        out = RosterFile(file_format=source.format, encoding=source.encoding, warnings=list(source.warnings))
        return read_rows(source.rows(), out)
    finally:
        source.close()


def parse_members(items: Sequence[Mapping[str, Any]]) -> RosterFile:
    """Members given as JSON objects ({"number", "name", "id_number"?, "ref"?, "team"?}); a member's "line" is
    its position in the list, from 1. The same checks as a file's rows."""
    if len(items) > MAX_MEMBERS:
        raise RosterTooLarge()
    out = RosterFile(file_format="json")
    checker = _Checker(out, {f: f for f in FIELDS})
    for i, item in enumerate(items, start=1):
        checker.row(i, {f: item.get(f) for f in FIELDS})
    return out


def check_member(item: Mapping[str, Any], *, line: int = 1) -> MemberIn | list[RowProblem]:
    """One member given as JSON (adding or updating one): the member, or its problems."""
    out = parse_members([item])
    if out.members and not out.problems:
        member = out.members[0]
        return MemberIn(line, member.ref, member.number, member.name, member.id_number, member.team)
    return out.problems


def _register_errors() -> None:
    from aggregator.errors import register

    register(RosterTooLarge, 422, 65, "roster-too-large", "名单最多 {exc.most:,} 人，未创建名单",
             "a roster holds at most {exc.most:,} members; nothing was created")


_register_errors()
