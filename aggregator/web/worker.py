"""`certq worker`: runs the jobs (roster runs, monitoring, campaigns, webhook deliveries) from the shared queue.

    CERTQ_DATABASE_URL=postgresql://... certq worker --concurrency 4      # as many as you like, on any machine

With PostgreSQL, any number of workers share Procrastinate's queue in that database; periodic work runs once per
tick across all of them, and a job whose worker died is taken over by another once its lease runs out (see
`aggregator.jobs`). On the embedded default (SQLite) `certq serve` and `certq demo` run the jobs themselves; a
separate worker there only runs what it is given in its own process (the in-memory queue is not shared), so it
is of use for jobs it finds orphaned.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from aggregator.errors import describe


async def run_worker(*, concurrency: int, database_url: str | None, redis_url: str | None) -> None:
    from aggregator.config import Settings
    from aggregator.gateway import Gateway
    from aggregator.web.config import WebConfig
    from aggregator.web.metrics import Metrics
    from aggregator.web.services import Services
    from aggregator.web.services.work import RunningWork, Work

    web = WebConfig.from_env()
    gateway = await Gateway.open(Settings.load(), database_url=database_url, redis_url=redis_url)
    try:
        services = Services.on(gateway, config=web, metrics=Metrics())
        running = RunningWork(services, in_process=False, concurrency=concurrency)
        services.work = Work(services, running)
        engine = await running.ensure_open()
        logging.getLogger(__name__).info("worker %s: %d jobs at once", engine.name, concurrency)
        try:
            await engine.run_worker(concurrency=concurrency)
        finally:
            await running.stop()
    finally:
        await gateway.close()


@click.command("worker")
@click.option(
    "--concurrency", default=4, show_default=True, type=click.IntRange(1, 256), help="Jobs this process runs at once."
)
@click.option("--db", "database_url", envvar="CERTQ_DATABASE_URL", help="Database URL (default: the home's).")
@click.option("--redis", "redis_url", envvar="CERTQ_REDIS_URL", help="Redis URL (default: the home's).")
def worker_command(concurrency: int, database_url: str | None, redis_url: str | None) -> None:
    """Run jobs: roster runs, monitoring, campaigns, webhook deliveries (运行后台任务).

    Start as many as you like against one PostgreSQL database; stop with Ctrl-C or SIGTERM (a job in hand is taken over by
    another worker once its lease runs out)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_worker(concurrency=concurrency, database_url=database_url, redis_url=redis_url))
    except KeyboardInterrupt:
        pass
    except Exception as e:  # noqa: BLE001 - reported through the one error table
        err = describe(e)
        click.echo(err.text, err=True)
        sys.exit(err.exit_code)
