"""Cache events between instances over Redis pub/sub: what keeps every instance's near tier coherent.

    events = CacheEvents(client, "certq:cache-events", on_message=handle, on_reset=forget_everything)
    events.start()                    # in a running loop; reconnects by itself with growing pauses
    events.live                       # True while subscribed: only then may the near tier answer
    await publish(client, channel, "g mem")

Messages (text, one per event):
- `k {version} {key}`: a new version (the envelope's stored_at) of `key` was stored;
- `p {fragment}`: keys containing `fragment` were purged (`p *`: all of them);
- `g {department}`: a department's records changed (an import): its data generation must be read again.

Pub/sub delivers at most once: a message is lost only while the subscription is down. So the near tier
answers only while `live`, and every (re)subscription starts with `on_reset` (the near tier emptied, every
generation read again): whatever was announced while nobody listened cannot be served from here. A
message lost any other way still cannot keep an answer past its envelope's own freshness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress

import redis.asyncio as aioredis

from aggregator.redisconn import REDIS_FAILURES

log = logging.getLogger("aggregator.cache")


def subscriber_client(client: aioredis.Redis) -> aioredis.Redis:
    """A client for one long-lived subscription on `client`'s server: the same connection options, but reads
    that may wait (the subscription is idle between events) and a health check every second, so that a dead
    server is noticed within about a second even without a reset connection."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs.update(socket_timeout=5.0, health_check_interval=1)
    pool = aioredis.ConnectionPool(connection_class=pool.connection_class, max_connections=4, **kwargs)
    return aioredis.Redis.from_pool(pool)


class CacheEvents:
    """One subscription to the cache's event channel, kept up by a background task."""

    FIRST_PAUSE_S = 0.1  # after a lost subscription, wait this long before subscribing again (doubling)
    MAX_PAUSE_S = 5.0
    READ_TIMEOUT_S = 1.0  # one wait for a message; the loop then checks the connection's health

    def __init__(
        self,
        client: aioredis.Redis,
        channel: str,
        *,
        on_message: Callable[[str], None],
        on_reset: Callable[[], None],
    ) -> None:
        self.channel = channel
        self._client = subscriber_client(client)
        self._on_message = on_message
        self._on_reset = on_reset
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.live = False
        self.subscriptions = 0  # how many times the subscription was (re)made
        self.received = 0

    def start(self) -> None:
        """Start listening (idempotent); needs a running event loop."""
        if not self._closing and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"cache-events:{self.channel}")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            # redis-py's read with a timeout may swallow a cancellation: the loop also stops on `_closing`.
            self._task.cancel()
            with suppress(asyncio.CancelledError, TimeoutError, *REDIS_FAILURES):
                await asyncio.wait_for(self._task, self.READ_TIMEOUT_S + 1.0)
            self._task = None
        self.live = False
        with suppress(*REDIS_FAILURES):
            await self._client.aclose()

    async def _run(self) -> None:
        pause = self.FIRST_PAUSE_S
        me = asyncio.current_task()
        while not self._closing:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while not self._closing:
                    msg = await pubsub.get_message(timeout=self.READ_TIMEOUT_S)
                    if me is not None and me.cancelling():  # redis-py's timed read may swallow a cancel
                        raise asyncio.CancelledError
                    if msg is None:
                        continue
                    kind = msg.get("type")
                    if kind == "subscribe":
                        self.subscriptions += 1
                        self._on_reset()  # anything announced while nobody listened is forgotten
                        self.live = True
                        pause = self.FIRST_PAUSE_S
                        if self.subscriptions > 1:
                            log.info("cache events: subscribed again to %s", self.channel)
                    elif kind == "message":
                        self.received += 1
                        data = msg.get("data")
                        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
                        try:
                            self._on_message(text)
                        except Exception:  # noqa: BLE001 - one bad message must not end the subscription
                            log.exception("cache events: could not handle %r", text[:200])
            except asyncio.CancelledError:
                raise
            except REDIS_FAILURES as e:
                if self.live:
                    log.info("cache events: subscription lost (%s); the near tier is off until it is back", e)
            finally:
                self.live = False
                with suppress(Exception):
                    await pubsub.aclose()
            if not self._closing:
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.MAX_PAUSE_S)


def channel_for(prefix: str = "certq") -> str:
    """The event channel of caches keyed under `prefix` (what `SourceCache` subscribes to)."""
    return f"{prefix}:cache-events"


async def announce_import(redis_url: str, department: str, *, prefix: str = "certq") -> bool:
    """Tell every running instance on `redis_url` that `department`'s records changed (an import made outside
    any of them, e.g. `certq import`); whether it was sent. Without it they notice within their 1-second
    memo of the department's data generation."""
    from aggregator.redisconn import client_from_url

    client = client_from_url(redis_url)
    try:
        await client.publish(channel_for(prefix), f"g {department}")
        return True
    except REDIS_FAILURES as e:
        log.warning("could not announce the import to other instances (%s); they see it within a second", e)
        return False
    finally:
        with suppress(*REDIS_FAILURES):
            await client.aclose()
