"""Slowloris against `certq serve`: do normal lookups stay fast, and how long are slow connections held?

    python bench/slow_clients.py                                   # 2,000 slow connections, 2 s header timeout
    python bench/slow_clients.py --slow 500 --measure-s 3 --header-timeout 1
    python bench/slow_clients.py --unguarded                       # also: the same attack with both limits off
    python bench/slow_clients.py --unguarded --server-fds 1024 --slow 1500 --measure-s 4   # a default ulimit -n

What runs (loopback only; every phase has a fixed length):

- the demo's synthetic uploads (seed 2026) imported into a fresh SQLite file (bench/common.py build_env), and a
  config directory with the four records sources only (no live site is ever asked);
- the real `certq serve` (one worker, log level warning) with CERTQ_WEB_HEADER_TIMEOUT=--header-timeout,
  CERTQ_WEB_MAX_CONNECTIONS_PER_IP=--cap and the rate limits off (so that every normal lookup is served);
- normal lookups: a separate process runs --clients concurrent clients for --measure-s seconds, each lookup a
  public GET /api/v1/certificates/<number> (cached by a warm-up) on a NEW connection (connect, ask, read to
  the close), as a new visitor would; the figure is connect-to-last-byte latency;
- baseline: the normal lookups with nothing else going on;
- attack (many addresses): --slow slowloris connections from 127.0.0.2, 127.0.0.3, ... (--per-ip each, under
  the cap, so only the header timeout defends; Linux routes all of 127/8 to loopback). Each sends a partial
  request head, then one more header line every --trickle-s seconds, and is reopened at once when the server
  closes it, as an attacker would. Once all are open the normal lookups are measured again: p50/p99 and
  their ratios to the baseline. Reported: how long the server held each slow connection (connect to close,
  seen by the attacker) and how many were open on average while the lookups ran;
- attack (one address): --slow connections from 127.0.0.250 at once: how many the server kept, how many it
  refused at once with 429, and what the normal lookups (from 127.0.0.1) saw meanwhile;
- the baseline once more after the attacks (its ratio to the first shows how noisy the machine is);
- with --server-fds N, the server runs with that descriptor limit (ulimit -n), as on a default Linux box;
- with --unguarded, the many-address attack again on a `certq serve` with both limits set to 0 (uvicorn as
  it was), for contrast.

The attacker, the lookup process and the server share the machine's cores, so attack-time latencies include
CPU taken by the attacker itself: read the ratios as upper bounds of what the attack costs the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench.common, aggregator

from bench.common import (  # noqa: E402
    ROOT,
    Env,
    Server,
    Target,
    build_env,
    free_port,
    lookup_paths,
    percentile,
    run_loop,
    start,
    stop,
    wait_ready,
    warm,
)

SLOW_HEAD = b"GET / HTTP/1.1\r\nHost: certq\r\nUser-Agent: slowloris-bench\r\n"
SLOW_LINE = b"X-Slow: 1\r\n"
ONE_ADDRESS = "127.0.0.250"


# --- the server ---------------------------------------------------------------------------------------


def records_config_dir(dst: Path) -> Path:
    """The repository's config with only the records sources."""
    src = ROOT / "config"
    (dst / "sources").mkdir(parents=True)
    for name in ("departments.toml", "recognition.toml"):
        shutil.copy(src / name, dst / name)
    for path in (src / "sources").glob("*_records.toml"):
        shutil.copy(path, dst / "sources" / path.name)
    return dst


def start_serve(env: Env, config_dir: Path, workdir: Path, name: str, header_timeout: float, cap: int,
                fds: int | None = None) -> Server:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CERTQ_")}
    environ.update(
        CERTQ_DATABASE_URL=env.database_url,
        CERTQ_CONFIG_DIR=str(config_dir),
        CERTQ_WEB_HEADER_TIMEOUT=str(header_timeout),
        CERTQ_WEB_MAX_CONNECTIONS_PER_IP=str(cap),
        CERTQ_WEB_IP_PER_MINUTE="0",
        CERTQ_WEB_KEY_PER_MINUTE="0",
    )
    cmd = [sys.executable, "-c", "from aggregator.cli import main; main()", "serve", "--port", str(port),
           "--log-level", "warning"]

    def limit_fds() -> None:  # in the server process only: the attacker needs its own descriptors
        if fds:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (fds, fds))

    proc = start(cmd, workdir / f"serve-{name}.log", cwd=workdir, env=environ, preexec=limit_fds)
    return Server(name, port, proc)


# --- normal lookups (their own process) ---------------------------------------------------------------


async def lookup_main(spec: dict[str, Any]) -> None:
    """Closed loop: spec["clients"] clients for spec["seconds"], a new connection per lookup; JSON to stdout."""
    port, paths = spec["port"], spec["paths"]
    latencies: list[float] = []
    failures: dict[str, int] = {}
    stop_at = time.monotonic() + spec["seconds"]

    async def client(i: int) -> None:
        n = i
        while time.monotonic() < stop_at:
            path = paths[n % len(paths)]
            n += spec["clients"]
            started = time.perf_counter()
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: certq\r\nConnection: close\r\n\r\n".encode())
                data = await asyncio.wait_for(reader.read(), 10)
                writer.close()
            except (OSError, TimeoutError) as e:
                failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
                await asyncio.sleep(0.05)
                continue
            if not data.startswith(b"HTTP/1.1 200 "):
                key = data[:12].decode("latin-1") or "closed"
                failures[key] = failures.get(key, 0) + 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(client(i) for i in range(spec["clients"])))
    print(json.dumps({"latencies_ms": latencies, "failures": failures}))


def start_lookups(port: int, paths: list[str], clients: int, seconds: float) -> subprocess.Popen[bytes]:
    spec = json.dumps({"port": port, "paths": paths, "clients": clients, "seconds": seconds})
    return subprocess.Popen([sys.executable, __file__, "--lookup-worker", spec], cwd=ROOT, stdout=subprocess.PIPE)


def finish_lookups(proc: subprocess.Popen[bytes]) -> Lookups:
    out, _ = proc.communicate(timeout=120)
    data = json.loads(out)
    return Lookups(sorted(data["latencies_ms"]), data["failures"])


@dataclass
class Lookups:
    latencies_ms: list[float]
    failures: dict[str, int]

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50, 0.0)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99, 0.0)

    def line(self, label: str, base: Lookups | None = None) -> str:
        ratio = f"  (x{self.p50 / base.p50:.2f} / x{self.p99 / base.p99:.2f})" if base and base.p50 else ""
        failed = f", failed {sum(self.failures.values())} {self.failures}" if self.failures else ""
        return (f"  {label:<34} {len(self.latencies_ms):>6} lookups  p50 {self.p50:6.2f} ms  p99 {self.p99:7.2f} ms"
                f"{ratio}{failed}")


# --- the attack ---------------------------------------------------------------------------------------


@dataclass
class Attack:
    held_s: list[float] = field(default_factory=list)  # connect to the server's close, per closed connection
    open_at_end: list[float] = field(default_factory=list)  # ages of those still open when the attack stopped
    refused: int = 0  # answered 429 at once
    connect_errors: int = 0
    opened: int = 0
    open_now: int = 0
    open_samples: list[int] = field(default_factory=list)


async def slow_connection(port: int, source: str, attack: Attack, stop: asyncio.Event, trickle_s: float,
                          reopen: bool) -> None:
    """One slowloris: a partial head, a header line every trickle_s, reopened when closed (if reopen)."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            attack.connect_errors += 1
            await asyncio.sleep(0.1)
            continue
        opened = time.monotonic()
        attack.opened += 1
        attack.open_now += 1
        got = b""
        try:
            writer.write(SLOW_HEAD)
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(4096), trickle_s)
                except TimeoutError:
                    writer.write(SLOW_LINE)
                    continue
                if not data:
                    break
                got += data
            else:
                attack.open_at_end.append(time.monotonic() - opened)
                return
        except (ConnectionError, OSError):
            pass
        finally:
            attack.open_now -= 1
            writer.close()
        if got.startswith(b"HTTP/1.1 429 "):
            attack.refused += 1
        else:
            attack.held_s.append(time.monotonic() - opened)
        if not reopen:
            return


async def run_attack(port: int, plan: list[tuple[str, int]], args: argparse.Namespace, paths: list[str],
                     reopen: bool) -> tuple[Attack, Lookups]:
    """Open `count` slow connections from each (source, count) of the plan, then measure normal lookups."""
    attack = Attack()
    stop = asyncio.Event()
    tasks = []
    for source, count in plan:  # ramp: one address's connections at a time, so that the listen queue keeps up
        for _ in range(count):
            tasks.append(asyncio.create_task(slow_connection(port, source, attack, stop, args.trickle_s, reopen)))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    proc = await asyncio.to_thread(start_lookups, port, paths, args.clients, args.measure_s)
    lookups = asyncio.ensure_future(asyncio.to_thread(finish_lookups, proc))  # reads its output as it comes
    while not lookups.done():
        attack.open_samples.append(attack.open_now)
        await asyncio.sleep(0.1)
    result = await lookups
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), args.trickle_s + 10)
    return attack, result


def attack_lines(attack: Attack, header_timeout: float) -> list[str]:
    lines = []
    if attack.held_s:
        held = sorted(attack.held_s)
        lines.append(
            f"  slow connections closed by the server: {len(held):,}, held p50 {percentile(held, 50, 0.0):.2f} s, "
            f"max {held[-1]:.2f} s (header timeout {header_timeout:g} s)"
        )
    if attack.open_at_end:
        lines.append(
            f"  still open when the attack stopped: {len(attack.open_at_end):,}, "
            f"oldest {max(attack.open_at_end):.2f} s"
        )
    if attack.open_samples:
        lines.append(
            f"  slow connections open while the lookups ran: mean {statistics.mean(attack.open_samples):,.0f}, "
            f"opened in all {attack.opened:,}, refused (429) {attack.refused:,}, connect errors {attack.connect_errors}"
        )
    return lines


# --- main -------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    import uvicorn

    n_sources = -(-args.slow // args.per_ip)
    if n_sources > 240:
        raise SystemExit("--slow / --per-ip needs more than 240 loopback addresses")
    many = [(f"127.0.0.{2 + i}", args.slow // n_sources + (1 if i < args.slow % n_sources else 0))
            for i in range(n_sources)]
    print(
        f"slow_clients: {date.today()}, {os.cpu_count()} cores ({platform.machine()}), Python "
        f"{platform.python_version()}, uvicorn {uvicorn.__version__}; `certq serve` (1 worker, httptools), "
        f"header timeout {args.header_timeout:g} s, cap {args.cap}/IP; {args.slow:,} slow connections, a header "
        f"line every {args.trickle_s:g} s; lookups: {args.clients} clients x {args.measure_s:g} s, new connection "
        f"each" + (f"; server descriptor limit {args.server_fds}" if args.server_fds else "")
    )
    with tempfile.TemporaryDirectory(prefix="certq-slow-") as tmp:
        work = Path(tmp)
        env = build_env(work, per_department=25, holders=2000)
        config_dir = records_config_dir(work / "config")
        paths = lookup_paths(env, with_name=False)
        runs = [("guarded", args.header_timeout, args.cap)] + ([("unguarded", 0.0, 0)] if args.unguarded else [])
        for name, header_timeout, cap in runs:
            server = start_serve(env, config_dir, work, name, header_timeout, cap, args.server_fds)
            try:
                wait_ready(server, "/healthz")
                warm(Target(name, server, paths))
                print(f"\n{name}: CERTQ_WEB_HEADER_TIMEOUT={header_timeout:g} CERTQ_WEB_MAX_CONNECTIONS_PER_IP={cap}")
                base = finish_lookups(start_lookups(server.port, paths, args.clients, args.measure_s))
                print(base.line("baseline (no attack)"))
                # The attack and the lookups run on uvloop, as `certq serve` does: less of the shared CPU for them.
                attack, during = run_loop(run_attack(server.port, many, args, paths, reopen=True), "uvloop")
                print(during.line(f"during slowloris ({n_sources} addresses)", base))
                for line in attack_lines(attack, header_timeout):
                    print(line)
                if cap:
                    one = [(ONE_ADDRESS, args.slow)]
                    attack, during = run_loop(run_attack(server.port, one, args, paths, reopen=False), "uvloop")
                    print(during.line(f"during {args.slow:,} from one address", base))
                    kept = len(attack.open_at_end) + len(attack.held_s)
                    print(f"  from one address: kept {kept:,}, refused at once with 429: {attack.refused:,}")
                    for line in attack_lines(attack, header_timeout)[:2]:
                        print(line)
                time.sleep(max(header_timeout, 1.0))  # the server lets go of the last slow connections
                after = finish_lookups(start_lookups(server.port, paths, args.clients, args.measure_s))
                print(after.line("after the attacks (no attack)", base))
            finally:
                stop(server.proc)
    return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slow", type=int, default=2000, help="slowloris connections")
    p.add_argument("--per-ip", type=int, default=50, help="slow connections per address in the many-address attack")
    p.add_argument("--header-timeout", type=float, default=2.0, help="CERTQ_WEB_HEADER_TIMEOUT of the server")
    p.add_argument("--cap", type=int, default=64, help="CERTQ_WEB_MAX_CONNECTIONS_PER_IP of the server")
    p.add_argument("--trickle-s", type=float, default=1.0, help="seconds between a slow client's header lines")
    p.add_argument("--measure-s", type=float, default=6.0, help="seconds of normal lookups per phase")
    p.add_argument("--clients", type=int, default=4, help="concurrent normal clients")
    p.add_argument("--unguarded", action="store_true", help="also attack a server with both limits at 0")
    p.add_argument("--server-fds", type=int, help="the server's descriptor limit (ulimit -n; default: inherited)")
    p.add_argument("--lookup-worker", help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    ns = parse_args()
    if ns.lookup_worker:
        run_loop(lookup_main(json.loads(ns.lookup_worker)), "uvloop")
        sys.exit(0)
    sys.exit(main(ns))
