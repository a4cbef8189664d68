"""In-process single-flight: concurrent calls for the same key share one running task.

The work runs in its own task, not in any caller's, so one caller giving up (cancelled by its deadline)
never cancels the work for the others; each caller waits through `asyncio.shield`.

    flights = SingleFlight()
    result, joined = await flights.run(key, lambda: expensive(key))
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one running task per key; later callers for the key await the same task."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, key: str) -> bool:
        return key in self._tasks

    async def run(self, key: str, work: Callable[[], Coroutine[Any, Any, T]]) -> tuple[T, bool]:
        """The result of the flight for `key` (started with `work()` if none runs) and whether we joined one."""
        task = self._tasks.get(key)
        joined = task is not None
        if task is None:
            task = asyncio.create_task(work(), name=f"single-flight:{key}")
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        return await asyncio.shield(task), joined

    def _finished(self, key: str, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter may have left before it failed

    async def cancel_all(self) -> None:
        """Cancel every running flight and wait for them to end (used on close)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
