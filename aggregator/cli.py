"""The `certq` command line.

    certq lookup T110105199003071239 --name 张伟     a readable card (or --json)
    certq import records.csv --department mem --quarter 2026Q3
    certq uploads list|show ID
    certq sources [--check]    certq recognition    certq demo    certq sandbox
    certq serve --workers 4    certq keys create|list|revoke    certq audit    certq doctor
    certq campaigns create|list|run|show|export

Exit codes of `certq lookup`: 0 valid; 1 not valid (expired, suspended, revoked, or another holder's);
2 invalid input; 3 not found; 4 inconclusive (a source that could hold it did not answer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click
from rich.console import Console

from aggregator.config import ConfigError, Settings
from aggregator.errors import describe
from aggregator.home import Home, HomeError
from aggregator.models import Verdict
from aggregator.render import catalogue_table, print_card, print_rows, source_rows, sources_table

EXIT_VALID, EXIT_NOT_VALID, EXIT_INVALID_INPUT, EXIT_NOT_FOUND, EXIT_INCONCLUSIVE = 0, 1, 2, 3, 4
VERDICT_EXIT = {
    Verdict.VALID: EXIT_VALID,
    Verdict.EXPIRED: EXIT_NOT_VALID,
    Verdict.SUSPENDED: EXIT_NOT_VALID,
    Verdict.REVOKED: EXIT_NOT_VALID,
    Verdict.NAME_MISMATCH: EXIT_NOT_VALID,
    Verdict.NOT_FOUND: EXIT_NOT_FOUND,
    Verdict.INCONCLUSIVE: EXIT_INCONCLUSIVE,
}

console = Console()
err_console = Console(stderr=True)


def load_settings(config_dir: str | None) -> Settings:
    try:
        return Settings.load(config_dir)
    except ConfigError as e:
        err_console.print(f"[red]{e}[/red]")
        sys.exit(describe(e).exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--home", type=click.Path(file_okay=False), default=None,
              help="certq's home: its database and settings.toml (default: CERTQ_HOME, else ./certq-data).")
def main(verbose: int, home: str | None) -> None:
    """certq: one place to check a vocational certificate (一网查询).

    Looks a certificate number up in every department source that could hold it (uploaded quarterly
    records and the departments' live endpoints) and answers with one verdict, the certificates, each
    source's status and freshness, conflicts between sources, and what the certificate entitles its
    holder to under the mutual-recognition catalogue.

    Every command works in one home (--home, CERTQ_HOME, else ./certq-data): its SQLite database and its
    settings.toml (database_url, redis_url, config_dir, [environment]). Environment variables override it:
    CERTQ_DATABASE_URL, CERTQ_REDIS_URL, CERTQ_CONFIG_DIR. `certq doctor` says what is in use.
    """
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if home:
        os.environ["CERTQ_HOME"] = home
    try:
        Home.load().export()  # the home's settings reach every command, and the server's worker processes
    except HomeError as e:
        err_console.print(f"[red]{describe(e).text}[/red]")
        sys.exit(describe(e).exit_code)


@main.command()
@click.argument("number")
@click.option("--name", help="The holder's name: checked against the records (姓名核对).")
@click.option("--id-number", help="The holder's ID number, for sources queried by ID.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer instead of a card.")
@click.option("--deadline", type=float, default=None, help="Seconds for the whole lookup (default 6).")
@click.option("--as-of", "as_of", metavar="YYYY-MM-DD", help="The answer as certq knew it at the end of that day (UTC).")
@click.option("--receipt", is_flag=True, help="Also issue a signed receipt of the answer (prints its verify URL).")
@click.option("--receipt-view", type=click.Choice(["public", "employer", "regulator"]), default="public",
              show_default=True, help="Whose view of the answer the receipt holds.")
@click.option("--db", "database_url", envvar="CERTQ_DATABASE_URL", help="Records database URL.")
@click.option("--config-dir", envvar="CERTQ_CONFIG_DIR", help="Config directory.")
def lookup(
    number: str,
    name: str | None,
    id_number: str | None,
    as_json: bool,
    deadline: float | None,
    database_url: str | None,
    config_dir: str | None,
    as_of: str | None = None,
    receipt: bool = False,
    receipt_view: str = "public",
) -> None:
    """Look NUMBER up in every source that could hold it.

    \b
    Exit codes: 0 valid · 1 not valid (expired, suspended, revoked, name mismatch)
                2 invalid input · 3 not found · 4 inconclusive (a source did not answer)
    """
    from aggregator.gateway import Gateway

    settings = load_settings(config_dir)

    async def run():
        async with await Gateway.open(settings, database_url=database_url) as gw:
            if as_of is not None:  # from the kept uploads and live answers only (aggregator/asof.py)
                from aggregator.asof import lookup_as_of, parse_date

                return await lookup_as_of(gw, number, on=parse_date(as_of), name=name, id_number=id_number)
            found = await gw.lookup(number, name=name, id_number=id_number, deadline_s=deadline)
            await _after_lookup(gw, found, receipt=receipt, view=receipt_view, typed={number, id_number or ""}, name=name)
            return found

    try:
        answer = asyncio.run(run())
    except Exception as e:  # noqa: BLE001 - every error goes through the one table
        err = describe(e)
        if as_json:
            click.echo(f'{{"error": "{err.title}", "message": "{err.text}"}}')
        else:
            err_console.print(f"[red]{err.text}[/red]")
        if err.exit_code >= 70:
            logging.getLogger(__name__).exception("lookup failed")
        sys.exit(err.exit_code)
    if as_json:
        click.echo(answer.model_dump_json(indent=2))
    else:
        print_card(console, answer)
    sys.exit(VERDICT_EXIT[answer.verdict])


async def _after_lookup(gw, answer, *, receipt: bool, view: str, typed: set[str], name: str | None) -> None:
    """Receipts: the answer supersedes those it makes out of date; with --receipt, one is issued for it."""
    from aggregator.receipts.store import ReceiptStore

    await ReceiptStore(gw.store.engine).supersede(answer)
    if receipt:
        from aggregator.web.roles import Role
        from aggregator.web.services.receipts import receipt_for_answer

        state = await receipt_for_answer(gw.store.engine, answer, role=Role(view), typed=typed, name=name)
        err_console.print(f"回执 receipt {state.stored.id}: {state.url}  (PDF {state.url}.pdf)")


@main.command()
@click.option("--check", is_flag=True, help="Run each source's canary numbers and report ok / drifted / unreachable.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the list as CSV.")
@click.option("--config-dir", envvar="CERTQ_CONFIG_DIR", help="Config directory.")
def sources(check: bool, as_json: bool, as_csv: bool, config_dir: str | None) -> None:
    """List the configured sources (and check them with --check)."""
    settings = load_settings(config_dir)
    if as_json or as_csv:
        print_rows(source_rows(settings), as_json=as_json)
        return
    console.print(sources_table(settings))
    if not check:
        return
    from aggregator.canary import run_check

    reports = asyncio.run(run_check(settings))
    bad = 0
    for r in reports:
        style = {"ok": "green", "skipped": "grey50"}.get(r.status, "red")
        bad += r.status not in ("ok", "skipped")
        console.print(f"[{style}]{r.source:16} {r.status:12}[/{style}] {r.detail}")
    sys.exit(1 if bad else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
@click.option("--config-dir", envvar="CERTQ_CONFIG_DIR", help="Config directory.")
def recognition(as_json: bool, config_dir: str | None) -> None:
    """Print the mutual-recognition catalogue (对应目录 entries 1-7)."""
    catalogue = load_settings(config_dir).recognition
    if as_json:
        click.echo(catalogue.model_dump_json(indent=2))
    else:
        console.print(catalogue_table(catalogue))


def _register_subcommands() -> None:
    from aggregator.cache.cli import cache_group
    from aggregator.campaigns.cli import campaigns_group
    from aggregator.demo import demo_command
    from aggregator.doctor import doctor_command
    from aggregator.receipts.cli import receipts_group, rotate_signing_command
    from aggregator.records.cli import import_command, uploads_group
    from aggregator.sandbox.cli import sandbox_command
    from aggregator.web.cli import audit_command, keys_group, serve_command
    from aggregator.web.rostercli import rosters_group
    from aggregator.web.worker import worker_command

    main.add_command(import_command, "import")
    main.add_command(uploads_group, "uploads")
    main.add_command(sandbox_command, "sandbox")
    main.add_command(demo_command, "demo")
    main.add_command(serve_command, "serve")
    main.add_command(keys_group, "keys")
    main.add_command(audit_command, "audit")
    main.add_command(doctor_command, "doctor")
    main.add_command(receipts_group, "receipts")
    keys_group.add_command(rotate_signing_command, "rotate-signing")
    main.add_command(worker_command, "worker")
    main.add_command(campaigns_group, "campaigns")
    main.add_command(rosters_group, "rosters")
    main.add_command(cache_group, "cache")


_register_subcommands()


if __name__ == "__main__":  # python -m aggregator.cli
    main()
