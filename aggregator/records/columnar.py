"""Validating a large, plain CSV upload column by column in polars: the row-by-row rules only for the rows
the column checks flag, the same report.

    lane = ColumnarLane.open(path, source, validator, header_line, min_bytes=limits.columnar_min_bytes)
    if lane is not None:
        resume = yield from lane.chunks(limits.max_rows, too_many_rows, limits.max_cell_chars)
        ...  # a Chunk per block; at the end None, or (offset, line, rows left) to go on with row by row

`RowValidator` (validate.py) already checks a chunk of rows column by column with C-level `map`s, but every
cell still becomes a Python string first and every rule still runs in the interpreter. Here polars reads a
block of the file (1 MiB, about 6,000 rows) in Rust, splits it into cells and runs the common case of every
rule over whole columns (ID check characters, number shapes, the number/ID pairing, dates, statuses and
genders through their distinct values), mostly outside the GIL (on PostgreSQL it overlaps with the server
storing the block before). Only the rows a column check flags go through `RowValidator.validate_rows`, which
says why, exactly as it would have. The valid rows stay a polars frame (`Chunk.frame`): PostgreSQL's COPY
gets them as CSV written by polars, SQLite's INSERTs as tuples (`Chunk.all_records`, in line order).

What a block must be for this to be exact, checked on its bytes first (any block that is not goes, with the
rest of the file, to the row-by-row reader, starting at that block's first line):
- UTF-8 without undecodable bytes; no quote character (so one physical line is one row, and splitting on the
  delimiter is what `csv.reader` does); no lone carriage return;
- no control character and no whitespace other than space and tab that Python's `str.strip` would strip
  (so that polars' strip of spaces and tabs is `str.strip`), no line longer than `max_cell_chars`;
- every line as wide as the header (or empty).
Rows a column check flags (each an exact superset of what the row rules refuse or change): a number or ID
number outside the plain shapes, a MEM number that is not T + the ID column, an MOHRSS number that is not a
22-character one, a row longer than `validate.MAX_TEXT`, an empty name, a date, status or gender the rules
refuse, valid_until before valid_from.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.models import Department
from aggregator.numbers import MAX_INPUT_LENGTH, PROVINCE_ABBREVIATIONS
from aggregator.records import fields
from aggregator.records.report import UnreadableFile
from aggregator.records.validate import (
    _CHECK_BY_REMAINDER,
    _DATE_ORDER,
    CACHE_MOST,
    MAX_TEXT,
    Chunk,
    RowValidator,
    _birth_date_ok,
)

if TYPE_CHECKING:
    import polars as pl

    from aggregator.records.importer import TableSource

BLOCK_BYTES = 1024 * 1024  # 2 MiB: ~30 MB more peak memory for ~10 % less CPU (bench/README.md)

Resume = tuple[int, int, int]  # (byte offset, line number, data rows still allowed) for the row-by-row reader

# Characters that make a block not plain: C0 controls but tab/LF/CR, DEL, and every non-ASCII character
# Python's str.strip strips (so that stripping " \t" is str.strip), the quote character.
_PYTHON_SPACES = "".join(c for c in map(chr, range(0x80, 0x3001)) if c.isspace())
_NOT_PLAIN = "[" + "".join(map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])) + f'"{_PYTHON_SPACES}]'
assert not set("\\[]^-") & set(_NOT_PLAIN[1:-1])  # each character literal in polars' (Rust) regex class
_OWN_NUMBER = {  # the plain shapes a department issues ([0-9], not \d: polars' \d is Unicode)
    Department.MOHURD: rf"^[{PROVINCE_ABBREVIATIONS}][A-Z][0-9]{{12}}$",
    Department.MOHRSS: r"^[YS][0-9]{21}$",
}
_TEXT_COLUMNS = ("category", "operation_item", "level", "issuer")


class ColumnarLane:
    """One upload's blocks, validated in polars (see the module docstring)."""

    def __init__(
        self, path: Path, validator: RowValidator, delimiter: str, offset: int, line: int, block_bytes: int
    ) -> None:
        self.path = path
        self.validator = validator
        self.delimiter = delimiter
        self.width = validator.width
        self.offset = offset  # where the data rows begin (after the header line)
        self.line = line  # the line number there
        self.block_bytes = block_bytes

    @classmethod
    def open(
        cls,
        path: Path,
        source: TableSource,
        validator: RowValidator,
        header_line: int,
        *,
        min_bytes: int,
        block_bytes: int | None = None,
    ) -> ColumnarLane | None:
        """A lane for a plain UTF-8 CSV of at least `min_bytes` whose header the lane's rules cover, else None."""
        columns = validator.columns
        delimiter = getattr(source, "delimiter", "")
        if (
            source.format != "csv"
            or source.encoding not in ("utf-8", "utf-8-sig")
            or source.bytes_total < min_bytes
            or "occupation" in columns
            or len(delimiter) != 1
            or (validator.dept in (Department.MEM, Department.SAMR) and fields.ID_NUMBER not in columns)
        ):
            return None
        with path.open("rb") as f:  # the header's lines: plain too, so that line numbers are the bytes' lines
            head = f.read(min(source.bytes_total, 1024 * 1024))
        offset = 0
        for _ in range(header_line):
            end = head.find(b"\n", offset)
            if end < 0:
                return None
            offset = end + 1
        if b'"' in head[:offset] or head[:offset].count(b"\r") != head[:offset].count(b"\r\n"):
            return None
        return cls(path, validator, delimiter, offset, header_line + 1, block_bytes or BLOCK_BYTES)

    def chunks(
        self, room: int, too_many_rows: Callable[[int], UnreadableFile], max_cell_chars: int
    ) -> Generator[Chunk, None, Resume | None]:
        """A `Chunk` per block; returns None at the end of the file, or where the row-by-row reader goes on.
        `room` data rows are allowed: the first beyond raises `too_many_rows(its line)`."""
        offset, line = self.offset, self.line
        with self.path.open("rb") as f:
            f.seek(offset)
            carry = b""
            while True:
                data = f.read(self.block_bytes)
                buffer = carry + data
                if not buffer:
                    return None
                if data:
                    cut = buffer.rfind(b"\n") + 1
                    if not cut:  # a whole block without a line end: not a plain file
                        return offset, line, room
                    block, carry = buffer[:cut], buffer[cut:]
                else:
                    block, carry = buffer, b""
                frame = self._frame(block, max_cell_chars)
                if frame is None:
                    return offset, line, room
                chunk: Chunk = self._validate(frame, line, offset + len(block))
                if chunk.rows > room:
                    raise too_many_rows(self._data_lines(frame, line)[room])
                room -= chunk.rows
                yield chunk
                offset += len(block)
                line += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
                if not data:
                    return None

    # --- one block -------------------------------------------------------------------------------

    def _frame(self, block: bytes, max_cell_chars: int) -> pl.DataFrame | None:
        """The block's lines (column `line`, null for an empty line) and cells (`c0`...), or None if the block
        is not plain (see the module docstring)."""
        import polars as pl

        if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
            return None
        try:  # polars refuses bytes that are not UTF-8
            lines = pl.read_csv(
                io.BytesIO(block), has_header=False, separator="\x01", quote_char=None, schema={"line": pl.String}
            )
        except pl.exceptions.PolarsError:
            return None
        delimiter, width = self.delimiter, self.width
        shape = lines.select(
            longest=pl.col("line").str.len_chars().max(),
            odd=(pl.col("line").str.count_matches(delimiter, literal=True) != width - 1).sum(),
            unusual=pl.col("line").str.contains(_NOT_PLAIN).any(),
        ).row(0)
        if (shape[0] or 0) > max_cell_chars or shape[1] or shape[2]:
            return None
        cells = pl.col("line").str.split_exact(delimiter, width - 1).struct.rename_fields(
            [f"c{i}" for i in range(width)]
        )
        return lines.with_columns(cells.alias("cells")).unnest("cells")

    def _data_lines(self, frame: pl.DataFrame, first: int) -> list[int]:
        data = frame.with_row_index("k").filter(_nonblank(self.width))
        return [first + k for k in data["k"].to_list()]

    def _validate(self, frame: pl.DataFrame, first: int, bytes_done: int) -> Chunk:
        import polars as pl

        v = self.validator
        width = self.width
        frame = frame.with_row_index("k").filter(_nonblank(width))
        cols = v.columns

        def cell(name: str) -> pl.Expr:
            index = cols.get(name)
            return pl.col(f"c{index}").str.strip_chars(" \t") if index is not None else pl.lit("")

        number, name = cell(fields.NUMBER), cell(fields.NAME)
        ok = number.str.len_chars().is_between(6, MAX_INPUT_LENGTH) & (name != "")
        ok &= pl.col("line").str.len_chars() <= MAX_TEXT
        exprs: dict[str, pl.Expr] = {"number": number, "name": name}
        if fields.ID_NUMBER in cols:
            id_number = cell(fields.ID_NUMBER)
            exprs["id"] = pl.when(id_number != "").then(id_number)
            ok &= (id_number == "") | _id_ok(id_number)
        else:
            exprs["id"] = pl.lit(None, pl.String)
        if v.dept is Department.MEM:
            ok &= number == pl.lit("T") + cell(fields.ID_NUMBER)
        elif v.dept is Department.SAMR:
            ok &= number.str.contains(r"^(?:[0-9]{17}[0-9X]|[0-9]{15})$")
        else:
            ok &= number.str.contains(_OWN_NUMBER[v.dept])
        for column in _TEXT_COLUMNS:
            exprs[column] = cell(column)
        exprs["status_text"] = cell("status")
        for column in ("gender", *_DATE_ORDER):
            exprs[f"raw_{column}"] = cell(column)
        table = frame.select(pl.col("k"), ok.fill_null(False).alias("ok"), **exprs)

        # Values through the rules once per distinct value: genders, statuses, dates (null: refused)
        table = table.with_columns(
            _through(table["raw_gender"], v._genders, v._gender).alias("gender"),
            _through(table["status_text"], v._status, v._status_of).alias("status"),
            *(_dates_through(table[f"raw_{d}"], v._dates).alias(d) for d in _DATE_ORDER),
            _born_ok(table["id"]).alias("born"),
        )
        refused = pl.any_horizontal(pl.col("gender", "status", *_DATE_ORDER).is_null())
        early = (pl.col("valid_until") != "") & (pl.col("valid_until") < pl.col("valid_from"))
        table = table.with_columns(
            (pl.col("ok") & ~refused & ~early.fill_null(False) & pl.col("born")).alias("ok")
        )
        good = table.filter(pl.col("ok"))
        flagged = table.filter(~pl.col("ok"))["k"].to_list()

        def text(column: str) -> pl.Expr:  # "" is stored as NULL, as `validate._none_if_empty` does
            return pl.when(pl.col(column) != "").then(pl.col(column))

        items = text("operation_item")
        item_lists = pl.lit(None, pl.String)
        if v.dept is Department.SAMR:
            distinct = [t for t in good["operation_item"].unique().to_list() if t]
            lists = {t: json.dumps(fields.split_items(t), ensure_ascii=False) for t in distinct}
            item_lists = items.replace_strict(lists, default=None, return_dtype=pl.String)
        valid = good.select(  # RECORD_COLUMNS, in their order
            number=pl.col("number"),
            holder_id_number=pl.col("id"),
            kind=pl.lit(v.kind),
            issuer=text("issuer"),
            holder_name=pl.col("name"),
            gender=text("gender"),
            category=text("category"),
            operation_item=items,
            items=item_lists,
            level=text("level"),
            **{d: text(d) for d in _DATE_ORDER},
            status=pl.col("status"),
            status_text=text("status_text"),
            row_number=pl.col("k").cast(pl.Int64) + first,
        )
        rows = frame.height
        if not flagged:
            return Chunk(frame=valid, rows=rows, bytes_done=bytes_done)
        # The flagged rows through the row-by-row rules: as `csv.reader` would read them (no quotes here)
        raw = frame.filter(pl.col("k").is_in(flagged))["line"].to_list()
        lines = [first + k for k in flagged]
        cells = [text.split(self.delimiter) for text in raw]
        records, problems, rejected = v.validate_rows(lines, cells)
        return Chunk(
            records=records,
            frame=valid,
            problems=problems,
            rejected=[(lines[k], cells[k]) for k in rejected],
            rows=rows,
            bytes_done=bytes_done,
        )


def _nonblank(width: int) -> pl.Expr:
    """A line holding something: not empty, and not only delimiters (`csv.reader` gives [] or empty cells,
    which are not data rows)."""
    import polars as pl

    return pl.any_horizontal([pl.col(f"c{i}") != "" for i in range(width)]).fill_null(False)


def _id_ok(id_number: pl.Expr) -> pl.Expr:
    """GB 11643 for an 18-character ID number of digits and X: shape and check character (the birth date is
    `_born_ok`'s)."""
    import polars as pl

    # as `validate.id_ok`: the weighted sum is 2 * (the first 17 digits read in base 13) mod 11 (13**17 < 2**63)
    remainder = id_number.str.slice(0, 17).str.to_integer(base=13, strict=False) % 11
    expected = remainder.replace_strict(list(range(11)), list(_CHECK_BY_REMAINDER), return_dtype=pl.String)
    return id_number.str.contains(r"^[0-9]{17}[0-9X]$") & (expected == id_number.str.slice(17, 1))


def _born_ok(ids: pl.Series) -> pl.Series:
    """Whether each ID number's birth date exists (True for a missing ID), once per distinct date."""
    import polars as pl

    births = ids.str.slice(6, 8)
    seen = {b: _birth_date_ok(b) for b in births.unique().to_list() if b is not None and b.isdigit()}
    return births.replace_strict(seen, default=False, return_dtype=pl.Boolean).fill_null(True) | ids.is_null()


def _dates_through(values: pl.Series, cache: dict[Any, str]) -> pl.Series:
    """ISO text of each date cell ("" for empty, null where `fields.parse_date` refuses it): a plain ISO date
    of a plausible year is itself (as `parse_date` + `isoformat` make it), checked in polars; only the other
    spellings (2024/1/2, 20240102, ...) go through `parse_date`, once per distinct value."""
    import polars as pl

    year = values.str.to_date("%Y-%m-%d", strict=False).dt.year()
    plain = (values.str.contains(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$") & year.is_between(fields.MIN_YEAR, fields.MAX_YEAR))
    plain = plain.fill_null(False)
    others = _through(values.filter(~plain), cache, _iso)
    out = pl.Series(values.name, [None] * len(values), dtype=pl.String)
    return out.scatter(plain.arg_true(), values.filter(plain)).scatter((~plain).arg_true(), others)


def _iso(text: str) -> str:
    parsed = fields.parse_date(text)
    return parsed.isoformat() if parsed else ""


def _through(values: pl.Series, cache: dict[Any, str], convert: Callable[[str], str]) -> pl.Series:
    """Each value through `convert` once per file (`cache` is the validator's own: text -> canonical value);
    null where it raises `FieldError` (a refused cell, left to the row-by-row rules to report)."""
    import polars as pl

    table: dict[str, str] = {}
    for value in values.unique().to_list():
        known = cache.get(value)
        if known is None:
            try:
                known = convert(value)
            except fields.FieldError:
                continue
            if len(cache) < CACHE_MOST:
                cache[value] = known
        table[value] = known
    return values.replace_strict(table, default=None, return_dtype=pl.String)
