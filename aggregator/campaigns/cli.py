"""`certq campaigns`: regulators' spot-check campaigns from the shell (the database's own operator, as `certq keys`).

    certq campaigns create --name "2026Q4 吉林 住建抽查" --department mohurd --province 吉林 --n 200 \
        --stratify-by issuer [--allocation equal] [--seed 20261125]
    certq campaigns list
    certq campaigns run ID            # checks every unchecked item here, with a progress bar (Ctrl-C: resume later)
    certq campaigns show ID [--json]  # rates per stratum with 95 % intervals, discrepancies
    certq campaigns export ID --format xlsx -o report.xlsx

Exit codes: 0 done; 2 bad arguments; 4 the run left inconclusive items; 69 database unreachable; 75 the audit log
cannot be written (the run stops: no check goes unlogged).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from aggregator.errors import describe

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)
_db_option = click.option(
    "--db", "database_url", envvar="CERTQ_DATABASE_URL", help="Database URL (default: CERTQ_DATABASE_URL or SQLite)."
)
EXIT_INCONCLUSIVE = 4


def _run(work: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(work())
    except KeyboardInterrupt:
        err_console.print("已中断：已写入的结果保留，再次运行即继续 (interrupted: results so far are kept; run again to go on)")
        sys.exit(130)
    except click.ClickException:
        raise
    except Exception as e:  # noqa: BLE001 - every error is reported through aggregator.errors
        err = describe(e)
        err_console.print(f"[red]{err.text}[/red]")
        if err.exit_code >= 70:
            err_console.print_exception()
        sys.exit(err.exit_code)


async def _store(database_url: str | None) -> Any:
    from aggregator.records import RecordStore

    return await RecordStore.open(database_url)


@click.group("campaigns")
def campaigns_group() -> None:
    """Spot-check campaigns: a reproducible sample of the uploads, checked against the live sources (抽查)."""


@campaigns_group.command("create")
@click.option("--name", required=True, help="What the campaign is for (名称/用途).")
@click.option("--department", "departments", multiple=True, help="mem, mohurd, samr, mohrss (repeatable).")
@click.option("--kind", "kinds", multiple=True, help="A certificate kind (repeatable).")
@click.option("--item", "operation_item", help="Operation item or occupation (操作项目/职业), exactly.")
@click.option("--issuer", help="Issuer (发证机关), exactly.")
@click.option("--province", help="Province: GB/T 2260 code (22) or name (吉林).")
@click.option("--city", help="City: the ID number's four digits (2201) or a MOHURD number's 吉A.")
@click.option("--quarter", help="Quarter uploaded, e.g. 2026Q3.")
@click.option("--valid-on", "valid_on", help="Valid on this day (YYYY-MM-DD).")
@click.option("--n", "n", type=int, required=True, help="Sample size.")
@click.option("--stratify-by", type=click.Choice(["issuer", "province", "city"]), help="Stratified sample by ...")
@click.option("--allocation", type=click.Choice(["proportional", "equal"]), default="proportional", show_default=True)
@click.option("--seed", type=int, help="The seed (default: a random one, recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print the campaign as JSON.")
@_db_option
def create_command(name: str, departments: tuple[str, ...], kinds: tuple[str, ...], operation_item: str | None,
                   issuer: str | None, province: str | None, city: str | None, quarter: str | None,
                   valid_on: str | None, n: int, stratify_by: str | None, allocation: str, seed: int | None,
                   as_json: bool, database_url: str | None) -> None:  # fmt: skip
    """Draw a campaign's sample now and keep it (filters, design, seed, strata)."""
    from aggregator.audit.entry import CLI
    from aggregator.campaigns import CampaignInvalid, CampaignStore, parse_design, parse_population

    filters = {"departments": list(departments), "kinds": list(kinds), "operation_item": operation_item,
               "issuer": issuer, "province": province, "city": city, "quarter": quarter, "valid_on": valid_on}  # fmt: skip
    design: dict[str, Any] = {"n": n, "allocation": allocation}
    if stratify_by:
        design.update(method="stratified", stratify_by=stratify_by)
    if seed is not None:
        design["seed"] = seed
    try:
        population, parsed = parse_population(filters), parse_design(design)
    except CampaignInvalid as e:
        raise click.BadParameter(f"{e.zh} ({e.en})") from None

    async def work() -> Any:
        store = await _store(database_url)
        try:
            return await CampaignStore(store.engine).create(
                name, population, parsed, organisation="", created_by=CLI.key_id or "cli", created_role=CLI.role
            )
        finally:
            await store.close()

    campaign = _run(work)
    if as_json:
        click.echo(json.dumps(campaign.summary(), ensure_ascii=False, indent=2))
        return
    console.print(f"抽查 campaign [bold]{campaign.id}[/bold]：{campaign.name}")
    console.print(f"总体 population {campaign.population_count:,}（{campaign.population.describe()}）")
    console.print(f"样本 sample {campaign.sample_size:,} · 种子 seed {campaign.seed}")
    if len(campaign.strata) > 1:
        from aggregator.campaigns.report import stratum_label

        table = Table("分层 stratum", "N", "n")
        for s in campaign.strata:
            table.add_row(stratum_label(campaign, s.stratum), f"{s.population:,}", f"{s.sample:,}")
        console.print(table)
    console.print(f"下一步 next: certq campaigns run {campaign.id}")


@campaigns_group.command("list")
@_db_option
def list_command(database_url: str | None) -> None:
    """Every campaign, newest first."""
    from aggregator.campaigns import CampaignStore

    async def work() -> Any:
        store = await _store(database_url)
        try:
            cs = CampaignStore(store.engine)
            return [(c, await cs.progress(c.id)) for c in await cs.list()]
        finally:
            await store.close()

    rows = _run(work)
    if not rows:
        console.print("暂无抽查 (no campaigns yet)")
        return
    table = Table("id", "名称 name", "N", "n", "已核 checked")
    for c, (total, done) in rows:
        table.add_row(c.id[:12], c.name, f"{c.population_count:,}", f"{total:,}", f"{done:,}")
    console.print(table)


@campaigns_group.command("run")
@click.argument("campaign_id")
@_db_option
@click.option("--config-dir", envvar="CERTQ_CONFIG_DIR", help="Config directory.")
def run_command(campaign_id: str, database_url: str | None, config_dir: str | None) -> None:
    """Check every unchecked item of a campaign here, against the live sources (resumable)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from aggregator.audit import AuditLog
    from aggregator.audit.entry import CLI
    from aggregator.campaigns import CampaignStore
    from aggregator.campaigns.run import CampaignRuns
    from aggregator.cli import load_settings
    from aggregator.gateway import Gateway
    from aggregator.jobs import JobStore

    settings = load_settings(config_dir)

    async def work() -> dict[str, int]:
        gateway = await Gateway.open(settings, database_url=database_url)
        try:
            engine = gateway.store.engine
            store, jobs = CampaignStore(engine), JobStore(engine)
            campaign = await store.get(campaign_id)
            if campaign is None:
                raise click.BadParameter(f"抽查 {campaign_id} 不存在 (no such campaign)")
            total, done = await store.progress(campaign.id)
            job = await jobs.get(campaign.job_id) if campaign.job_id else None
            if job is None or not job.active:
                job = await jobs.create("campaign_run", organisation="", created_by=CLI.key_id or "cli",
                                        subject=campaign.id, params={"campaign": campaign.id}, total=total)  # fmt: skip
                await store.set_job(campaign.id, job.id)
            lease = await jobs.claim(job.id, worker=f"cli:{socket.gethostname()}:{os.getpid()}")
            if lease is None:
                raise click.ClickException(f"作业 {job.id} 正由其他进程运行 (job {job.id} is being run elsewhere)")
            audit = AuditLog(engine)
            await audit.record_action(
                CLI, "campaign_run", job_id=job.id, purpose=f"抽查 {campaign.name}"[:500],
                detail={"campaign": campaign.id, "filters": campaign.population.model_dump(mode="json",
                        exclude_defaults=True), "seed": campaign.seed, "sample": total, "already_checked": done},
            )  # fmt: skip
            with Progress(TextColumn("核查 checking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=err_console, transient=True, disable=not err_console.is_terminal) as bar:  # fmt: skip
                task = bar.add_task("", total=total, completed=done)
                runs = CampaignRuns(gateway, store, audit=audit, on_progress=lambda d, _t: bar.update(task, completed=d))
                counts = await runs.run(lease)
            await lease.finish(counts)
            return counts
        finally:
            await gateway.close()

    counts = _run(work)
    console.print(
        f"一致 agrees {counts.get('agrees', 0)} · 不一致 discrepant {counts.get('discrepant', 0)} · "
        f"无法确定 inconclusive {counts.get('inconclusive', 0)}"
    )
    console.print(f"报告 report: certq campaigns show {campaign_id}")
    if counts.get("inconclusive"):
        sys.exit(EXIT_INCONCLUSIVE)


@campaigns_group.command("show")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="The whole report as JSON.")
@click.option("--limit", default=20, show_default=True, help="Discrepancies listed.")
@_db_option
def show_command(campaign_id: str, as_json: bool, limit: int, database_url: str | None) -> None:
    """A campaign's report: rates per stratum with 95 % intervals, and its discrepancies."""
    from aggregator.campaigns import CampaignStore
    from aggregator.campaigns.checks import KIND_ZH
    from aggregator.campaigns.report import build_report

    async def work() -> Any:
        store = await _store(database_url)
        try:
            cs = CampaignStore(store.engine)
            campaign = await cs.get(campaign_id)
            if campaign is None:
                raise click.BadParameter(f"抽查 {campaign_id} 不存在 (no such campaign)")
            return campaign, build_report(campaign, await cs.items(campaign.id))
        finally:
            await store.close()

    campaign, report = _run(work)
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2, default=str))
        return
    console.print(f"[bold]{campaign.name}[/bold]  ({campaign.id})")
    console.print(f"总体 {campaign.population_count:,} · 样本 {campaign.sample_size:,} · 种子 {campaign.seed}")
    o = report.outcomes
    console.print(f"一致 {o['agrees']} · 不一致 {o['discrepant']} · 无法确定 {o['inconclusive']} · 待核 {o['pending']}")
    table = Table("分层 stratum", "N", "不一致率 rate (95 % CI)")
    for s in [*report.strata, report.overall] if len(report.strata) > 1 else [report.overall]:
        table.add_row(s.label, f"{s.population:,}", s.text)
    console.print(table)
    console.print(" · ".join(f"{KIND_ZH[k]} {n}" for k, n in report.kinds.items()))
    for d in report.discrepancies[:limit]:
        what = "" if d["field"] in ("number", "status") else f" {d['field']}"
        upload, live = ("—" if v is None else v for v in (d["upload"], d["live"]))
        if d["kind"] in ("not_found_live", "missing_from_upload"):
            upload, live = ("上报有" if d["upload"] else "上报无"), ("在线有" if d["live"] else "在线无")
        console.print(f"  #{d['seq'] + 1} {KIND_ZH[d['kind']]} {d['number']}{what}: {upload} → {live}",
                      highlight=False)  # fmt: skip
    if len(report.discrepancies) > limit:
        console.print(f"  … {len(report.discrepancies) - limit} more: certq campaigns export {campaign.id}")


@campaigns_group.command("export")
@click.argument("campaign_id")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File (default: stdout for CSV).")
@_db_option
def export_command(campaign_id: str, fmt: str, output: Path | None, database_url: str | None) -> None:
    """Every sampled certificate and each discrepancy, CSV or XLSX with Chinese headers."""
    from aggregator.campaigns import CampaignStore
    from aggregator.campaigns.report import EXPORT_WIDTHS, export_rows
    from aggregator.sheets import csv_text, xlsx_bytes

    if fmt == "xlsx" and output is None:
        raise click.BadParameter("XLSX 需要 -o 文件名 (XLSX needs -o FILE)")

    async def work() -> Any:
        store = await _store(database_url)
        try:
            cs = CampaignStore(store.engine)
            campaign = await cs.get(campaign_id)
            if campaign is None:
                raise click.BadParameter(f"抽查 {campaign_id} 不存在 (no such campaign)")
            return export_rows(campaign, await cs.items(campaign.id))
        finally:
            await store.close()

    columns, rows = _run(work)
    if fmt == "xlsx":
        assert output is not None
        output.write_bytes(xlsx_bytes(columns, rows, widths=EXPORT_WIDTHS, sheet="抽查结果"))
    elif output is None:
        click.echo(csv_text(columns, rows), nl=False)
    else:
        output.write_text(csv_text(columns, rows), encoding="utf-8")
    if output is not None:
        err_console.print(f"{len(rows):,} 行 rows → {output}")
