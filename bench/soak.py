"""Soak (issue 8): a steady stream of lookups through `certq serve` while things go wrong around it.

    python bench/soak.py                                  # 100 lookups/s for 300 s (about 6 minutes in all)
    python bench/soak.py --duration 60 --rate 50          # quick mode (about 1.5 minutes)
    python bench/soak.py --json soak.json --keep          # also a JSON summary; keep logs and database

Everything runs on loopback and is started, and torn down again (also on Ctrl-C or an error), by this script:

- its own redis-server on a free port (`--save '' --appendonly no`, data in a temporary directory; the
  machine's shared Redis is never touched);
- the four sandbox department sites (aggregator/sandbox) in a child process, on free ports, from the seeded
  data set (seed 2026, 3,000 holders, today's date); the live sources are pointed at them through
  CERTQ_MEM_URL, CERTQ_SAMR_URL, CERTQ_MOHRSS_URL and CERTQ_MOHURD_URL (config/sources/*.toml);
- a SQLite database in the temporary directory with the four departments' uploads of that data set imported
  (as `certq demo` does), an employer key and a MEM department key;
- `certq serve --workers 2` with CERTQ_REDIS_URL on the private Redis (it freezes the GC after start-up, as
  it always does), the web limits raised so that the load is not refused (CERTQ_WEB_IP_PER_MINUTE and
  CERTQ_WEB_KEY_PER_MINUTE = max(1200, 3 x rate x 60), CERTQ_WEB_MAX_CONNECTIONS_PER_IP = --max-in-flight
  + 100: every request comes from 127.0.0.1) and, by default, each live source's own rate limit
  raised to --source-rate per second (a copy of config/ in the temporary directory; --source-rate 0 keeps
  config/'s 10/s), so that inconclusive answers come from the faults and outages, not from certq's throttle.

Load: open loop at a fixed --rate (each request is sent at its scheduled time whatever the answers before
it; latency is measured from the scheduled time, so a stalled server is not hidden by a stalled client),
over numbers drawn (seeded) from the sandbox's data set: valid, expired, suspended and revoked certificates,
certificates whose live site has moved on since the upload (suspended, renewed or issued after it),
well-formed numbers nobody holds, and the numbers the mid-run upload changes. Half of the lookups are
anonymous, half use the employer key with the holder's name; "name mismatch" lookups use the employer key
with one fixed wrong name per certificate (so at most two distinct names per certificate and key).

Timeline (fractions of --duration): the sandbox's fault switches cycle one site at a time from 4 % to 94 %
(latency, error rate, captcha, ban, garbage, layout change; 12 windows, each switched on for 6.5 % and off
for 1 %, through the sites' POST /_sandbox/faults); Redis is killed (SIGKILL) at 25 % and restarted on the
same port --outage seconds later, again at 60 %; at 45 % MEM publishes a new quarter: the MEM site starts
showing a few changed statuses (valid -> suspended / revoked, suspended -> valid) and MEM's upload of the
next quarter (its current register, with those changes) is posted to POST /api/v1/uploads with the MEM
department key.

Truth: for each number, the verdict certq should give when every source answers, computed from the data set
(the freshest version of each certificate: the live site's; the subject certificates as certq defines them:
the number's own certificates, or for an ID number every certificate of that person; the name compared as
README says; the best status of valid > suspended > expired > revoked). For the changed numbers the truth
changes when MEM publishes: a lookup in flight at any moment between the switch on the MEM site and the end
of the upload + 2 s (the other worker's 1-second generation memo) may give either. A definitive answer is
any verdict other than inconclusive; a disagreement is a definitive verdict that differs from the truth. An
answer whose `query.name_check` is "not_checked" (a daily budget of distinct names per certificate and key)
is compared without the name and counted separately. Each disagreement says whether the live source that
was unavailable had answered that number earlier in the run (so certq could have known better).

Output (80 columns): the events as they happened; per fault window, how many answers had that site's source
unavailable during it and after it was switched off (and the last one: how long it took to come back); per
phase (before, outage 1, after 1, outage 2, after 2, and the whole run): requests, 5xx, 429, other failures
(no answer, or another status), inconclusive, disagreements, p50/p99 latency; the answers per truth; up to 10
disagreements with each source's status; CPU per phase (certq serve, the sandbox, this script, the whole
machine: other work on it shows there); peak memory (the server processes sampled from /proc every second, and
Redis); the live sources' outcomes; the server log's lines beyond the expected Redis outage notices; the aims
(no 5xx, no disagreement, p99 during each outage < 1 s) with pass/fail. --json also writes all of it, with
a per-second timeline and every disagreement. Exit status 0 when every aim is met, 1 otherwise, 2 when the
run could not be set up, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench.common, aggregator

from aggregator.merge import normalise_name  # noqa: E402
from aggregator.models import Certificate, CertStatus, Department  # noqa: E402
from aggregator.numbers import id_check_character, parse_number  # noqa: E402
from aggregator.sandbox.dataset import Dataset, generate, write_upload_csv  # noqa: E402
from bench.common import (  # noqa: E402
    LOOKUP,
    ROOT,
    RedisServer,
    create_keys,
    free_port,
    import_uploads,
    percentile,
    start,
    stop,
)

SITES = ("mem", "samr", "mohrss", "mohurd")
URL_ENV = {"mem_api": "CERTQ_MEM_URL", "samr_api": "CERTQ_SAMR_URL", "mohrss_html": "CERTQ_MOHRSS_URL",
           "mohurd_api": "CERTQ_MOHURD_URL"}  # fmt: skip
# The faults that cycle, in order, one site at a time (site i % 4, fault i % 6).
FAULTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("latency", {"latency_ms": 800, "latency_jitter_ms": 400}),
    ("error_rate", {"error_rate": 0.5, "error_kinds": ["500", "502", "504", "reset"]}),
    ("captcha", {"captcha": True}),
    ("ban", {"ban": True}),
    ("garbage", {"garbage": True}),
    ("layout_changed", {"layout_changed": True}),
)
FAULT_WINDOWS, FAULTS_FROM, FAULT_WINDOW, FAULT_ON = 12, 0.04, 0.075, 0.065
KILL_AT, UPLOAD_AT = (0.25, 0.60), 0.45
TRANSITION_GRACE_S = 2.0  # after the upload: the other worker's generation memo (1 s) and a margin
VERDICT_ORDER = (CertStatus.VALID, CertStatus.SUSPENDED, CertStatus.EXPIRED, CertStatus.REVOKED)
# Strata of the load (share of the lookups); each draws from its own seeded pool of numbers.
STRATA: tuple[tuple[str, float], ...] = (
    ("valid", 0.34),
    ("expired", 0.10),
    ("suspended", 0.08),
    ("revoked", 0.06),
    ("moved_on", 0.09),  # the live site differs from the upload: suspended, renewed or issued after it
    ("changed", 0.05),  # the numbers whose status the mid-run upload changes
    ("not_found", 0.14),
    ("wrong_name", 0.14),  # employer, a wrong name: the truth is name_mismatch
)
CHANGES = (("valid", "suspended", 3), ("valid", "revoked", 3), ("suspended", "valid", 2))
STATUS_TEXT = {"valid": "有效", "suspended": "暂扣", "revoked": "吊销"}
SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
AIM_OUTAGE_P99_MS = 1000.0


# --- the truth -------------------------------------------------------------------------------------------


def is_id_query(number: str) -> bool:
    return bool(parse_number(number).names & {"id18", "id15"})


class Truth:
    """The verdict certq should give for a number (and name) when every source answers, from the data set.

    Each certificate counts in its freshest version: the live site's where it has one, else the upload's."""

    def __init__(self, dataset: Dataset) -> None:
        self.today = dataset.today
        certs: dict[tuple[str, str, str], Certificate] = {}
        for dept in Department:
            for c in dataset.uploaded[dept]:
                certs[c.key()] = c
            for c in dataset.live[dept]:
                certs[c.key()] = c
        self.certs = certs
        self._reindex()

    def _reindex(self) -> None:
        self.by_number: dict[str, list[Certificate]] = {}
        self.by_holder: dict[str, list[Certificate]] = {}
        for c in self.certs.values():
            self.by_number.setdefault(c.number, []).append(c)
            if c.holder_id_number:
                self.by_holder.setdefault(c.holder_id_number, []).append(c)

    def replace(self, certs: Iterable[Certificate]) -> None:
        for c in certs:
            self.certs[c.key()] = c
        self._reindex()

    def subject(self, number: str) -> list[Certificate]:
        """The certificates a lookup of `number` is about: its own, or for an ID number all of that person's."""
        found = {c.key(): c for c in self.by_number.get(number, [])}
        if is_id_query(number):
            for c in self.by_holder.get(number, []):
                found[c.key()] = c
        return list(found.values())

    def verdict(self, number: str, name: str | None = None) -> str:
        subject = self.subject(number)
        if not subject:
            return "not_found"
        if name:
            wanted = normalise_name(name)
            subject = [c for c in subject if c.holder_name is None or normalise_name(c.holder_name) == wanted]
            if not subject:
                return "name_mismatch"
        statuses = {c.effective_status(self.today) for c in subject}
        best = next((s for s in VERDICT_ORDER if s in statuses), None)
        return best.value if best else "inconclusive"


def wrong_name(name: str, rng: random.Random) -> str:
    """The same given name under another surname: a plausible name that is not the holder's."""
    choices = [s for s in SURNAMES if s != name[0]]
    return rng.choice(choices) + name[1:]


# --- the load: what is asked -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ask:
    number: str
    name: str | None  # None: anonymous (public) lookup; else the employer key with this name
    stratum: str
    right_name: bool


@dataclasses.dataclass
class Plan:
    asks: list[Ask]
    pools: dict[str, int]
    changes: list[dict[str, Any]]  # {number, operation_item, before, after}


def moved_on_keys(dataset: Dataset) -> set[str]:
    """Numbers whose live certificate differs from the upload (by the data set's own record of it)."""
    out = set()
    for key in dataset.differences:
        out.add(key.split("/")[0])
    return out


def unheld_numbers(dataset: Dataset, truth: Truth, rng: random.Random, n: int) -> list[str]:
    """Well-formed numbers of each format that nobody holds (MEM T+ID, bare ID, MOHURD, MOHRSS)."""
    used = set(truth.by_number) | set(truth.by_holder)
    for certs in dataset.live_history.values():
        used |= {c.number for c in certs} | {c.holder_id_number or "" for c in certs}
    regions = sorted({h.id_number[:6] for h in dataset.holders})
    mohurd = sorted(c.number for c in dataset.live[Department.MOHURD])
    mohrss = sorted(c.number for c in dataset.live[Department.MOHRSS] if len(c.number) == 22)
    out: list[str] = []
    for i in range(50 * n):
        if len(out) >= n:
            break
        kind = i % 4
        if kind in (0, 1):
            birth = date(1960, 1, 1).toordinal() + rng.randrange(16_000)
            first17 = f"{rng.choice(regions)}{date.fromordinal(birth):%Y%m%d}{rng.randrange(1000):03d}"
            number = first17 + id_check_character(first17)
            number = "T" + number if kind == 0 else number
            want = "mem_t_id" if kind == 0 else "id18"
        elif kind == 2:
            number = rng.choice(mohurd)[:-6] + f"{rng.randrange(1, 999999):06d}"
            want = "mohurd"
        else:
            number = rng.choice(mohrss)[:-6] + f"{rng.randrange(1, 999999):06d}"
            want = "mohrss_skill"
        bare = number[1:] if number.startswith("T") else number
        if number in used or bare in used or want not in parse_number(number).names:
            continue
        if truth.verdict(number) != "not_found":
            continue
        used.add(number)
        out.append(number)
    return out


def pick_changes(dataset: Dataset, truth: Truth, rng: random.Random, exclude: set[str]) -> list[dict[str, Any]]:
    """MEM certificates the same in the upload and on the site, one card per holder, whose status the new
    quarter changes: valid -> suspended, valid -> revoked, suspended -> valid."""
    uploaded = {c.key(): c for c in dataset.uploaded[Department.MEM]}
    cards: Counter[str] = Counter(c.number for c in dataset.live[Department.MEM])
    candidates: dict[str, list[Certificate]] = {"valid": [], "suspended": []}
    for c in dataset.live[Department.MEM]:
        if cards[c.number] != 1 or c.number in exclude or uploaded.get(c.key()) != c:
            continue
        if len(truth.by_holder.get(c.holder_id_number or "", [])) != 1:
            continue  # the holder has nothing else: the number's verdict is this card's
        status = c.effective_status(dataset.today)
        if status == CertStatus.VALID and c.valid_until and (c.valid_until - dataset.today).days > 60:
            candidates["valid"].append(c)
        elif status == CertStatus.SUSPENDED:
            candidates["suspended"].append(c)
    changes: list[dict[str, Any]] = []
    taken: set[str] = set()
    for before, after, count in CHANGES:
        pool = [c for c in candidates[before] if c.number not in taken]
        for c in rng.sample(pool, min(count, len(pool))):
            taken.add(c.number)
            changes.append({"number": c.number, "operation_item": c.operation_item, "before": before,
                            "after": after, "name": c.holder_name})  # fmt: skip
    return changes


def changed_cert(c: Certificate, after: str) -> Certificate:
    return c.model_copy(update={"status": CertStatus(after), "status_text": STATUS_TEXT[after]})


def build_plan(dataset: Dataset, truth: Truth, total: int, seed: int) -> Plan:
    """Every request of the run, in order (seeded): the same arguments give the same requests."""
    rng = random.Random(f"soak:{seed}")
    moved = moved_on_keys(dataset)
    # Every number a certificate is looked up by: its own number (for SAMR that is the holder's ID).
    numbers = sorted(truth.by_number)
    pool_size = max(200, min(2400, total // 8))
    by_truth: dict[str, list[str]] = {"valid": [], "expired": [], "suspended": [], "revoked": [], "moved_on": []}
    for n in numbers:
        holder_ids = {c.holder_id_number for c in truth.subject(n)}
        if n in moved or any(c.number in moved for c in truth.subject(n)):
            by_truth["moved_on"].append(n)
            continue
        if len(holder_ids) != 1:
            continue
        v = truth.verdict(n)
        if v in by_truth:
            by_truth[v].append(n)
    changes = pick_changes(dataset, truth, rng, exclude=set(by_truth["moved_on"]))
    changed = {c["number"] for c in changes}
    pools: dict[str, list[str]] = {}
    for stratum, share in STRATA:
        want = max(8, round(pool_size * share))
        if stratum == "changed":
            pools[stratum] = sorted(changed)
        elif stratum == "not_found":
            pools[stratum] = unheld_numbers(dataset, truth, rng, want)
        elif stratum == "wrong_name":
            source = [n for n in by_truth["valid"] + by_truth["expired"] if n not in changed]
            pools[stratum] = rng.sample(source, min(want, len(source)))
        else:
            source = [n for n in by_truth[stratum] if n not in changed]
            pools[stratum] = rng.sample(source, min(want, len(source)))
    names = {n: truth.subject(n)[0].holder_name for s, pool in pools.items() if s != "not_found" for n in pool}
    wrong = {n: wrong_name(names[n] or "张伟", random.Random(f"soak-name:{seed}:{n}")) for n in pools["wrong_name"]}
    strata = [s for s, _ in STRATA]
    weights = [w for _, w in STRATA]
    asks: list[Ask] = []
    for _ in range(total):
        stratum = rng.choices(strata, weights)[0]
        number = rng.choice(pools[stratum])
        if stratum == "wrong_name":
            asks.append(Ask(number, wrong[number], stratum, right_name=False))
        elif rng.random() < 0.5:
            asks.append(Ask(number, None, stratum, right_name=True))
        elif stratum == "not_found":
            asks.append(Ask(number, "张伟", stratum, right_name=True))  # a name with a number nobody holds
        else:
            asks.append(Ask(number, names[number], stratum, right_name=True))
    return Plan(asks, {s: len(p) for s, p in pools.items()}, changes)


# --- /proc memory ----------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in kB (empty if it is gone)."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (0 if it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return 0


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot (/proc/stat), other people's work included."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclasses.dataclass
class Memory:
    server_total_kb: int = 0  # the master and its workers, summed at the same sample
    server_workers_kb: int = 0  # uvicorn's worker processes only (not multiprocessing's resource tracker)
    redis_kb: int = 0
    sandbox_kb: int = 0
    samples: int = 0
    hwm: dict[str, int] = dataclasses.field(default_factory=dict)  # each process's own peak (VmHWM), last seen

    # (seconds since the start, server CPU ticks, sandbox ticks, this script's ticks, machine busy, machine total)
    cpu: list[tuple[float, int, int, int, int, int]] = dataclasses.field(default_factory=list)

    def sample(self, server_pid: int | None, redis_pid: int | None, sandbox_pid: int | None,
               t: float | None = None) -> None:  # fmt: skip
        self.samples += 1
        if server_pid and t is not None:
            tree = [server_pid, *descendants(server_pid)]
            busy, total = machine_ticks()
            self.cpu.append((t, sum(cpu_ticks(p) for p in tree), cpu_ticks(sandbox_pid) if sandbox_pid else 0,
                             cpu_ticks(os.getpid()), busy, total))  # fmt: skip
        if server_pid:
            children = descendants(server_pid)
            workers = [p for p in children if "spawn_main" in cmdline(p)]
            rss = {p: proc_status(p) for p in [server_pid, *children]}
            total = sum(s.get("VmRSS", 0) for s in rss.values())
            self.server_total_kb = max(self.server_total_kb, total)
            self.server_workers_kb = max(self.server_workers_kb, sum(rss[p].get("VmRSS", 0) for p in workers))
            for p, s in rss.items():
                if "VmHWM" in s:
                    role = "master" if p == server_pid else "worker" if p in workers else "helper"
                    self.hwm[f"server {role} {p}"] = s["VmHWM"]
        for label, pid in (("redis", redis_pid), ("sandbox", sandbox_pid)):
            if pid:
                s = proc_status(pid)
                if s:
                    self.hwm[f"{label} {pid}"] = s.get("VmHWM", 0)
                    if label == "redis":
                        self.redis_kb = max(self.redis_kb, s.get("VmRSS", 0))
                    else:
                        self.sandbox_kb = max(self.sandbox_kb, s.get("VmRSS", 0))


# --- the sandbox process ---------------------------------------------------------------------------------


async def sandbox_main(spec: dict[str, Any]) -> None:
    """Child process: the four sites, plus a control route that makes MEM's site show changed statuses. Prints
    {"urls", "control"} as one JSON line, serves until stdin closes, then prints each site's stats."""
    from aiohttp import web

    from aggregator.sandbox.server import Sandbox

    dataset = generate(seed=spec["seed"], holders=spec["holders"], today=date.fromisoformat(spec["today"]))
    async with Sandbox(dataset, ports=None) as sb:
        mem = sb.site("mem")

        async def apply_changes(request: web.Request) -> web.Response:
            changes = await request.json()
            done = 0
            for ch in changes:
                for index in (mem.by_number, mem.by_id):
                    for certs in index.values():
                        for i, c in enumerate(certs):
                            if c.number == ch["number"] and c.operation_item == ch["operation_item"]:
                                certs[i] = changed_cert(c, ch["after"])
                                done += 1
            return web.json_response({"replaced": done})

        app = web.Application()
        app.router.add_post("/soak/mem-changes", apply_changes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        print(json.dumps({"urls": sb.urls, "control": f"http://127.0.0.1:{port}"}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        print(json.dumps({s: sb.stats(s) for s in SITES} | {"cpu_s": time.process_time()}), flush=True)
        await runner.cleanup()


# --- set-up ----------------------------------------------------------------------------------------------


def raised_config(workdir: Path, per_second: float) -> Path:
    """A copy of config/ whose live sources' [rate_limit] allows `per_second` (burst 2x); 0: unchanged."""
    target = workdir / "config"
    shutil.copytree(ROOT / "config", target)
    if per_second <= 0:
        return target
    for path in sorted((target / "sources").glob("*.toml")):
        lines, table = [], ""
        for line in path.read_text(encoding="utf-8").splitlines():
            if m := re.match(r"^\s*\[([^\]]+)\]\s*(#.*)?$", line):
                table = m.group(1).strip()
            if table == "rate_limit":
                line = re.sub(r"^(\s*per_second\s*=\s*)[0-9.]+", rf"\g<1>{per_second:.1f}", line)
                line = re.sub(r"^(\s*burst\s*=\s*)[0-9]+", rf"\g<1>{int(per_second * 2)}", line)
            lines.append(line)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


async def prepare_database(dataset: Dataset, workdir: Path) -> tuple[str, str, str]:
    """The four uploads imported into a fresh SQLite file (as `certq demo` does); an employer key and a MEM
    department key. Returns (database URL, employer key, MEM key)."""
    url = await import_uploads(dataset, workdir, uploaded_by="soak")
    employer, mem = await create_keys(
        url, ("employer", "soak employer", None), ("department", "soak MEM uploads", Department.MEM)
    )
    return url, employer, mem


def next_quarter(quarter: str) -> str:
    year, q = int(quarter[:4]), int(quarter[5])
    return f"{year + 1}Q1" if q == 4 else f"{year}Q{q + 1}"


def new_mem_upload(dataset: Dataset, changes: list[dict[str, Any]], path: Path) -> Path:
    """MEM's next quarter: its current register (what the site shows today), with the changed statuses."""
    by_key = {(c["number"], c["operation_item"]): c["after"] for c in changes}
    rows = []
    for c in dataset.live[Department.MEM]:
        after = by_key.get((c.number, c.operation_item))
        rows.append(changed_cert(c, after) if after else c)
    return write_upload_csv(dataclasses.replace(dataset, uploaded={**dataset.uploaded, Department.MEM: rows}),
                            Department.MEM, path)  # fmt: skip


# --- the run ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    t: float  # scheduled send time, seconds since the start of the load
    status: int  # HTTP status; 0: no answer (see `failure`)
    ms: float
    verdict: str | None = None
    complete: bool | None = None
    name_check: str | None = None
    sources: str = ""  # the asked sources' statuses, for disagreements
    failure: str | None = None
    failure_text: str | None = None


@dataclasses.dataclass
class Event:
    at: float  # planned, seconds since the start
    what: str
    done_at: float | None = None
    detail: str = ""


def source_summary(doc: dict[str, Any]) -> str:
    parts = []
    for s in doc.get("sources", []):
        if s.get("outcome") in ("skipped", "manual"):
            continue
        text = f"{s['source']}={s['outcome']}"
        if s.get("error_kind"):
            text += f"/{s['error_kind']}"
        if s.get("found"):
            text += f"({s['found']})"
        if s.get("stale"):
            text += " stale"
        elif s.get("from_cache"):
            text += " cached"
        parts.append(text)
    return ", ".join(parts)


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.redis: RedisServer | None = None
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.memory = Memory()
        self.events: list[Event] = []
        self.results: list[Result | None] = []
        self.send_lag_ms: list[float] = []
        self.not_sent = 0
        self.upload: dict[str, Any] = {}
        self.sandbox_stats: dict[str, Any] = {}
        self.t0 = 0.0

    # -- lifecycle --

    def teardown(self) -> None:
        stop(self.server, group=True)
        if self.sandbox is not None and self.sandbox.poll() is None:
            with contextlib.suppress(OSError):
                assert self.sandbox.stdin is not None
                self.sandbox.stdin.close()
            stop(self.sandbox, timeout_s=10)
        if self.redis is not None:
            self.redis.stop()

    def start_sandbox(self, dataset: Dataset) -> dict[str, Any]:
        spec = {"seed": self.args.seed, "holders": self.args.holders, "today": dataset.today.isoformat()}
        self.sandbox = start([sys.executable, __file__, "--sandbox-worker", json.dumps(spec)],
                             self.workdir / "sandbox.log", stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        assert self.sandbox.stdout is not None
        ready, _, _ = select.select([self.sandbox.stdout], [], [], 120)
        line = self.sandbox.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"the sandbox did not start: {(self.workdir / 'sandbox.log').read_text()[-1500:]}")
        return json.loads(line)

    def start_server(self, db_url: str, config_dir: Path, urls: dict[str, str]) -> str:
        port = free_port()
        per_minute = str(max(1200, 3 * int(self.args.rate * 60)))
        # One client IP sends everything: its request limits, and its concurrent connections per server process
        # (CERTQ_WEB_MAX_CONNECTIONS_PER_IP, default 64) above what the load can hold open.
        self.web_limits = {"CERTQ_WEB_IP_PER_MINUTE": per_minute, "CERTQ_WEB_KEY_PER_MINUTE": per_minute,
                           "CERTQ_WEB_MAX_CONNECTIONS_PER_IP": str(self.args.max_in_flight + 100)}  # fmt: skip
        env = {**os.environ, **self.web_limits, **{URL_ENV[s]: u for s, u in urls.items()}}
        env.pop("CERTQ_WEB_FREEZE_GC", None)  # `certq serve` sets it (on) itself
        certq = Path(sys.executable).with_name("certq")
        cmd = [str(certq)] if certq.exists() else [sys.executable, "-c", "from aggregator.cli import main; main()"]
        cmd += ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(self.args.workers),
                "--db", db_url, "--redis", self.redis.url if self.redis else "", "--config-dir", str(config_dir),
                "--log-level", "warning"]  # fmt: skip
        self.server = start(cmd, self.workdir / "server.log", env=env)
        return f"http://127.0.0.1:{port}"

    async def wait_server(self, session: Any, base: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.server is not None and self.server.poll() is not None:
                raise RuntimeError(f"certq serve exited with {self.server.returncode}: {self.server_log_tail()}")
            with contextlib.suppress(Exception):
                async with session.get(base + "/readyz") as r:
                    workers = len(descendants(self.server.pid)) if self.server else 0
                    if r.status == 200 and (self.args.workers == 1 or workers >= self.args.workers):  # 1: no children
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"certq serve not ready after {timeout_s:.0f} s: {self.server_log_tail()}")

    def server_log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "server.log").read_text(errors="replace")[-2000:]
        return ""

    # -- the timeline --

    def timeline(
        self, urls: dict[str, str], control: str, changes: list[dict[str, Any]], mem_key: str, base: str,
        session: Any, upload_path: Path, quarter: str,
    ) -> list[tuple[Event, Callable[[], Any]]]:  # fmt: skip
        d, out = self.args.duration, []
        site_url = {"mem": urls["mem_api"], "samr": urls["samr_api"], "mohrss": urls["mohrss_html"],
                    "mohurd": urls["mohurd_api"]}  # fmt: skip

        def fault_on(site: str, switches: dict[str, Any]) -> Callable[[], Any]:
            async def run() -> str:
                async with session.post(site_url[site] + "/_sandbox/faults", json=switches) as r:
                    return f"HTTP {r.status}"
            return run

        def fault_off(site: str) -> Callable[[], Any]:
            async def run() -> str:
                async with session.delete(site_url[site] + "/_sandbox/faults") as r:
                    return f"HTTP {r.status}"
            return run

        for i in range(FAULT_WINDOWS):
            site, (kind, switches) = SITES[i % len(SITES)], FAULTS[i % len(FAULTS)]
            begin = (FAULTS_FROM + i * FAULT_WINDOW) * d
            out.append((Event(begin, f"fault on: {site} {kind}"), fault_on(site, switches)))
            out.append((Event(begin + FAULT_ON * d, f"fault off: {site}"), fault_off(site)))
        for n, frac in enumerate(KILL_AT, 1):
            out.append((Event(frac * d, f"redis kill {n}"), self.kill_redis))
            out.append((Event(frac * d + self.args.outage, f"redis restart {n}"), self.restart_redis))

        async def publish() -> str:
            self.upload["live_switch_started_at"] = time.perf_counter() - self.t0
            async with session.post(control + "/soak/mem-changes", json=changes) as r:
                replaced = (await r.json())["replaced"]
            self.upload["live_switched_at"] = time.perf_counter() - self.t0
            task = asyncio.create_task(self.post_upload(session, base, mem_key, upload_path, quarter))
            self.upload["task"] = task
            return f"MEM site shows {len(changes)} changed statuses ({replaced} index entries); upload started"

        out.append((Event(UPLOAD_AT * d, "MEM publishes a new quarter"), publish))
        out.sort(key=lambda e: e[0].at)
        return out

    async def kill_redis(self) -> str:
        assert self.redis is not None
        pid = self.redis.proc.pid if self.redis.proc else 0
        self.memory.sample(None, pid, None)  # its peak just before it dies
        self.redis.kill()
        return f"SIGKILL pid {pid}"

    async def restart_redis(self) -> str:
        assert self.redis is not None
        started = time.perf_counter()
        self.redis.spawn()
        await self.redis.wait_ready_async()
        pid = self.redis.proc.pid if self.redis.proc else 0
        return f"pid {pid}, answering PING after {(time.perf_counter() - started) * 1000:.0f} ms"

    async def post_upload(self, session: Any, base: str, key: str, path: Path, quarter: str) -> None:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("quarter", quarter)
        form.add_field("file", path.read_bytes(), filename=path.name, content_type="text/csv")
        started = time.perf_counter()
        self.upload["started_at"] = started - self.t0
        try:
            async with session.post(base + "/api/v1/uploads", data=form, headers={"Authorization": f"Bearer {key}"},
                                    timeout=aiohttp.ClientTimeout(total=120)) as r:  # fmt: skip
                body = await r.json(content_type=None)
                self.upload["status"] = r.status
        except Exception as e:  # noqa: BLE001 - reported, and the truth window stays open to the end
            self.upload["status"] = 0
            body = {"error": f"{type(e).__name__}: {e}"}
        self.upload["done_at"] = time.perf_counter() - self.t0
        self.upload["ms"] = (time.perf_counter() - started) * 1000
        self.upload["report"] = {k: body.get(k) for k in ("id", "status", "quarter", "rows_total", "rows_imported",
                                                           "superseded", "outdated", "problems_total", "error",
                                                           "title", "detail")}  # fmt: skip

    async def run_events(self, plan: list[tuple[Event, Callable[[], Any]]]) -> None:
        for event, action in plan:
            delay = self.t0 + event.at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                event.detail = str(await action())
            except Exception as e:  # noqa: BLE001 - a failed event is reported, the run goes on
                event.detail = f"FAILED: {type(e).__name__}: {e}"
            event.done_at = time.perf_counter() - self.t0
            self.events.append(event)

    async def sample_memory(self, stop_at: float) -> None:
        for _ in range(int(self.args.duration) + 120):  # bounded: one sample a second
            if time.perf_counter() >= stop_at:
                return
            self.memory.sample(
                self.server.pid if self.server else None,
                self.redis.proc.pid if self.redis and self.redis.proc and self.redis.proc.poll() is None else None,
                self.sandbox.pid if self.sandbox else None,
                t=time.perf_counter() - self.t0,
            )
            await asyncio.sleep(1.0)

    # -- the load --

    async def one(self, session: Any, base: str, i: int, ask: Ask, t_sched: float, employer_key: str) -> None:
        import aiohttp

        path = LOOKUP + quote(ask.number, safe="")
        headers = {}
        if ask.name is not None:
            path += "?name=" + quote(ask.name, safe="")
            headers["Authorization"] = f"Bearer {employer_key}"
        status, doc, failure, text = 0, None, None, None
        try:
            async with session.get(base + path, headers=headers) as r:
                body = await r.read()
                status = r.status
            if status == 200:
                doc = json.loads(body)
            elif status != 429:
                text = body[:300].decode(errors="replace")
        except TimeoutError:
            failure = "client timeout"
        except aiohttp.ClientError as e:
            failure, text = type(e).__name__, str(e)[:300]
        except ValueError as e:
            failure, text = "unreadable JSON", str(e)[:300]
        ms = (time.perf_counter() - t_sched) * 1000
        res = Result(t_sched - self.t0, status, ms, failure=failure, failure_text=text)
        if doc is not None:
            res.verdict = doc.get("verdict")
            res.complete = doc.get("complete")
            res.name_check = (doc.get("query") or {}).get("name_check")
            res.sources = source_summary(doc)
        self.results[i] = res

    async def load(self, session: Any, base: str, asks: list[Ask], employer_key: str) -> None:
        rate, cap = self.args.rate, self.args.max_in_flight
        inflight: set[asyncio.Task[None]] = set()
        for i, ask in enumerate(asks):
            t_sched = self.t0 + i / rate
            delay = t_sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.send_lag_ms.append(max(0.0, (time.perf_counter() - t_sched) * 1000))
            if len(inflight) >= cap:
                self.not_sent += 1
                continue
            task = asyncio.create_task(self.one(session, base, i, ask, t_sched, employer_key))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight, timeout=self.args.client_timeout + 10)

    async def main(self) -> dict[str, Any]:
        import aiohttp

        a = self.args
        t_setup = time.perf_counter()
        dataset = generate(seed=a.seed, holders=a.holders, today=date.today())
        truth = Truth(dataset)
        total = int(a.rate * a.duration)
        plan = build_plan(dataset, truth, total, a.seed)
        print(f"data: {len(dataset.holders):,} holders (seed {a.seed}, today {dataset.today}), upload quarter"
              f" {dataset.upload_quarter}; {total:,} lookups planned ({a.rate:g}/s for {a.duration:g} s)")  # fmt: skip
        print("  pools: " + ", ".join(f"{s} {n}" for s, n in plan.pools.items()))

        self.redis = RedisServer(self.workdir)
        self.redis.spawn()
        self.redis.wait_ready()
        boot = self.start_sandbox(dataset)
        urls, control = boot["urls"], boot["control"]
        db_url, employer_key, mem_key = await prepare_database(dataset, self.workdir)
        config_dir = raised_config(self.workdir, a.source_rate)
        quarter = next_quarter(dataset.upload_quarter)
        upload_path = new_mem_upload(dataset, plan.changes, self.workdir / f"mem-{quarter}.csv")
        base = self.start_server(db_url, config_dir, urls)
        ports = " ".join(u.rsplit(":", 1)[1] for u in urls.values())
        print(f"ports: redis-server {self.redis.port} (private), sandbox {ports},"
              f" certq serve {base.rsplit(':', 1)[1]} --workers {a.workers}")  # fmt: skip
        limits = ", ".join(f"{k}={v}" for k, v in self.web_limits.items())
        src = f"{a.source_rate:g}/s burst {int(a.source_rate * 2)}" if a.source_rate > 0 else "as in config/ (10/s)"
        print(f"  env: {limits}; live sources' rate limit {src}")

        timeout = aiohttp.ClientTimeout(total=a.client_timeout)
        # Idle connections are dropped before uvicorn's keep-alive timeout (5 s), so that a request never races
        # the server closing the connection it was sent on (which would count as a failure of the server).
        connector = aiohttp.TCPConnector(limit=a.max_in_flight, keepalive_timeout=2.0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await self.wait_server(session, base)
            # One canary first: a wiring mistake fails here, not as 30,000 odd answers.
            async with session.get(base + LOOKUP + "T110105199003071239") as r:
                doc = await r.json(content_type=None)
            live = [s for s in doc.get("sources", []) if s["source"] == "mem_api"]
            if r.status != 200 or doc.get("verdict") != "valid" or not live or live[0]["outcome"] != "found":
                raise RuntimeError(f"canary lookup: HTTP {r.status}, {doc.get('verdict')}, {source_summary(doc)}")
            print(f"set-up {time.perf_counter() - t_setup:.1f} s; canary answered valid ({source_summary(doc)})\n")

            self.results = [None] * len(plan.asks)
            self.t0 = time.perf_counter() + 0.5
            events = self.timeline(urls, control, plan.changes, mem_key, base, session, upload_path, quarter)
            stop_at = self.t0 + a.duration + a.client_timeout + 15
            sampler = asyncio.create_task(self.sample_memory(stop_at))
            event_task = asyncio.create_task(self.run_events(events))
            progress = asyncio.create_task(self.progress())
            try:
                await self.load(session, base, plan.asks, employer_key)
                await asyncio.wait_for(event_task, timeout=30)
                if "task" in self.upload:
                    await asyncio.wait_for(self.upload.pop("task"), timeout=120)
            finally:
                for t in (sampler, event_task, progress):
                    t.cancel()
                await asyncio.gather(sampler, event_task, progress, return_exceptions=True)
            self.memory.sample(self.server.pid if self.server else None, None,
                               self.sandbox.pid if self.sandbox else None)  # fmt: skip
            sources_api: dict[str, Any] = {}
            with contextlib.suppress(Exception):
                async with session.get(base + "/api/v1/sources") as r:
                    sources_api = await r.json()
        if self.sandbox is not None and self.sandbox.stdin is not None:
            self.sandbox.stdin.close()
            assert self.sandbox.stdout is not None
            ready, _, _ = select.select([self.sandbox.stdout], [], [], 15)
            if ready:
                with contextlib.suppress(ValueError):
                    self.sandbox_stats = json.loads(self.sandbox.stdout.readline() or b"{}")
        return self.report(plan, truth, dataset, sources_api)

    async def progress(self) -> None:
        every = max(10.0, self.args.duration / 10)
        for _ in range(200):
            await asyncio.sleep(every)
            now = time.perf_counter() - self.t0
            if now > self.args.duration + 5:
                return
            done = [r for r in self.results if r is not None]
            bad = sum(1 for r in done if r.status >= 500 or r.failure)
            print(f"  t={now:5.0f} s  answered {len(done):,}  5xx/failed {bad}", flush=True)

    # -- the report --

    def cpu_by_phase(self, phases: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
        """Average CPU per phase, in % of one core: certq serve (master and workers), the sandbox, this script
        (the load generator), and the whole machine (busy share of all cores: other people's work shows here)."""
        samples = self.memory.cpu
        out = []
        for name, lo, hi in [*phases, ("whole run", 0.0, float(self.args.duration) + 1)]:
            inside = [x for x in samples if lo <= x[0] < hi]
            if len(inside) < 2:
                out.append({"phase": name})
                continue
            a, b = inside[0], inside[-1]
            secs = b[0] - a[0]
            row: dict[str, Any] = {"phase": name}
            for i, label in ((1, "server"), (2, "sandbox"), (3, "soak")):
                row[label] = round((b[i] - a[i]) / CLK_TCK / secs * 100) if secs > 0 else None
            row["machine_busy_of_all_cores"] = round((b[4] - a[4]) / max(1, b[5] - a[5]) * 100)
            out.append(row)
        return out

    def fault_windows(self, results: list[Result]) -> list[dict[str, Any]]:
        """Per fault window: the site's source unavailable in answers during it, and after it was switched off
        (until its next window): how many, and the last one (how long the source took to come back)."""
        source = {"mem": "mem_api", "samr": "samr_api", "mohrss": "mohrss_html", "mohurd": "mohurd_api"}
        ons = [e for e in self.events if e.what.startswith("fault on")]
        offs = [e for e in self.events if e.what.startswith("fault off")]
        out = []
        for on, off in zip(ons, offs, strict=False):
            site, kind = on.what.removeprefix("fault on: ").split(" ", 1)
            nxt = next((e.done_at for e in ons if e.at > on.at and e.what.split(" ")[2] == site), None)
            end = nxt if nxt is not None else float("inf")
            mark = f"{source[site]}=unavailable"
            t_on, t_off = on.done_at or on.at, off.done_at or off.at
            during = [r.t for r in results if t_on <= r.t < t_off and mark in r.sources]
            after = [r.t for r in results if t_off <= r.t < end and mark in r.sources]
            out.append({"site": site, "fault": kind, "on_s": round(t_on, 1), "off_s": round(t_off, 1),
                        "unavailable_during": len(during), "unavailable_after": len(after),
                        "last_unavailable_after_off_s": round(max(after) - t_off, 1) if after else None})  # fmt: skip
        return out

    def phases(self) -> list[tuple[str, float, float]]:
        d = self.args.duration
        kills = [e.done_at for e in self.events if e.what.startswith("redis kill")]
        backs = [e.done_at for e in self.events if e.what.startswith("redis restart")]
        if len(kills) != 2 or len(backs) != 2 or None in kills + backs:
            kills = [f * d for f in KILL_AT]
            backs = [k + self.args.outage for k in kills]
        k1, k2 = kills
        b1, b2 = backs
        return [("before", 0.0, k1), ("outage 1", k1, b1), ("after 1", b1, k2), ("outage 2", k2, b2),
                ("after 2", b2, d + 1)]  # type: ignore[list-item]  # fmt: skip

    def report(self, plan: Plan, truth: Truth, dataset: Dataset, sources_api: dict[str, Any]) -> dict[str, Any]:
        a = self.args
        changed = {c["number"] for c in plan.changes}
        names = {(x.number, x.name) for x in plan.asks if x.number in changed} | {(n, None) for n in changed}
        old = {(n, nm): truth.verdict(n, nm) for n, nm in names}
        live_mem = {c.key(): c for c in dataset.live[Department.MEM]}
        truth.replace(changed_cert(live_mem[(Department.MEM.value, c["number"], c["operation_item"] or "")], c["after"])
                      for c in plan.changes)  # fmt: skip
        switch_at = self.upload.get("live_switch_started_at", a.duration * UPLOAD_AT)
        settled_at = self.upload.get("done_at", a.duration + 1e9) + TRANSITION_GRACE_S
        if not self.upload.get("status") or self.upload["status"] >= 300:
            settled_at = a.duration + 1e9  # the upload failed: either truth stays acceptable
        memo: dict[tuple[str, str | None], str] = {}

        def expected(ask: Ask, t: float, t_answered: float, ignore_name: bool) -> set[str]:
            """The acceptable verdicts for a lookup sent at `t` and answered at `t_answered`: for a changed number,
            the old truth if it was answered before MEM's site switched, the new one if it was sent after the
            upload had settled, and either if it was in flight at any moment in between."""
            name = None if ignore_name else ask.name
            if ask.number in changed:
                before = old.get((ask.number, name)) or old[(ask.number, None)]
                after = truth.verdict(ask.number, name)
                if t_answered < switch_at:
                    return {before}
                return {after} if t >= settled_at else {before, after}
            key = (ask.number, name)
            if key not in memo:
                memo[key] = truth.verdict(ask.number, name)
            return {memo[key]}

        phases = self.phases()
        rows: dict[str, Counter[str]] = {p: Counter() for p, _, _ in phases}
        lat: dict[str, list[float]] = {p: [] for p, _, _ in phases}
        by_truth: dict[str, Counter[str]] = {}
        disagreements: list[dict[str, Any]] = []
        outcome_counts: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        failure_examples: dict[str, list[dict[str, Any]]] = {}
        answered_live: dict[tuple[str, str], list[float]] = {}  # (number, live source) -> when it answered
        seconds: dict[int, list[Result]] = {}
        for ask, res in zip(plan.asks, self.results, strict=True):
            if res is None:
                continue
            seconds.setdefault(int(res.t), []).append(res)
            phase = next((p for p, lo, hi in phases if lo <= res.t < hi), phases[-1][0])
            c = rows[phase]
            c["requests"] += 1
            if res.failure is None:
                lat[phase].append(res.ms)
            kind = None
            if res.status >= 500:
                c["5xx"] += 1
                kind = f"HTTP {res.status}"
            elif res.status == 429:
                c["429"] += 1
            elif res.status != 200:
                c["other"] += 1
                kind = res.failure or f"HTTP {res.status}"
            if kind is not None:
                failures[kind] += 1
                seen = failure_examples.setdefault(kind, [])
                if len(seen) < 3 and res.failure_text not in [x["text"] for x in seen]:
                    seen.append({"t_s": round(res.t, 1), "ms": round(res.ms), "text": res.failure_text})
            if res.verdict is None:
                continue
            for part in res.sources.split(", "):
                src, _, outcome = part.partition("=")
                if src in URL_ENV and outcome.startswith(("found", "not_found")) and "stale" not in outcome:
                    answered_live.setdefault((ask.number, src), []).append(res.t)
            not_checked = res.name_check == "not_checked"
            c["name not checked"] += not_checked
            want = expected(ask, res.t, res.t + res.ms / 1000, ignore_name=not_checked or ask.name is None)
            label = "/".join(sorted(want))
            t = by_truth.setdefault(label, Counter())
            t["requests"] += 1
            for part in res.sources.split(", "):
                if part:
                    outcome_counts[part.split("(")[0].replace(" cached", "").replace(" stale", "")] += 1
            if res.verdict == "inconclusive":
                c["inconclusive"] += 1
                t["inconclusive"] += 1
            elif res.verdict in want:
                t["agree"] += 1
            else:
                c["disagreements"] += 1
                c["disagreements, complete"] += bool(res.complete)
                t["disagree"] += 1
                down = [p.partition("=")[0] for p in res.sources.split(", ")
                        if p.partition("=")[0] in URL_ENV and "=unavailable" in p]  # fmt: skip
                # Answers given before the number's truth last changed do not count: they knew the old truth.
                since = settled_at if ask.number in changed else 0.0
                earlier = {d: [v for v in answered_live.get((ask.number, d), []) if since <= v < res.t] for d in down}
                known = {d: round(v[0], 1) for d, v in earlier.items() if v}
                # A flip: every source answered, or a source that was down had told certq the truth before.
                flip = bool(res.complete or known)
                c["flips"] += flip
                disagreements.append({
                    "flip": flip,
                    "unavailable_live_answered_earlier_at_s": known,
                    "t_s": round(res.t, 2), "phase": phase, "number": ask.number, "stratum": ask.stratum,
                    "role": "employer" if ask.name is not None else "public",
                    "name": None if ask.name is None else ("right" if ask.right_name else "wrong"),
                    "verdict": res.verdict, "truth": label, "complete": res.complete, "sources": res.sources,
                })  # fmt: skip
        whole: Counter[str] = Counter()
        for c in rows.values():
            whole.update(c)
        rows["whole run"] = whole
        lat["whole run"] = [x for p, _, _ in phases for x in lat[p]]

        table = []
        for name in [p for p, _, _ in phases] + ["whole run"]:
            c = rows[name]
            span = next(((lo, hi) for p, lo, hi in phases if p == name), (0.0, float(a.duration)))
            table.append({"phase": name, "from_s": round(span[0], 1), "to_s": round(min(span[1], a.duration), 1),
                          "requests": c["requests"], "5xx": c["5xx"], "429": c["429"], "other": c["other"],
                          "inconclusive": c["inconclusive"], "disagreements": c["disagreements"],
                          "disagreements_complete": c["disagreements, complete"], "flips": c["flips"],
                          "name_not_checked": c["name not checked"],
                          "p50_ms": percentile(lat[name], 50), "p99_ms": percentile(lat[name], 99),
                          "max_ms": max(lat[name]) if lat[name] else None})  # fmt: skip
        outage_p99 = [r["p99_ms"] for r in table if r["phase"].startswith("outage")]
        aims = {
            "no 5xx": whole["5xx"] == 0,
            "no definitive answer disagrees with the truth": whole["disagreements"] == 0,
            "no flip (a definitive answer against what certq had been told)": whole["flips"] == 0,
            f"p99 during each outage < {AIM_OUTAGE_P99_MS:g} ms": all(
                p is not None and p < AIM_OUTAGE_P99_MS for p in outage_p99
            ),
        }
        sent = sum(1 for r in self.results if r is not None)
        windows = self.fault_windows([r for r in self.results if r is not None])
        timeline = []
        for second in sorted(seconds):
            rs = seconds[second]
            done = [r.ms for r in rs if r.failure is None]
            timeline.append({"t": second, "n": len(rs), "p50_ms": percentile(done, 50), "p99_ms": percentile(done, 99),
                             "max_ms": max(done, default=None), "5xx": sum(r.status >= 500 for r in rs),
                             "429": sum(r.status == 429 for r in rs),
                             "inconclusive": sum(r.verdict == "inconclusive" for r in rs)})  # fmt: skip
        return {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "args": {k: v for k, v in vars(a).items() if k not in ("json",)},
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                        "load_average_end": os.getloadavg()},  # fmt: skip
            "web_limits": self.web_limits,
            "planned": len(plan.asks), "sent": sent, "not_sent_in_flight_cap": self.not_sent,
            "send_lag_ms": {"p50": percentile(self.send_lag_ms, 50), "p99": percentile(self.send_lag_ms, 99),
                            "max": max(self.send_lag_ms, default=None)},  # fmt: skip
            "phases": table,
            "timeline": timeline,
            "fault_windows": windows,
            "by_truth": {k: dict(v) for k, v in sorted(by_truth.items())},
            "disagreements": disagreements,
            "failures": dict(failures),
            "failure_examples": failure_examples,
            "cpu_percent": self.cpu_by_phase(phases),
            "source_outcomes": dict(sorted(outcome_counts.items())),
            "events": [dataclasses.asdict(e) for e in self.events],
            "upload": {k: v for k, v in self.upload.items() if k != "task"},
            "changes": plan.changes,
            "memory_kb": {"server_total_peak": self.memory.server_total_kb,
                          "server_workers_peak": self.memory.server_workers_kb, "redis_peak": self.memory.redis_kb,
                          "sandbox_peak": self.memory.sandbox_kb, "samples": self.memory.samples,
                          "vm_hwm": self.memory.hwm},  # fmt: skip
            "sandbox": self.sandbox_stats,
            "sources_api": [{k: s.get(k) for k in ("id", "circuit", "calls", "success_rate", "p50_ms", "p95_ms",
                                                   "last_error", "records")}
                            for s in sources_api.get("sources", []) if s.get("mode") != "link"],  # fmt: skip
            "server_log": server_log_summary(self.workdir / "server.log"),
            "aims": aims,
        }


REDIS_NOTICE = re.compile(r"[Rr]edis.*(unavailable \(|answers again)")


def server_log_summary(path: Path) -> dict[str, Any]:
    """The server's log (level warning): Redis outage notices (expected: two outages), tracebacks, and the
    other lines, with the first distinct ones of those."""
    out: dict[str, Any] = {"lines": 0, "redis_notices": 0, "tracebacks": 0, "other": 0, "first_other": []}
    with contextlib.suppress(OSError):
        seen: set[str] = set()
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip() or line.startswith("certq 服务已启动"):
                continue
            out["lines"] += 1
            if REDIS_NOTICE.search(line):
                out["redis_notices"] += 1
                continue
            if line.startswith("Traceback"):
                out["tracebacks"] += 1
            if line.startswith((" ", "\t")) and not line.lstrip().startswith(("raise", "File")):
                continue  # inside a traceback
            out["other"] += 1
            key = re.sub(r"\d+", "N", line)[:100]
            if key not in seen and len(out["first_other"]) < 10:
                seen.add(key)
                out["first_other"].append(line[:300])
    return out


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def print_report(s: dict[str, Any]) -> None:
    print(f"\nsoak {s['date']}: {s['args']['rate']:g} lookups/s for {s['args']['duration']:g} s, {s['sent']:,} sent"
          f" ({s['not_sent_in_flight_cap']} not sent: in-flight cap); client send lag p99"
          f" {ms(s['send_lag_ms']['p99'])} ms")  # fmt: skip
    print("\nevents (seconds since the start):")
    for e in s["events"]:
        if not e["what"].startswith("fault"):
            print(f"  {e['done_at']:6.1f}  {e['what']}: {e['detail']}"[:80])
    print("  fault windows: unavailable answers of that source during / after it, and the last one after")
    for w in s["fault_windows"]:
        last = "-" if w["last_unavailable_after_off_s"] is None else f"{w['last_unavailable_after_off_s']:.1f} s"
        print(f"   {w['on_s']:6.1f}-{w['off_s']:<6.1f} {w['site']:<6} {w['fault']:<14} {w['unavailable_during']:5,}"
              f" / {w['unavailable_after']:5,}   last {last} after off")  # fmt: skip
    up = s["upload"]
    rep = up.get("report", {})
    print(f"  upload: HTTP {up.get('status')}, {ms(up.get('ms'))} ms, batch {rep.get('id')} {rep.get('quarter')}"
          f" {rep.get('status')}, {rep.get('rows_imported')} rows, {rep.get('superseded')} superseded")  # fmt: skip

    print(f"\n {'phase':<10} {'seconds':>8} {'reqs':>8} {'5xx':>4} {'429':>4} {'other':>5} {'incon':>5}"
          f" {'disagr':>7} {'p50 ms':>7} {'p99 ms':>7}")  # fmt: skip
    print(" " + "-" * 76)
    for r in s["phases"]:
        span = f"{r['from_s']:.0f}-{r['to_s']:.0f}"
        dis = f"{r['disagreements']}" + (f"/{r['flips']}f" if r["disagreements"] else "")
        print(f" {r['phase']:<10} {span:>8} {r['requests']:8,} {r['5xx']:4} {r['429']:4} {r['other']:5}"
              f" {r['inconclusive']:5} {dis:>7} {ms(r['p50_ms']):>7} {ms(r['p99_ms']):>7}")  # fmt: skip
    print(" (disagr N/Mf: N disagreements, M of them flips: the answer said it was complete, or a live")
    print("  source that was down had given certq the truth earlier in the run)")
    slow = sorted((x for x in s["timeline"] if x["p99_ms"] is not None), key=lambda x: -x["p99_ms"])[:4]
    print(" slowest seconds (by p99 of the lookups sent in it): " + ", ".join(
        f"t={x['t']} {ms(x['p99_ms'])} ms" for x in slow))  # fmt: skip
    whole = s["phases"][-1]
    if whole["name_not_checked"]:
        print(f" name not checked (compared without the name): {whole['name_not_checked']}")
    print("\n truth                       reqs   agree  inconclusive  disagree")
    for k, v in s["by_truth"].items():
        print(f" {k:<24} {v.get('requests', 0):7,} {v.get('agree', 0):7,} {v.get('inconclusive', 0):13,}"
              f" {v.get('disagree', 0):9,}")  # fmt: skip
    if s["failures"]:
        print(" failures: " + ", ".join(f"{k} {v}" for k, v in s["failures"].items()))
        for kind, examples in s["failure_examples"].items():
            for x in examples[:2]:
                print(f"   {kind} at {x['t_s']} s after {ms(x['ms'])} ms: {x['text']}"[:80])
    if s["disagreements"]:
        print(f"\n disagreements ({len(s['disagreements'])}; up to 10 shown):")
        for d in s["disagreements"][:10]:
            name = d["name"] or "no name"
            print(f"  {d['t_s']:6.1f}s {d['number']} {d['role']}, {name}: {d['verdict']} (truth {d['truth']}),"
                  f" complete={d['complete']}")  # fmt: skip
            print(f"          {d['sources']}")
            known = d["unavailable_live_answered_earlier_at_s"]
            if known:
                print("          answered by " + ", ".join(f"{k} at {v:.1f}s" for k, v in known.items())
                      + " earlier in the run")  # fmt: skip
        kinds = Counter(f"{d['verdict']} for {d['truth']}, complete={d['complete']}" for d in s["disagreements"])
        print("  by kind: " + "; ".join(f"{k}: {v}" for k, v in kinds.most_common()))
        known = sum(1 for d in s["disagreements"] if d["unavailable_live_answered_earlier_at_s"])
        print(f"  {known} of them while a live source was unavailable that had answered that number earlier")
    print("\n CPU, % of one core (2 cores = 200 %); machine: busy share of all cores, other work included")
    print("  " + " " * 8 + "".join(f"{r['phase']:>11}" for r in s["cpu_percent"]))
    for key in ("server", "sandbox", "soak", "machine_busy_of_all_cores"):
        label = "machine" if key.startswith("machine") else key
        print(f"  {label:<8}" + "".join(f"{'-' if r.get(key) is None else r[key]:>11}" for r in s["cpu_percent"]))
    m = s["memory_kb"]
    print(f"\n peak RSS ({m['samples']} samples, 1/s): certq serve {m['server_total_peak'] / 1024:.0f} MB"
          f" (workers {m['server_workers_peak'] / 1024:.0f} MB), redis {m['redis_peak'] / 1024:.1f} MB,"
          f" sandbox {m['sandbox_peak'] / 1024:.0f} MB")  # fmt: skip
    print("\n live sources, as the answers report them (cached answers included):")
    for source in ("mem_api", "samr_api", "mohrss_html", "mohurd_api"):
        counts = {k.split("=", 1)[1]: v for k, v in s["source_outcomes"].items() if k.startswith(source + "=")}
        bad = {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith("unavailable/")}
        line = (f"  {source:<12} found {counts.get('found', 0):,}, not found {counts.get('not_found', 0):,},"
                f" unavailable {sum(bad.values()):,}")  # fmt: skip
        if bad:
            line += " (" + ", ".join(f"{k} {v}" for k, v in sorted(bad.items(), key=lambda kv: -kv[1])[:2]) + ")"
        print(line[:80] if len(line) <= 80 else line[:77] + "...")
    log = s["server_log"]
    print(f" server log (level warning): {log['redis_notices']} Redis outage notices, {log['tracebacks']}"
          f" tracebacks, {log['other']} other lines")  # fmt: skip
    for line in log["first_other"][:5]:
        print(f"   {line[:76]}")
    print("\n aims:")
    for aim, ok in s["aims"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {aim}")
    print(f" load average at the end: {' '.join(f'{x:.2f}' for x in s['machine']['load_average_end'])}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0, help="lookups per second, open loop (default 100)")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    p.add_argument("--outage", type=float, default=10.0, help="seconds Redis stays down each time (default 10)")
    p.add_argument("--workers", type=int, default=2, help="certq serve --workers (default 2)")
    p.add_argument("--seed", type=int, default=2026, help="data set and load seed (default 2026)")
    p.add_argument("--holders", type=int, default=3000, help="holders in the data set (default 3000)")
    p.add_argument("--source-rate", type=float, default=100.0,
                   help="each live source's own rate limit per second, burst 2x (default 100; 0: config/'s 10/s)")
    p.add_argument("--client-timeout", type=float, default=30.0, help="seconds before a lookup is given up")
    p.add_argument("--max-in-flight", type=int, default=2000, help="lookups in flight at most (then not sent)")
    p.add_argument("--json", default=None, help="write the JSON summary to this path")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = p.parse_args(argv)
    if not 20 <= args.duration <= 3600:
        p.error("--duration must be 20..3600 s")
    if not 1 <= args.rate <= 1000:
        p.error("--rate must be 1..1000 per second")
    if not 1 <= args.outage <= args.duration * 0.3:
        p.error("--outage must be 1 s .. 30 % of --duration (the outages must end before the next event)")
    if not 1 <= args.workers <= 8 or not 100 <= args.holders <= 50_000:
        p.error("--workers must be 1..8 and --holders 100..50000")
    if not 0 <= args.source_rate <= 100_000 or not 1 <= args.client_timeout <= 120:
        p.error("--source-rate must be 0..100000 and --client-timeout 1..120 s")
    return args


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="certq-soak-"))
    soak = Soak(args, workdir)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print(f"certq soak: {args.rate:g} lookups/s for {args.duration:g} s; {os.cpu_count()} cores, Python"
          f" {platform.python_version()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    summary = None
    try:
        summary = asyncio.run(soak.main())
    except KeyboardInterrupt:
        print("\ninterrupted: tearing down", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as e:
        print(f"\nsoak failed: {e}", file=sys.stderr)
        return 2
    finally:
        soak.teardown()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        print(f" JSON summary: {args.json}")
    return 0 if all(summary["aims"].values()) else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--sandbox-worker":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it (closing stdin), in order
        asyncio.run(sandbox_main(json.loads(sys.argv[2])))
    else:
        sys.exit(main())
