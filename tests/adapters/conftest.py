"""Fixtures of the adapter, runner and sandbox tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aggregator.resilience import ResilienceState
from aggregator.runner import Runner


@pytest.fixture
async def runner() -> AsyncIterator[Runner]:
    """A runner with in-process breakers and limiters (the runner tests build their own, with a fake clock)."""
    state = ResilienceState.memory()
    async with Runner(breakers=state.breakers, limiters=state.limiters) as r:
        yield r
