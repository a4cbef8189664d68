"""`certq import` and `certq uploads`: a department's quarterly records file in, its batch reports out.

    certq import mem-2026Q3.csv --department mem --quarter 2026Q3            # all or nothing
    certq import mem-2026Q3.xlsx --department mem --quarter 2026Q3 --partial  # keep the good rows
    certq uploads list [--department mem]
    certq uploads show 3 [--json]

Exit codes of `certq import`: 0 imported (also: this very file was imported before, nothing added);
1 imported with --partial but some rows rejected; 65 rejected, nothing imported (the report says why);
2 bad arguments (unknown department, malformed quarter, no such file).
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from aggregator.errors import describe
from aggregator.models import Department
from aggregator.records.report import AlreadyImported, BatchReport, BatchStatus, BatchSummary, InvalidQuarter
from aggregator.render import print_rows

if TYPE_CHECKING:
    from aggregator.records.store import RecordStore

T = TypeVar("T")
EXIT_IMPORTED, EXIT_PARTIAL, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 65
SHOWN_PROBLEMS = 20  # problems printed under a report unless --all

console = Console()
err_console = Console(stderr=True)

_db_option = click.option(
    "--db", "database_url", envvar="CERTQ_DATABASE_URL", help="Database URL (default: CERTQ_DATABASE_URL or SQLite)."
)
_config_option = click.option("--config-dir", envvar="CERTQ_CONFIG_DIR", help="Config directory (departments.toml).")


def _quarter(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from aggregator.records.report import parse_quarter

    try:
        return parse_quarter(value)
    except InvalidQuarter as e:
        raise click.BadParameter(str(e)) from None


def _with_store(database_url: str | None, config_dir: str | None, work: Callable[[RecordStore], Awaitable[T]]) -> T:
    """Open the records database (running migrations), run `work(store)`, close. `AlreadyImported` passes
    through; every other error is printed through the one table and exits with its code."""
    from aggregator.records.importer import load_departments
    from aggregator.records.store import RecordStore

    async def run() -> T:
        departments = load_departments(config_dir) if config_dir else None
        store = await RecordStore.open(database_url, departments=departments)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except AlreadyImported:
        raise
    except Exception as e:  # noqa: BLE001 - every error goes through the one table
        err = describe(e)
        err_console.print(f"[red]{err.text}[/red]")
        if err.exit_code >= 70:
            err_console.print_exception()
        sys.exit(err.exit_code)


# --- import ------------------------------------------------------------------------------------------


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--department", "-d", required=True, type=click.Choice([d.value for d in Department]),
              help="Whose records these are.")
@click.option("--quarter", "-q", required=True, callback=_quarter, help="The quarter the file reports, e.g. 2026Q3.")
@click.option("--partial", is_flag=True,
              help="Import the valid rows and keep the rejected ones in the report (default: any bad row rejects the file).")
@click.option("--by", "uploaded_by", default="cli", show_default=True, help="Who uploads (recorded in the batch).")
@click.option("--json", "as_json", is_flag=True, help="Print the batch report as JSON.")
@click.option("--all", "show_all", is_flag=True, help="Print every problem kept in the report, not the first 20.")
@_db_option
@_config_option
def import_command(
    file: Path,
    department: str,
    quarter: str,
    partial: bool,
    uploaded_by: str,
    as_json: bool,
    show_all: bool,
    database_url: str | None,
    config_dir: str | None,
) -> None:
    """Import a department's quarterly records FILE (CSV, XLSX or XLS).

    Every row is validated. Without --partial a file with any invalid row is rejected whole, nothing is
    imported, and the report lists line, column, value and reason for each problem. A newer quarter
    supersedes the department's older rows; the same file twice is reported as already imported.

    \b
    Exit codes: 0 imported (or already imported) · 1 partly imported (--partial)
                65 rejected, nothing imported · 2 bad arguments
    """
    show_progress = err_console.is_terminal
    gc.freeze()  # a one-shot process: keep what start-up made out of the collector's scans during a long import

    async def run(store: RecordStore) -> BatchReport:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[rows]:>10,} rows"),
            TimeRemainingColumn(),
            console=err_console,
            disable=not show_progress,
            transient=True,
        ) as bar:
            task = bar.add_task(f"importing {file.name}", total=file.stat().st_size or 1, rows=0)

            def progress(rows: int, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total or 1, rows=rows)

            return await store.import_file(
                file, department=department, quarter=quarter, uploaded_by=uploaded_by, partial=partial,
                progress=progress,
            )

    try:
        report = _with_store(database_url, config_dir, run)
    except AlreadyImported as e:
        if as_json:
            click.echo(f'{{"already_imported": true, "batch_id": {e.batch_id}}}')
        else:
            console.print(f"[yellow]{e}[/yellow]")
        sys.exit(EXIT_IMPORTED)
    if report.status != BatchStatus.REJECTED:
        _announce_import(department)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        print_report(report, limit=None if show_all else SHOWN_PROBLEMS)
    sys.exit({BatchStatus.IMPORTED: EXIT_IMPORTED, BatchStatus.PARTIAL: EXIT_PARTIAL}.get(report.status, EXIT_REJECTED))


def _announce_import(department: str) -> None:
    """With Redis configured, running instances read the department's data generation again at once."""
    from aggregator.home import Home, HomeError

    try:
        redis_url = Home.load().redis_url
    except HomeError:
        return  # the import itself went through; the instances see it within their 1-second memo
    if redis_url:
        from aggregator.cache.events import announce_import

        asyncio.run(announce_import(redis_url, department))


# --- Reports -----------------------------------------------------------------------------------------

_STATUS_TEXT = {
    BatchStatus.IMPORTED: ("[green]已导入 imported[/green]"),
    BatchStatus.PARTIAL: ("[yellow]部分导入 partly imported[/yellow]"),
    BatchStatus.REJECTED: ("[red]已拒绝，未导入任何记录 rejected, nothing imported[/red]"),
}


def print_report(report: BatchReport, *, limit: int | None) -> None:
    """A batch report for a person: the summary, the warnings, then problems (line, column, value, reason)."""
    console.print(
        f"批次 batch {report.id} · {report.department.value} {report.quarter} · {report.file_name} · "
        f"{_STATUS_TEXT[report.status]}"
    )
    fmt = report.file_format or "?"
    if report.encoding:
        fmt += f", {report.encoding}"
    console.print(
        f"  rows {report.rows_total:,} · imported {report.rows_imported:,} · rejected {report.rows_rejected:,}"
        f" · format {fmt} · uploaded {report.uploaded_at:%Y-%m-%d %H:%M} UTC by {report.uploaded_by}"
    )
    if report.superseded or report.outdated:
        console.print(
            f"  replaced {report.superseded:,} rows of older quarters; {report.outdated:,} of its rows were "
            "already superseded by a newer quarter (kept as history)"
        )
    for w in report.warnings:
        console.print(f"  [yellow]![/yellow] {w}")
    if not report.problems:
        return
    shown = report.problems if limit is None else report.problems[:limit]
    table = Table("line", "column", "value", "reason", title=f"problems ({report.problems_total:,})", title_justify="left")
    for p in shown:
        table.add_row(str(p.line), p.column or "", p.value or "", p.reason)
    console.print(table)
    hidden = report.problems_total - len(shown)
    if hidden > 0:
        kept = len(report.problems) - len(shown)
        more = f"; `certq uploads show {report.id} --all` prints {kept:,} more" if kept > 0 else ""
        console.print(f"  … {hidden:,} more problems not shown{more}")


WIDE = 120  # columns from which uploads are listed as a table; narrower terminals get two lines per upload


def summaries_table(batches: list[BatchSummary]) -> Table:
    table = Table(
        "编号\nid", "部门\ndepartment", "季度\nquarter", "文件\nfile", "上传\nuploaded (UTC)", "上传人\nby",
        "行数\nrows", "导入\nimported", "拒绝\nrejected", "状态\nstatus",
    )
    for column in table.columns:  # long cells fold, nothing is cut; all but the file name and uploader never wrap
        column.overflow = "fold"
        column.no_wrap = column.header not in ("文件\nfile", "上传人\nby")
    for b in batches:
        table.add_row(
            str(b.id), b.department.value, b.quarter, b.file_name, f"{b.uploaded_at:%Y-%m-%d %H:%M}", b.uploaded_by,
            f"{b.rows_total:,}", f"{b.rows_imported:,}", f"{b.rows_rejected:,}", b.status.value,
        )
    return table


def summaries_lines(batches: list[BatchSummary]) -> Table:
    """The same for a narrow terminal (80 columns): per upload, what and how it went, then where it came from."""
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True, justify="right")
    table.add_column(overflow="fold")
    for b in batches:
        table.add_row(
            f"#{b.id}",
            f"[bold]{b.department.value} {b.quarter}[/bold]  {b.status.value}  "
            f"{b.rows_imported:,}/{b.rows_total:,} 行导入 rows imported, {b.rows_rejected:,} 拒绝 rejected",
        )
        table.add_row("", f"[dim]{b.file_name} · {b.uploaded_at:%Y-%m-%d %H:%M} UTC · {b.uploaded_by}[/dim]")
    return table


# --- uploads -----------------------------------------------------------------------------------------


@click.group("uploads")
def uploads_group() -> None:
    """Uploaded batches: list them, show one's report."""


@uploads_group.command("list")
@click.option("--department", "-d", type=click.Choice([d.value for d in Department]), help="Only this department.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Newest N batches.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@_db_option
def uploads_list(department: str | None, limit: int, as_json: bool, as_csv: bool, database_url: str | None) -> None:
    """List uploads, newest first (rejected ones too: their reports say what to fix)."""

    batches = _with_store(database_url, None, lambda store: store.list_batches(department, limit=limit))
    if as_json:
        click.echo("[" + ",\n".join(b.model_dump_json() for b in batches) + "]")
    elif as_csv:
        print_rows([b.model_dump(mode="json") for b in batches], as_json=False)
    elif not batches:
        console.print("还没有上传 (no uploads yet)")
    else:
        console.print(summaries_table(batches) if console.width >= WIDE else summaries_lines(batches))


@uploads_group.command("show")
@click.argument("batch_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--all", "show_all", is_flag=True, help="Every problem kept in the report, not the first 20.")
@_db_option
def uploads_show(batch_id: int, as_json: bool, show_all: bool, database_url: str | None) -> None:
    """Show one upload's report: counts, warnings, and every rejected row with its reason."""

    report = _with_store(database_url, None, lambda store: store.get_batch(batch_id))
    if report is None:
        err_console.print(f"[red]没有批次 {batch_id} (no upload with id {batch_id})[/red]")
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
        return
    print_report(report, limit=None if show_all else SHOWN_PROBLEMS)
    if report.rejected_rows and (show_all or len(report.rejected_rows) <= SHOWN_PROBLEMS):
        table = Table("line", "cells as uploaded", title="rejected rows", title_justify="left")
        for r in report.rejected_rows:
            table.add_row(str(r.line), "  ".join(f"{k}={v}" for k, v in r.cells.items()))
        console.print(table)
