"""What the benchmark scripts share. Each script is run as a file (`.venv/bin/python bench/<script>.py`, from any
directory); its one `sys.path` line puts the repository root first, so that `bench.common` (and `aggregator`)
import from this tree. No script imports another script.

- `percentile`: the one percentile of every script (nearest rank);
- `per_op`, `interleaved`, `run_loop`: per-operation timing against baselines, and the event loop to run on;
- `free_port`, `start`, `stop`, `Server`, `http_get`, `wait_ready`: child processes and servers on loopback;
- `bench_redis`, `RedisServer`, `unique_prefix`, `delete_prefix`, `delete_prefix_sync`: the Redis a benchmark
  measures on;
- `import_uploads`, `create_keys`, `pick_holders`: the sandbox data set's uploads in a fresh SQLite file, API
  keys, holders to look up;
- `Env`, `build_env`, `lookup_paths`, `Target`, `warm`: the web benchmarks' database, numbers and warm-up.

Nothing here imports `aggregator` (or redis) at module level: the bare baseline server and the load processes
of bench_web.py import this module, and must not pay for certq.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from aggregator.models import Department
    from aggregator.sandbox.dataset import Dataset

ROOT = Path(__file__).resolve().parent.parent
LOOKUP = "/api/v1/certificates/"
T = TypeVar("T")


# --- percentiles -------------------------------------------------------------------------------------------


@overload
def percentile(values: Iterable[float], p: float) -> float | None: ...
@overload
def percentile(values: Iterable[float], p: float, empty: float) -> float: ...
def percentile(values: Iterable[float], p: float, empty: float | None = None) -> float | None:
    """The p-th percentile (p in 0..100) by nearest rank: the smallest value with at least p % of the values at or
    below it, i.e. the ceil(p / 100 x n)-th smallest (the smallest for p = 0). Always one of the values, never an
    interpolation. `empty` (default None) when there are no values.

    Until 2026-12-02 the scripts rounded three ways (bench_fanout/soak: int(round(p n / 100 + 0.5)); bench_web and
    slow_clients: round(p n / 100), half to even; bench_records: round(p (n - 1) / 100)); the rank differs from
    this one by at most one value."""
    ordered = sorted(values)
    if not ordered:
        return empty
    rank = math.ceil(p * len(ordered) / 100 - 1e-9)  # the epsilon: 99 x 1000 / 100 must stay 990, not 991
    return ordered[min(len(ordered), max(rank, 1)) - 1]


# --- timing ------------------------------------------------------------------------------------------------

Op = Callable[[int], Awaitable[object]]  # one operation by worker i


async def per_op(op: Op, ops: int, concurrency: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) per operation, `concurrency` workers each running
    `ops / concurrency` operations back to back."""
    each = max(ops // concurrency, 1)

    async def worker(i: int) -> None:
        for _ in range(each):
            await op(i)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    n = each * concurrency
    return (time.perf_counter() - started) / n, (time.process_time() - cpu) / n


async def interleaved(
    ops: dict[str, Op], total: int, concurrency: int, rounds: int = 10
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) per operation of each op over `rounds` rounds run in turn (A B C A B C ...), so that a
    busy moment on the machine hurts every contender alike."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in ops}
    for _ in range(rounds):
        for name, op in ops.items():
            samples[name].append(await per_op(op, total // rounds, concurrency))
    return {
        name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for name, v in samples.items()
    }


def run_loop(main: Coroutine[Any, Any, T], loop: str = "asyncio") -> T:
    """Run `main` on asyncio's default event loop, or with loop="uvloop" on uvloop (what `certq serve` picks)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


# --- processes and servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the thread that started it dies, however it dies (Linux PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def start(
    argv: list[str], log: Path, *, cwd: Path = ROOT, env: dict[str, str] | None = None, stdin: int | None = None,
    stdout: int | None = None, preexec: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """A child in its own session (Ctrl-C reaches only the script, which stops its children in order) that gets
    SIGTERM if the script dies; its stderr, and its stdout unless given, are appended to `log`; stdin is
    /dev/null unless given. `preexec` runs in the child before exec. Call it from the main thread: the death
    signal follows the thread that started the child."""

    def before_exec() -> None:
        _die_with_parent()
        if preexec is not None:
            preexec()

    out = log.open("ab")
    try:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else out, stderr=out, start_new_session=True,
            preexec_fn=before_exec,
        )  # fmt: skip
    finally:
        out.close()


def stop(proc: subprocess.Popen[bytes] | None, *, group: bool = False, timeout_s: float = 15.0) -> None:
    """SIGTERM (to the child's process group with `group`: a server's workers), then SIGKILL after `timeout_s`."""
    if proc is None or proc.poll() is not None:
        return
    sig_target = (lambda s: os.killpg(proc.pid, s)) if group else proc.send_signal
    with contextlib.suppress(ProcessLookupError):
        sig_target(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            sig_target(signal.SIGKILL)
        proc.wait(timeout=5)
    if group:  # workers left behind by a master that died first
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(server: Server, path: str, timeout_s: float = 60.0) -> None:
    """Until GET `path` answers 200; RuntimeError if the server exits or does not answer within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server {server.name} exited with {server.proc.returncode}")
        try:
            status, _ = http_get(server.base + path, timeout=2.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server {server.name} not ready after {timeout_s:.0f} s")


# --- Redis -------------------------------------------------------------------------------------------------

REDIS_URL_ENV = "CERTQ_BENCH_REDIS_URL"


class RedisServer:
    """A private redis-server on a free loopback port (no persistence, data under `workdir`/redis); it can be
    killed with SIGKILL and restarted on the same port (soak.py's outages)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
        self.binary, self.port, self.dir = binary, free_port(), workdir / "redis"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
        return next((w[2:] for w in out.stdout.split() if w.startswith("v=")), "?")

    def spawn(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]  # fmt: skip
        self.proc = start(args, self.dir / "stdout.log")
        self.pids.append(self.proc.pid)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING within {timeout_s:.0f} s")

    async def wait_ready_async(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                line = await asyncio.wait_for(reader.readline(), 1.0)
                writer.close()
                if line.startswith(b"+PONG"):
                    return
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not come back within {timeout_s:.0f} s")

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)

    def stop(self) -> None:
        stop(self.proc, timeout_s=5)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "redis.log").read_text(errors="replace")[-1500:]
        return ""


@dataclass(frozen=True)
class BenchRedis:
    url: str
    origin: str  # where the URL came from, for the output

    def __str__(self) -> str:
        return f"{self.url} ({self.origin})"


@contextlib.contextmanager
def bench_redis(url: str | None = None) -> Iterator[BenchRedis]:
    """The Redis a benchmark measures on: `url` (the script's --redis-url) if given, else $CERTQ_BENCH_REDIS_URL,
    else a private redis-server started here on a free loopback port (`--save '' --appendonly no`, data in a
    temporary directory) and stopped on leaving. A given Redis may be shared (the machine's 6379): scripts keep
    their keys under `unique_prefix()` and delete those keys afterwards; nothing is ever flushed."""
    if url:
        yield BenchRedis(url, "--redis-url")
        return
    if os.environ.get(REDIS_URL_ENV):
        yield BenchRedis(os.environ[REDIS_URL_ENV], REDIS_URL_ENV)
        return
    with tempfile.TemporaryDirectory(prefix="certq-bench-redis-") as tmp:
        server = RedisServer(Path(tmp))
        try:
            server.spawn()
            server.wait_ready()
            yield BenchRedis(server.url, f"private redis-server {server.version()}, started for this run")
        finally:
            server.stop()


def unique_prefix() -> str:
    """A key prefix of this run's own, instead of certq's `certq:`."""
    return f"certq-bench-{uuid.uuid4().hex[:8]}"


async def delete_prefix(client: aioredis.Redis, prefix: str) -> int:
    """Delete every key under `prefix`: (SCAN, then DEL in batches); returns how many."""
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 1000):
        await client.delete(*keys[i : i + 1000])
    return len(keys)


def delete_prefix_sync(url: str, prefix: str) -> int:
    """`delete_prefix` with a blocking client of its own, for scripts outside an event loop."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        return len(keys)
    finally:
        client.close()


# --- data --------------------------------------------------------------------------------------------------


async def import_uploads(dataset: Dataset, directory: Path, *, uploaded_by: str = "bench") -> str:
    """The data set's quarterly uploads of all four departments imported into a fresh SQLite file in `directory`
    (as `certq demo` does); returns the database URL."""
    from aggregator.models import Department
    from aggregator.records import RecordStore
    from aggregator.sandbox.dataset import write_upload_csv

    url = f"sqlite+aiosqlite:///{directory / 'certq.sqlite3'}"
    store = await RecordStore.open(url)
    try:
        for dept in Department:
            path = write_upload_csv(dataset, dept, directory / f"{dept.value}-{dataset.upload_quarter}.csv")
            report = await store.import_file(
                path, department=dept, quarter=dataset.upload_quarter, uploaded_by=uploaded_by
            )
            if report.status != "imported":
                raise RuntimeError(f"import of {path.name} failed: {report.problems}")
    finally:
        await store.close()
    return url


async def create_keys(url: str, *keys: tuple[str, str, Department | None]) -> list[str]:
    """API keys (role, label, department or None) in the database at `url`; returns their secrets, in order."""
    from aggregator.records import RecordStore
    from aggregator.web.keys import KeyStore

    store = await RecordStore.open(url)
    try:
        key_store = KeyStore(store.engine)
        secrets = []
        for role, label, department in keys:
            _, secret = await key_store.create(role, label, department=department)
            secrets.append(secret)
        return secrets
    finally:
        await store.close()


def pick_holders(dataset: Dataset, n: int, *, uploaded: bool = False) -> list[tuple[str, str]]:
    """`n` distinct (ID number, name) pairs, holders of certificates at the most departments first (counted
    on the live sites, or with `uploaded` in the uploaded records)."""
    departments: dict[str, set[Department]] = {}
    for dept, certs in (dataset.uploaded if uploaded else dataset.live).items():
        for c in certs:
            if c.holder_id_number:
                departments.setdefault(c.holder_id_number, set()).add(dept)
    holders = sorted(dataset.holders, key=lambda h: -len(departments.get(h.id_number, ())))  # stable
    picked = [(h.id_number, h.name) for h in holders]
    if len(picked) < n:
        raise SystemExit(f"the data set has {len(picked)} holders, fewer than the {n} lookups asked for")
    return picked[:n]


# --- the web benchmarks' data and warm-up ------------------------------------------------------------------


@dataclass
class Env:
    root: Path
    database_url: str
    sqlite_path: Path
    employer_key: str
    numbers: list[tuple[str, str]]  # (certificate number, holder name)


def build_env(root: Path, per_department: int, holders: int) -> Env:
    """The demo's synthetic uploads (seed 2026, today's date) imported into a fresh SQLite file, an employer key,
    and `per_department` valid certificate numbers of each department to ask."""
    from aggregator.models import CertStatus, Department
    from aggregator.sandbox.dataset import generate

    today = date.today()
    dataset = generate(seed=2026, holders=holders, today=today)
    numbers: list[tuple[str, str]] = []
    for dept in Department:
        chosen = [
            c
            for c in dataset.uploaded[dept]
            if c.status == CertStatus.VALID and c.holder_name and (c.valid_until is None or c.valid_until > today)
        ][:per_department]
        numbers += [(c.number, c.holder_name or "") for c in chosen]

    async def prepare() -> tuple[str, str]:
        url = await import_uploads(dataset, root)
        (secret,) = await create_keys(url, ("employer", "bench employer", None))
        return url, secret

    url, secret = asyncio.run(prepare())
    return Env(root, url, root / "certq.sqlite3", secret, numbers)


@dataclass
class Target:
    label: str
    server: Server
    paths: list[str]
    headers: dict[str, str] = field(default_factory=dict)


def lookup_paths(env: Env, *, with_name: bool) -> list[str]:
    return [LOOKUP + quote(n) + (f"?name={quote(name)}" if with_name else "") for n, name in env.numbers]


def warm(target: Target) -> dict[str, Any]:
    """Ask each path twice; the second answer must be 200 with every asked source served from the cache.
    Returns the documents by number (for a bare baseline), their sizes and the verdicts seen."""
    docs: dict[str, Any] = {}
    sizes: list[int] = []
    for path in target.paths:
        for _ in range(2):
            status, body = http_get(target.server.base + path, target.headers)
            if status != 200:
                raise RuntimeError(f"{target.label}: GET {path} answered {status}: {body[:300]!r}")
        doc = json.loads(body)
        asked = [s for s in doc["sources"] if s["outcome"] not in ("skipped", "manual")]
        if not asked or not all(s.get("from_cache") for s in asked):
            raise RuntimeError(f"{target.label}: {path} not served from the cache on the second ask: {asked}")
        docs[unquote(path.removeprefix(LOOKUP).split("?")[0])] = doc
        sizes.append(len(body))
    return {"docs": docs, "sizes": sizes, "verdicts": sorted({d["verdict"] for d in docs.values()})}

