"""Two `certq serve` processes sharing one Redis and one PostgreSQL: after an upload through one, a lookup on the
other answers from the new quarter at once (the import is announced through Redis; neither the other instance's
cache nor its one-second memo of the department's data generation keeps the old answer).

Runs its own redis-server (tests/redis_server.py) and a database of its own on CERTQ_TEST_DATABASE_URL's server,
dropped afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from aggregator.models import Department
from aggregator.records import RecordStore
from aggregator.web.keys import KeyStore
from tests.records_support import ID_ZHANG, mem_row, write_csv
from tests.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis]
NUMBER = "T" + ID_ZHANG


@pytest.fixture
def server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with RedisServer() as s:
        yield s


@pytest.fixture
async def database(postgres_url: str) -> Iterator[str]:  # type: ignore[misc]
    """A database of this test's own on the PostgreSQL server, with MEM's 2026Q1 upload and a MEM key."""
    name = f"certq_h5_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(postgres_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def post_upload(base: str, key: str, path: Path, quarter: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="quarter"\r\n\r\n{quarter}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(
        base + "/api/v1/uploads",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def start_serve(db_url: str, redis_url: str, home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "CERTQ_HOME": str(home)}
    cmd = [sys.executable, "-c", "from aggregator.cli import main; main()", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "2", "--db", db_url, "--redis", redis_url,
           "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"certq serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if get_json(base + "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"certq serve not ready after {timeout_s} s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


def mem_records(answer: dict) -> dict:  # type: ignore[type-arg]
    return next(s for s in answer["sources"] if s["source"] == "mem_records")


async def test_a_lookup_on_one_instance_sees_the_quarter_uploaded_through_the_other(
    server: RedisServer, database: str, tmp_path: Path
) -> None:
    store = await RecordStore.open(database)
    try:
        q1 = write_csv(tmp_path / "mem-2026Q1.csv", [mem_row()])
        assert (await store.import_file(q1, department="mem", quarter="2026Q1")).status == "imported"
        _, key = await KeyStore(store.engine).create("department", "h5 MEM uploads", department=Department.MEM)
    finally:
        await store.close()
    home = Path(tempfile.mkdtemp(prefix="certq-h5-home-", dir=tmp_path))
    procs = []
    try:
        for i in range(2):
            procs.append(start_serve(database, server.url, home, tmp_path / f"serve-{i}.log"))
        for i, (proc, base) in enumerate(procs):
            wait_ready(proc, base, tmp_path / f"serve-{i}.log")
        (_, a), (_, b) = procs

        for _ in range(3):  # both workers of b have (most likely) cached it, in Redis and in their near tier
            status, before = get_json(f"{b}/api/v1/certificates/{NUMBER}")
            assert status == 200 and before["verdict"] == "valid"
            assert "2026Q1" in (mem_records(before).get("message") or "")

        q2 = write_csv(tmp_path / "mem-2026Q2.csv", [mem_row(status="吊销")])
        status, report = post_upload(a, key, q2, "2026Q2")
        assert status == 201, report
        # The very first lookup on b after the upload's answer, and every one after it (whichever worker
        # answers), gives the new quarter: the announcement reached b before the uploader heard back.
        for _ in range(8):
            status, again = get_json(f"{b}/api/v1/certificates/{NUMBER}")
            assert again["verdict"] == "revoked" and "2026Q2" in (mem_records(again).get("message") or "")
    finally:
        for proc, _ in procs:
            stop(proc)
