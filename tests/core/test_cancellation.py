"""A cancellation is never lost in a Redis call: `keep_cancellation` raises one that asyncio.wait_for dropped."""

from __future__ import annotations

import asyncio
import sys

import pytest

from aggregator.cancellation import keep_cancellation


async def _cancel_as_it_completes(wrap: bool) -> asyncio.Task[int]:
    """A task waiting in asyncio.wait_for (as redis-py waits on a socket write) is cancelled in the same loop
    iteration in which the awaited operation completes."""
    inner: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def write() -> int:
        return await asyncio.wait_for(inner, 10)

    async def caller() -> int:
        return await (keep_cancellation(write()) if wrap else write())

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)  # the task now waits inside wait_for
    inner.set_result(7)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return task


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for keeps cancellations from Python 3.12 on")
async def test_python_311_wait_for_drops_a_cancellation_that_arrives_as_the_operation_completes() -> None:
    task = await _cancel_as_it_completes(wrap=False)
    assert not task.cancelled() and task.result() == 7  # the bug keep_cancellation exists for


async def test_a_cancellation_that_arrives_as_the_operation_completes_is_raised() -> None:
    task = await _cancel_as_it_completes(wrap=True)
    assert task.cancelled()


async def test_an_operation_that_is_not_cancelled_returns_its_result() -> None:
    async def op() -> str:
        await asyncio.sleep(0)
        return "ok"

    assert await keep_cancellation(op()) == "ok"


async def test_an_inner_timeout_that_expired_is_a_timeout_not_a_cancellation() -> None:
    async def op() -> str:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        except TimeoutError:
            return "timed out inside, handled"
        return "not reached"

    assert await keep_cancellation(op()) == "timed out inside, handled"
