"""Awaiting an operation without losing a cancellation that it swallowed.

On Python 3.11, `asyncio.wait_for` drops a cancellation that arrives just as the operation it waits for
completes, returning the result instead (CPython gh-86296, fixed in 3.12). redis-py awaits every socket
write through `asyncio.wait_for` when a socket timeout is set, as certq's clients do, so a lookup cancelled
by its deadline at that moment would carry on past the deadline, and a task being shut down would never
end (seen in tests/core/test_redis_outage.py about once in ten runs).

    value = await keep_cancellation(client.get(key))

If the task was asked to cancel while `op` ran and `op` returned normally anyway, the cancellation is
raised here. A cancellation that `op` handled on purpose (an inner `asyncio.timeout` that expired and
called `uncancel`) leaves the count as it was and raises nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def keep_cancellation(op: Awaitable[T]) -> T:
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await op
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError("cancelled while the operation completed (restored after asyncio.wait_for dropped it)")
    return result
