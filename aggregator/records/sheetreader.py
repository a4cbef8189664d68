"""The workbook reader: a child process that reads the first visible sheet of an XLSX/XLSM/XLSB/ODS/XLS file
with python-calamine and streams its rows to the importer over a pipe, one JSON message a line.

    python -I .../aggregator/records/sheetreader.py PATH FORMAT LIMITS_JSON    (what `workbook.SheetReader` runs)
    python -m aggregator.records.sheetreader PATH FORMAT LIMITS_JSON           (the same, slower to start)

A hostile workbook can make calamine allocate without bound (one cell at XFD1048576 asks for 512 GiB and
aborts the process) or inflate a zip bomb. So this process limits itself first (address space, CPU time, no
core files), then checks the zip directory (entry count, declared sizes, compression ratios) and the
sheet's declared `<dimension>` (a bounded prefix of its XML, read through a size-capped stream) before
calamine inflates anything, and the sheet's extent once loaded. What it cannot survive it dies of, and the
importer refuses the file: the importer's own process is never at risk. It imports only the standard
library and python-calamine (not the `aggregator` package: run as a file it starts in ~50 ms).

Messages on stdout (ASCII JSON, one object a line):

    {"sheet": NAME, "height": ROWS, "width": COLUMNS, "warnings": [TEXT, ...]}    first, once the sheet is read
    {"line": FIRST, "rows": [[CELL, ...], ...], "long": [[LINE, COLUMN, LENGTH], ...]}  rows FIRST, FIRST+1, ...
    {"end": ROWS}                                                                  last
    {"refused": TEXT}                                                              instead, then exit 65

Cells are what calamine gives, typed: text, int, float, bool as JSON has them (Python's json keeps `1`, `1.0`
and `true` apart and writes floats with `repr`, which round-trips exactly; NaN and Infinity as Python writes
them), and tagged one-key objects for the rest: {"$d": "2024-01-02"}, {"$dt": "2024-01-02T09:30:00"},
{"$t": "09:30:00"}, {"$td": [days, seconds, microseconds]}. No pickle: the data is hostile. A text cell
longer than `max_cell_chars` is sent as its first `EXCERPT_CHARS` characters and listed in "long".
Rows are cut to `max_columns` cells when the cells beyond are empty; a row with more is refused.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import resource
import sys
import zipfile
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from typing import IO, Any

EXIT_REFUSED = 65  # a {"refused": ...} message was sent
EXIT_MEMORY = 70  # Python ran out of memory (calamine's own allocation failures abort: SIGABRT)
EXCERPT_CHARS = 200  # of an overlong cell, what is sent
HEADER_ROWS = 10  # rows a sheet may hold besides `max_rows` data rows (title rows, the header)
BATCH_ROWS = 1000
BATCH_CHARS = 1 << 20  # a batch is sent when it holds this many characters of text
PREFIX_BYTES = 64 * 1024  # of a worksheet's XML, read for its <dimension>
PART_BYTES = 4 << 20  # of the workbook part and its relationships, read to find the sheet's XML
ZIP_FORMATS = frozenset({"xlsx", "xlsm", "xlsb", "ods"})
SAFE = "无法安全读取工作簿："

_DIMENSION = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?dimension\b[^>]*?\bref\s*=\s*[\"']([^\"']{1,64})[\"']")
_CELL = re.compile(r"^\$?([A-Za-z]{1,3})?\$?([0-9]{1,7})?$")
_IS_STR: Callable[[object], bool] = str.__instancecheck__
_OFFICE_DOCUMENT = "/officeDocument"


class Refused(Exception):
    """The workbook is refused, with this text (Chinese, then English in parentheses)."""


# --- Limiting this process -------------------------------------------------------------------------


def confine(limits: dict[str, Any]) -> None:
    """Address space, CPU time, no core files, little to write: before anything of the file is read."""
    memory = int(limits["memory_bytes"])
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL a second later
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # stderr goes to a file: a backtrace at most


# --- Checks before anything is inflated --------------------------------------------------------------


def _name(info: zipfile.ZipInfo) -> str:
    return info.filename if len(info.filename) <= 80 else info.filename[:80] + "…"


def check_zip(book: zipfile.ZipFile, limits: dict[str, Any]) -> None:
    """Entry count, each entry's and the total uncompressed size, and the compression ratio of entries big
    enough to matter, all as the zip's central directory declares them (nothing is inflated)."""
    entries = book.infolist()
    most = int(limits["max_zip_entries"])
    if len(entries) > most:
        raise Refused(
            f"{SAFE}压缩包内有 {len(entries):,} 个文件，超过上限 {most:,} 个 "
            f"(the workbook could not be read safely: its zip holds {len(entries):,} files, more than the limit of {most:,})"
        )
    per_entry, ratio_limit, ratio_from = int(limits["max_entry_bytes"]), float(limits["max_ratio"]), int(limits["ratio_min_bytes"])
    total = 0
    for info in entries:
        size = info.file_size
        total += size
        if size > per_entry:
            raise Refused(
                f"{SAFE}{_name(info)} 解压后有 {size:,} 字节，超过上限 {per_entry:,} 字节 "
                f"(the workbook could not be read safely: {_name(info)} inflates to {size:,} bytes, "
                f"more than the limit of {per_entry:,})"
            )
        if size >= ratio_from and size > ratio_limit * max(info.compress_size, 1):
            ratio = size / max(info.compress_size, 1)
            raise Refused(
                f"{SAFE}{_name(info)} 的压缩比为 {ratio:,.0f}:1，超过上限 {ratio_limit:,.0f}:1（疑似压缩炸弹） "
                f"(the workbook could not be read safely: {_name(info)} is compressed {ratio:,.0f}:1, more than "
                f"the limit of {ratio_limit:,.0f}:1: a zip bomb?)"
            )
    if total > int(limits["max_total_bytes"]):
        most = int(limits["max_total_bytes"])
        raise Refused(
            f"{SAFE}解压后共 {total:,} 字节，超过上限 {most:,} 字节 "
            f"(the workbook could not be read safely: it inflates to {total:,} bytes in all, more than the limit of {most:,})"
        )


def _read_capped(book: zipfile.ZipFile, name: str, cap: int) -> bytes:
    """At most `cap` bytes of an entry, inflated only that far (whatever its declared size)."""
    with book.open(name) as stream:
        return stream.read(cap)


def _elements(data: bytes, local: str, stop: str | None = None) -> Iterator[dict[str, str]]:
    """Attributes of the `local` elements of a (possibly cut) XML document, namespaces dropped, in order."""
    from xml.etree.ElementTree import ParseError, XMLPullParser

    parser = XMLPullParser(events=("start", "end"))
    try:
        for start in range(0, len(data), 65536):
            parser.feed(data[start : start + 65536])
            for event, element in parser.read_events():
                tag = element.tag.rpartition("}")[2]
                if event == "start" and tag == local:
                    yield {k.rpartition("}")[2]: v for k, v in element.attrib.items()}
                elif event == "end" and tag == stop:
                    return
    except ParseError:
        return  # a cut document ends here; a broken one is calamine's to report


def sheet_part(book: zipfile.ZipFile, index: int) -> str | None:
    """The zip entry of the workbook's `index`-th sheet (workbook order), or None if it cannot be told."""
    try:
        workbook = "xl/workbook.xml"
        for rel in _elements(_read_capped(book, "_rels/.rels", PART_BYTES), "Relationship"):
            if rel.get("Type", "").endswith(_OFFICE_DOCUMENT) and rel.get("Target"):
                workbook = rel["Target"].lstrip("/")
                break
        sheets = list(_elements(_read_capped(book, workbook, PART_BYTES), "sheet", stop="sheets"))
        if index >= len(sheets) or "id" not in sheets[index]:
            return None
        folder, leaf = posixpath.split(workbook)
        rels = posixpath.join(folder, "_rels", leaf + ".rels")
        for rel in _elements(_read_capped(book, rels, PART_BYTES), "Relationship"):
            if rel.get("Id") == sheets[index]["id"] and rel.get("Target"):
                target = rel["Target"]
                return target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(folder, target))
    except (KeyError, OSError, zipfile.BadZipFile, RuntimeError, ValueError, EOFError):
        return None
    return None


def _column_number(letters: str) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - 64
    return n


def declared_extent(book: zipfile.ZipFile, part: str) -> tuple[str, int, int] | None:
    """(ref, last row, last column) of the sheet's declared `<dimension ref="A1:L1001"/>`, from the first
    `PREFIX_BYTES` of its XML; None when it declares none."""
    try:
        prefix = _read_capped(book, part, PREFIX_BYTES)
    except (KeyError, OSError, zipfile.BadZipFile, RuntimeError, ValueError, EOFError):
        return None
    m = _DIMENSION.search(prefix)
    if m is None:
        return None
    ref = m.group(1).decode("ascii", "replace")
    last = _CELL.match(ref.rpartition(":")[2])
    if last is None:
        return None
    letters, digits = last.groups()
    return ref, int(digits) if digits else 0, _column_number(letters) if letters else 0


def check_extent(ref: str, rows: int, columns: int, limits: dict[str, Any], *, declared: bool) -> None:
    """A sheet whose (declared or loaded) extent is beyond the row or column limit is refused."""
    what_zh, what_en = (f"声明的范围 {ref} ", f"declares the range {ref}:") if declared else ("", "has")
    most_columns, most_rows = int(limits["max_columns"]), int(limits["max_rows"]) + HEADER_ROWS
    if columns > most_columns:
        raise Refused(
            f"{SAFE}工作表{what_zh}有 {columns:,} 列，超过上限 {most_columns:,} 列 "
            f"(the workbook could not be read safely: the sheet {what_en} {columns:,} columns, "
            f"more than the limit of {most_columns:,})"
        )
    if rows > most_rows:
        raise Refused(
            f"{SAFE}工作表{what_zh}有 {rows:,} 行，超过上限 {most_rows:,} 行 "
            f"(the workbook could not be read safely: the sheet {what_en} {rows:,} rows, more than the limit of {most_rows:,})"
        )


# --- Reading ------------------------------------------------------------------------------------------


def _tag(value: object) -> object:
    """`json.dumps(default=)`: the cell types JSON has no word for, as one-key objects."""
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    if isinstance(value, time):
        return {"$t": value.isoformat()}
    if isinstance(value, timedelta):
        return {"$td": [value.days, value.seconds, value.microseconds]}
    raise TypeError(f"a cell of type {type(value).__name__}")


_UNTAG: dict[str, Callable[[Any], object]] = {
    "$dt": datetime.fromisoformat,
    "$d": date.fromisoformat,
    "$t": time.fromisoformat,
    "$td": lambda v: timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
}


def untag(obj: dict[str, Any]) -> object:
    """`json.loads(object_hook=)`: a tagged cell back to its type; any other object as it is."""
    if len(obj) == 1:
        for key, value in obj.items():
            convert = _UNTAG.get(key)
            if convert is not None:
                return convert(value)
    return obj


class _Sender:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.encode = json.JSONEncoder(ensure_ascii=True, check_circular=False, default=_tag).encode

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(self.encode(message).encode("ascii") + b"\n")
        self.out.flush()


def read(path: str, file_format: str, limits: dict[str, Any], sender: _Sender) -> int:
    """Check, load and stream the sheet; returns the number of rows sent. Raises `Refused`."""
    book: zipfile.ZipFile | None = None
    if file_format in ZIP_FORMATS:
        try:
            book = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise Refused(f"无法读取工作簿：{e} (cannot read the workbook: {e})") from None
        check_zip(book, limits)

    from python_calamine import CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(path)
        metadata = workbook.sheets_metadata
        visible = [m.name for m in metadata if str(m.visible).endswith("Visible")]
        names = visible or workbook.sheet_names
        if not names:
            raise Refused("工作簿中没有工作表 (the workbook has no sheets)")
        name = names[0]
        if book is not None and file_format in ("xlsx", "xlsm"):
            part = sheet_part(book, workbook.sheet_names.index(name))
            extent = declared_extent(book, part) if part else None
            if extent is not None:
                check_extent(*extent, limits, declared=True)
        sheet = workbook.get_sheet_by_name(name)
    except (Refused, MemoryError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - calamine raises several unrelated types (a Rust panic too)
        raise Refused(f"无法读取工作簿：{e} (cannot read the workbook: {e})") from None
    if book is not None:
        book.close()
    warnings = []
    if len(names) > 1:
        warnings.append(
            f"只读取了第一个工作表 {names[0]!r}，其余工作表被忽略：{', '.join(names[1:])} "
            f"(only the first sheet {names[0]!r} was read; ignored: {', '.join(names[1:])})"
        )
    height, width = sheet.height, sheet.width
    check_extent("", height, 0, limits, declared=False)
    sender.send({"sheet": name, "height": height, "width": width, "warnings": warnings})
    return _stream(sheet.iter_rows(), width, limits, sender)


def _stream(rows: Iterator[list[Any]], width: int, limits: dict[str, Any], sender: _Sender) -> int:
    most_columns, most_chars = int(limits["max_columns"]), int(limits["max_cell_chars"])
    batch: list[list[Any]] = []
    long: list[list[int]] = []
    first, chars, line = 1, 0, 0
    for line, cells in enumerate(rows, start=1):  # iter_rows starts at the sheet's first row: index + 1 is the line
        if width > most_columns:
            tail = cells[most_columns:]
            if tail.count("") != len(tail):
                used = max(i for i, c in enumerate(cells) if c != "") + 1
                raise Refused(
                    f"{SAFE}第 {line} 行有 {used:,} 列，超过上限 {most_columns:,} 列 "
                    f"(the workbook could not be read safely: line {line} has {used:,} columns, "
                    f"more than the limit of {most_columns:,})"
                )
            del cells[most_columns:]
        lengths = list(map(len, filter(_IS_STR, cells)))
        if lengths:
            chars += sum(lengths)
            if max(lengths) > most_chars:
                for i, value in enumerate(cells):
                    if value.__class__ is str and len(value) > most_chars:
                        long.append([line, i, len(value)])
                        cells[i] = value[:EXCERPT_CHARS]
        batch.append(cells)
        if len(batch) >= BATCH_ROWS or chars >= BATCH_CHARS:
            sender.send({"line": first, "rows": batch, "long": long})
            first, batch, long, chars = line + 1, [], [], 0
    if batch:
        sender.send({"line": first, "rows": batch, "long": long})
    sender.send({"end": line})
    return line


def main(argv: list[str]) -> int:
    path, file_format, limits_json = argv[1:4]
    limits = json.loads(limits_json)
    confine(limits)
    sender = _Sender(sys.stdout.buffer)
    try:
        read(path, file_format, limits, sender)
    except Refused as e:
        sender.send({"refused": str(e)[:2000]})
        return EXIT_REFUSED
    except MemoryError:
        return EXIT_MEMORY
    except BrokenPipeError:  # the importer stopped reading (it has what it needs, or it gave up)
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
