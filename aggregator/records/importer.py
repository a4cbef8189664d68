"""Reading a department's upload (CSV, XLSX, XLS) and validating it row by row, with bounded memory.

    upload = open_upload(path, departments[Department.MEM])
    for chunk in upload.chunks(5000):
        ...  # chunk.records are ready to insert; chunk.problems say what was wrong with the others

`open_upload` finds the format, the encoding (CSV) and the header row, and maps the header through the
aliases in `fields`; a file it cannot read raises `UnreadableFile` carrying file-level problems. `chunks`
then streams: at most one chunk of rows is held at a time. Storing the rows is `store`'s business.

Hostile files are expected (see `limits`): a workbook is read in a child process with its own memory and CPU
limits (`workbook`, `sheetreader`), CSV in this process; both keep to the same limits on rows, columns and
cell length, and a chunk ends early when its rows are unusually large, so that memory stays bounded.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aggregator.config import ConfigError, DepartmentConfig, default_config_dir
from aggregator.models import CertKind, Department
from aggregator.records import columnar, fields
from aggregator.records.limits import ImportLimits
from aggregator.records.report import RowProblem, UnreadableFile, excerpt
from aggregator.records.validate import DATE_COLUMNS, RECORD_COLUMNS, Chunk, RowValidator

__all__ = ["DATE_COLUMNS", "RECORD_COLUMNS", "Chunk", "Upload", "load_departments", "open_upload"]

SAMPLE_BYTES = 64 * 1024  # the prefix on which a CSV's encoding is detected
HEADER_SEARCH_ROWS = 10  # a header may sit below a title row or two
CHUNK_VOLUME = 32 * 1024 * 1024  # a chunk ends early once its rows took this much of the source (~200x normal)

_DEFAULT_KINDS: dict[Department, CertKind] = {
    Department.MEM: CertKind.MEM_SPECIAL_OPERATION,
    Department.MOHURD: CertKind.MOHURD_CONSTRUCTION,
    Department.SAMR: CertKind.SAMR_SPECIAL_EQUIPMENT,
    Department.MOHRSS: CertKind.MOHRSS_SKILL_LEVEL,
}


# --- Department configuration --------------------------------------------------------------------


def load_departments(config_dir: Path | str | None = None) -> dict[Department, DepartmentConfig]:
    """The `[[department]]` entries of departments.toml (default: the config directory of `aggregator.config`).

    Only this file is read, so that imports work before the rest of the configuration exists."""
    import tomllib

    from pydantic import ValidationError

    path = Path(config_dir or default_config_dir()) / "departments.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: file is missing"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    out: dict[Department, DepartmentConfig] = {}
    problems: list[str] = []
    for i, item in enumerate(raw.get("department", [])):
        try:
            dept = DepartmentConfig.model_validate(item)
        except ValidationError as e:
            problems.extend(f"{path}: department[{i}].{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            continue
        try:
            fields.alias_table(dept.column_aliases)
        except ValueError as e:
            problems.append(f"{path}: department[{i}].{e}")
        for name in dept.encodings:
            try:
                codecs.lookup(name)
            except LookupError:
                problems.append(f"{path}: department[{i}].encodings: unknown encoding {name!r}")
        out[dept.id] = dept
    if problems:
        raise ConfigError(problems)
    return out


def default_department(department: Department) -> DepartmentConfig:
    """A department's settings when departments.toml has no entry for it: common aliases and statuses."""
    return DepartmentConfig(id=department, name=department.value, kind=_DEFAULT_KINDS[department])


# --- Reading tables ------------------------------------------------------------------------------


def _file_problem(reason: str, line: int = 1) -> UnreadableFile:
    return UnreadableFile([RowProblem(line=line, reason=reason)])


def detect_encoding(sample: bytes, candidates: list[str], *, complete: bool) -> str | None:
    """The first candidate that decodes `sample` strictly (a cut multi-byte character at the end of an
    incomplete sample is allowed), or None."""
    for name in candidates:
        try:
            codecs.getincrementaldecoder(name)(errors="strict").decode(sample, final=complete)
        except UnicodeDecodeError:
            continue
        return name
    return None


def _delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class TableSource(ABC):
    """Rows of one table as (line, cells), plus how far through the file the reading is."""

    format: str
    encoding: str | None = None
    bytes_total: int = 0
    warnings: list[str]
    # How much table data has been read so far (CSV: characters; workbooks: bytes from the reader process):
    # what the rows read cost in memory, roughly, so that a chunk of unusually large rows can end early.
    volume: int = 0

    @abstractmethod
    def rows(self) -> Iterator[tuple[int, list[Any]]]:
        """(line number in the file, cells) for every row, header included."""

    @abstractmethod
    def bytes_done(self) -> int:
        """How many bytes of the file have been read so far (for progress)."""

    def long_cells(self, lines: list[int], rows: list[list[Any]]) -> dict[int, list[tuple[int, int]]]:
        """The rows of a chunk holding a cell longer than `max_cell_chars`: position -> [(column, length)]."""
        return {}

    def close(self) -> None:
        """Release the file."""


def _too_wide(line: int, used: int, most: int) -> UnreadableFile:
    return _file_problem(
        f"第 {line} 行有 {used:,} 列，超过上限 {most:,} 列 (line {line} has {used:,} columns, more than the limit of {most:,})",
        line=line,
    )


class CsvSource(TableSource):
    """A CSV file decoded with the first of `encodings` that fits its first 64 KiB.

    Bytes later in the file that the chosen encoding cannot decode are kept as lone surrogates
    (surrogateescape), so that the validator reports them on their row instead of the reader crashing or
    inventing characters.

    Limits (`ImportLimits`): a physical line longer than `max_columns` cells of `max_cell_chars` and a row of
    more than `max_columns` non-empty cells stop the reading (file-level problems), before either can fill
    memory; a field longer than the csv module's limit (128 KiB) does too. Overlong cells are looked for
    (`long_cells`) in the chunks that read a physical line longer than `max_cell_chars`: a longer cell spread
    over many short lines of a quoted field is only bounded by the csv module's limit.
    """

    format = "csv"

    def __init__(self, path: Path, encodings: list[str], limits: ImportLimits | None = None) -> None:
        self.limits = limits or ImportLimits()
        self._long_line = False  # a physical line longer than max_cell_chars was read since the last long_cells
        self.warnings = []
        self.bytes_total = path.stat().st_size
        self._raw: IO[bytes] = path.open("rb")
        sample = self._raw.read(SAMPLE_BYTES)
        encoding = detect_encoding(sample, encodings, complete=len(sample) < SAMPLE_BYTES)
        if encoding is None:
            self._raw.close()
            raise _file_problem(
                f"无法识别文件编码（已尝试 {', '.join(encodings)}） "
                f"(cannot decode the file as any of {', '.join(encodings)}; save it as UTF-8 or GB18030)"
            )
        if encoding == "utf-8" and sample.startswith(codecs.BOM_UTF8):
            encoding = "utf-8-sig"
        self.encoding = encoding
        self._raw.seek(0)
        self._text = io.TextIOWrapper(self._raw, encoding=encoding, errors="surrogateescape", newline="")
        first_line = self._text.readline()
        self._text.seek(0)
        self.delimiter = _delimiter(first_line)
        self._resumed: io.TextIOWrapper | None = None

    def _lines(self, text_lines: Iterator[str]) -> Iterator[str]:
        """The text's physical lines, counted into `volume`; one too long for any row stops the reading."""
        longest = self.limits.max_columns * (self.limits.max_cell_chars + 3)
        long_line = self.limits.max_cell_chars
        for text in text_lines:
            n = len(text)
            self.volume += n
            if n > long_line:
                if n > longest:
                    raise _file_problem(
                        f"文件中有一行长达 {n:,} 字，超过任何数据行的上限 {longest:,} 字 "
                        f"(a line of the file is {n:,} characters long, more than any row may be: {longest:,})"
                    )
                self._long_line = True
            yield text

    def rows(self, start: tuple[int, int] | None = None) -> Iterator[tuple[int, list[Any]]]:
        """The rows from the file's start, or from `start` (byte offset, its line number): where the columnar
        lane hands the rest of a file over (`columnar`)."""
        text: Iterator[str] = self._text
        line = 1
        if start is not None:
            offset, line = start
            self._raw.seek(offset)
            encoding = "utf-8" if self.encoding == "utf-8-sig" else self.encoding
            text = self._resumed = io.TextIOWrapper(self._raw, encoding=encoding, errors="surrogateescape", newline="")
        reader = csv.reader(self._lines(text), delimiter=self.delimiter)
        most = self.limits.max_columns
        base = line - 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                if "field larger than field limit" in str(e):
                    size = csv.field_size_limit()
                    raise _file_problem(
                        f"CSV 格式错误：从第 {line} 行起有一个字段超过 {size:,} 字（引号未闭合？），其后无法读取 "
                        f"(malformed CSV: a field from line {line} on is longer than {size:,} characters, an unclosed "
                        "quote?; the rest of the file cannot be read)",
                        line=line,
                    ) from None
                raise _file_problem(
                    f"CSV 格式错误，从第 {line} 行起无法读取：{e} (malformed CSV from line {line} on: {e})", line=line
                ) from None
            except UnreadableFile as e:  # from _lines: name the row it was in
                raise UnreadableFile([p.model_copy(update={"line": line}) for p in e.problems]) from None
            if len(cells) > most and cells[most:].count("") != len(cells) - most:
                raise _too_wide(line, max(i for i, c in enumerate(cells) if c) + 1, most)
            yield line, cells
            line = base + reader.line_num + 1

    def long_cells(self, lines: list[int], rows: list[list[Any]]) -> dict[int, list[tuple[int, int]]]:
        if not self._long_line:
            return {}
        self._long_line = False
        most = self.limits.max_cell_chars
        out: dict[int, list[tuple[int, int]]] = {}
        for k, cells in enumerate(rows):
            if sum(map(len, cells)) > most:
                found = [(i, len(c)) for i, c in enumerate(cells) if len(c) > most]
                if found:
                    out[k] = found
        return out

    def bytes_done(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        if self._resumed is not None:
            self._resumed.detach()
        self._text.close()


class WorkbookSource(TableSource):
    """The first visible worksheet of an XLSX/XLSM/XLS/XLSB/ODS workbook, read by python-calamine in a child
    process (`workbook.SheetReader`, `sheetreader`) that limits its own memory and CPU time and checks the
    zip and the sheet's extent first; its rows arrive lazily over a pipe. Cells keep their types (text,
    float, date) so that the validator can refuse an ID number stored as a number. Whatever the child
    refuses or dies of is `UnreadableFile`, raised here (the sheet could not be loaded) or from `rows`.
    """

    def __init__(self, path: Path, file_format: str, limits: ImportLimits | None = None) -> None:
        from aggregator.records.workbook import SheetReader

        self.format = file_format
        self.bytes_total = path.stat().st_size
        self._reader = SheetReader(path, file_format, limits or ImportLimits())
        try:
            meta = self._reader.start()
        except BaseException:
            self._reader.close()
            raise
        self.warnings = [str(w) for w in meta.get("warnings") or []]
        self._rows_total = max(1, int(meta.get("height") or 0))
        self._done = 0
        self._long: dict[int, list[tuple[int, int]]] = {}  # line -> [(column, length)] of overlong cells

    def rows(self) -> Iterator[tuple[int, list[Any]]]:
        reader = self._reader
        for first, rows, long in reader.batches():
            self.volume = reader.bytes_read
            for line, column, length in long:  # cells the reader cut to their first characters
                cells = rows[line - first]
                cells[column] = excerpt(cells[column], total=length)
                self._long.setdefault(line, []).append((column, length))
            for offset, cells in enumerate(rows):
                self._done = first + offset
                yield first + offset, cells

    def long_cells(self, lines: list[int], rows: list[list[Any]]) -> dict[int, list[tuple[int, int]]]:
        if not self._long:
            return {}
        return {k: self._long.pop(line) for k, line in enumerate(lines) if line in self._long}

    def bytes_done(self) -> int:
        return min(self.bytes_total, self.bytes_total * self._done // self._rows_total)

    def close(self) -> None:
        self._reader.close()


def open_table(path: Path, encodings: list[str], limits: ImportLimits | None = None) -> TableSource:
    """A reader for the file, chosen by its content (zip or OLE signature) and then its extension."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with path.open("rb") as f:
        magic = f.read(8)
    suffix = path.suffix.lower()
    if magic.startswith(b"PK\x03\x04"):
        file_format = suffix.lstrip(".") if suffix in (".xlsx", ".xlsm", ".xlsb", ".ods") else "xlsx"
        return WorkbookSource(path, file_format, limits)
    if magic.startswith(b"\xd0\xcf\x11\xe0"):
        return WorkbookSource(path, "xls", limits)
    if suffix in (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods"):
        raise _file_problem(f"文件扩展名为 {suffix} 但内容不是工作簿 (the file is named {suffix} but is not a workbook)")
    if suffix not in (".csv", ".txt", ".tsv", ""):
        raise _file_problem(
            f"不支持的文件类型 {suffix}（请上传 CSV、XLSX 或 XLS） (unsupported file type {suffix}; use CSV, XLSX or XLS)"
        )
    return CsvSource(path, encodings, limits)


# --- An upload -----------------------------------------------------------------------------------


@dataclass
class Upload:
    """An opened upload: its table, the header found in it, and the validator for its rows."""

    path: Path
    source: TableSource
    header: fields.HeaderMap
    header_cells: list[str]
    header_line: int
    validator: RowValidator
    pending: list[tuple[int, list[Any]]]  # rows read while looking for the header
    rows_iter: Iterator[tuple[int, list[Any]]]
    warnings: list[str] = field(default_factory=list)
    limits: ImportLimits = field(default_factory=ImportLimits)

    @property
    def file_format(self) -> str:
        return self.source.format

    @property
    def encoding(self) -> str | None:
        return self.source.encoding

    def chunks(self, size: int = 5000) -> Iterator[Chunk]:
        """Validated rows, `size` at a time (fewer when the rows are unusually large). A malformed CSV, or a
        file with more than `max_rows` data rows, raises `UnreadableFile` at the row it breaks."""
        nonblank = any if self.source.format == "csv" else _nonblank  # blank rows are not data
        source = self.source
        lines: list[int] = []
        rows: list[list[Any]] = []
        room = self.limits.max_rows
        rows_iter: Iterator[tuple[int, list[Any]]] = itertools.chain(self.pending, self.rows_iter)
        lane = columnar.ColumnarLane.open(
            self.path, source, self.validator, self.header_line, min_bytes=self.limits.columnar_min_bytes
        )
        if lane is not None:
            resume = yield from lane.chunks(room, self._too_many_rows, self.limits.max_cell_chars)
            if resume is None:
                return
            offset, line, room = resume
            rows_iter = source.rows((offset, line))  # type: ignore[call-arg]  (a lane is only for CsvSource)
        budget = source.volume + CHUNK_VOLUME
        for line, cells in rows_iter:
            if nonblank(cells):
                lines.append(line)
                rows.append(cells)
                if len(rows) >= size or source.volume > budget:
                    if len(rows) > room:
                        raise self._too_many_rows(lines[room])
                    room -= len(rows)
                    yield self._chunk(lines, rows, source.bytes_done())
                    lines, rows = [], []
                    budget = source.volume + CHUNK_VOLUME
        self.pending = []
        if len(rows) > room:
            raise self._too_many_rows(lines[room])
        yield self._chunk(lines, rows, source.bytes_total)

    def _too_many_rows(self, line: int) -> UnreadableFile:
        most = self.limits.max_rows
        return _file_problem(
            f"数据行超过上限 {most:,} 行，第 {line} 行起未读取 (more than {most:,} data rows; nothing from line {line} on was read)",
            line=line,
        )

    def _chunk(self, lines: list[int], rows: list[list[Any]], bytes_done: int) -> Chunk:
        long = self.source.long_cells(lines, rows)
        if not long:
            records, problems, rejected = self.validator.validate_rows(lines, rows)
            return Chunk(
                records=records,
                problems=problems,
                rejected=[(lines[k], rows[k]) for k in rejected],
                rows=len(rows),
                bytes_done=bytes_done,
            )
        # Rows with an overlong cell are rejected for it alone; the others are validated as usual.
        keep = [k for k in range(len(rows)) if k not in long]
        records, problems, rejected = self.validator.validate_rows([lines[k] for k in keep], [rows[k] for k in keep])
        most = self.limits.max_cell_chars
        for k, cells in sorted(long.items()):
            for column, length in cells:
                reason = (
                    f"单元格内容过长（{length:,} 字，上限 {most:,} 字） "
                    f"(the cell holds {length:,} characters, more than the limit of {most:,})"
                )
                value = excerpt(str(rows[k][column]), total=length)
                problems.append((lines[k], self.validator.column_name(column), value, reason))
        bad = sorted([keep[k] for k in rejected] + list(long))
        return Chunk(
            records=records,
            problems=problems,
            rejected=[(lines[k], rows[k]) for k in bad],
            rows=len(rows),
            bytes_done=bytes_done,
        )

    def rejected_cells(self, cells: list[Any]) -> dict[str, str]:
        """A rejected row as header -> text, for the report."""
        out: dict[str, str] = {}
        for i, value in enumerate(cells):
            if value in ("", None):
                continue
            key = self.header_cells[i] if i < len(self.header_cells) and self.header_cells[i] else f"#{i + 1}"
            if isinstance(value, str):
                out[key] = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            else:
                out[key] = repr(value) if isinstance(value, float) else str(value)
        return out

    def close(self) -> None:
        self.source.close()


def _nonblank(cells: list[Any]) -> bool:
    return any(c not in ("", None) for c in cells)


def _header_score(cells: list[Any], aliases: dict[str, str]) -> int:
    found = {aliases.get(fields.normalise_header(c)) for c in cells if isinstance(c, str)}
    return sum(1 for name in fields.REQUIRED if name in found) * 100 + len(found - {None})


def open_upload(path: Path | str, department: DepartmentConfig, limits: ImportLimits | None = None) -> Upload:
    """Open a file and find its header: the first of its first rows that names the required columns (a
    title row above the header is skipped), or else the first non-empty row, whose problems are reported.
    `limits` default to `ImportLimits.from_env()` (CERTQ_IMPORT_* variables).

    Raises `UnreadableFile` (file-level problems: type, encoding, header, a workbook that cannot be read
    safely) or `FileNotFoundError`."""
    path = Path(path)
    limits = limits or ImportLimits.from_env()
    source = open_table(path, list(department.encodings), limits)
    try:
        aliases = fields.alias_table(department.column_aliases)
        rows_iter = source.rows()
        pending: list[tuple[int, list[Any]]] = []
        for line, cells in rows_iter:
            if _nonblank(cells):
                pending.append((line, cells))
            if len(pending) >= HEADER_SEARCH_ROWS:
                break
        if not pending:
            raise _file_problem("文件为空 (the file is empty)")
        best = 0
        for i, (_line, cells) in enumerate(pending):
            if _header_score(cells, aliases) >= 100 * len(fields.REQUIRED):
                best = i
                break
        header_line, header_cells_raw = pending[best]
        header_cells = [fields.cell_text(c) or "" if not isinstance(c, str) else c.strip() for c in header_cells_raw]
        if header_cells and header_cells[0].startswith("\ufeff"):
            header_cells[0] = header_cells[0].lstrip("\ufeff")
        header = fields.map_headers(list(header_cells), aliases)
        if header.errors:
            raise UnreadableFile([RowProblem(line=header_line, reason=e) for e in header.errors])
        validator = RowValidator(department, header, header_cells, source.encoding, text_rows=source.format == "csv")
        warnings = list(source.warnings)
        if best:
            warnings.append(f"表头在第 {header_line} 行，其上的 {best} 行被跳过 (header found on line {header_line}; {best} row(s) above it skipped)")
        if header.unknown:
            names = ", ".join(header.unknown)
            warnings.append(f"以下列无法识别，已忽略：{names} (unknown columns ignored: {names})")
        return Upload(
            path=path,
            source=source,
            header=header,
            header_cells=header_cells,
            header_line=header_line,
            validator=validator,
            pending=pending[best + 1 :],
            rows_iter=rows_iter,
            warnings=warnings,
            limits=limits,
        )
    except BaseException:
        source.close()
        raise


ProgressCallback = Callable[[int, int, int], None]
