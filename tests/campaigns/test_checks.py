"""A campaign over the sandbox's data finds exactly the discrepancies the sandbox seeded, with their evidence;
a source that fails makes its checks inconclusive (counted apart), never a discrepancy."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa

from aggregator.campaigns import Design, Population
from aggregator.campaigns.run import CampaignRuns
from aggregator.jobs import JobStore
from aggregator.records.schema import audit_log
from aggregator.sandbox.discrepancies import seeded_discrepancies
from tests.campaigns.conftest import World

EVERYONE = Design(n=100_000, seed=1)


async def run_campaign(world: World, campaign_id: str, **kw) -> dict[str, int]:
    jobs = JobStore(world.gateway.store.engine)
    job = await jobs.create("campaign_run", organisation="监管处", created_by="k-reg", subject=campaign_id)
    lease = await jobs.claim(job.id, worker="test")
    assert lease is not None
    counts = await CampaignRuns(world.gateway, world.store, **kw).run(lease)
    await lease.finish(counts)
    return counts


def found_by_certificate(items) -> dict[tuple[str, str, str], set[str]]:
    """(kind family, department, number) -> the kinds found: what a test can compare with the seeded list."""
    out: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for i in items:
        for d in (i.result or {}).get("discrepancies", []):
            out[(d["kind"], d["department"], d["number"])].add(d["field"])
    return out


def expected(world: World, items, *, skip_departments: frozenset[str] = frozenset()) -> set[tuple[str, str, str]]:
    sampled_holders = {i.holder_id_number for i in items if i.department not in skip_departments}
    out = set()
    for s in seeded_discrepancies(world.dataset):
        if s.department in skip_departments:
            continue
        if s.kind == "missing_from_upload" and s.holder_id_number not in sampled_holders:
            continue  # the campaign meets it only through another certificate of the same holder
        out.add((s.kind, s.department, s.number))
    return out


async def test_a_campaign_over_every_upload_finds_exactly_the_seeded_discrepancies(world: World) -> None:
    campaign = await world.store.create(
        "全量核查", Population(), EVERYONE, organisation="监管处", created_by="k-reg", created_role="regulator"
    )
    uploaded = sum(len(v) for v in world.dataset.uploaded.values())
    assert campaign.population_count == uploaded == campaign.sample_size
    counts = await run_campaign(world, campaign.id)
    items = await world.store.items(campaign.id)
    assert all(i.outcome for i in items)
    assert counts["inconclusive"] == 0

    found = found_by_certificate(items)
    assert set(found) == expected(world, items)
    # a revoked MOHRSS certificate is not in the register of certificates in force: a note, not a discrepancy
    [revoked] = [i for i in items if i.department == "mohrss" and i.upload["status"] == "revoked"]
    assert revoked.outcome == "agrees" and revoked.result["notes"] == [{"note": "not_listed_live", "upload_status": "revoked"}]
    seeded = {(s.kind, s.department, s.number): s for s in seeded_discrepancies(world.dataset)}
    for key, fields in found.items():
        kind = key[0]
        if kind == "status":
            assert fields == {"status"}
        elif kind == "field":
            assert seeded[key].how == "renewed_after_upload" and "valid_until" in fields
    assert counts["discrepant"] == len({(i.seq) for i in items if (i.result or {}).get("discrepancies")})

    # evidence: both sides' values, the source, when it answered
    status = next(d for i in items for d in i.result["discrepancies"] if d["kind"] == "status")
    assert status["upload"] == "valid" and status["live"] == "suspended"
    assert status["source"].endswith(("_api", "_html")) and status["fetched_at"]
    renewal = next(d for i in items for d in i.result["discrepancies"] if d["field"] == "valid_until")
    assert renewal["live"] > renewal["upload"]
    gone = next(d for i in items for d in i.result["discrepancies"] if d["kind"] == "not_found_live")
    assert gone["upload"] == gone["number"] and gone["live"] is None


async def test_a_failing_source_makes_its_checks_inconclusive_never_discrepant(world: World) -> None:
    await world.sandbox.set_faults("mohurd", captcha=True)
    campaign = await world.store.create(
        "住建部验证码", Population(), EVERYONE, organisation="监管处", created_by="k-reg", created_role="regulator"
    )
    counts = await run_campaign(world, campaign.id)
    items = await world.store.items(campaign.id)
    mohurd = [i for i in items if i.department == "mohurd"]
    assert mohurd and counts["inconclusive"] == len(mohurd)
    for i in mohurd:
        assert i.outcome == "inconclusive" and not i.result["discrepancies"]
        assert {w["reason"] for w in i.result["inconclusive"]} <= {"captcha", "circuit_open"}  # the breaker opens
    assert any(w["reason"] == "captcha" for i in mohurd for w in i.result["inconclusive"])
    found = found_by_certificate(items)
    assert not any(d["source"] == "mohurd_api" for i in items for d in i.result["discrepancies"])
    assert set(found) == expected(world, items, skip_departments=frozenset({"mohurd"}))
    others = [i for i in items if i.department != "mohurd" and i.holder_id_number]
    assert any(w["source"] == "mohurd_api" for i in others for w in i.result["incomplete"])


async def test_every_check_is_audited_under_the_job_by_who_ran_it(world: World) -> None:
    from aggregator.audit import AuditLog

    campaign = await world.store.create(
        "审计", Population(departments=["mem"]), Design(n=5, seed=3), organisation="监管处", created_by="k-reg",
        created_role="regulator",
    )
    await run_campaign(world, campaign.id, audit=AuditLog(world.gateway.store.engine))
    async with world.gateway.store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(audit_log).where(audit_log.c.job_id.is_not(None)))).all()
    assert len(rows) == 5
    assert {r.key_id for r in rows} == {"k-reg"} and {r.role for r in rows} == {"regulator"}
    assert {r.number for r in rows} == {i.number for i in await world.store.items(campaign.id)}


async def test_a_run_taken_over_after_its_worker_died_checks_each_item_exactly_once(world: World) -> None:
    import asyncio

    from aggregator.jobs import LeaseLost

    for site in ("mem", "samr", "mohrss", "mohurd"):
        await world.sandbox.set_faults(site, latency_ms=50)
    campaign = await world.store.create(
        "接管", Population(), EVERYONE, organisation="监管处", created_by="k-reg", created_role="regulator"
    )
    jobs = JobStore(world.gateway.store.engine, lease_s=0.5)
    job = await jobs.create("campaign_run", organisation="监管处", created_by="k-reg", subject=campaign.id,
                            total=campaign.sample_size)  # fmt: skip
    first = await jobs.claim(job.id, worker="dies")
    task = asyncio.create_task(CampaignRuns(world.gateway, world.store, in_flight=2).run(first))  # dies half way
    while (await world.store.progress(campaign.id))[1] == 0:
        await asyncio.sleep(0.05)
    task.cancel()  # the worker is gone: no finish, no fail, its lease runs out
    await asyncio.gather(task, return_exceptions=True)
    total, done = await world.store.progress(campaign.id)
    assert 0 < done < total
    await asyncio.sleep(0.6)  # its lease runs out
    second = await jobs.claim(job.id, worker="takes-over")
    assert second is not None
    counts = await CampaignRuns(world.gateway, world.store).run(second)
    await second.finish(counts)
    items = await world.store.items(campaign.id)
    assert all(i.checked_at for i in items) and sum(counts[o] for o in ("agrees", "discrepant", "inconclusive")) == total
    assert (await jobs.get(job.id)).done == total
    try:
        await first.progress(done=1)
    except LeaseLost:
        pass
    else:
        raise AssertionError("the dead worker's lease should be lost")


def test_what_counts_as_a_disagreement_between_an_upload_and_a_live_answer() -> None:
    from datetime import date

    from aggregator.campaigns.checks import compare
    from aggregator.models import Certificate, CertStatus

    today = date(2026, 11, 25)
    up = Certificate(number="T110105199003071239", kind="mem_special_operation", department="mem",
                     operation_item="低压电工作业", issuer="北京市应急管理局", valid_from=date(2023, 1, 2),
                     valid_until=date(2029, 1, 1), status=CertStatus.VALID)  # fmt: skip

    def live(**kw):
        return up.model_copy(update=kw)

    assert compare(up, live(), today) == []
    assert compare(up, live(status=CertStatus.SUSPENDED), today) == [("status", "status", "valid", "suspended")]
    assert compare(up, live(issuer=None, operation_item=None), today) == []  # not stated live: no disagreement
    assert compare(up, live(operation_item=" 低压电工作业 "), today) == []  # spacing is not a difference
    renewed = compare(up, live(valid_until=date(2035, 1, 1)), today)
    assert renewed == [("field", "valid_until", "2029-01-01", "2035-01-01")]
    lapsed = up.model_copy(update={"valid_until": date(2026, 1, 1)})  # expired by its own date, renewed live
    assert [k for k, *_ in compare(lapsed, live(valid_until=date(2032, 1, 1)), today)] == ["field"]
    # SAMR's "not valid" flag reads as unknown: it contradicts a valid upload, not a suspended one
    assert compare(up, live(status=CertStatus.UNKNOWN), today)[0][:2] == ("status", "status")
    held = up.model_copy(update={"status": CertStatus.SUSPENDED})
    assert compare(held, held.model_copy(update={"status": CertStatus.UNKNOWN}), today) == []
