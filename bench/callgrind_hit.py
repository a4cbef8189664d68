"""Instructions per cached lookup in-process, counted by callgrind (stable on a shared machine, unlike time).

    python bench/callgrind_hit.py                  # memory cache: gateway lookup, and lookup + mask + serialise
    python bench/callgrind_hit.py --lookups 400    # more lookups in the measured difference

The setup of bench_hit_path.py (the synthetic data set's uploads of all four departments in a fresh SQLite
file, records sources only, 4 valid certificate numbers per department, each asked twice first so that every
source answers from the cache) is built once outside valgrind. Then the same child script runs twice under
`valgrind --tool=callgrind --instr-atstart=no`, once with --base lookups and once with --base + --lookups;
the child switches instrumentation on (`callgrind_control -i on`) only around its measured loop, after start-up
and warm-up. The difference of the two instruction totals divided by --lookups is the cost of one cached
lookup (the switching itself cancels out). The child also checks that every measured answer came from the
cache.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench.common, aggregator

ROOT = Path(__file__).resolve().parent.parent


async def child(database_url: str, numbers: list[str], lookups: int, part: str) -> None:
    from aggregator.config import Settings
    from aggregator.gateway import Gateway
    from aggregator.models import Mode
    from aggregator.records.store import RecordStore
    from aggregator.web.api import AnswerResponse
    from aggregator.web.masking import mask_answer
    from aggregator.web.roles import Role

    settings = Settings.load()
    settings = settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])
    store = await RecordStore.open(database_url)
    gw = Gateway(settings, store)
    render = AnswerResponse.render.__get__(AnswerResponse.__new__(AnswerResponse))
    try:
        for number in numbers:
            # Under valgrind a cold first lookup may outrun a source's timeout: ask until the cache answers.
            for _ in range(10):
                answer = await gw.lookup(number)
                if all(s.from_cache for s in answer.sources):
                    break
            else:
                raise SystemExit(f"{number} never came from the cache: {[s.model_dump() for s in answer.sources]}")
        n = len(numbers)
        instrument("on")
        for i in range(lookups):
            number = numbers[i % n]
            answer = await gw.lookup(number)
            if part == "whole":
                render(mask_answer(answer, Role.PUBLIC, {number}))
            if not all(s.from_cache for s in answer.sources):
                raise SystemExit(f"lookup {i} of {number} was not answered from the cache")
        instrument("off")
    finally:
        await gw.close()


def instrument(state: str) -> None:
    """Switch callgrind's instrumentation of this process on or off (it runs under valgrind)."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def instructions(args: argparse.Namespace, setup: Path, lookups: int, part: str) -> int:
    with tempfile.TemporaryDirectory(prefix="certq-cg-") as tmp:
        cmd = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/cg.out",
            sys.executable, str(Path(__file__).resolve()), "--child", str(setup), "--lookups", str(lookups),
            "--part", part,
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
    p.add_argument("--lookups", type=int, default=200, help="lookups in the measured difference")
    p.add_argument("--base", type=int, default=50, help="lookups in the baseline run (warms what warms late)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part", default="lookup", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        setup = json.loads(Path(args.child).read_text())
        asyncio.run(child(setup["database_url"], setup["numbers"], args.lookups, args.part))
        return
    from bench.common import build_env

    with tempfile.TemporaryDirectory(prefix="certq-cg-env-") as tmp:
        env = build_env(Path(tmp), per_department=4, holders=3000)
        setup = Path(tmp) / "setup.json"
        setup.write_text(json.dumps({"database_url": env.database_url, "numbers": [n for n, _ in env.numbers]}))
        print(f"{len(env.numbers)} numbers; callgrind runs of {args.base} and {args.base + args.lookups} lookups")
        for part, label in (("lookup", "gateway lookup, public"), ("whole", "lookup + mask + serialise")):
            low = instructions(args, setup, args.base, part)
            high = instructions(args, setup, args.base + args.lookups, part)
            print(f"  {label:28s} {(high - low) / args.lookups:12,.0f} instructions per lookup")


if __name__ == "__main__":
    main()
