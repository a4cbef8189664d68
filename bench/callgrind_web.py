"""Instructions per cached lookup through the whole web app, in process (ASGI called directly, no sockets).

    python bench/callgrind_web.py                  # callgrind: bare endpoint, public lookup, employer lookup
    python bench/callgrind_web.py --time           # the same loops timed instead (µs per request; noisy here)
    python bench/callgrind_web.py --profile public # cProfile of the public loop, top functions by own time
    python bench/callgrind_web.py --redis redis://127.0.0.1:6379/13   # cache and name budget on Redis

The setup is bench_web.py's (the synthetic data set's uploads of all four departments in a fresh SQLite file,
records sources only, one employer key, 4 valid numbers per department), built once outside valgrind. Each
target runs in a child under `valgrind --tool=callgrind --instr-atstart=no` twice (--base and --base + --lookups
requests); the child switches instrumentation on only around its measured loop, so the difference divided by
--lookups is what one request costs: the ASGI app called with an HTTP scope, its whole response collected.

Targets, served by the very app each is measured in:
- `bare`: a Starlette app with one route returning `JSONResponse(document)` (the certq public answer of that
  number, taken at warm-up): bench_web.py's baseline;
- `public`: certq's `create_app` (rate limits off, as in bench_web.py), `GET /api/v1/certificates/{number}`;
- `employer`: the same with the employer key and `?name=` (name budget on the database, one audit entry each).
The child checks every response is 200 and that a cached lookup says every source answered from the cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench.common, aggregator

ROOT = Path(__file__).resolve().parent.parent
LOOKUP = "/api/v1/certificates/"


def scope_for(path: str, headers: dict[str, str]) -> dict[str, Any]:
    raw_path, _, query = path.partition("?")
    from urllib.parse import unquote

    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("ascii"),
        "query_string": query.encode("ascii"),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")]
        + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def call(app: Any, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    scope = scope_for(path, headers)
    status = 0
    body = bytearray()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, bytes(body)


def build_app(setup: dict[str, Any], target: str) -> Any:
    from aggregator.config import Settings
    from aggregator.models import Mode
    from aggregator.web.app import create_app
    from aggregator.web.config import WebConfig

    if target == "bare":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        docs = setup["docs"]

        async def certificate(request: Request) -> JSONResponse:
            return JSONResponse(docs[request.path_params["number"]], headers={"Cache-Control": "no-store"})

        return Starlette(routes=[Route(LOOKUP + "{number}", certificate, methods=["GET"])])
    settings = Settings.load()
    settings = settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])
    # as bench_web.py (rate limits off, gc frozen after start-up as `certq serve` does), but no in-process job
    # worker: its polling would be counted with the requests
    web = WebConfig(ip_per_minute=0, key_per_minute=0, freeze_gc=True, jobs_in_process=False)
    return create_app(settings, database_url=setup["database_url"], redis_url=setup.get("redis_url") or "", web=web)


def requests_for(setup: dict[str, Any], target: str) -> tuple[list[str], dict[str, str]]:
    if target == "employer":
        paths = [LOOKUP + quote(n) + "?name=" + quote(name) for n, name in setup["numbers"]]
        return paths, {"Authorization": f"Bearer {setup['employer_key']}"}
    return [LOOKUP + quote(n) for n, _ in setup["numbers"]], {}


async def child(setup: dict[str, Any], target: str, lookups: int, mode: str) -> None:
    app = build_app(setup, target)
    paths, headers = requests_for(setup, target)
    async with app.router.lifespan_context(app):
        for path in paths:  # warm-up: until every source answers from the cache
            for _ in range(10):
                status, body = await call(app, path, headers)
                if status != 200:
                    raise SystemExit(f"{path}: {status} {body[:300]!r}")
                if target == "bare" or all(s.get("from_cache") for s in json.loads(body)["sources"]):
                    break
            else:
                raise SystemExit(f"{path} never came from the cache")
        n = len(paths)
        if mode == "callgrind":
            instrument("on")
        elif mode == "profile":
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        started = time.perf_counter()
        for i in range(lookups):
            status, body = await call(app, paths[i % n], headers)
            if status != 200:
                raise SystemExit(f"request {i}: {status} {body[:300]!r}")
        elapsed = time.perf_counter() - started
        if mode == "callgrind":
            instrument("off")
        elif mode == "profile":
            import pstats

            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(45)
        if mode == "time":
            print(json.dumps({"us": elapsed / lookups * 1e6}))


def instrument(state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def instructions(setup: Path, target: str, lookups: int, out: str | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="certq-cgw-") as tmp:
        out_file = out or f"{tmp}/cg.out"
        cmd = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}",
            sys.executable, str(Path(__file__).resolve()), "--child", str(setup), "--target", target,
            "--lookups", str(lookups), "--mode", "callgrind",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"callgrind run failed:\n{proc.stderr[-3000:]}")
        m = re.search(r"Collected : (\d+)", proc.stderr)
        if not m:
            raise SystemExit(f"no instruction total in callgrind's output:\n{proc.stderr[-2000:]}")
        return int(m.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lookups", type=int, default=200, help="requests in the measured difference")
    p.add_argument("--base", type=int, default=50, help="requests in the baseline run")
    p.add_argument("--targets", default="bare,public,employer")
    p.add_argument("--time", action="store_true", help="time the loops (best of 3) instead of counting")
    p.add_argument("--profile", default=None, help="cProfile one target's loop")
    p.add_argument("--redis", default="", help="cache and name budget on this Redis (e.g. a database of its own)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--target", default="public", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="callgrind", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        setup = json.loads(Path(args.child).read_text())
        asyncio.run(child(setup, args.target, args.lookups, args.mode))
        return
    from bench.common import build_env

    with tempfile.TemporaryDirectory(prefix="certq-cgw-env-") as tmp:
        env = build_env(Path(tmp), per_department=4, holders=3000)
        docs = asyncio.run(public_docs(env.database_url, [n for n, _ in env.numbers]))
        setup = Path(tmp) / "setup.json"
        setup.write_text(
            json.dumps(
                {
                    "database_url": env.database_url,
                    "numbers": env.numbers,
                    "employer_key": env.employer_key,
                    "docs": docs,
                    "redis_url": args.redis,
                }
            )
        )
        targets = args.targets.split(",")
        if args.profile:
            subprocess.run(
                [sys.executable, __file__, "--child", str(setup), "--target", args.profile,
                 "--lookups", str(args.lookups), "--mode", "profile"], check=True, cwd=ROOT,
            )
            return
        figures: dict[str, float] = {}
        for target in targets:
            if args.time:
                best = min(
                    json.loads(
                        subprocess.run(
                            [sys.executable, __file__, "--child", str(setup), "--target", target,
                             "--lookups", str(args.lookups), "--mode", "time"],
                            check=True, cwd=ROOT, capture_output=True, text=True,
                        ).stdout
                    )["us"]
                    for _ in range(3)
                )
                figures[target] = best
                print(f"  {target:10s} {best:10.1f} µs per request", flush=True)
            else:
                low = instructions(setup, target, args.base)
                high = instructions(setup, target, args.base + args.lookups)
                figures[target] = (high - low) / args.lookups
                print(f"  {target:10s} {figures[target]:12,.0f} instructions per request", flush=True)
        if "bare" in figures:
            for target in targets:
                if target != "bare":
                    # throughput ratio as the aims state it: bare cost / target cost
                    print(f"  {target:10s} bare/target = {figures['bare'] / figures[target]:.2f}")


async def public_docs(database_url: str, numbers: list[str]) -> dict[str, Any]:
    """The public answer certq gives for each number (the bare endpoint's documents), from the app itself."""
    setup = {"database_url": database_url}
    app = build_app(setup, "public")
    docs: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        for n in numbers:
            for _ in range(2):
                status, body = await call(app, LOOKUP + quote(n), {})
            docs[n] = json.loads(body)
    return docs


if __name__ == "__main__":
    main()
