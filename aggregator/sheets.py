"""Tables written as files a person opens as they are: CSV (UTF-8 with a BOM, so that spreadsheet programs read
the Chinese) and XLSX (XlsxWriter, in memory). Every cell is neutralised against formula injection
(`render.neutralise`), and XLSX cells are written as strings, never as formulas or links.

    text = csv_text(("工号", "姓名"), rows)
    data = xlsx_bytes(("工号", "姓名"), rows, widths=(10, 10), sheet="核验结果")
    cell = lines(["MEM", "SAMR"])        # one line per certificate inside a cell, kept aligned across columns

Used by the employer's batch exports (`web.pages.exports`) and the roster exports (`rosters.export`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from aggregator.render import neutralise

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def lines(values: Iterable[object]) -> str:
    """Several values in one cell, one a line: the n-th line of every such cell of a row is about one thing."""
    return "\n".join("" if v is None else str(v) for v in values)


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    buf.write("\ufeff")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([neutralise(c) for c in columns])
    for row in rows:
        writer.writerow([neutralise(c) for c in row])
    return buf.getvalue()


def xlsx_bytes(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    widths: Sequence[int] | None = None,
    sheet: str = "Sheet1",
) -> bytes:
    """An XLSX workbook of one sheet: a bold header row (frozen, with a filter), then the rows as strings."""
    import xlsxwriter

    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False})
    ws = book.add_worksheet(sheet)
    head = book.add_format({"bold": True, "bg_color": "#EAEEF2", "valign": "top", "text_wrap": True})
    body = book.add_format({"valign": "top", "text_wrap": True})
    for col, title in enumerate(columns):
        ws.write_string(0, col, neutralise(title), head)
        if widths is not None and col < len(widths):
            ws.set_column(col, col, widths[col])
    n = 0
    for n, row in enumerate(rows, start=1):
        for col, value in enumerate(row):
            ws.write_string(n, col, neutralise(value), body)
    ws.freeze_panes(1, 0)
    ws.autofilter(0, 0, max(n, 1), len(columns) - 1)
    book.close()
    return buf.getvalue()
