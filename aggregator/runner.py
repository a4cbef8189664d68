"""The runner: asks one source over HTTP by driving its adapter, and turns every outcome into a SourceResult.

Adapters are pure generators (see adapters/base.py); everything with a policy or a socket lives here:

    state = ResilienceState.memory()
    async with Runner(breakers=state.breakers, limiters=state.limiters) as runner:
        result = await runner.run(source, adapter, query, deadline=time.monotonic() + 3.0)
        result.outcome, result.error_kind, result.message        # found / not_found / unavailable ...
        runner.stats(source.id)                                   # success rate, p50/p95, last error

For one call to one source:
1. The circuit breaker is asked first: open -> `unavailable/circuit_open` at once, no request.
2. The whole call (every step, retry, rate-limit wait and the concurrency queue) gets
   min(source.timeout_s, deadline - now); past it -> `unavailable/timeout` (asyncio.timeout is the backstop
   that cuts a server which sends no bytes).
3. Each HTTP request first takes a slot from the source's rate limiter; if no slot comes before the time
   is up, the answer is `unavailable/rate_limited` at once (nothing is sent). At most
   `source.max_concurrency` lookups of one source run at once (a semaphore; the connector has the same cap).
4. Every response goes through `adapters.blocks.detect_block` (captcha, ban, WAF, 403, 429, maintenance)
   and 5xx -> UpstreamError before the adapter sees it.
5. A step whose request fails with a connection error or a 5xx is retried (tenacity): at most
   `source.retries.attempts` tries, jittered exponential backoff from `backoff_s` doubling to
   `max_backoff_s`, at least a 503's Retry-After, and never a sleep that would pass the time left. 403,
   429, captcha, ban and maintenance pages are never retried. Each step of a flow is retried on its own.
6. The adapter's certificates -> `found`; NotFound -> `not_found`; an empty list -> `parse_error`; a typed
   SourceError -> its kind; any other exception (a parser bug) -> `parse_error`, logged with its traceback.
   Nothing but cancellation propagates.
7. The breaker learns the outcome: found/not_found is a success; timeout, upstream_error, blocked,
   captcha, rate_limited (the source's) and parse_error are failures; a call cut short by our own
   deadline before it started or by our own rate limiter tells nothing about the source and is neither.
8. Every call that ends is counted in the sources' health history when the runner has one (`health`, a
   `records.source_health.HealthLog`: counters in memory, no I/O), with whether its failure opened the circuit;
   a call cut by our own deadline before it started is not counted.

Sessions and cookies: one aiohttp.ClientSession per source (created on first use, closed by `close()`),
with a DummyCookieJar, so the session never carries cookies between lookups. Each lookup has its own
`aiohttp.CookieJar`: the runner follows redirects itself so that cookies set on every hop (a login
302 included) are stored there, and sends them on the next requests of that lookup only. Two queries never
see each other's cookies, even when they run at the same time on the same session.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_any
from tenacity.stop import stop_base
from yarl import URL

from adapters.base import (
    Adapter,
    HttpRequest,
    HttpResponse,
    NotFound,
    ParseError,
    SourceError,
    SourceTimeout,
    UpstreamError,
)
from adapters.blocks import detect_block, parse_retry_after
from aggregator.config import SourceConfig
from aggregator.models import Certificate, ErrorKind, Outcome, Query, SourceResult
from aggregator.resilience import BreakerRegistry, LimiterRegistry, SourceStats

if TYPE_CHECKING:
    from aggregator.records.source_health import HealthLog

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
MESSAGE_CHARS = 300
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_-]+)""", re.IGNORECASE)
_CHARSET_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030"}  # GB18030 decodes both, and more


class Throttled(SourceError):
    """certq's own rate limit for the source has no free slot before the time is up; nothing was sent. Not a
    kind of `AccessDenied`: the source did not refuse anything, so the breaker is not told of a failure."""

    kind = ErrorKind.RATE_LIMITED


class RedirectLoop(UpstreamError):
    """The source redirected more than MAX_REDIRECTS times."""

    retryable = False


class _StopBeforeDeadline(stop_base):
    """Stop retrying when the next backoff would end at or past the deadline: never sleep into a timeout."""

    def __init__(self, clock: Callable[[], float], deadline: float) -> None:
        self._clock = clock
        self._deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._clock() + retry_state.upcoming_sleep >= self._deadline


def response_error(resp: HttpResponse) -> SourceError | None:
    """What the runner raises for `resp` before any adapter sees it: a block page, or a 5xx."""
    blocked = detect_block(resp)
    if blocked is not None:
        return blocked
    if resp.status >= 500:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        return UpstreamError(f"HTTP {resp.status}", suspend_s=retry_after)
    return None


def decode_body(body: bytes, charset: str | None) -> str:
    """Text of a response body: the declared charset, else a <meta charset>, else UTF-8, else GB18030."""
    meta = _META_CHARSET.search(body[:2048])
    for name in (charset, meta.group(1).decode("ascii") if meta else None):
        if name:
            try:
                return body.decode(_CHARSET_ALIASES.get(name.lower(), name))
            except (LookupError, UnicodeDecodeError):
                pass
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("gb18030", errors="replace")


def _require_generator(adapter: object, flow: object) -> None:
    if not inspect.isgenerator(flow):
        raise TypeError(f"{type(adapter).__name__}.lookup returned {type(flow).__name__}, not a generator")


def _short(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


class Runner:
    """Runs adapters' lookup flows over HTTP for every source (see the module docstring)."""

    def __init__(
        self,
        *,
        breakers: BreakerRegistry,
        limiters: LimiterRegistry,
        clock: Callable[[], float] = time.monotonic,
        stats_window: int = 200,
        health: HealthLog | None = None,
    ) -> None:
        self._breakers = breakers
        self.health = health  # the sources' health history: every call that ends is counted (records/source_health)
        self._limiters = limiters
        self._clock = clock
        self._stats_window = stats_window
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._stats: dict[str, SourceStats] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every source's session."""
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    def stats(self, source_id: str) -> dict[str, Any]:
        """Recent calls of `source_id`: calls, success_rate, p50_ms, p95_ms, outcomes, last_error."""
        return self._stats.get(source_id, SourceStats(self._stats_window)).snapshot(source_id)

    async def run(self, source: SourceConfig, adapter: Adapter, query: Query, *, deadline: float) -> SourceResult:
        """Ask `source` about `query` through `adapter`, by `deadline` (a `clock()` value, the global one)."""
        started = self._clock()
        fetched_at = datetime.now(UTC)

        def result(
            outcome: Outcome,
            kind: ErrorKind | None = None,
            message: str | None = None,
            certificates: Sequence[Certificate] = (),
            *,
            opened: bool = False,
            counted: bool = True,
        ) -> SourceResult:
            answered = outcome in (Outcome.FOUND, Outcome.NOT_FOUND)
            res = SourceResult(
                source=source.id,
                department=source.department,
                mode=source.mode,
                outcome=outcome,
                certificates=list(certificates),
                error_kind=kind,
                message=_short(message) if message else None,
                elapsed_ms=round((self._clock() - started) * 1000, 3),
                fetched_at=fetched_at,
                data_as_of=fetched_at if answered else None,
            )
            self._stats.setdefault(source.id, SourceStats(self._stats_window)).record(res)
            if counted and self.health is not None:
                self.health.record(res, opened=opened)
            return res

        permit = await self._breakers.allow(source)
        if not permit.allowed:
            wait = f"next probe in {permit.retry_in_s:.1f} s"
            return result(Outcome.UNAVAILABLE, ErrorKind.CIRCUIT_OPEN, f"circuit open after repeated failures; {wait}")
        budget = min(source.timeout_s, deadline - started)
        if budget <= 0:
            await self._breakers.release(permit)
            return result(Outcome.UNAVAILABLE, ErrorKind.TIMEOUT, "no time left before the global deadline", counted=False)

        try:
            certificates = await self._bounded(source, adapter, query, started + budget, budget)
        except NotFound as e:
            await self._breakers.success(permit)
            return result(Outcome.NOT_FOUND, message=str(e) or None)
        except Throttled as e:
            await self._breakers.release(permit)
            return result(Outcome.UNAVAILABLE, e.kind, e.message)
        except SourceError as e:
            opened = await self._breakers.failure(permit, suspend_s=e.suspend_s)
            log.info("source %s: %s: %s", source.id, e.kind.value, e.message)
            return result(Outcome.UNAVAILABLE, e.kind, e.message, opened=bool(opened))
        except Exception as e:  # a bug in an adapter must become parse_error, never escape
            opened = await self._breakers.failure(permit)
            log.exception("source %s: adapter failed with %s", source.id, type(e).__name__)
            message = f"adapter error: {type(e).__name__}: {e}"
            return result(Outcome.UNAVAILABLE, ErrorKind.PARSE_ERROR, message, opened=bool(opened))
        except BaseException:  # cancelled by the caller: the source told us nothing
            await asyncio.shield(self._breakers.release(permit))
            raise
        await self._breakers.success(permit)
        return result(Outcome.FOUND, certificates=certificates)

    async def _bounded(
        self, source: SourceConfig, adapter: Adapter, query: Query, deadline: float, budget: float
    ) -> list[Certificate]:
        """The whole flow under one timeout: `deadline` for our own checks, asyncio.timeout as the backstop."""
        try:
            async with asyncio.timeout(budget) as scope:
                async with self._semaphore(source):
                    return await self._drive(source, adapter, query, deadline)
        except TimeoutError:
            if scope.expired():
                raise SourceTimeout(f"no answer within {budget:.2f} s") from None
            raise

    async def _drive(self, source: SourceConfig, adapter: Adapter, query: Query, deadline: float) -> list[Certificate]:
        """Feed the adapter's generator with responses until it returns its certificates."""
        session = self._session(source)
        jar = aiohttp.CookieJar(unsafe=True)  # unsafe: also keep cookies of IP hosts (sandbox, intranet)
        flow = adapter.lookup(query)
        _require_generator(adapter, flow)
        try:
            request = next(flow)
            while True:
                response = await self._step(source, session, jar, request, deadline)
                request = flow.send(response)
        except StopIteration as done:
            certificates = done.value
        finally:
            flow.close()
        if not certificates:
            raise ParseError("result", "adapter returned nothing without not-found evidence")
        return list(certificates)

    async def _step(
        self,
        source: SourceConfig,
        session: aiohttp.ClientSession,
        jar: aiohttp.CookieJar,
        request: HttpRequest,
        deadline: float,
    ) -> HttpResponse:
        """One request of the flow, retried on connection errors and 5xx while time is left."""
        # The first try runs outside tenacity: almost every request succeeds at once, and an AsyncRetrying
        # per request costs CPU and leaves reference cycles for the garbage collector (bench_fanout.py).
        # A retryable failure enters the retry loop below as its first attempt, so that the attempts,
        # backoffs and stop conditions are exactly those of a loop that had made the first try itself.
        first_failure: SourceError | None
        try:
            return await self._attempt(source, session, jar, request, deadline)
        except SourceError as e:
            if not e.retryable:
                raise
            first_failure = e
        policy = source.retries

        def backoff(state: RetryCallState) -> float:
            ceiling = min(policy.max_backoff_s, policy.backoff_s * 2 ** (state.attempt_number - 1))
            sleep = random.uniform(ceiling / 2, ceiling)
            error = state.outcome.exception() if state.outcome else None
            retry_after = getattr(error, "suspend_s", None)
            return max(sleep, retry_after) if retry_after else sleep

        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(policy.attempts), _StopBeforeDeadline(self._clock, deadline)),
            wait=backoff,
            retry=retry_if_exception(lambda e: isinstance(e, SourceError) and e.retryable),
            reraise=True,
        )
        response: HttpResponse | None = None
        try:
            async for attempt in retrying:
                with attempt:
                    if first_failure is not None:  # attempt 1: the try made above
                        failure, first_failure = first_failure, None
                        raise failure
                    response = await self._attempt(source, session, jar, request, deadline)
        except UpstreamError as e:
            tries = retrying.statistics.get("attempt_number", 1)
            if tries > 1:
                e.message = f"{e.message} (after {tries} attempts)"
            raise
        assert response is not None
        return response

    async def _attempt(
        self,
        source: SourceConfig,
        session: aiohttp.ClientSession,
        jar: aiohttp.CookieJar,
        request: HttpRequest,
        deadline: float,
    ) -> HttpResponse:
        """One try: a rate-limit slot, the request (redirects followed), then status and block checks."""
        wait = await self._limiters.reserve(source, max_wait_s=max(deadline - self._clock(), 0.0))
        if wait is None:
            raise Throttled(f"certq's own rate limit ({source.rate_limit.per_second:g}/s) has no slot in time")
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            response = await self._fetch(session, jar, request, deadline, source.connect_timeout_s)
        except aiohttp.ServerTimeoutError as e:  # connect or read timeout of aiohttp itself
            if self._clock() >= deadline - 0.01:
                raise SourceTimeout("no answer before the deadline") from e
            raise UpstreamError(f"{type(e).__name__}: {e}") from e
        except TimeoutError as e:  # the per-request total, which is the time left
            raise SourceTimeout("no answer before the deadline") from e
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as e:
            raise UpstreamError(f"connection error: {type(e).__name__}: {e}".rstrip(": ")) from e
        error = response_error(response)
        if error is not None:
            raise error
        return response

    async def _fetch(
        self,
        session: aiohttp.ClientSession,
        jar: aiohttp.CookieJar,
        request: HttpRequest,
        deadline: float,
        connect_timeout_s: float,
    ) -> HttpResponse:
        """Send `request`, following redirects with this lookup's cookies; read and decode the final body."""
        started = self._clock()
        method, url = request.method.upper(), URL(request.url)
        params: Mapping[str, str] | None = request.params
        data, json_body = request.data, request.json
        for _ in range(MAX_REDIRECTS + 1):
            left = max(deadline - self._clock(), 0.001)
            headers = dict(request.headers)
            cookies = jar.filter_cookies(url)
            if cookies:
                sent = "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())
                headers["Cookie"] = f"{headers['Cookie']}; {sent}" if headers.get("Cookie") else sent
            timeout = aiohttp.ClientTimeout(total=left, connect=min(connect_timeout_s, left))
            async with session.request(
                method,
                url,
                params=params,
                data=data,
                json=json_body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as resp:
                jar.update_cookies(resp.cookies, resp.url)
                location = resp.headers.get("Location")
                if resp.status in _REDIRECT_STATUSES and location:
                    url = resp.url.join(URL(location))
                    params = None
                    if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                        method, data, json_body = "GET", None, None
                    continue
                body = await resp.read()
                return HttpResponse(
                    status=resp.status,
                    url=str(resp.url),
                    headers=resp.headers,
                    text=decode_body(body, resp.charset),
                    elapsed_ms=round((self._clock() - started) * 1000, 3),
                )
        raise RedirectLoop(f"more than {MAX_REDIRECTS} redirects")

    def _session(self, source: SourceConfig) -> aiohttp.ClientSession:
        session = self._sessions.get(source.id)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=source.max_concurrency, limit_per_host=source.max_concurrency)
            session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": source.user_agent},
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=source.timeout_s, connect=source.connect_timeout_s),
                trust_env=False,
            )
            self._sessions[source.id] = session
        return session

    def _semaphore(self, source: SourceConfig) -> asyncio.Semaphore:
        sem = self._semaphores.get(source.id)
        if sem is None:
            sem = self._semaphores[source.id] = asyncio.Semaphore(source.max_concurrency)
        return sem
