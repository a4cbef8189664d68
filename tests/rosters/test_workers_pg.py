"""The job engine deployed: two `certq worker` processes on PostgreSQL share the queue; one is killed with SIGKILL
in the middle of a roster run and the other finishes it, every member with exactly one result."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from aggregator.jobs import JobEngine, JobStore
from aggregator.models import Department
from aggregator.records import RecordStore
from aggregator.records.schema import jobs, roster_members, roster_results, rosters
from aggregator.sandbox.dataset import write_upload_csv
from aggregator.sandbox.server import Sandbox
from tests.records_support import asyncpg_dsn
from tests.rosters.test_runs import DATASET, ORG

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = 96


@pytest.fixture
async def pg_database(postgres_url: str):
    """A database of its own (the workers are separate processes: a schema on the search path would not reach
    Procrastinate's connections)."""
    name = f"certq_jobs_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = sa.engine.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator.cli", "worker", "--concurrency", "1"],
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


async def test_a_worker_killed_mid_run_is_taken_over_and_every_member_has_one_result(pg_database, tmp_path) -> None:
    store = await RecordStore.open(pg_database)
    try:
        for dept in Department:
            path = write_upload_csv(DATASET, dept, tmp_path / f"{dept.value}.csv")
            await store.import_file(path, department=dept, quarter=DATASET.upload_quarter, uploaded_by="test")
        cards = [c for d in Department for c in DATASET.uploaded[d]][:MEMBERS]
        assert len(cards) == MEMBERS
        now = datetime.now(UTC)
        async with store.engine.begin() as conn:
            await conn.execute(sa.insert(rosters).values(
                id="r1", organisation=ORG, name="全员", created_by="k1", created_at=now, expiry_warn_days=[90, 30, 7]))
            await conn.execute(sa.insert(roster_members), [
                {"roster_id": "r1", "ref": f"E{i:04d}", "number": c.number, "name": c.holder_name, "added_at": now}
                for i, c in enumerate(cards)
            ])
        job_store = JobStore(store.engine)
        job = await job_store.create("roster_verify", organisation=ORG, created_by="k1", subject="r1", total=len(cards))
        engine = JobEngine(job_store, database_url=pg_database)
        await engine.open()
        await engine.submit(job.id)
        await engine.close()

        config = tmp_path / "config"  # the shipped limits (10/s a source) would make this test wait on them
        shutil.copytree(ROOT / "config", config)
        for path in (config / "sources").glob("*.toml"):
            path.write_text(path.read_text(encoding="utf-8").replace("per_second = 10.0", "per_second = 200.0"), encoding="utf-8")
        async with Sandbox(DATASET, faults={"mem": {"latency_ms": 40}}) as sb:
            env = {
                **os.environ,
                "CERTQ_CONFIG_DIR": str(config),
                "CERTQ_DATABASE_URL": pg_database,
                "CERTQ_REDIS_URL": "",
                "CERTQ_JOBS_LEASE_S": "3",
                "CERTQ_JOBS_TICK_CRON": "* * * * * */1",
                "CERTQ_JOBS_LOOKUP_CONCURRENCY": "4",
                **{f"CERTQ_{site.upper()}_URL": sb.urls[sb.site(site).source_id] for site in ("mem", "samr", "mohrss", "mohurd")},
            }
            log = tmp_path / "workers.log"
            workers = [start_worker(env, log), start_worker(env, log)]
            try:
                # wait until one worker holds the job and has done part of it, then kill that one
                deadline = time.monotonic() + 60
                holder = None
                while time.monotonic() < deadline:
                    j = await job_store.get(job.id)
                    async with store.engine.connect() as conn:
                        owner = (await conn.execute(sa.select(jobs.c.lease_owner).where(jobs.c.id == job.id))).scalar()
                    if j.done >= 16 and owner:
                        holder = next(w for w in workers if f":{w.pid}:" in owner)
                        break
                    await asyncio.sleep(0.1)
                assert holder is not None, log.read_text()[-3000:]
                holder.send_signal(signal.SIGKILL)
                holder.wait(10)
                killed_at = (await job_store.get(job.id)).done
                assert killed_at < len(cards), "the job finished before the kill: make it slower"

                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    j = await job_store.get(job.id)
                    if j.status in ("finished", "failed"):
                        break
                    await asyncio.sleep(0.2)
                assert j.status == "finished", (j.status, j.error, log.read_text()[-3000:])
                assert j.attempts == 2 and j.done == len(cards)
                async with store.engine.connect() as conn:
                    per_member = (await conn.execute(
                        sa.select(roster_results.c.member_id, sa.func.count())
                        .where(roster_results.c.job_id == job.id).group_by(roster_results.c.member_id)
                    )).all()
                    ids = set((await conn.execute(sa.select(roster_members.c.id))).scalars())
                assert {m for m, _ in per_member} == ids and all(n == 1 for _, n in per_member)
                assert sum(j.counts.values()) == len(cards)
            finally:
                for w in workers:
                    if w.poll() is None:
                        w.send_signal(signal.SIGTERM)
                for w in workers:
                    try:
                        w.wait(15)
                    except subprocess.TimeoutExpired:
                        w.kill()
    finally:
        await store.close()
