"""`certq demo`: the whole service on one machine, with no servers to install.

1. generates a realistic synthetic data set (aggregator/sandbox/dataset.py);
2. writes each department's quarterly upload as a CSV file and imports it through the real importer into
   the SQLite file of the demo's own home, certq-data/demo (a re-run finds the files already imported and
   adds nothing);
3. makes one API key per role the first time (kept, for the demo only, in the home's demo-keys.toml) and
   prints them;
4. starts the simulated department sites (the sandbox) on loopback, points the live sources at them and
   records where they listen in the home's settings.toml, so that every other command run with
   `CERTQ_HOME=certq-data/demo` (keys, lookup, uploads, audit) uses the same database and the same sites;
5. serves the web pages and JSON API (or, with --no-serve, looks the example numbers up and exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from datetime import date
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from aggregator.config import Settings
from aggregator.models import Department

console = Console()


async def seed_records(store, dataset, data_dir: Path) -> None:
    """Write and import each department's upload, unless that very file was imported before."""
    from aggregator.records.store import AlreadyImported
    from aggregator.sandbox.dataset import write_upload_csv

    uploads = data_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    for dept in Department:
        path = write_upload_csv(dataset, dept, uploads / f"{dept.value}-{dataset.upload_quarter}.csv")
        try:
            report = await store.import_file(path, department=dept, quarter=dataset.upload_quarter, uploaded_by="demo")
            console.print(f"  imported {path.name}: {report.rows_imported} records")
        except AlreadyImported:
            console.print(f"  {path.name}: already imported")


def examples_table(dataset) -> Table:
    t = Table(title="值得一试的编号 numbers worth trying", title_justify="left")
    t.add_column("number", no_wrap=True)  # typed back: never wrapped or cut
    t.add_column("name", no_wrap=True)
    t.add_column("shows", overflow="fold")
    for e in dataset.examples:
        t.add_row(e.number, e.name or "", e.shows)
    return t


DEMO_ROLES = (("employer", "演示 某建筑公司 人事部", None), ("regulator", "演示 监管部门", None),
              ("department", "演示 应急管理部 数据科", "mem"), ("admin", "演示 管理员", None))
DEMO_KEYS_FILE = "demo-keys.toml"


async def demo_keys(engine, home: Path) -> dict[str, str]:
    """One key per role, made the first time and kept in the demo's home (a demo's keys guard nothing); a key
    revoked or lost since is made again."""
    import tomllib

    from aggregator.web.keys import KeyStore, parse_key

    store = KeyStore(engine)
    file = home / DEMO_KEYS_FILE
    kept: dict[str, str] = tomllib.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    live = {k.key_id: k for k in await store.list_keys() if not k.revoked}
    out: dict[str, str] = {}
    for role, label, department in DEMO_ROLES:
        secret = kept.get(role)
        if not secret or parse_key(secret) not in live:
            _, secret = await store.create(role, label, department=department)
        out[role] = secret
    file.write_text("".join(f'{role} = "{secret}"\n' for role, secret in out.items()), encoding="utf-8")
    file.chmod(0o600)
    return out


async def run_demo(
    *, home: Path, seed: int, holders: int, host: str, port: int, serve: bool, config_dir: str | None
) -> int:
    from aggregator.gateway import Gateway
    from aggregator.home import DATABASE_FILE, Home, HomeSettings, write_settings
    from aggregator.receipts.keys import ReceiptSettings, ensure_signing_key
    from aggregator.records.store import RecordStore
    from aggregator.render import print_card
    from aggregator.sandbox.dataset import generate
    from aggregator.sandbox.server import Sandbox

    settings = Settings.load(config_dir)
    home.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite+aiosqlite:///{(home / DATABASE_FILE).resolve()}"
    dataset = generate(seed=seed, holders=holders, today=date.today())
    console.print(f"[bold]certq demo[/bold]: {holders} holders, upload quarter {dataset.upload_quarter}, home {home}")

    store = await RecordStore.open(db_url)
    try:
        await seed_records(store, dataset, home)
        keys = await demo_keys(store.engine, home)
        signing = ensure_signing_key(ReceiptSettings.from_env(home=Home.load(home)))  # receipts: the demo makes one
        console.print(f"  receipt signing key {signing.kid}: {signing.source}")
        if not os.environ.get("CERTQ_SIGNING_KEY"):
            os.environ.setdefault("CERTQ_SIGNING_KEY_FILE", signing.source)  # the app served below signs with it
    finally:
        await store.close()

    async with Sandbox(dataset, ports=None) as sandbox:
        live = settings.with_endpoints(sandbox.urls)
        # Where the sites listen, for the other commands run in this home (the live sources' ${NAME}s).
        environment = {
            s.endpoint_env: sandbox.urls[s.id] for s in settings.sources if s.id in sandbox.urls and s.endpoint_env
        }
        write_settings(home, HomeSettings(environment=environment))  # the database is the home's own file
        for site, url in sandbox.urls.items():
            console.print(f"  sandbox {site:12} {url}")
        console.print(examples_table(dataset))
        console.print(keys_table(keys))
        console.print(
            f"\n[bold]另开一个终端 in another terminal:[/bold]  export CERTQ_HOME={home}\n"
            "  (then certq lookup, keys, uploads and audit use this demo's data and sites)"
        )
        if not serve:
            async with await Gateway.open(live, database_url=db_url, redis_url="") as gw:
                for e in dataset.examples[:4]:
                    print_card(console, await gw.lookup(e.number, name=e.name))
            return 0
        return await _serve(live, db_url, host, port)


def keys_table(keys: dict[str, str]) -> Table:
    t = Table(title="演示密钥 demo API keys (Authorization: Bearer <key>)", title_justify="left")
    t.add_column("role")
    t.add_column("key", overflow="fold")
    for role, secret in keys.items():
        t.add_row(role, secret)
    return t


async def _serve(settings: Settings, db_url: str, host: str, port: int) -> int:
    import uvicorn

    from aggregator.web.app import create_app
    from aggregator.web.config import WebConfig
    from aggregator.web.protocol import guarded_protocol

    web = WebConfig.from_env().model_copy(update={"freeze_gc": True})
    app = create_app(settings, database_url=db_url, redis_url="", web=web)
    # http: request-head deadline and per-IP connection cap (aggregator/web/protocol.py)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", http=guarded_protocol(web))
    server = uvicorn.Server(config)
    console.print(f"\n[bold green]打开 open http://{host}:{port}/[/bold green]  (API: /api/v1/certificates/<number>, docs: /docs; Ctrl-C to stop)")
    await server.serve()
    return 0


@click.command()
@click.option("--home", "home", type=click.Path(path_type=Path, file_okay=False), default=Path("certq-data/demo"),
              show_default=True, help="The demo's home: its SQLite file, settings.toml, upload CSVs and keys.")
@click.option("--data-dir", "data_dir", type=click.Path(path_type=Path, file_okay=False), default=None, hidden=True,
              help="Old name of --home.")
@click.option("--seed", type=int, default=2026, show_default=True, help="Seed of the synthetic data set.")
@click.option("--holders", type=click.IntRange(50, 200_000), default=3000, show_default=True, help="How many holders.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--serve/--no-serve", default=True, show_default=True,
              help="Serve the web app; --no-serve looks a few example numbers up and exits.")
@click.option("--config-dir", envvar="CERTQ_CONFIG_DIR", help="Config directory.")
def demo_command(
    home: Path, data_dir: Path | None, seed: int, holders: int, host: str, port: int, serve: bool, config_dir: str | None
) -> None:
    """Run the whole service locally: sample records, simulated department sites, and the web app."""
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(
            asyncio.run(
                run_demo(home=data_dir or home, seed=seed, holders=holders, host=host, port=port, serve=serve,
                         config_dir=config_dir)
            )
        )
