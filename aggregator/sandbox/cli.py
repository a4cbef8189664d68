"""`certq sandbox`: serve the four department sandbox sites on loopback until Ctrl-C.

certq sandbox --fault mem:captcha=1 --fault samr:latency_ms=200 --fault samr:latency_jitter_ms=50
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import date
from typing import Any

import click

from aggregator.sandbox.dataset import Dataset, generate
from aggregator.sandbox.faults import FaultError, parse_fault_option
from aggregator.sandbox.server import DEFAULT_PORT_BASE, SITE_NAMES, Sandbox


def parse_faults(options: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Repeated SITE:KEY=VALUE options -> {site: {key: value}}; raises click.BadParameter naming the option."""
    out: dict[str, dict[str, Any]] = {}
    for option in options:
        try:
            site, key, value = parse_fault_option(option)
        except FaultError as e:
            raise click.BadParameter(str(e), param_hint="--fault") from None
        out.setdefault(site, {})[key] = value
    return out


def _print_banner(sb: Sandbox, dataset: Dataset, require_token: str | None) -> None:
    click.echo(f"certq sandbox: {len(dataset.holders)} holders (seed {dataset.seed}, today {dataset.today})")
    for source_id, url in sb.urls.items():
        click.echo(f"  {source_id:<12} {url}")
    for name in SITE_NAMES:
        on = {k: v for k, v in sb.faults(name).items() if v and k not in ("error_kinds", "latency_distribution")}
        if on:
            click.echo(f"  faults {name}: {on}")
    if require_token:
        click.echo("  requires: Authorization: Bearer <the token given to --require-token>")
    click.echo("Numbers to try:")
    for e in dataset.examples[:8]:
        click.echo(f"  {e.number:<24} {e.name or '':<10} {e.shows}")
    click.echo("Faults at run time: POST <url>/_sandbox/faults with a JSON object; stats at <url>/_sandbox/stats")
    click.echo("Press Ctrl-C to stop.")


async def _serve(dataset: Dataset, faults: dict[str, dict[str, Any]], port_base: int, token: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows: Ctrl-C still interrupts
            loop.add_signal_handler(sig, stop.set)
    async with Sandbox(dataset, faults=faults, ports=port_base, require_token=token) as sb:
        _print_banner(sb, dataset, token)
        await stop.wait()
    click.echo("sandbox stopped")


@click.command("sandbox")
@click.option("--seed", type=int, default=2026, show_default=True, help="Data set seed.")
@click.option("--holders", type=click.IntRange(min=0), default=3000, show_default=True, help="Number of holders.")
@click.option("--today", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="Pretend today is this day.")
@click.option(
    "--port-base", type=click.IntRange(min=0, max=65532), default=DEFAULT_PORT_BASE, show_default=True,
    help="mem, samr, mohrss, mohurd listen on this port and the next three (0: any free ports).",
)  # fmt: skip
@click.option("--fault", "faults", multiple=True, metavar="SITE:KEY=VALUE",
              help="Switch a fault on at start, e.g. mem:captcha=1 or samr:error_rate=0.2 (repeatable).")  # fmt: skip
@click.option("--require-token", default=None, metavar="TOKEN", help="Only answer `Authorization: Bearer TOKEN`.")
def sandbox_command(
    seed: int, holders: int, today: Any, port_base: int, faults: tuple[str, ...], require_token: str | None
) -> None:
    """Serve the four departments' endpoints (MEM, SAMR, MOHRSS, MOHURD) on 127.0.0.1 with seeded data."""
    parsed = parse_faults(faults)
    day: date | None = today.date() if today is not None else None
    dataset = generate(seed=seed, holders=holders, today=day)
    try:
        Sandbox(dataset, faults=parsed)  # validates site names and switches before binding any port
    except (ValueError, FaultError) as e:
        raise click.BadParameter(str(e), param_hint="--fault") from None
    try:
        asyncio.run(_serve(dataset, parsed, port_base, require_token))
    except KeyboardInterrupt:
        click.echo("sandbox stopped")
    except OSError as e:
        raise click.ClickException(f"cannot listen on 127.0.0.1 ports {port_base}-{port_base + 3}: {e}") from None
