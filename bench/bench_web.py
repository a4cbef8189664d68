"""Load through the whole web app: cached lookups per second against a bare Starlette JSON endpoint.

    python bench/bench_web.py                                    # wrk if installed, else the Python load generator
    python bench/bench_web.py --redis                            # adds the Redis-cache rows (private redis-server)
    python bench/bench_web.py --duration 5 --load python         # shorter, without wrk
    python bench/bench_web.py --redis --instances 2              # adds two Redis instances against two bare ones
    python bench/bench_web.py --redis --roles employer --compare-with /tmp/before   # this tree against a copy

What runs (everything on loopback, every server in its own process, all started the same way):

- a SQLite database with the synthetic data set's quarterly uploads of all four departments (`certq demo`'s
  data, seed 2026) and one employer key;
- certq (`create_app`, records sources only, rate limits OFF, in-process cache) served by uvicorn: one
  worker, --loop/--http as given (uvloop + httptools by default), access log off, log level warning;
- with --redis, a second certq server whose cache is on Redis (keys under a unique prefix, deleted at the end;
  the Redis: --redis-url, else CERTQ_BENCH_REDIS_URL, else a private redis-server started for the run);
- the baseline: a bare Starlette app with one route, GET /api/v1/certificates/{number}, that returns
  JSONResponse(document) where the document is the very answer certq gave for that number at warm-up
  (same bytes, same size, re-serialised per request as any JSON endpoint does), served by uvicorn the same way;
- with --redis --instances 2, a second Redis-cache certq server (same Redis, same key prefix, same SQLite
  database: two instances of one deployment) and a second bare server. The "x2" rows load both instances of
  a pair at once, the connections (and wrk threads / load processes) split evenly between them; their req/s is
  the sum over both, their latency percentiles the worse of the two, and their ratio is against the two bare
  servers loaded the same way (the aggregate aim of issue 13);
- with --compare-with DIR (a copy of the repository made before a change: its aggregator/, adapters/, config/ and
  bench/), every certq server once more from that copy, on the same database and Redis, labelled "(before)"
  and measured in the same run, each right after (odd rounds) or before (even rounds) its counterpart from this
  tree; the summary adds each row's after/before ratio. The database is made by this tree, so the copy must know
  its migrations (copy aggregator/records/migrations/versions/ over if newer ones came since; a copy's server
  that cannot start says so in its log, kept with --keep).

Each number is looked up twice before measuring (the second answer must come from the cache for every source
that was asked), then wrk (`-t THREADS -c CONNS -d DURATION --latency`, a Lua script cycling through the
numbers) is run against each target in turn, first at --connections (the throughput figure and the ratio),
then at --p99-connections (the latency figures); with --rounds N the whole sequence is repeated and each
figure is the median. Rows: the public (anonymous) lookup, and the same lookup with an employer key and
?name= (which also writes one audit entry per lookup to the database; the count written is checked against
the responses). Any non-2xx answer or socket error invalidates the run (reported, exit status 1). Each row also
reports the server process's CPU time per request (user + system, all its threads, from /proc, over the run):
steadier than req/s on a shared machine, and what a request costs whoever else is running.

Without wrk, or with --load python, THREADS load processes of the aiohttp client (CONNS/THREADS connections
each, fixed duration, at most 1,000,000 requests a connection) stand in for it and the output says so; they
spend more CPU per request than wrk on the cores they share with the servers, so treat their absolute
figures as lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench.common, aggregator

from bench.common import (  # noqa: E402
    LOOKUP,
    ROOT,
    BenchRedis,
    Server,
    Target,
    bench_redis,
    build_env,
    delete_prefix_sync,
    free_port,
    http_get,
    lookup_paths,
    percentile,
    start,
    stop,
    unique_prefix,
    wait_ready,
    warm,
)

# --- the servers (each in its own process) -----------------------------------------------------------


def serve_main(spec: dict[str, Any]) -> None:
    """Server process: build the app named by spec["kind"] and serve it with uvicorn until terminated."""
    import uvicorn

    if spec["kind"] == "bare":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        docs: dict[str, Any] = json.loads(Path(spec["docs"]).read_text(encoding="utf-8"))

        async def certificate(request: Request) -> JSONResponse:
            return JSONResponse(docs[request.path_params["number"]], headers={"Cache-Control": "no-store"})

        app: Any = Starlette(routes=[Route(LOOKUP + "{number}", certificate, methods=["GET"])])
    else:
        from aggregator.config import Settings
        from aggregator.models import Mode
        from aggregator.web.app import create_app
        from aggregator.web.config import WebConfig

        redis_url = spec.get("redis_url") or ""
        if redis_url:
            # Gateway.open builds its Redis cache and resilience state with the default "certq" prefix; on a
            # shared Redis the benchmark's keys go under a prefix of their own instead.
            import aggregator.gateway as gateway_module
            from aggregator.cache import SourceCache
            from aggregator.resilience import ResilienceState

            prefix = spec["prefix"]

            class PrefixedCache(SourceCache):
                @classmethod
                def from_url(cls, url: str | None, **kw: Any) -> SourceCache:
                    kw.setdefault("prefix", prefix)
                    return SourceCache.from_url.__func__(cls, url, **kw)  # type: ignore[attr-defined,no-any-return]

            class PrefixedResilience:
                memory = staticmethod(ResilienceState.memory)

                @staticmethod
                def redis(client: Any) -> ResilienceState:
                    return ResilienceState.redis(client, prefix=prefix)

            gateway_module.SourceCache = PrefixedCache  # type: ignore[misc]
            gateway_module.ResilienceState = PrefixedResilience  # type: ignore[assignment,misc]

        settings = Settings.load()
        settings = settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])
        # rate limits off: every request must be served; gc frozen after start-up, as `certq serve` does
        web = WebConfig(ip_per_minute=0, key_per_minute=0, freeze_gc=True)
        app = create_app(settings, database_url=spec["database_url"], redis_url=redis_url, web=web)

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=spec["port"],
        loop=spec["loop"],
        http=spec["http"],
        lifespan="on",
        access_log=False,
        log_level="warning",
        proxy_headers=False,
    )


def start_server(name: str, spec: dict[str, Any], workdir: Path) -> Server:
    """A server process; spec["tree"]: from that copy of the repository (its own bench_web.py and aggregator)."""
    spec = {**spec, "port": free_port()}
    tree = Path(spec["tree"]) if spec.get("tree") else ROOT
    argv = [sys.executable, str(tree / "bench" / "bench_web.py"), "--serve-worker", json.dumps(spec)]
    proc = start(argv, workdir / f"server-{name}.log", cwd=tree)
    return Server(name, spec["port"], proc)


# --- load generators --------------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    connections: int
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    rps: float = 0.0  # requests / seconds unless given (a median over rounds, a sum over instances)
    cpu_us: float = 0.0  # the server process's CPU time (user + system, all threads) per request, µs

    def __post_init__(self) -> None:
        if not self.rps and self.seconds:
            self.rps = self.requests / self.seconds

    @property
    def valid(self) -> bool:
        return self.non2xx == 0 and self.socket_errors == 0 and self.requests > 0


WRK_LUA = """
local paths = {%(paths)s}
local i = 0
init = function(args)
  i = math.random(#paths) - 1
end
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'CERTQ_BENCH {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, "write": %%d, ' ..
    '"status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    first = (out.stdout or out.stderr).splitlines()[0]
    return first.split(" Copyright")[0].strip()


def run_wrk(wrk: str, target: Target, threads: int, conns: int, duration: int, workdir: Path) -> Result:
    script = workdir / f"paths-{abs(hash(tuple(target.paths)))}.lua"
    script.write_text(WRK_LUA % {"paths": ", ".join(json.dumps(p) for p in target.paths)}, encoding="utf-8")
    cmd = [wrk, "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--latency", "--timeout", "5s"]
    for k, v in target.headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd += ["-s", str(script), target.server.base + target.paths[0]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("CERTQ_BENCH ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    d = json.loads(line.removeprefix("CERTQ_BENCH "))
    return Result(
        target=target.label,
        connections=conns,
        requests=d["requests"],
        seconds=d["duration_us"] / 1e6,
        non2xx=d["status"],
        socket_errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
        p50_ms=d["p50_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        max_ms=d["max_us"] / 1000,
    )


async def loadgen_main(spec: dict[str, Any]) -> None:
    """One Python load process: `conns` connections, each asking back to back until the duration is up."""
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    base, paths, headers = spec["base"], spec["paths"], spec["headers"]
    conns, duration = spec["conns"], spec["duration"]
    max_per_conn = 1_000_000  # a bound on top of the duration
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    async with ClientSession(
        connector=TCPConnector(limit=conns), timeout=ClientTimeout(total=5), headers=headers
    ) as session:
        started = time.perf_counter()
        stop = started + duration

        async def worker(w: int) -> None:
            nonlocal errors
            i = w
            for _ in range(max_per_conn):
                if time.perf_counter() >= stop:
                    return
                path = paths[i % len(paths)]
                i += 1
                t0 = time.perf_counter()
                try:
                    async with session.get(base + path) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                except Exception:  # noqa: BLE001 - counted as a socket error, like wrk does
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker(w) for w in range(conns)))
        elapsed = time.perf_counter() - started
    print(json.dumps({"latencies": latencies, "statuses": statuses, "errors": errors, "elapsed": elapsed}))


def median_result(rs: list[Result]) -> Result:
    """Per figure, the median over rounds; error counts are summed (one bad round invalidates the row)."""
    first = rs[0]
    return Result(
        target=first.target,
        connections=first.connections,
        requests=sum(r.requests for r in rs),
        seconds=sum(r.seconds for r in rs),
        non2xx=sum(r.non2xx for r in rs),
        socket_errors=sum(r.socket_errors for r in rs),
        p50_ms=statistics.median(r.p50_ms for r in rs),
        p90_ms=statistics.median(r.p90_ms for r in rs),
        p99_ms=statistics.median(r.p99_ms for r in rs),
        max_ms=max(r.max_ms for r in rs),
        rps=statistics.median(r.rps for r in rs),
        cpu_us=statistics.median(r.cpu_us for r in rs),
    )


def combined(label: str, rs: list[Result]) -> Result:
    """Instances loaded at the same time as one row: req/s summed, the worst of each latency percentile."""
    return Result(
        target=label,
        connections=sum(r.connections for r in rs),
        requests=sum(r.requests for r in rs),
        seconds=max(r.seconds for r in rs),
        non2xx=sum(r.non2xx for r in rs),
        socket_errors=sum(r.socket_errors for r in rs),
        p50_ms=max(r.p50_ms for r in rs),
        p90_ms=max(r.p90_ms for r in rs),
        p99_ms=max(r.p99_ms for r in rs),
        max_ms=max(r.max_ms for r in rs),
        rps=sum(r.rps for r in rs),
        cpu_us=sum(r.cpu_us * r.requests for r in rs) / max(1, sum(r.requests for r in rs)),
    )


def run_python_load(target: Target, procs: int, conns: int, duration: int) -> Result:
    per = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
    running = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--loadgen-worker",
                json.dumps(
                    {
                        "base": target.server.base,
                        "paths": target.paths,
                        "headers": target.headers,
                        "conns": n,
                        "duration": duration,
                    }
                ),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        for n in per
        if n > 0
    ]
    reports = [json.loads(p.communicate(timeout=duration + 60)[0]) for p in running]
    lat = sorted(x for r in reports for x in r["latencies"])
    ok = sum(v for r in reports for s, v in r["statuses"].items() if 200 <= int(s) < 300)
    total = sum(v for r in reports for v in r["statuses"].values())
    return Result(
        target=target.label,
        connections=conns,
        requests=total,
        seconds=max(r["elapsed"] for r in reports),
        non2xx=total - ok,
        socket_errors=sum(r["errors"] for r in reports),
        p50_ms=percentile(lat, 50, 0.0) * 1000,
        p90_ms=percentile(lat, 90, 0.0) * 1000,
        p99_ms=percentile(lat, 99, 0.0) * 1000,
        max_ms=(lat[-1] if lat else 0.0) * 1000,
    )


# --- main -------------------------------------------------------------------------------------------


def audit_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM audit_log").fetchone()[0])


def main(args: argparse.Namespace) -> int:
    wrk = shutil.which("wrk") if args.load in ("auto", "wrk") else None
    if args.load == "wrk" and wrk is None:
        print("wrk not found (apt-get install wrk), and --load wrk was asked", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(bench_redis(args.redis_url)) if args.redis or args.redis_url else None
        return measure(args, wrk, redis)


def measure(args: argparse.Namespace, wrk: str | None, redis: BenchRedis | None) -> int:
    import starlette
    import uvicorn

    redis_url = redis.url if redis else ""
    load_name = wrk_version(wrk) if wrk else f"Python load generator (aiohttp, {args.threads} processes)"

    print(f"certq web benchmark  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {os.cpu_count()} cores (shared by the load generator and the servers), {platform.machine()},"
        f" Python {platform.python_version()}, uvicorn {uvicorn.__version__} (--loop {args.loop} --http {args.http},"
        f" 1 worker, access log off), Starlette {starlette.__version__}"
    )
    print(f"load generator: {load_name}; rate limits OFF in certq; Redis rows: {redis or 'not run (no --redis)'}")
    print("load average at start: {:.2f} {:.2f} {:.2f} (other work on the machine shows here)".format(*os.getloadavg()))

    workdir = Path(tempfile.mkdtemp(prefix="certq-bench-web-"))
    servers: list[Server] = []
    prefix = unique_prefix()
    try:
        t0 = time.monotonic()
        env = build_env(workdir, args.per_department, args.holders)
        print(
            f"data: synthetic uploads of 4 departments ({args.holders} holders, seed 2026) in SQLite;"
            f" {len(env.numbers)} valid certificate numbers ({args.per_department} per department), cycled"
            f" (setup {time.monotonic() - t0:.1f} s)"
        )
        common = {"loop": args.loop, "http": args.http}
        certq_specs = [("certq", {"kind": "certq", "database_url": env.database_url, **common})]
        if redis_url:
            certq_specs.append(
                ("certq-redis", {"kind": "certq", "database_url": env.database_url, "redis_url": redis_url,
                                 "prefix": prefix, **common})
            )  # fmt: skip
        if redis_url and args.instances == 2:  # the same deployment's second instance: same Redis, prefix, database
            certq_specs.append(("certq-redis-b", dict(certq_specs[-1][1])))
        if args.compare_with:  # the same servers from the copy made before the change (same database, same Redis)
            certq_specs += [(f"{name} before", {**spec, "tree": args.compare_with}) for name, spec in certq_specs]
        certq_servers = [start_server(name, spec, workdir) for name, spec in certq_specs]
        servers += certq_servers
        for s in certq_servers:
            wait_ready(s, "/healthz")

        public_paths = lookup_paths(env, with_name=False)
        employer_paths = lookup_paths(env, with_name=True)
        auth = {"Authorization": f"Bearer {env.employer_key}"}
        cache_label = {"certq": "memory cache", "certq-redis": "Redis cache"}
        roles = [r for r in (("public", public_paths, {}), ("employer", employer_paths, auth)) if r[0] in args.roles]
        targets: list[Target] = []
        warmed: dict[str, dict[str, Any]] = {}
        # a row loaded on several instances at once: its label -> the other instances' targets
        also: dict[str, list[Target]] = {}
        for s in certq_servers:
            for role, paths, headers in roles:
                if s.name == "certq-redis-b":
                    first = next(t for t in targets if t.label == f"certq, Redis cache, {role}")
                    t = Target(f"certq x2, Redis cache, {role}", first.server, paths, headers)
                    second = Target(t.label + " (b)", s, paths, headers)
                    warm(second)
                    also[t.label] = [second]
                    warmed[t.label] = warmed[first.label]
                elif s.name.endswith(" before"):
                    label = f"certq, {cache_label[s.name.removesuffix(' before')]}, {role}"
                    t = Target(f"{label} (before)", s, paths, headers)
                    warmed[t.label] = warm(t)
                else:
                    t = Target(f"certq, {cache_label[s.name]}, {role}", s, paths, headers)
                    warmed[t.label] = warm(t)
                targets.append(t)
        # each "(before)" row right after its counterpart (swapped in even rounds: see round_order)
        labels = [t.label for t in targets]
        targets.sort(key=lambda t: labels.index(t.label.removesuffix(" (before)")))
        befores = {t.label.removesuffix(" (before)"): t.label for t in targets if t.label.endswith(" (before)")}

        # the bare endpoint serves the public answers (asked here when the public rows are not loaded)
        public_label = "certq, memory cache, public"
        public_docs = (
            warmed[public_label]["docs"]
            if public_label in warmed
            else warm(Target(public_label, certq_servers[0], public_paths))["docs"]
        )
        docs_file = workdir / "docs.json"
        docs_file.write_text(json.dumps(public_docs, ensure_ascii=False), encoding="utf-8")
        bare = start_server("bare", {"kind": "bare", "docs": str(docs_file), **common}, workdir)
        servers.append(bare)
        wait_ready(bare, public_paths[0])
        bare_target = Target("bare Starlette JSON endpoint", bare, public_paths)
        warmed[bare_target.label] = warm_bare(bare_target, public_docs)
        targets.insert(0, bare_target)
        baseline = {t.label: bare_target for t in targets}  # each row's ratio is against ...
        if also:  # ... the bare endpoint, or for the x2 rows two bare servers loaded at once
            bare_b = start_server("bare-b", {"kind": "bare", "docs": str(docs_file), **common}, workdir)
            servers.append(bare_b)
            wait_ready(bare_b, public_paths[0])
            bare2 = Target("bare Starlette JSON endpoint x2", bare, public_paths)
            second = Target(bare2.label + " (b)", bare_b, public_paths)
            warm_bare(second, public_docs)
            also[bare2.label] = [second]
            warmed[bare2.label] = warmed[bare_target.label]
            at = next(i for i, t in enumerate(targets) if t.label in also)
            targets.insert(at, bare2)
            for t in targets[at:]:
                baseline[t.label] = bare2

        for t in targets:
            sizes = warmed[t.label]["sizes"]
            extra = f", verdicts {', '.join(warmed[t.label]['verdicts'])}" if "verdicts" in warmed[t.label] else ""
            print(f"    {t.label:38s} answer {min(sizes)}-{max(sizes)} bytes{extra}")

        def load_one(t: Target, threads: int, conns: int, duration: int) -> Result:
            cpu = process_cpu_s(t.server.proc.pid)
            if wrk:
                r = run_wrk(wrk, t, threads, conns, duration, workdir)
            else:
                r = run_python_load(t, threads, conns, duration)
            r.cpu_us = (process_cpu_s(t.server.proc.pid) - cpu) / max(1, r.requests) * 1e6
            return r

        def load(t: Target, conns: int, duration: int) -> Result:
            parts = [t, *also.get(t.label, [])]
            if len(parts) == 1:
                return load_one(t, args.threads, conns, duration)
            n = len(parts)
            threads, per = max(1, args.threads // n), max(1, conns // n)
            with ThreadPoolExecutor(n) as pool:  # every instance of the row under load at the same time
                rs = list(pool.map(lambda p: load_one(p, threads, per, duration), parts))
            return combined(t.label, rs)

        if args.warmup:
            print(f"\nwarm-up: {args.warmup} s at {args.connections} connections per target (not reported)")
            for t in targets:
                load(t, args.connections, args.warmup)
        audit_before = audit_rows(env.sqlite_path)

        runs: dict[tuple[str, int], list[Result]] = {}
        for rnd in range(1, args.rounds + 1):
            for conns in (args.connections, args.p99_connections):
                print(
                    f"\n{args.threads} threads, {conns} connections, {args.duration} s per target"
                    + (f"  (round {rnd} of {args.rounds})" if args.rounds > 1 else "")
                )
                for t in round_order(targets, rnd):
                    r = load(t, conns, args.duration)
                    runs.setdefault((t.label, conns), []).append(r)
                    flag = "" if r.valid else "   <-- INVALID"
                    print(
                        f"    {t.label:38s} {r.rps:9.0f} req/s  CPU {r.cpu_us:5.0f} µs/req  p50 {r.p50_ms:7.2f} ms"
                        f"  p90 {r.p90_ms:7.2f} ms"
                        f"  p99 {r.p99_ms:7.2f} ms  max {r.max_ms:7.1f} ms  non-2xx {r.non2xx}"
                        f"  socket errors {r.socket_errors}{flag}"
                    )
        results = {key: median_result(rs) for key, rs in runs.items()}
        audit_after = audit_rows(env.sqlite_path)
        employer_requests = sum(
            r.requests for (label, _), r in results.items() if label.removesuffix(" (before)").endswith("employer")
        )
        print(
            f"\naudit entries written during the measured runs: {audit_after - audit_before}"
            f" (employer responses counted by the load generator: {employer_requests})"
        )

        print(
            f"\nsummary (ratio = certq req/s / bare req/s at the same connection count; x2 rows: both instances"
            f" together against both bare servers; aim >= {args.aim})"
            + (f"; each figure the median of {args.rounds} rounds" if args.rounds > 1 else "")
        )
        print(
            f"| target | req/s, {args.connections} conns | ratio | req/s, {args.p99_connections} conns | ratio |"
            f" p50, {args.p99_connections} conns | p99, {args.p99_connections} conns | server CPU µs/req,"
            f" {args.connections} / {args.p99_connections} conns | non-2xx |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        all_valid = True
        for t in targets:
            a, b = results[(t.label, args.connections)], results[(t.label, args.p99_connections)]
            all_valid &= a.valid and b.valid
            base = baseline[t.label]
            bare_c = results[(base.label, args.connections)].rps
            bare_p = results[(base.label, args.p99_connections)].rps
            ratio_a = "" if t.label.startswith("bare") else f"{a.rps / bare_c:.2f}"
            ratio_b = "" if t.label.startswith("bare") else f"{b.rps / bare_p:.2f}"
            print(
                f"| {t.label} | {a.rps:,.0f} | {ratio_a} | {b.rps:,.0f} | {ratio_b} | {b.p50_ms:.1f} ms |"
                f" {b.p99_ms:.1f} ms | {a.cpu_us:.0f} / {b.cpu_us:.0f} |"
                f" {a.non2xx + b.non2xx + a.socket_errors + b.socket_errors} |"
            )
        if befores:
            print(
                f"\nafter / before (this tree's row over the copy's, {args.compare_with}), same run: req/s, and the"
                " server's CPU µs per request before -> after"
            )
            for after, before in befores.items():
                line = []
                for c in (args.connections, args.p99_connections):
                    a, b = results[(after, c)], results[(before, c)]
                    line.append(f"{a.rps / b.rps:5.2f}x, CPU {b.cpu_us:5.0f} -> {a.cpu_us:5.0f} µs at {c} conns")
                print(f"    {after:38s} {';  '.join(line)}")
        print("run valid (no non-2xx, no socket errors)" if all_valid else "RUN INVALID: non-2xx or socket errors")
        print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        if args.json:
            raw = [r.__dict__ for rs in runs.values() for r in rs]
            Path(args.json).write_text(json.dumps(raw, indent=2), encoding="utf-8")
        return 0 if all_valid else 1
    finally:
        for s in servers:
            stop(s.proc)
        if redis_url:
            n = delete_prefix_sync(redis_url, prefix)
            print(f"deleted {n} Redis keys under {prefix}:")
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def process_cpu_s(pid: int) -> float:
    """A process's CPU time so far, user + system, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_order(targets: list[Target], rnd: int) -> list[Target]:
    """The targets in the order a round loads them: a "(before)" row after its counterpart in odd rounds, before
    it in even ones (so that neither side always runs second)."""
    out = list(targets)
    if rnd % 2 == 0:
        for i in range(len(out) - 1):
            if out[i + 1].label == out[i].label + " (before)":
                out[i], out[i + 1] = out[i + 1], out[i]
    return out


def warm_bare(target: Target, docs: dict[str, Any]) -> dict[str, Any]:
    sizes = []
    for path in target.paths:
        status, body = http_get(target.server.base + path)
        if status != 200 or json.loads(body) != docs[unquote(path.removeprefix(LOOKUP))]:
            raise RuntimeError(f"bare server: unexpected answer for {path}: {status}")
        sizes.append(len(body))
    return {"sizes": sizes}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", choices=["auto", "wrk", "python"], default="auto",
                   help="load generator: wrk when installed (auto), or the Python one")
    p.add_argument("--threads", type=int, default=2, help="wrk threads / Python load processes")
    p.add_argument("--connections", type=int, default=50, help="connections for the throughput figure")
    p.add_argument("--p99-connections", type=int, default=200, help="connections for the latency figures")
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    p.add_argument("--rounds", type=int, default=1, help="repeat every measured run; figures are medians")
    p.add_argument("--warmup", type=int, default=2, help="seconds of unreported load per target first")
    p.add_argument("--per-department", type=int, default=4, help="valid numbers per department to cycle through")
    p.add_argument("--holders", type=int, default=3000, help="holders in the synthetic data set")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="uvicorn --loop (all servers)")
    p.add_argument("--http", choices=["httptools", "h11"], default="httptools", help="uvicorn --http (all servers)")
    p.add_argument("--redis", action="store_true", help="adds Redis-cache rows")
    p.add_argument("--redis-url", default=None,
                   help="implies --redis: this Redis (default: CERTQ_BENCH_REDIS_URL, else a private redis-server)")
    p.add_argument("--instances", type=int, choices=[1, 2], default=1,
                   help="2: also two Redis-cache instances (one Redis, one database) against two bare servers")
    p.add_argument("--aim", type=float, default=0.5, help="the ratio aimed for")
    p.add_argument("--roles", type=lambda v: [r.strip() for r in v.split(",")], default=["public", "employer"],
                   help="rows to load: public, employer or both (comma-separated; default both)")
    p.add_argument("--compare-with", default=None, metavar="DIR",
                   help="also serve certq from this copy of the repository (rows labelled '(before)')")
    p.add_argument("--json", default=None, help="also write the raw results to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (database, server logs)")
    args = p.parse_args()
    if not (1 <= args.duration <= 120 and 0 <= args.warmup <= 30 and 1 <= args.rounds <= 5):
        p.error("--duration must be 1..120 s, --warmup 0..30 s and --rounds 1..5")
    if not (1 <= args.threads <= 16 and 1 <= args.connections <= 2000 and 1 <= args.p99_connections <= 2000):
        p.error("--threads must be 1..16 and connections 1..2000")
    if args.threads > min(args.connections, args.p99_connections):
        p.error("--threads must not exceed the connection counts")
    if args.instances == 2 and not (args.redis or args.redis_url):
        p.error("--instances 2 needs --redis (instances share their cache through Redis)")
    if not args.roles or set(args.roles) - {"public", "employer"}:
        p.error("--roles takes public, employer or public,employer")
    if args.compare_with:
        tree = Path(args.compare_with).resolve()
        if not (tree / "bench" / "bench_web.py").is_file() or not (tree / "aggregator").is_dir():
            p.error(f"--compare-with {tree}: not a copy of the repository (bench/bench_web.py, aggregator/)")
        if args.instances == 2:
            p.error("--compare-with is for one instance per server (not with --instances 2)")
        args.compare_with = str(tree)
    return args


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-worker":
        serve_main(json.loads(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--loadgen-worker":
        asyncio.run(loadgen_main(json.loads(sys.argv[2])))
    else:
        sys.exit(main(parse_args()))
