"""Canary self-check: does each live source still answer, and does its parser still understand it?

Each api/html source names a number it is known to hold and one it is known not to hold (`[canary]` in its
TOML). Both are asked through the runner (no cache) and the source is reported as

    ok           the valid number was found (its certificate among the results) and the invalid one not
    drifted      the parser no longer matches: a parse_error, the valid number came back not_found or
                 without its certificate, or the invalid number came back found
    unreachable  the source could not be asked: timeout, upstream_error, blocked, captcha, rate_limited,
                 circuit_open
    skipped      link and records sources (nothing to request), disabled sources, sources without a canary

    reports = await check_sources(settings, runner)          # every source
    reports = await check_sources(settings, runner, ["mem_api"])
    reports = await run_check(settings)                      # with its own in-process runner (certq sources --check)

Drift is reported before unreachability: one answer that shows the parser broken is worth knowing even
when the other number could not be asked.
"""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum
from typing import cast

from pydantic import BaseModel

from adapters.base import Adapter
from adapters.registry import build_adapter
from aggregator.config import Settings, SourceConfig
from aggregator.models import ErrorKind, Mode, Outcome, Query, SourceResult
from aggregator.numbers import normalise
from aggregator.resilience import ResilienceState
from aggregator.runner import Runner


class CanaryStatus(StrEnum):
    OK = "ok"
    DRIFTED = "drifted"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"


class CanaryReport(BaseModel):
    """One source's canary verdict, with what each number came back as."""

    source: str
    status: CanaryStatus
    detail: str
    valid: SourceResult | None = None
    invalid: SourceResult | None = None


DRIFT_KINDS = frozenset({ErrorKind.PARSE_ERROR})
UNREACHABLE_KINDS = frozenset(
    {
        ErrorKind.TIMEOUT,
        ErrorKind.UPSTREAM_ERROR,
        ErrorKind.BLOCKED,
        ErrorKind.CAPTCHA,
        ErrorKind.RATE_LIMITED,
        ErrorKind.CIRCUIT_OPEN,
    }
)


def _said(result: SourceResult) -> str:
    if result.outcome == Outcome.UNAVAILABLE:
        kind = result.error_kind.value if result.error_kind else "error"
        return f"{kind}" + (f" ({result.message})" if result.message else "")
    if result.outcome == Outcome.FOUND:
        return f"found ({len(result.certificates)} certificate(s))"
    return result.outcome.value


def judge(source: SourceConfig, valid: SourceResult, invalid: SourceResult) -> tuple[CanaryStatus, str]:
    """The verdict on one source from the answers to its valid and invalid canary numbers."""
    assert source.canary is not None
    v_num, i_num = normalise(source.canary.valid), normalise(source.canary.invalid)
    drift: list[str] = []
    down: list[str] = []
    for label, number, result in (("valid", v_num, valid), ("invalid", i_num, invalid)):
        if result.outcome == Outcome.UNAVAILABLE:
            kind = result.error_kind
            (drift if kind in DRIFT_KINDS else down).append(f"{label} {number}: {_said(result)}")
    if valid.outcome == Outcome.NOT_FOUND:
        drift.append(f"valid {v_num} came back not_found: the parser no longer recognises a result")
    elif valid.outcome == Outcome.FOUND and not any(normalise(c.number) == v_num for c in valid.certificates):
        got = sorted({c.number for c in valid.certificates})
        drift.append(f"valid {v_num} came back found but without its certificate (got {got})")
    if invalid.outcome == Outcome.FOUND:
        drift.append(
            f"invalid {i_num} came back found: the parser accepts what it should not, or the number was issued "
            "since (choose another invalid canary)"
        )
    if drift:
        return CanaryStatus.DRIFTED, "; ".join(drift + down)
    if down:
        return CanaryStatus.UNREACHABLE, "; ".join(down)
    return CanaryStatus.OK, f"valid {v_num}: {_said(valid)}; invalid {i_num}: {_said(invalid)}"


def skip_reason(source: SourceConfig) -> str | None:
    """Why a source has no canary check, or None when it has one."""
    if source.mode == Mode.LINK:
        return "link-out source: nothing is requested (a person checks it behind a captcha)"
    if source.mode == Mode.RECORDS:
        return "uploaded records: read from the records store, not requested"
    if not source.enabled:
        return "source disabled"
    if not source.configured:
        env = f" (set {source.endpoint_env})" if source.endpoint_env else ""
        return f"not configured: no endpoint set on this machine{env}"
    if source.canary is None:
        return "no [canary] numbers configured"
    return None


async def check_source(source: SourceConfig, runner: Runner, adapter: Adapter | None = None) -> CanaryReport:
    """Run one source's canary numbers through `runner` and judge them."""
    reason = skip_reason(source)
    if reason is not None:
        return CanaryReport(source=source.id, status=CanaryStatus.SKIPPED, detail=reason)
    assert source.canary is not None
    adapter = adapter or cast(Adapter, build_adapter(source))  # api/html: an HTTP adapter
    results: list[SourceResult] = []
    for number in (source.canary.valid, source.canary.invalid):  # one after the other: gentle on the source
        deadline = time.monotonic() + source.timeout_s
        results.append(await runner.run(source, adapter, Query(number=normalise(number)), deadline=deadline))
    valid, invalid = results
    status, detail = judge(source, valid, invalid)
    return CanaryReport(source=source.id, status=status, detail=detail, valid=valid, invalid=invalid)


async def check_sources(settings: Settings, runner: Runner, sources: list[str] | None = None) -> list[CanaryReport]:
    """Check every configured source (or those named), in config order; the sources run concurrently."""
    chosen = settings.sources
    if sources is not None:
        known = settings.source_by_id
        unknown = [s for s in sources if s not in known]
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; configured: {sorted(known)}")
        chosen = [known[s] for s in sources]
    return list(await asyncio.gather(*(check_source(s, runner) for s in chosen)))


async def run_check(settings: Settings, sources: list[str] | None = None) -> list[CanaryReport]:
    """`check_sources` with an in-process runner of its own (for `certq sources --check`)."""
    state = ResilienceState.memory()
    async with Runner(breakers=state.breakers, limiters=state.limiters) as runner:
        return await check_sources(settings, runner, sources)
