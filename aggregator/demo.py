"""`certq demo`: the whole service on one machine, with no servers to install.

1. generates a realistic synthetic data set (aggregator/sandbox/dataset.py);
2. writes each department's quarterly upload as a CSV file and imports it through the real importer into
   a SQLite file (a re-run finds the files already imported and adds nothing);
3. starts the simulated department sites (the sandbox) on loopback and points the live sources at them;
4. serves the web pages and JSON API (or, with --no-serve, looks the example numbers up and exits).
"""

from __future__ import annotations

import asyncio
import contextlib
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
    t.add_column("number")
    t.add_column("name")
    t.add_column("shows")
    for e in dataset.examples:
        t.add_row(e.number, e.name or "", e.shows)
    return t


async def run_demo(
    *, data_dir: Path, seed: int, holders: int, host: str, port: int, serve: bool, config_dir: str | None
) -> int:
    from aggregator.gateway import Gateway
    from aggregator.records.store import RecordStore
    from aggregator.render import print_card
    from aggregator.sandbox.dataset import generate
    from aggregator.sandbox.server import Sandbox

    settings = Settings.load(config_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite+aiosqlite:///{(data_dir / 'certq.sqlite3').resolve()}"
    dataset = generate(seed=seed, holders=holders, today=date.today())
    console.print(f"[bold]certq demo[/bold]: {holders} holders, upload quarter {dataset.upload_quarter}, data in {data_dir}")

    store = await RecordStore.open(db_url)
    try:
        await seed_records(store, dataset, data_dir)
    finally:
        await store.close()

    async with Sandbox(dataset, ports=None) as sandbox:
        for site, url in sandbox.urls.items():
            console.print(f"  sandbox {site:12} {url}")
        live = settings.with_endpoints(sandbox.urls)
        console.print(examples_table(dataset))
        if not serve:
            async with await Gateway.open(live, database_url=db_url, redis_url="") as gw:
                for e in dataset.examples[:4]:
                    print_card(console, await gw.lookup(e.number, name=e.name))
            return 0
        return await _serve(live, db_url, host, port)


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
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("certq-data/demo"), show_default=True,
              help="Where the demo's SQLite file and upload CSVs go.")
@click.option("--seed", type=int, default=2026, show_default=True, help="Seed of the synthetic data set.")
@click.option("--holders", type=click.IntRange(50, 200_000), default=3000, show_default=True, help="How many holders.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--serve/--no-serve", default=True, show_default=True,
              help="Serve the web app; --no-serve looks a few example numbers up and exits.")
@click.option("--config-dir", envvar="CERTQ_CONFIG_DIR", help="Config directory.")
def demo_command(data_dir: Path, seed: int, holders: int, host: str, port: int, serve: bool, config_dir: str | None) -> None:
    """Run the whole service locally: sample records, simulated department sites, and the web app."""
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(
            asyncio.run(
                run_demo(data_dir=data_dir, seed=seed, holders=holders, host=host, port=port, serve=serve, config_dir=config_dir)
            )
        )
