"""Command-line parts of the web service: `certq serve`, `certq keys create|list|revoke`, `certq audit`.

    certq serve --host 127.0.0.1 --port 8000 --workers 4
    certq keys create --role department --label "应急管理部 数据科" --department mem    (prints the key once)
    certq keys list
    certq keys revoke 3f9a0c1d2e4b
    certq audit --limit 20 --key 3f9a0c1d2e4b --json
    certq audit --number T110105199003071239 --since 2026-11-01 --csv > audit.csv
    certq audit verify [--anchor SEQ:HASH]       certq audit head

Keys and the audit log live in the records database (CERTQ_DATABASE_URL, else the SQLite file).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from aggregator.audit.entry import ACTION_ZH, ACTIONS, ROLE_ZH
from aggregator.errors import describe
from aggregator.models import Department
from aggregator.web.roles import Role

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)
KEY_ROLES = [r.value for r in Role if r != Role.PUBLIC]
DEPARTMENTS = [d.value for d in Department]


def _with_store(database_url: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """Open the records database (running migrations), run `work(engine)`, close; errors via the one table."""
    from aggregator.records import RecordStore

    async def run() -> T:
        store = await RecordStore.open(database_url)
        try:
            return await work(store.engine)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except Exception as e:  # noqa: BLE001 - every error is reported through aggregator.errors
        err = describe(e)
        err_console.print(f"[red]{err.text}[/red]")
        if err.exit_code >= 70:
            err_console.print_exception()
        sys.exit(err.exit_code)


_db_option = click.option(
    "--db", "database_url", envvar="CERTQ_DATABASE_URL", help="Database URL (default: CERTQ_DATABASE_URL or SQLite)."
)


# --- serve -----------------------------------------------------------------------------------------


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, metavar="CIDR",
              help="Believe X-Forwarded-For / X-Real-IP from these peers (repeatable).")
@_db_option
@click.option("--redis", "redis_url", envvar="CERTQ_REDIS_URL", help="Redis URL (default: CERTQ_REDIS_URL).")
@click.option("--config-dir", envvar="CERTQ_CONFIG_DIR", help="Config directory.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve_command(
    host: str,
    port: int,
    workers: int,
    trusted_proxies: tuple[str, ...],
    database_url: str | None,
    redis_url: str | None,
    config_dir: str | None,
    log_level: str,
) -> None:
    """Serve the JSON API and the pages (uvicorn).

    With --workers above 1, each worker process builds its own app from the environment
    (`aggregator.web.app:create_app`); sharing state between them needs CERTQ_REDIS_URL (rate limits,
    cache, circuit breakers) and, for the data, the one database every worker opens.
    """
    import uvicorn

    from aggregator.config import ConfigError, Settings
    from aggregator.web.app import create_app
    from aggregator.web.config import WebConfig
    from aggregator.web.protocol import guarded_protocol

    # Workers read everything from the environment, so put the options there (this process's children only).
    for var, value in (
        ("CERTQ_DATABASE_URL", database_url),
        ("CERTQ_REDIS_URL", redis_url),
        ("CERTQ_CONFIG_DIR", config_dir),
        ("CERTQ_WEB_TRUSTED_PROXIES", ",".join(trusted_proxies) if trusted_proxies else None),
    ):
        if value:
            os.environ[var] = value
    os.environ.setdefault("CERTQ_WEB_FREEZE_GC", "1")  # a server process: see WebConfig.freeze_gc
    try:
        settings = Settings.load(config_dir)
        web = WebConfig.from_env()
    except (ConfigError, ValueError) as e:
        err_console.print(f"[red]{describe(e).text if isinstance(e, ConfigError) else e}[/red]")
        sys.exit(78)

    shown = f"[{host}]" if ":" in host else host
    console.print(f"certq 服务已启动 serving on [bold]http://{shown}:{port}/[/bold]  (API docs: /docs)")
    # proxy_headers=False: uvicorn would otherwise believe X-Forwarded-For from loopback peers; the app
    # decides which proxies to trust (WebConfig.trusted_proxies).
    common: dict[str, Any] = {"host": host, "port": port, "log_level": log_level, "proxy_headers": False}
    # http: uvicorn's protocol with a deadline for each request head and a cap on connections per IP
    # (aggregator/web/protocol.py). Workers get the class by name and read its limits from CERTQ_WEB_*.
    if workers > 1:
        uvicorn.run("aggregator.web.app:create_app", factory=True, workers=workers, http=guarded_protocol(), **common)
    else:
        app = create_app(settings, database_url=database_url, redis_url=redis_url, web=web)
        uvicorn.run(app, http=guarded_protocol(web), **common)


# --- keys --------------------------------------------------------------------------------------------


@click.group("keys")
def keys_group() -> None:
    """API keys: create (shown once), list, revoke."""


@keys_group.command("create")
@click.option("--role", required=True, type=click.Choice(KEY_ROLES), help="What the key may do.")
@click.option("--label", required=True, help="Who holds it (shown in lists and the audit log).")
@click.option("--department", type=click.Choice(DEPARTMENTS), help="For department keys: whose records.")
@_db_option
def keys_create(role: str, label: str, department: str | None, database_url: str | None) -> None:
    """Create a key and print it ONCE (only its hash is stored)."""
    from aggregator.audit import CLI, AuditLog
    from aggregator.web.keys import KeyStore

    async def create(engine: Any) -> Any:
        record, secret = await KeyStore(engine).create(role, label, department=department)
        detail = {"key_id": record.key_id, "role": record.role.value, "label": record.label,
                  "department": record.department.value if record.department else None}  # fmt: skip
        await AuditLog(engine).record_action(CLI, "key_create", detail=detail)
        return record, secret

    record, secret = _with_store(database_url, create)
    dept = f" · {record.department.value}" if record.department else ""
    console.print(f"key id {record.key_id} · {record.role.value}{dept} · {record.label}")
    console.print("密钥只显示这一次，请立即保存 (the key is shown only this once; store it now):")
    click.echo(secret)


@keys_group.command("revoke")
@click.argument("key_id")
@_db_option
def keys_revoke(key_id: str, database_url: str | None) -> None:
    """Revoke a key by its id, or a prefix of it that only one key has (requests with it are refused at once
    by this database's servers)."""
    from aggregator.audit import CLI, AuditLog
    from aggregator.web.keys import KeyStore

    wanted = key_id.strip().lower()

    async def revoke(engine: Any) -> tuple[str | None, list[str]]:
        store = KeyStore(engine)
        ids = [k.key_id for k in await store.list_keys()]
        matches = [i for i in ids if i == wanted] or [i for i in ids if i.startswith(wanted)]
        if len(matches) != 1 or not wanted:
            return None, matches
        await store.revoke(matches[0])
        await AuditLog(engine).record_action(CLI, "key_revoke", detail={"key_id": matches[0]})
        return matches[0], matches

    revoked, matches = _with_store(database_url, revoke)
    if revoked is None:
        if matches:
            err_console.print(f"[red]前缀 {key_id} 对应多个密钥，请写得更长 (the prefix matches {len(matches)} keys: "
                              f"{', '.join(matches)})[/red]")  # fmt: skip
        else:
            err_console.print(f"[red]没有这个密钥 (no key with id {key_id})[/red]")
        sys.exit(1)
    console.print(f"已吊销 revoked {revoked}")


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@_db_option
def keys_list(as_json: bool, as_csv: bool, database_url: str | None) -> None:
    """List keys (whole ids, roles, labels; never the keys themselves)."""
    from aggregator.render import print_rows
    from aggregator.web.keys import KeyStore

    keys = _with_store(database_url, lambda engine: KeyStore(engine).list_keys())
    if as_json:
        click.echo(json.dumps([k.as_dict() for k in keys], ensure_ascii=False, indent=2))
        return
    if as_csv:
        print_rows([k.as_dict() for k in keys], as_json=False)
        return
    table = Table("key id", "role", "department", "label", "created", "revoked")
    table.columns[0].no_wrap = True  # a key id is typed back (revoke): never cut or wrapped
    table.columns[3].overflow = "fold"
    for k in keys:
        table.add_row(
            k.key_id,
            k.role.value,
            k.department.value if k.department else "",
            k.label,
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "",
        )
    console.print(table)


# --- audit -------------------------------------------------------------------------------------------


def _day(value: str | None) -> Any:
    from datetime import date

    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as e:
        raise click.BadParameter(f"应为日期，如 2026-12-01 (a date such as 2026-12-01): {value}") from e


@click.group("audit", invoke_without_command=True)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000), help="Newest N entries.")
@click.option("--key", "key_id", help="Only this key's entries (its whole id).")
@click.option("--number", help="证书编号: lookups of this number.")
@click.option("--holder", "holder_id_number", help="身份证号: lookups about this holder.")
@click.option("--org", "organisation", help="机构: part of the key's label.")
@click.option("--role", type=click.Choice(sorted(ROLE_ZH)), help="The caller's role.")
@click.option("--action", type=click.Choice(ACTIONS), help="What was done.")
@click.option("--verdict", help="The lookup's verdict (valid, revoked ...).")
@click.option("--purpose", help="The stated purpose contains this.")
@click.option("--since", help="From this UTC day (YYYY-MM-DD).")
@click.option("--until", help="To this UTC day (YYYY-MM-DD), included.")
@click.option("--job", "job_id", help="Only this job's lookups.")
@click.option("--every", is_flag=True, help="Every entry: do not fold a job's lookups into one line.")
@click.option("--cursor", help="Continue from the cursor the previous page printed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (Chinese headers).")
@_db_option
@click.pass_context
def audit_command(ctx: click.Context, limit: int, key_id: str | None, number: str | None,
                  holder_id_number: str | None, organisation: str | None, role: str | None, action: str | None,
                  verdict: str | None, purpose: str | None, since: str | None, until: str | None,
                  job_id: str | None, every: bool, cursor: str | None, as_json: bool, as_csv: bool,
                  database_url: str | None) -> None:  # fmt: skip
    """Search the audit log: who looked up which number, in what role, why, and the verdict; uploads, keys,
    webhook changes, campaign runs. `certq audit verify` checks its hash chain."""
    if ctx.invoked_subcommand is not None:
        ctx.ensure_object(dict)["db"] = database_url
        return
    from aggregator.audit import AuditQuery, BadAuditQuery, JobGroup, search, to_csv
    from aggregator.audit.search import organisation as organisation_of
    from aggregator.web.keys import KeyStore

    query = AuditQuery(
        number=number, holder_id_number=holder_id_number, key_ids=(key_id,) if key_id else None, role=role,
        action=action, verdict=verdict, purpose=purpose, since=_day(since), until=_day(until), job_id=job_id,
        group_jobs=not every, limit=limit, cursor=cursor,
    )  # fmt: skip

    async def run(engine: Any) -> Any:
        labels = {k.key_id: k.label for k in await KeyStore(engine).list_keys()}
        q = query
        if organisation:
            ids = tuple(k for k, v in labels.items() if organisation.casefold() in v.casefold())
            q = AuditQuery(**{**q.__dict__, "key_ids": ids if key_id is None else tuple(set(ids) & {key_id})})
        try:
            return await search(engine, q), labels
        except BadAuditQuery as e:
            raise click.BadParameter(f"{e.zh} ({e.en})") from e

    page, labels = _with_store(database_url, run)
    if as_json:
        for item in page.items:
            click.echo(json.dumps({**item.as_dict(), "organisation": organisation_of(item.key_id, labels)},
                                  ensure_ascii=False))  # fmt: skip
    elif as_csv:
        click.echo(to_csv(page.items, labels=labels, show_holder=True), nl=False)
    elif not page.items:
        console.print("没有符合条件的审计记录 (no audit entries match; keyed lookups, uploads and key changes are "
                      "recorded, public lookups only as counts)")
    else:
        table = Table("时间 (UTC)", "机构（角色） who", "操作 action", "编号 number", "结论 verdict", "name check",
                      "用途 purpose")  # fmt: skip
        for column in table.columns:  # long cells fold; nothing is cut
            column.overflow = "fold"
        for item in page.items:
            who = f"{organisation_of(item.key_id, labels)}（{ROLE_ZH.get(item.role, item.role)}）"
            if isinstance(item, JobGroup):
                table.add_row(item.last_at.strftime("%Y-%m-%d %H:%M"), who,
                              f"{ACTION_ZH.get(item.action, item.action)} ×{item.count}", f"作业 job {item.job_id}", "",
                              "", item.purpose or "")  # fmt: skip
                continue
            table.add_row(
                item.at.strftime("%Y-%m-%d %H:%M"), who, ACTION_ZH.get(item.action, item.action),
                item.number + (" +姓名" if item.name_given else "") or _detail_text(item.details()),
                item.verdict or "", item.name_check or "", item.purpose or "",
            )  # fmt: skip
        console.print(table)
    if page.cursor and (not (as_json or as_csv) or sys.stderr.isatty()):  # never mixed into piped JSON/CSV
        err_console.print(f"下一页 next page: --cursor {page.cursor}")


def _detail_text(detail: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in detail.items() if v is not None)


def _sub_db(ctx: click.Context, database_url: str | None) -> str | None:
    """`certq audit verify --db X` and `certq audit --db X verify` both work: a --db typed here wins."""
    if ctx.get_parameter_source("database_url") == click.core.ParameterSource.COMMANDLINE:
        return database_url
    return ctx.obj.get("db") or database_url  # type: ignore[no-any-return]


@audit_command.command("verify")
@click.option("--anchor", help="SEQ:HASH noted earlier (`certq audit head`): also check it is still in the chain.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_db_option
@click.pass_context
def audit_verify(ctx: click.Context, anchor: str | None, as_json: bool, database_url: str | None) -> None:
    """Walk the hash chain; name the first entry changed, removed or inserted. Exit 1 if there is one."""
    from aggregator.audit import verify

    pinned: tuple[int, str] | None = None
    if anchor:
        seq, _, digest = anchor.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise click.BadParameter("应为 SEQ:HASH (expected SEQ:HASH, as `certq audit head` prints it)")
        pinned = (int(seq), digest.lower())
    report = _with_store(_sub_db(ctx, database_url), lambda engine: verify(engine, anchor=pinned))
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        console.print(f"已核对 checked {report.checked} 条 entries")
        console.print(f"链头 head {report.head_seq}:{report.head_hash}", overflow="fold")
        if report.legacy:
            lo, hi = report.legacy_ids or (0, 0)
            console.print(f"链建立之前的 {report.legacy} 条记录（id {lo}–{hi}）没有哈希，不在核对范围内 "
                          f"({report.legacy} entries from before the chain have no hash and are not covered)")  # fmt: skip
        if report.problem is None:
            console.print("[green]审计日志完整 the audit log is intact[/green]")
        else:
            err_console.print(f"[red]{report.problem.text}[/red]")
    if report.problem is not None:
        sys.exit(1)


@audit_command.command("head")
@_db_option
@click.pass_context
def audit_head(ctx: click.Context, database_url: str | None) -> None:
    """Print the chain's head as SEQ:HASH: keep it somewhere else (a ticket, a report) to check later with
    `certq audit verify --anchor SEQ:HASH`."""
    from aggregator.audit.chain import head

    async def read(engine: Any) -> tuple[str, int]:
        async with engine.connect() as conn:
            return await head(conn)

    digest, seq = _with_store(_sub_db(ctx, database_url), read)
    click.echo(f"{seq}:{digest}")
