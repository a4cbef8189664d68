"""Command-line parts of the web service: `certq serve`, `certq keys create|list|revoke`, `certq audit`.

    certq serve --host 127.0.0.1 --port 8000 --workers 4
    certq keys create --role department --label "应急管理部 数据科" --department mem    (prints the key once)
    certq keys list
    certq keys revoke 3f9a0c1d2e4b
    certq audit --limit 20 --key 3f9a0c1d2e4b --json

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
    from aggregator.web.keys import KeyStore

    record, secret = _with_store(database_url, lambda engine: KeyStore(engine).create(role, label, department=department))
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
    from aggregator.web.keys import KeyStore

    wanted = key_id.strip().lower()

    async def revoke(engine: Any) -> tuple[str | None, list[str]]:
        store = KeyStore(engine)
        ids = [k.key_id for k in await store.list_keys()]
        matches = [i for i in ids if i == wanted] or [i for i in ids if i.startswith(wanted)]
        if len(matches) != 1 or not wanted:
            return None, matches
        await store.revoke(matches[0])
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


@click.command("audit")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000), help="Newest N entries.")
@click.option("--key", "key_id", help="Only this key's lookups.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@_db_option
def audit_command(limit: int, key_id: str | None, as_json: bool, as_csv: bool, database_url: str | None) -> None:
    """Read the audit log: who looked up which number, in what role, why, and the verdict."""
    from aggregator.render import print_rows
    from aggregator.web.audit import AuditLog

    entries = _with_store(database_url, lambda engine: AuditLog(engine).read(limit=limit, key_id=key_id))
    if as_json:
        for e in entries:
            click.echo(json.dumps(e.as_dict(), ensure_ascii=False))
        return
    if as_csv:
        print_rows([e.as_dict() for e in entries], as_json=False)
        return
    table = Table(
        "time (UTC)", "key", "role", "action", "number", "name?", "name check", "verdict", "purpose", "client"
    )
    for column in table.columns:  # long cells fold; nothing is cut
        column.overflow = "fold"
    for e in entries:
        table.add_row(
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.key_id,
            e.role,
            e.action,
            e.number,
            "yes" if e.name_given else "no",
            e.name_check or "",
            e.verdict or "",
            e.purpose or "",
            e.client_ip or "",
        )
    console.print(table)
