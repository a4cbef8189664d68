"""`certq sources --check` against the sandbox: ok, drifted, unreachable and skipped, per source."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from aggregator.canary import CanaryStatus, check_sources, judge, run_check
from aggregator.config import Canary, Settings
from aggregator.models import Certificate, CertKind, Department, ErrorKind, Mode, Outcome, SourceResult
from aggregator.runner import Runner
from aggregator.sandbox import Sandbox, generate
from tests.conftest import TODAY

LIVE = ["mem_api", "samr_api", "mohrss_html", "mohurd_api"]


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(generate(seed=2026, holders=40, today=TODAY)) as sb:
        yield sb



def pointed(settings: Settings, sandbox: Sandbox) -> Settings:
    return settings.with_endpoints(dict(sandbox.urls))


def by_source(reports: list) -> dict[str, object]:
    return {r.source: r for r in reports}


async def test_a_healthy_sandbox_is_ok_and_links_and_records_are_skipped(
    settings: Settings, sandbox: Sandbox, runner: Runner
) -> None:
    reports = by_source(await check_sources(pointed(settings, sandbox), runner))
    assert set(reports) == {s.id for s in settings.sources}
    for source_id in LIVE:
        assert reports[source_id].status == CanaryStatus.OK, reports[source_id].detail
        assert reports[source_id].valid.outcome == Outcome.FOUND
        assert reports[source_id].invalid.outcome == Outcome.NOT_FOUND
    for s in settings.sources:
        if s.mode in (Mode.LINK, Mode.RECORDS):
            assert reports[s.id].status == CanaryStatus.SKIPPED
            assert reports[s.id].valid is None
    assert "link-out" in reports["mem_public"].detail
    assert "records" in reports["mem_records"].detail


@pytest.mark.parametrize(("site", "where"), [("mohrss", "table.tab_info1"), ("mem", "data[0].zsbh"),
                                             ("mohurd", "data[0].certNum"), ("samr", "data.licList")])  # fmt: skip
async def test_a_changed_layout_is_drift(
    site: str, where: str, settings: Settings, sandbox: Sandbox, runner: Runner
) -> None:
    await sandbox.set_faults(site, layout_changed=True)
    source_id = sandbox.site(site).source_id
    (report,) = await check_sources(pointed(settings, sandbox), runner, [source_id])
    assert report.status == CanaryStatus.DRIFTED
    assert report.valid.error_kind == ErrorKind.PARSE_ERROR
    assert where in report.detail


async def test_garbage_is_drift(settings: Settings, sandbox: Sandbox, runner: Runner) -> None:
    await sandbox.set_faults("mohurd", garbage=True)
    (report,) = await check_sources(pointed(settings, sandbox), runner, ["mohurd_api"])
    assert report.status == CanaryStatus.DRIFTED


@pytest.mark.parametrize(
    ("fault", "kind"),
    [({"captcha": True}, ErrorKind.CAPTCHA), ({"ban": True}, ErrorKind.BLOCKED),
     ({"maintenance": True}, ErrorKind.UPSTREAM_ERROR), ({"rate_limit_retry_after": 30}, ErrorKind.RATE_LIMITED)],
)  # fmt: skip
async def test_a_blocked_source_is_unreachable_not_drifted(
    fault: dict, kind: ErrorKind, settings: Settings, sandbox: Sandbox, runner: Runner
) -> None:
    await sandbox.set_faults("samr", **fault)
    (report,) = await check_sources(pointed(settings, sandbox), runner, ["samr_api"])
    assert report.status == CanaryStatus.UNREACHABLE, report.detail
    assert report.valid.error_kind == kind


async def test_a_source_that_is_down_is_unreachable(settings: Settings, runner: Runner) -> None:
    async with Sandbox(generate(seed=2026, holders=11, today=TODAY)) as sb:
        urls = dict(sb.urls)
    # The sandbox is closed: nothing listens on its ports any more.
    (report,) = await check_sources(settings.with_endpoints(urls), runner, ["mem_api"])
    assert report.status == CanaryStatus.UNREACHABLE
    assert report.valid.error_kind == ErrorKind.UPSTREAM_ERROR


async def test_wrong_canary_numbers_read_as_drift(settings: Settings, sandbox: Sandbox, runner: Runner) -> None:
    s = pointed(settings, sandbox)
    mem = s.source_by_id["mem_api"]
    swapped = mem.model_copy(update={"canary": Canary(valid=mem.canary.invalid, invalid=mem.canary.valid)})
    (report,) = await check_sources(s.with_sources([swapped]), runner, ["mem_api"])
    assert report.status == CanaryStatus.DRIFTED
    assert "came back not_found" in report.detail and "came back found" in report.detail


async def test_only_the_named_sources_are_checked(settings: Settings, sandbox: Sandbox, runner: Runner) -> None:
    reports = await check_sources(pointed(settings, sandbox), runner, ["mohurd_api", "mem_public"])
    assert [(r.source, r.status) for r in reports] == [
        ("mohurd_api", CanaryStatus.OK),
        ("mem_public", CanaryStatus.SKIPPED),
    ]
    assert sandbox.stats("mem")["total"] == 0
    with pytest.raises(ValueError, match="unknown source"):
        await check_sources(settings, runner, ["nope_api"])


async def test_run_check_uses_its_own_runner(settings: Settings, sandbox: Sandbox) -> None:
    reports = by_source(await run_check(pointed(settings, sandbox), ["samr_api"]))
    assert reports["samr_api"].status == CanaryStatus.OK
    assert sandbox.stats("samr")["total"] == 3  # the valid number takes both steps; the invalid stops at step 1


# --- judge, without a network -------------------------------------------------------------------


def _result(outcome: Outcome, kind: ErrorKind | None = None, numbers: tuple[str, ...] = ()) -> SourceResult:
    certs = [Certificate(number=n, kind=CertKind.MEM_SPECIAL_OPERATION, department=Department.MEM) for n in numbers]
    return SourceResult(source="mem_api", department=Department.MEM, mode=Mode.API, outcome=outcome,
                        error_kind=kind, certificates=certs, fetched_at=datetime.now(UTC))  # fmt: skip


@pytest.mark.parametrize(
    ("valid", "invalid", "status"),
    [
        (_result(Outcome.FOUND, numbers=("T110105199003071239",)), _result(Outcome.NOT_FOUND), CanaryStatus.OK),
        (_result(Outcome.FOUND, numbers=("T220104198507153216",)), _result(Outcome.NOT_FOUND), CanaryStatus.DRIFTED),
        (_result(Outcome.NOT_FOUND), _result(Outcome.NOT_FOUND), CanaryStatus.DRIFTED),
        (_result(Outcome.UNAVAILABLE, ErrorKind.PARSE_ERROR), _result(Outcome.NOT_FOUND), CanaryStatus.DRIFTED),
        (_result(Outcome.UNAVAILABLE, ErrorKind.TIMEOUT), _result(Outcome.UNAVAILABLE, ErrorKind.PARSE_ERROR),
         CanaryStatus.DRIFTED),
        (_result(Outcome.UNAVAILABLE, ErrorKind.CIRCUIT_OPEN), _result(Outcome.NOT_FOUND), CanaryStatus.UNREACHABLE),
        (_result(Outcome.UNAVAILABLE, ErrorKind.CAPTCHA), _result(Outcome.UNAVAILABLE, ErrorKind.CAPTCHA),
         CanaryStatus.UNREACHABLE),
        (_result(Outcome.FOUND, numbers=("T110105199003071239",)), _result(Outcome.UNAVAILABLE, ErrorKind.TIMEOUT),
         CanaryStatus.UNREACHABLE),
    ],
)  # fmt: skip
def test_judge(valid: SourceResult, invalid: SourceResult, status: CanaryStatus, settings: Settings) -> None:
    assert judge(settings.source_by_id["mem_api"], valid, invalid)[0] == status
