"""`certq rosters`: an employer's rosters from the command line, by the same rules as the API (services.rosters).

    certq rosters create staff.xlsx --name 二标段 --org 某建设集团        # prints the id; bad rows: exit 65
    certq rosters list --org 某建设集团 [--json]
    certq rosters verify ID --org 某建设集团 [--wait]                     # a progress bar while it runs
    certq rosters export ID --org 某建设集团 --format xlsx --lang zh -o results.xlsx
    certq rosters events ID --org 某建设集团 [--after N] [--json]

The organisation (--org, or CERTQ_ORG) is what an API key's label is: rosters of keys with that label are the
organisation's, and the command acts as an employer key of it. On the embedded default (SQLite) a run happens
in this process (the in-memory queue is not shared), so `verify` always waits there; on PostgreSQL it queues the
run for `certq worker` and, with --wait, follows it until it is done.

Exit codes: 0 done · 1 a run failed or was cancelled · 65 a roster file with problems (nothing created) or
a bad request · 66 no such roster or run (of this organisation) · 2 bad arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from aggregator.errors import describe

if TYPE_CHECKING:
    from aggregator.jobs import Job
    from aggregator.web.roles import Principal
    from aggregator.web.services import Services

T = TypeVar("T")
EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 65
CLI_KEY_ID = "cli"  # what `created_by` records for rosters and runs started here
POLL_S = 0.25
SHOWN_PROBLEMS = 20
FINISHED = ("finished", "failed", "cancelled")

console = Console()
err_console = Console(stderr=True)


@dataclass
class Session:
    services: Services
    principal: Principal
    in_process: bool  # the run happens in this process (SQLite): leaving would drop it


@contextlib.asynccontextmanager
async def _session(org: str, database_url: str | None, redis_url: str | None) -> AsyncIterator[Session]:
    """Gateway, services and the job engine as `certq worker` builds them; the worker inside this process
    only on the embedded default."""
    from aggregator.config import Settings
    from aggregator.gateway import Gateway
    from aggregator.web.config import WebConfig
    from aggregator.web.metrics import Metrics
    from aggregator.web.roles import Principal, Role
    from aggregator.web.services import Services
    from aggregator.web.services.work import RunningWork, Work

    if logging.getLogger().getEffectiveLevel() >= logging.WARNING:  # receipts are not made here: no key is fine
        logging.getLogger("aggregator.web.services.receipts").setLevel(logging.ERROR)
    gateway = await Gateway.open(Settings.load(), database_url=database_url, redis_url=redis_url)
    try:
        services = Services.on(gateway, config=WebConfig.from_env(), metrics=Metrics())
        in_process = gateway.store.engine.dialect.name != "postgresql"
        running = RunningWork(services, in_process=in_process, concurrency=4)
        services.work = Work(services, running)
        try:
            yield Session(services, Principal(Role.EMPLOYER, key_id=CLI_KEY_ID, label=org), in_process)
        finally:
            await running.stop()
    finally:
        await gateway.close()


def _run(org: str, database_url: str | None, redis_url: str | None, work: Callable[[Session], Awaitable[T]]) -> T:
    """Run `work` in a session; every error is printed through the one table and exits with its code (a
    rejected roster file prints its report first)."""
    from aggregator.web.problems import RosterRejected

    async def run() -> T:
        async with _session(org, database_url, redis_url) as session:
            return await work(session)

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        err_console.print("[yellow]已中断 (interrupted)[/yellow]")
        sys.exit(130)
    except RosterRejected as e:
        print_problems(e.extra.get("report") or {})
        err_console.print(f"[red]{e.zh} ({e.en})[/red]")
        sys.exit(describe(e).exit_code)
    except Exception as e:  # noqa: BLE001 - every error goes through the one table
        err = describe(e)
        err_console.print(f"[red]{err.text}[/red]")
        if err.exit_code >= 70:
            err_console.print_exception()
        sys.exit(err.exit_code)


def print_problems(report: dict[str, Any], *, limit: int = SHOWN_PROBLEMS) -> None:
    """A rejected file's problems: line, column, value, reason (as `certq import` prints them)."""
    problems = report.get("problems") or []
    total = report.get("problems_total", len(problems))
    if report.get("rows_total") is not None:
        err_console.print(
            f"  行 rows {report.get('rows_total', 0):,} · 有效 valid {report.get('rows_valid', 0):,}"
            f" · 重复 duplicates {report.get('duplicates', 0):,} · 问题 problems {total:,}"
        )
    for w in report.get("warnings") or []:
        err_console.print(f"  [yellow]![/yellow] {w}")
    if not problems:
        return
    table = Table("行 line", "列 column", "值 value", "原因 reason", title=f"问题 problems ({total:,})",
                  title_justify="left")
    for column in table.columns:
        column.overflow = "fold"
    table.columns[0].no_wrap = True
    for p in problems[:limit]:
        table.add_row(str(p.get("line", "")), p.get("column") or "", p.get("value") or "", p.get("reason") or "")
    err_console.print(table)
    if total > min(limit, len(problems)):
        err_console.print(f"  … 另有 {total - min(limit, len(problems)):,} 处未列出 (more problems not shown)")


# --- options -----------------------------------------------------------------------------------------------------


def _org(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    text = " ".join((value or "").split())
    if not text:
        raise click.BadParameter("请给出机构（API 密钥的标签） (give the organisation: an API key's label)")
    return text


_org_option = click.option(
    "--org", "org", envvar="CERTQ_ORG", required=True, callback=_org, metavar="LABEL",
    help="机构：API 密钥的标签 (the organisation: an API key's label; env CERTQ_ORG).",
)
_db_option = click.option("--db", "database_url", envvar="CERTQ_DATABASE_URL", help="数据库 (database URL; default: the home's).")
_redis_option = click.option("--redis", "redis_url", envvar="CERTQ_REDIS_URL", help="Redis URL (default: the home's).")


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    return _org_option(_db_option(_redis_option(f)))


@click.group("rosters")
def rosters_group() -> None:
    """名单：创建、列出、核验、导出 (rosters: create, list, verify, export).

    An employer's list of staff and their certificates, verified all at once and (optionally) monitored.
    --org names the organisation, as an API key's label does: the command sees that organisation's rosters.
    """


# --- create ------------------------------------------------------------------------------------------------------


@rosters_group.command("create")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="名单名称 (the roster's name).")
@click.option("--partial", is_flag=True,
              help="只保存有效行，报告其余 (keep the valid rows; default: any bad row refuses the whole file).")
@click.option("--json", "as_json", is_flag=True, help="输出 JSON (print JSON).")
@_common
def create_command(
    file: Path, name: str, partial: bool, as_json: bool, org: str, database_url: str | None, redis_url: str | None
) -> None:
    """创建名单 (create a roster from FILE: CSV, XLSX or XLS).

    Columns: 证书编号 and 姓名 required; 身份证号, 工号 and 部门/班组 optional (Chinese or English headers).
    Without --partial a file with any invalid or duplicate row creates nothing, and the report lists line,
    column, value and reason for each problem.

    \b
    Exit codes: 0 created · 1 created, some rows left out (--partial)
                65 nothing created (the report says why) · 2 bad arguments
    """

    async def work(s: Session):
        return await s.services.rosters.create_from_file(s.principal, file, name=name, partial=partial)

    roster, parsed = _run(org, database_url, redis_url, work)
    if as_json:
        click.echo(json.dumps({"roster": roster.as_json(), "report": parsed.report()}, ensure_ascii=False, indent=2))
    else:
        console.print(f"[green]已创建名单 roster created[/green] {roster.id}")
        console.print(f"  {roster.name} · 成员 members {roster.members:,} · 机构 organisation {roster.organisation}")
        if parsed.problems_total:
            err_console.print("[yellow]部分行未保存 (some rows were left out):[/yellow]")
            print_problems(parsed.report())
        console.print(f"  下一步 next: certq rosters verify {roster.id} --org '{org}'", soft_wrap=True, highlight=False)
    sys.exit(EXIT_RUN_FAILED if parsed.problems_total else EXIT_OK)


# --- list --------------------------------------------------------------------------------------------------------


@rosters_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="输出 JSON (print JSON).")
@_common
def list_command(as_json: bool, org: str, database_url: str | None, redis_url: str | None) -> None:
    """列出名单 (list the organisation's rosters, newest first)."""

    async def work(s: Session):
        return await s.services.rosters.list(s.principal)

    found = _run(org, database_url, redis_url, work)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in found], ensure_ascii=False, indent=2))
        return
    if not found:
        console.print(f"还没有名单 (no rosters yet for {org})")
        return
    table = Table("id", "名称 name", "成员", "创建 (UTC)", "监测")
    for column in table.columns:
        column.overflow = "fold"
    for i in (0, 2, 3):
        table.columns[i].no_wrap = True
    for r in found:
        monitor = f"每 {r.monitor_every_h} 小时" if r.monitor else "否 (off)"
        table.add_row(r.id, r.name, f"{r.members:,}", f"{r.created_at:%Y-%m-%d %H:%M}", monitor)
    console.print(table)


# --- verify ------------------------------------------------------------------------------------------------------


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        console=err_console,
        disable=not err_console.is_terminal,
        transient=True,
    )


def _rate_eta(view: dict[str, Any]) -> tuple[str, str]:
    rate = f"{view['rows_per_s']:.1f} 行/s" if view.get("rows_per_s") is not None else ""
    eta = view.get("eta_s")
    if eta is None:
        return rate, ""
    minutes, seconds = divmod(int(eta + 0.5), 60)
    return rate, f"剩余 {minutes}:{seconds:02d}"


async def follow(s: Session, job: Job) -> Job:
    """Poll the job until it is done, drawing a progress bar (done/total, rows per second, time left) on a
    terminal. Interrupted while the run is in this process, the run is cancelled rather than left behind."""
    from aggregator.web.services.rosters import job_view

    with _progress() as bar:
        task = bar.add_task("核验 verifying", total=job.total or None, rate="", eta="")
        try:
            while job.status not in FINISHED:
                await asyncio.sleep(POLL_S)
                job = await s.services.rosters.job(s.principal, job.id)
                rate, eta = _rate_eta(job_view(job))
                bar.update(task, completed=job.done, total=job.total or None, rate=rate, eta=eta)
        except (asyncio.CancelledError, KeyboardInterrupt):
            if s.in_process:
                with contextlib.suppress(Exception):
                    await asyncio.shield(s.services.work.cancel(s.principal, job.id))
            raise
    return job


def print_job(job: Job, started: float) -> None:
    from aggregator.rosters.export import verdict_words

    style = {"finished": "green", "failed": "red", "cancelled": "yellow"}.get(job.status, "cyan")
    words = {"queued": "排队中", "running": "进行中", "finished": "已完成", "failed": "失败", "cancelled": "已取消"}
    console.print(
        f"[{style}]{words.get(job.status, job.status)} {job.status}[/{style}] 任务 job {job.id} · "
        f"{job.done:,}/{job.total:,} · {time.monotonic() - started:.1f} s"
    )
    if job.counts:
        table = Table("结论 verdict", "人数 members", title="结果 results", title_justify="left")
        for verdict, n in sorted(job.counts.items(), key=lambda kv: -kv[1]):
            table.add_row(f"{verdict_words(verdict)} ({verdict})", f"{n:,}")
        console.print(table)
    if job.error:
        console.print(f"[red]{job.error}[/red]")


@rosters_group.command("verify")
@click.argument("roster_id")
@click.option("--wait", is_flag=True,
              help="等待核验完成并显示进度 (follow the run until it is done; always so on SQLite, where it runs here).")
@click.option("--json", "as_json", is_flag=True, help="输出任务 JSON (print the job as JSON).")
@_common
def verify_command(
    roster_id: str, wait: bool, as_json: bool, org: str, database_url: str | None, redis_url: str | None
) -> None:
    """核验名单 (verify every member of ROSTER_ID).

    On PostgreSQL the run is queued for `certq worker` (any number of them) and the job id printed; --wait
    follows it. On the embedded default (SQLite) it runs in this process, with a progress bar, and the command
    returns when it is done. `certq rosters export ID` then writes the results.

    \b
    Exit codes: 0 finished (or queued, without --wait)
                1 the run failed or was cancelled · 65 the roster has no members
                66 no such roster of this organisation
    """
    started = time.monotonic()

    async def work(s: Session) -> Job:
        job = await s.services.rosters.start_run(s.principal, roster_id)
        if not as_json:
            err_console.print(f"任务 job {job.id}: {job.total:,} 人 members")
        if wait or s.in_process:
            job = await follow(s, job)
        return job

    job = _run(org, database_url, redis_url, work)
    if as_json:
        from aggregator.web.services.rosters import job_view

        click.echo(json.dumps(job_view(job), ensure_ascii=False, indent=2))
    else:
        print_job(job, started)
        if job.status == "finished":
            console.print(f"  导出 export: certq rosters export {roster_id} --org '{org}' -o results.csv", soft_wrap=True,
                          highlight=False)
        elif job.status not in FINISHED:
            console.print("  已排队，由 certq worker 运行 (queued: a `certq worker` runs it)")
    sys.exit(EXIT_RUN_FAILED if job.status in ("failed", "cancelled") else EXIT_OK)


# --- export ------------------------------------------------------------------------------------------------------


@rosters_group.command("export")
@click.argument("roster_id")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv", show_default=True,
              help="文件格式 (file format).")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True,
              help="表头与用语 (headers and words: Chinese or English).")
@click.option("--job", "job_id", default=None, help="哪一次核验 (which run; default: the newest).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="写入文件 (write to this file; default: CSV to stdout, XLSX to certq-roster-<id>.xlsx).")
@_common
def export_command(
    roster_id: str, fmt: str, lang: str, job_id: str | None, output: Path | None, org: str,
    database_url: str | None, redis_url: str | None,
) -> None:
    """导出核验结果，每人一行 (export a run's results as CSV or XLSX).

    One line per member: verdict, name check, each certificate's department, number, status and valid-until,
    days to expiry and the reason. Headers and words in Chinese (--lang zh) or English (--lang en)."""

    async def work(s: Session):
        return await s.services.rosters.export(s.principal, roster_id, job_id=job_id, fmt=fmt, lang=lang)

    body, _media_type, filename = _run(org, database_url, redis_url, work)
    if output is None and fmt == "csv":
        click.echo(body, nl=False)
        return
    path = output or Path(filename)
    try:
        if isinstance(body, str):
            path.write_text(body, encoding="utf-8-sig" if fmt == "csv" else "utf-8")
        else:
            path.write_bytes(body)
    except OSError as e:
        err_console.print(f"[red]无法写入 {path} (cannot write {path}: {e.strerror})[/red]")
        sys.exit(EXIT_USAGE)
    err_console.print(f"已写入 written: {path}")


# --- events ------------------------------------------------------------------------------------------------------


@rosters_group.command("events")
@click.argument("roster_id")
@click.option("--after", default=0, show_default=True, type=click.IntRange(0), help="游标：只列此后的事件 (cursor).")
@click.option("--type", "type_", default=None, help="只列此类事件 (only events of this type).")
@click.option("--member", default=None, help="只列此工号的事件 (only this member's reference).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000), help="最多几条 (at most).")
@click.option("--json", "as_json", is_flag=True, help="输出 JSON (print JSON).")
@_common
def events_command(
    roster_id: str, after: int, type_: str | None, member: str | None, limit: int, as_json: bool, org: str,
    database_url: str | None, redis_url: str | None,
) -> None:
    """名单的事件 (the roster's events: status changes, expiry warnings, ...).

    Oldest first from the cursor --after; the last line says the cursor to pass next time."""

    async def work(s: Session):
        return await s.services.rosters.events(s.principal, roster_id, after=after, type=type_, member=member,
                                              limit=limit)

    events, next_after = _run(org, database_url, redis_url, work)
    if as_json:
        last = events[-1].id if events else after
        click.echo(json.dumps({"events": [e.as_json() for e in events], "next_after": next_after, "last": last},
                              ensure_ascii=False, indent=2))
        return
    if not events:
        console.print(f"没有新事件 (no events after {after})")
        return
    table = Table("#", "时间 at (UTC)", "工号 ref", "类型 type", "证书 number", "变化 change")
    for column in table.columns:
        column.overflow = "fold"
    table.columns[0].no_wrap = True
    for e in events:
        change = f"{e.old or ''} → {e.new or ''}" if (e.old or e.new) else ""
        table.add_row(str(e.id), f"{e.at:%Y-%m-%d %H:%M}", e.member_ref or "", e.type, e.number or "", change)
    console.print(table)
    if next_after is not None:
        console.print(f"  还有更多 more: --after {next_after}")
    else:
        console.print(f"  下次从此继续 next time: --after {events[-1].id}")
