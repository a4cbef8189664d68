"""`certq doctor`: what certq would use here (home, database, Redis, sources) and what is wrong with it.

    certq doctor            a table; exit 0 when nothing is wrong, 1 otherwise
    certq doctor --json     the same as JSON

Each check is one `Check` (what, status ok / warn / fail / off, detail, hint). Nothing is changed, except that
opening the database brings its schema to the newest migration, as every command does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aggregator.config import ConfigError, Settings
from aggregator.home import Home, HomeError
from aggregator.models import LIVE_MODES

STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "off": "grey50"}
WORD = {"ok": "正常 ok", "warn": "注意 warn", "fail": "故障 fail", "off": "未启用 off"}


@dataclass
class Check:
    what: str
    status: str  # ok | warn | fail | off
    detail: str
    hint: str = ""


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


async def _database(home: Home) -> Check:
    from aggregator.records.store import RecordStore, normalise_database_url

    url = normalise_database_url(home.database_url)
    try:
        started = time.perf_counter()
        store = await RecordStore.open(url)
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return Check("数据库 database", "fail", f"{_hide_password(url)}: {e}",
                     "check CERTQ_DATABASE_URL / database_url in settings.toml")  # fmt: skip
    try:
        latest = await store.latest_batches()
        took = (time.perf_counter() - started) * 1000
    except Exception as e:  # noqa: BLE001 - reported, not raised (a database of another certq version ...)
        return Check("数据库 database", "fail", f"{_hide_password(url)}: {type(e).__name__}: {str(e)[:200]}",
                     "is it certq's database, at this version? (migrations run at start-up)")  # fmt: skip
    finally:
        await store.close()
    uploads = ", ".join(f"{d.value} {b.quarter}" for d, b in sorted(latest.items())) or "no uploads yet"
    status = "ok" if latest else "warn"
    hint = "" if latest else "import records: certq import FILE --department mem --quarter 2026Q3"
    return Check("数据库 database", status, f"{_hide_password(url)} ({took:.0f} ms); {uploads}", hint)


async def _redis(home: Home) -> Check:
    if not home.redis_url:
        return Check("Redis", "off", "in-process cache (one machine)", "several instances need CERTQ_REDIS_URL")
    from aggregator.redisconn import REDIS_FAILURES, client_from_url

    client = client_from_url(home.redis_url)
    try:
        started = time.perf_counter()
        await client.ping()
        took = (time.perf_counter() - started) * 1000
        return Check("Redis", "ok", f"{_hide_password(home.redis_url)} ({took:.0f} ms)")
    except REDIS_FAILURES as e:
        return Check("Redis", "fail", f"{_hide_password(home.redis_url)}: {type(e).__name__}: {e}",
                     "lookups go on without the cache, but instances no longer share limits and breakers")  # fmt: skip
    finally:
        await client.aclose()


async def _reachable(url: str, timeout_s: float = 1.0) -> str | None:
    """None when a TCP connection to the URL's host and port opens in time, else why not."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), timeout_s)
    except (OSError, TimeoutError) as e:
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    writer.close()
    return None


async def _sources(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    live = [s for s in settings.sources if s.mode in LIVE_MODES and s.enabled]
    reachable = await asyncio.gather(*(_reachable(s.endpoint) for s in live if s.endpoint))
    by_id = dict(zip([s.id for s in live if s.endpoint], reachable, strict=True))
    for s in live:
        if s.endpoint is None:
            env = f"set {s.endpoint_env} (or [environment] in settings.toml)" if s.endpoint_env else "set its endpoint"
            checks.append(Check(f"数据源 {s.id}", "off", "未配置 not configured: skipped in every answer", env))
        elif by_id[s.id] is None:
            checks.append(Check(f"数据源 {s.id}", "ok", s.endpoint))
        else:
            checks.append(Check(f"数据源 {s.id}", "fail", f"{s.endpoint}: {by_id[s.id]}",
                                "answers say unavailable; is the department's endpoint (or certq sandbox) up?"))  # fmt: skip
    return checks


async def _jobs(home: Home) -> Check:
    from aggregator.jobs import JobStore
    from aggregator.records.store import RecordStore, normalise_database_url

    try:
        store = await RecordStore.open(normalise_database_url(home.database_url))
    except Exception as e:  # noqa: BLE001 - the database check above reports it
        return Check("后台任务 jobs", "fail", f"database: {type(e).__name__}")
    try:
        jobs = JobStore(store.engine)
        counts = await jobs.summary()
        workers = await jobs.live_workers()
    finally:
        await store.close()
    waiting = counts.get("queued", 0) + counts.get("running", 0)
    text = f"{waiting} queued or running, {counts.get('failed', 0)} failed"
    if store.engine.dialect.name != "postgresql":
        return Check("后台任务 jobs", "ok", f"in-process (certq serve / demo run them); {text}")
    if not workers:
        return Check("后台任务 jobs", "warn" if not waiting else "fail", f"no certq worker alive; {text}",
                     "start `certq worker` (as many as you like, on any machine)")  # fmt: skip
    return Check("后台任务 jobs", "ok", f"{workers} worker(s) alive; {text}")


async def run_checks(home: Home) -> list[Check]:
    settings_file = str(home.settings_file) if home.settings_file else "none (defaults and environment)"
    checks = [Check("家目录 home", "ok", f"{home.path.resolve()}; settings: {settings_file}")]
    try:
        settings = Settings.load()
        checks.append(Check("配置 config", "ok", f"{settings.config_dir} ({len(settings.sources)} sources)"))
    except ConfigError as e:
        checks.append(Check("配置 config", "fail", str(e), "fix the file and key named"))
        settings = None
    checks.append(await _database(home))
    checks.append(await _redis(home))
    checks.append(await _jobs(home))
    if settings is not None:
        checks += await _sources(settings)
    from aggregator.receipts.cli import signing_key_status

    checks.append(Check("签名密钥 signing key", *signing_key_status()))
    return checks


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor_command(as_json: bool) -> None:
    """Say which home, database, Redis and sources certq uses here, and what is wrong (exit 1 if anything)."""
    try:
        home = Home.load()
    except HomeError as e:
        checks = [Check("家目录 home", "fail", str(e), "fix settings.toml")]
    else:
        checks = asyncio.run(run_checks(home))
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, ensure_ascii=False, indent=2))
    else:
        table = Table("检查 check", "状态 status", "详情 detail")
        table.columns[0].no_wrap = True
        table.columns[2].overflow = "fold"  # a URL or a path is folded, never cut
        for c in checks:
            detail = c.detail + (f"\n→ {c.hint}" if c.hint and c.status != "ok" else "")
            table.add_row(escape(c.what), f"[{STYLE[c.status]}]{WORD[c.status]}[/]", escape(detail))
        Console().print(table)
    sys.exit(1 if failed else 0)
