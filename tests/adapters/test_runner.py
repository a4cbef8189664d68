"""The runner against a real local HTTP server: every outcome a source can have, and what is (not) retried."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.base import (
    AccessDenied,
    Banned,
    Captcha,
    HttpRequest,
    HttpResponse,
    LookupFlow,
    Maintenance,
    NotFound,
    ParseError,
    RateLimited,
)
from adapters.blocks import detect_block, parse_retry_after
from aggregator.config import Circuit, RateLimit, Retries, SourceConfig
from aggregator.models import Certificate, CertKind, Department, ErrorKind, Mode, Outcome, Query
from aggregator.resilience import BreakerRegistry, CircuitState, LimiterRegistry
from aggregator.runner import Runner, decode_body
from tests.helpers import FakeClock

CAPTCHA_PAGE = "<html><head><title>安全验证</title></head><body><p>请输入验证码</p><img src='/c.jpg'></body></html>"


class Site:
    """A two-step department site: /person issues a session cookie and a token, /licences needs both.

    `plan[path]` is a queue of faults served one per hit before the normal answer; `always[path]` a fault
    served on every hit. Every hit is counted and its Cookie header kept.
    """

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.plan: dict[str, deque[str]] = {}
        self.always: dict[str, str] = {}
        self.cookies_seen: dict[str, list[str | None]] = {"/person": [], "/licences": []}
        self.user_agents: list[str] = []
        self.sessions: dict[str, str] = {}  # token -> the sid issued with it

    def fail(self, path: str, *faults: str) -> None:
        self.plan.setdefault(path, deque()).extend(faults)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/person", self.person)
        app.router.add_get("/licences", self.licences)
        app.router.add_get("/start", self.start)
        return app

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        path = request.path
        self.hits[path] += 1
        self.user_agents.append(request.headers.get("User-Agent", ""))
        queue = self.plan.get(path)
        fault = queue.popleft() if queue else self.always.get(path)
        if fault is None:
            return None
        if fault == "hang":
            await asyncio.sleep(3600)
        if fault.startswith("503-retry-after:"):
            return web.Response(status=503, text="busy", headers={"Retry-After": fault.split(":", 1)[1]})
        return {
            "502": lambda: web.Response(status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>"),
            "403": lambda: web.Response(status=403, text="<html><body>Forbidden</body></html>"),
            "429": lambda: web.Response(status=429, text="slow down", headers={"Retry-After": "30"}),
            "captcha": lambda: web.Response(text=CAPTCHA_PAGE, content_type="text/html"),
            "ban": lambda: web.Response(text="您的IP最近有可疑的攻击行为，请明日再试", content_type="text/html"),
            "maintenance": lambda: web.Response(status=503, text="系统维护中，请稍后访问", content_type="text/html"),
        }[fault]()

    async def start(self, request: web.Request) -> web.StreamResponse:
        """A login hop: sets a cookie on a redirect to /person."""
        self.hits["/start"] += 1
        resp = web.HTTPFound(f"/person?{request.query_string}")
        resp.set_cookie("hop", "1")
        raise resp

    async def person(self, request: web.Request) -> web.StreamResponse:
        self.cookies_seen["/person"].append(request.headers.get("Cookie"))
        if (fault := await self._fault(request)) is not None:
            return fault
        number = request.query["keyword"]
        if number == "NOBODY":
            return web.json_response({"code": 200, "msg": "未查询到数据", "data": None})
        if number == "WRONGSHAPE":
            return web.json_response({"code": 200, "data": {"unexpected": True}})
        token, sid = uuid.uuid4().hex, uuid.uuid4().hex
        self.sessions[token] = sid
        resp = web.json_response({"code": 200, "data": {"token": token, "number": number}})
        resp.set_cookie("sid", sid)
        return resp

    async def licences(self, request: web.Request) -> web.StreamResponse:
        self.cookies_seen["/licences"].append(request.headers.get("Cookie"))
        if (fault := await self._fault(request)) is not None:
            return fault
        token = request.query.get("token", "")
        if self.sessions.get(token) is None or request.cookies.get("sid") != self.sessions[token]:
            return web.json_response({"code": 401, "msg": "会话已过期"})
        # A success body with a field named captcha: data, not a captcha page.
        return web.json_response({"code": 200, "captcha": False, "data": [{"zsbh": request.query["number"]}]})


class TwoStepAdapter:
    """A tiny adapter in the real shape: a person query, then the licences with its token."""

    def __init__(self, base: str, *, via_redirect: bool = False) -> None:
        self.base = base
        self.via_redirect = via_redirect

    def lookup(self, query: Query) -> LookupFlow:
        first = "/start" if self.via_redirect else "/person"
        resp = yield HttpRequest("GET", self.base + first, params={"keyword": query.number})
        body = resp.json()
        if body.get("data") is None:
            if "未查询到" in body.get("msg", ""):
                raise NotFound()
            raise ParseError("data")
        token = body["data"]["token"]  # a KeyError here is a parser bug: WRONGSHAPE
        resp = yield HttpRequest("GET", self.base + "/licences", params={"token": token, "number": query.number})
        body = resp.json()
        if body.get("code") != 200:
            raise ParseError("code", f"unexpected code {body.get('code')}")
        return [
            Certificate(number=row["zsbh"], kind=CertKind.MEM_SPECIAL_OPERATION, department=Department.MEM)
            for row in body["data"]
        ]


def make_source(endpoint: str, **overrides: Any) -> SourceConfig:
    fields: dict[str, Any] = {
        "id": "t",
        "name": "t",
        "department": Department.MEM,
        "mode": Mode.API,
        "adapter": "test",
        "kinds": [CertKind.MEM_SPECIAL_OPERATION],
        "patterns": ["*"],
        "endpoint": endpoint,
        "timeout_s": 5.0,
        "retries": Retries(attempts=3, backoff_s=0.01, max_backoff_s=0.05),
        "rate_limit": RateLimit(per_second=1000, burst=100),
        "circuit": Circuit(failure_threshold=3, base_backoff_s=10, max_backoff_s=60),
    }
    fields.update(overrides)
    return SourceConfig(**fields)


@pytest.fixture
async def site() -> AsyncIterator[tuple[Site, str]]:
    s = Site()
    server = TestServer(s.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield s, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breakers(clock: FakeClock) -> BreakerRegistry:
    return BreakerRegistry.memory(clock=clock)


@pytest.fixture
async def runner(breakers: BreakerRegistry) -> AsyncIterator[Runner]:
    r = Runner(breakers=breakers, limiters=LimiterRegistry.memory())
    try:
        yield r
    finally:
        await r.close()


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


Q = Query(number="T110101199003077777")


# --- Found, not found, and cookies ----------------------------------------------------------------


async def test_a_two_step_lookup_returns_the_certificates(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    source = make_source(url)
    result = await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())
    assert result.outcome == Outcome.FOUND
    assert [c.number for c in result.certificates] == [Q.number]
    assert result.source == "t" and result.department == Department.MEM and result.mode == Mode.API
    assert result.error_kind is None
    assert result.fetched_at is not None and result.data_as_of == result.fetched_at
    assert abs(result.fetched_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert s.user_agents == [source.user_agent, source.user_agent]


async def test_a_json_success_body_with_a_captcha_field_is_not_a_captcha(
    site: tuple[Site, str], runner: Runner
) -> None:
    _, url = site
    result = await runner.run(make_source(url), TwoStepAdapter(url), Q, deadline=soon())
    assert result.outcome == Outcome.FOUND  # /licences answers {"code": 200, "captcha": false, ...}


async def test_the_sources_own_not_found_message_is_not_found(
    site: tuple[Site, str], runner: Runner, breakers: BreakerRegistry
) -> None:
    _, url = site
    result = await runner.run(make_source(url), TwoStepAdapter(url), Query(number="NOBODY"), deadline=soon())
    assert result.outcome == Outcome.NOT_FOUND
    assert result.certificates == [] and result.error_kind is None
    assert (await breakers.state("t")).consecutive_failures == 0


async def test_cookies_are_kept_within_a_query_and_never_shared_between_queries(
    site: tuple[Site, str], runner: Runner
) -> None:
    s, url = site
    source = make_source(url)
    first = await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())
    together = await asyncio.gather(*(runner.run(source, TwoStepAdapter(url), Q, deadline=soon()) for _ in range(5)))
    assert [r.outcome for r in [first, *together]] == [Outcome.FOUND] * 6  # step 2 got its own step 1 cookie
    assert s.cookies_seen["/person"] == [None] * 6  # no query started with another query's cookie
    assert all(c and c.startswith("sid=") for c in s.cookies_seen["/licences"])


async def test_cookies_set_on_a_redirect_are_kept_for_the_next_request(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    result = await runner.run(make_source(url), TwoStepAdapter(url, via_redirect=True), Q, deadline=soon())
    assert result.outcome == Outcome.FOUND
    assert s.hits["/start"] == 1
    assert s.cookies_seen["/person"] == ["hop=1"]
    assert "hop=1" in (s.cookies_seen["/licences"][0] or "")


# --- Retries --------------------------------------------------------------------------------------


async def test_a_transient_502_is_recovered_by_a_retry(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    s.fail("/person", "502")
    result = await runner.run(make_source(url), TwoStepAdapter(url), Q, deadline=soon())
    assert result.outcome == Outcome.FOUND
    assert s.hits["/person"] == 2 and s.hits["/licences"] == 1


async def test_each_step_is_retried_on_its_own(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    s.fail("/person", "502", "502")
    s.fail("/licences", "502", "502")
    result = await runner.run(make_source(url), TwoStepAdapter(url), Q, deadline=soon())
    assert result.outcome == Outcome.FOUND
    assert s.hits["/person"] == 3 and s.hits["/licences"] == 3


async def test_a_lasting_5xx_is_upstream_error_after_the_configured_attempts(
    site: tuple[Site, str], runner: Runner
) -> None:
    s, url = site
    s.always["/person"] = "502"
    result = await runner.run(make_source(url), TwoStepAdapter(url), Q, deadline=soon())
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.UPSTREAM_ERROR)
    assert s.hits["/person"] == 3
    assert result.message == "HTTP 502 (after 3 attempts)"


async def test_a_403_is_blocked_and_not_retried(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    s.always["/person"] = "403"
    result = await runner.run(make_source(url), TwoStepAdapter(url), Q, deadline=soon())
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.BLOCKED)
    assert s.hits["/person"] == 1


async def test_a_429_is_rate_limited_not_retried_and_suspends_the_source_for_its_retry_after(
    site: tuple[Site, str], runner: Runner, breakers: BreakerRegistry, clock: FakeClock
) -> None:
    s, url = site
    s.always["/person"] = "429"
    source = make_source(url, circuit=Circuit(failure_threshold=1, base_backoff_s=5, max_backoff_s=60))
    result = await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.RATE_LIMITED)
    assert s.hits["/person"] == 1
    state = await breakers.state("t")
    assert state.state == CircuitState.OPEN
    assert state.open_until == pytest.approx(clock.now + 30)  # Retry-After: 30 beats the 5 s backoff


async def test_a_captcha_page_with_http_200_is_captcha(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    s.always["/person"] = "captcha"
    result = await runner.run(make_source(url), TwoStepAdapter(url), Q, deadline=soon())
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.CAPTCHA)
    assert s.hits["/person"] == 1


async def test_a_ban_message_is_blocked_and_not_retried(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    s.always["/licences"] = "ban"
    result = await runner.run(make_source(url), TwoStepAdapter(url), Q, deadline=soon())
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.BLOCKED)
    assert s.hits["/licences"] == 1


async def test_a_maintenance_page_is_upstream_error_and_not_retried(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    s.always["/person"] = "maintenance"
    result = await runner.run(make_source(url), TwoStepAdapter(url), Q, deadline=soon())
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.UPSTREAM_ERROR)
    assert "maintenance" in (result.message or "")
    assert s.hits["/person"] == 1


async def test_a_503_retry_after_is_honoured_when_it_fits_the_time_left(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    s.fail("/person", "503-retry-after:0")
    result = await runner.run(make_source(url), TwoStepAdapter(url), Q, deadline=soon())
    assert result.outcome == Outcome.FOUND
    assert s.hits["/person"] == 2


async def test_a_503_retry_after_past_the_time_left_is_not_waited_for(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    s.always["/person"] = "503-retry-after:60"
    started = time.monotonic()
    result = await runner.run(make_source(url, timeout_s=3.0), TwoStepAdapter(url), Q, deadline=soon())
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.UPSTREAM_ERROR)
    assert s.hits["/person"] == 1
    assert time.monotonic() - started < 3.0  # gave up at once instead of sleeping into the timeout


async def test_a_refused_connection_is_upstream_error(runner: Runner) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: connection refused
        result = await runner.run(make_source(url), TwoStepAdapter(url), Q, deadline=soon())
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.UPSTREAM_ERROR)
    assert "connection error" in (result.message or "")


# --- Deadlines and rate limits --------------------------------------------------------------------


async def test_a_hung_source_is_cut_at_the_global_deadline(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    s.always["/licences"] = "hang"
    started = time.monotonic()
    result = await runner.run(make_source(url, timeout_s=30), TwoStepAdapter(url), Q, deadline=started + 0.3)
    returned = time.monotonic()
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.TIMEOUT)
    assert returned < started + 0.3 + 0.5  # generous bound: the point is "not 30 s, not 3600 s"
    assert s.hits["/licences"] == 1


async def test_a_hung_source_is_cut_at_its_own_timeout(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    s.always["/person"] = "hang"
    started = time.monotonic()
    result = await runner.run(make_source(url, timeout_s=0.3), TwoStepAdapter(url), Q, deadline=started + 60)
    assert result.error_kind == ErrorKind.TIMEOUT
    assert time.monotonic() < started + 0.3 + 0.5


async def test_no_time_left_answers_timeout_without_a_request(
    site: tuple[Site, str], runner: Runner, breakers: BreakerRegistry
) -> None:
    s, url = site
    result = await runner.run(make_source(url), TwoStepAdapter(url), Q, deadline=time.monotonic() - 1)
    assert result.error_kind == ErrorKind.TIMEOUT
    assert sum(s.hits.values()) == 0
    assert (await breakers.state("t")).consecutive_failures == 0  # not the source's fault


async def test_no_rate_limit_slot_before_the_deadline_is_rate_limited_at_once(
    site: tuple[Site, str], runner: Runner, breakers: BreakerRegistry
) -> None:
    s, url = site
    source = make_source(url, rate_limit=RateLimit(per_second=0.1, burst=2))  # next slot 10 s away after 2
    assert (await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())).outcome == Outcome.FOUND
    started = time.monotonic()
    result = await runner.run(source, TwoStepAdapter(url), Q, deadline=started + 2)
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.RATE_LIMITED)
    assert "rate limit" in (result.message or "")
    assert s.hits["/person"] == 1  # nothing more was sent
    assert time.monotonic() - started < 2  # answered without waiting for the deadline
    assert (await breakers.state("t")).consecutive_failures == 0


# --- Adapter failures -----------------------------------------------------------------------------


async def test_a_parser_bug_is_parse_error_not_an_exception(
    site: tuple[Site, str], runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    _, url = site
    result = await runner.run(make_source(url), TwoStepAdapter(url), Query(number="WRONGSHAPE"), deadline=soon())
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.PARSE_ERROR)
    assert "KeyError" in (result.message or "") and "token" in (result.message or "")
    assert any(r.exc_info for r in caplog.records)  # logged with its traceback


async def test_a_parse_error_names_where_it_failed(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    s.sessions.clear()

    class StaleToken(TwoStepAdapter):
        def lookup(self, query: Query) -> LookupFlow:
            resp = yield HttpRequest("GET", self.base + "/licences", params={"token": "stale", "number": "x"})
            raise ParseError("code", f"unexpected code {resp.json()['code']}")

    result = await runner.run(make_source(url), StaleToken(url), Q, deadline=soon())
    assert result.error_kind == ErrorKind.PARSE_ERROR
    assert result.message == "parsing error at code: unexpected code 401"


async def test_an_adapter_returning_nothing_is_parse_error(runner: Runner) -> None:
    class Nothing:
        def lookup(self, query: Query) -> LookupFlow:
            return []
            yield  # a generator that returns before any request

    result = await runner.run(make_source("http://127.0.0.1:9"), Nothing(), Q, deadline=soon())
    assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.PARSE_ERROR)
    assert "returned nothing" in (result.message or "")


async def test_an_adapter_that_is_not_a_generator_is_parse_error(runner: Runner) -> None:
    class NotAFlow:
        def lookup(self, query: Query) -> Any:
            return [1, 2]

    result = await runner.run(make_source("http://127.0.0.1:9"), NotAFlow(), Q, deadline=soon())
    assert result.error_kind == ErrorKind.PARSE_ERROR
    assert "not a generator" in (result.message or "")


# --- Circuit breaker ------------------------------------------------------------------------------


async def test_the_circuit_opens_after_n_failures_then_no_request_reaches_the_source(
    site: tuple[Site, str], runner: Runner, breakers: BreakerRegistry, clock: FakeClock
) -> None:
    s, url = site
    s.always["/person"] = "502"
    source = make_source(url, retries=Retries(attempts=1))
    for _ in range(3):
        result = await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())
        assert result.error_kind == ErrorKind.UPSTREAM_ERROR
    assert s.hits["/person"] == 3
    for _ in range(5):
        result = await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())
        assert (result.outcome, result.error_kind) == (Outcome.UNAVAILABLE, ErrorKind.CIRCUIT_OPEN)
    assert s.hits["/person"] == 3

    del s.always["/person"]  # the source recovers; the breaker learns it from one probe after the backoff
    clock.advance(10)
    result = await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())
    assert result.outcome == Outcome.FOUND
    assert s.hits["/person"] == 4
    assert (await breakers.state("t")).state == CircuitState.CLOSED
    assert (await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())).outcome == Outcome.FOUND


async def test_a_failed_probe_reopens_the_circuit_for_longer(
    site: tuple[Site, str], runner: Runner, breakers: BreakerRegistry, clock: FakeClock
) -> None:
    s, url = site
    s.always["/person"] = "403"
    source = make_source(url, circuit=Circuit(failure_threshold=1, base_backoff_s=10, max_backoff_s=60))
    await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())
    clock.advance(10)
    probe = await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())
    assert probe.error_kind == ErrorKind.BLOCKED
    state = await breakers.state("t")
    assert state.state == CircuitState.OPEN and state.backoff_s == 20
    assert s.hits["/person"] == 2


async def test_not_found_is_not_a_failure_for_the_breaker(site: tuple[Site, str], runner: Runner) -> None:
    _, url = site
    source = make_source(url, circuit=Circuit(failure_threshold=1, base_backoff_s=10, max_backoff_s=60))
    for _ in range(3):
        result = await runner.run(source, TwoStepAdapter(url), Query(number="NOBODY"), deadline=soon())
        assert result.outcome == Outcome.NOT_FOUND


# --- Stats ----------------------------------------------------------------------------------------


async def test_stats_report_recent_outcomes_latency_and_the_last_error(site: tuple[Site, str], runner: Runner) -> None:
    s, url = site
    source = make_source(url)
    await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())
    await runner.run(source, TwoStepAdapter(url), Query(number="NOBODY"), deadline=soon())
    s.always["/person"] = "captcha"
    await runner.run(source, TwoStepAdapter(url), Q, deadline=soon())
    stats = runner.stats("t")
    assert stats["calls"] == 3
    assert stats["outcomes"] == {"found": 1, "not_found": 1, "captcha": 1}
    assert stats["success_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert stats["p50_ms"] is not None and stats["p95_ms"] >= stats["p50_ms"]
    assert stats["last_error"]["kind"] == "captcha"
    assert runner.stats("other")["calls"] == 0


# --- Block detection and decoding (unit) ----------------------------------------------------------


def response(text: str, status: int = 200, content_type: str = "text/html", **headers: str) -> HttpResponse:
    return HttpResponse(status=status, url="http://x/", headers={"Content-Type": content_type, **headers}, text=text)


def test_detect_block_leaves_json_success_alone_even_with_captcha_fields() -> None:
    body = '{"code": 200, "captcha": "none", "data": [{"captchaRequired": false, "msg": "验证码"}]}'
    assert detect_block(response(body, content_type="application/json")) is None
    assert detect_block(response('[{"captcha": 1}]', content_type="application/json")) is None


def test_detect_block_reads_json_error_messages() -> None:
    err = detect_block(response('{"code": 500, "msg": "验证码错误"}', content_type="application/json"))
    assert isinstance(err, Captcha)
    err = detect_block(response('{"success": false, "message": "访问过于频繁"}', content_type="application/json"))
    assert isinstance(err, RateLimited)
    assert detect_block(response('{"code": 500, "msg": "未查询到数据"}', content_type="application/json")) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (CAPTCHA_PAGE, Captcha),
        ("<html><body><div id='nc'>请按住滑块，拖动到最右边 滑动验证</div></body></html>", Captcha),
        ("<p>您的IP最近有可疑的攻击行为，请明日再试</p>", Banned),
        ("<h2>您访问过于频繁，请稍后再试</h2>", RateLimited),
        ("<title>Access Denied</title><h1>Access Denied</h1>", AccessDenied),
        ("<h1>系统维护中</h1>", Maintenance),
    ],
)
def test_detect_block_recognises_block_pages(body: str, expected: type[Exception]) -> None:
    assert type(detect_block(response(body))) is expected


def test_a_long_result_page_with_a_captcha_form_is_not_a_captcha_page() -> None:
    rows = "".join(f"<tr><td>证书编号</td><td>{i:020d}</td></tr>" for i in range(150))
    page = f"<html><title>查询结果</title><form>验证码 <input name='captcha'></form><table>{rows}</table></html>"
    assert detect_block(response(page)) is None


def test_markup_that_is_not_visible_does_not_count() -> None:
    page = "<html><script src='/captcha.js'></script><p>结果</p><!-- captcha --></html>"
    assert detect_block(response(page)) is None


def test_status_403_and_429() -> None:
    assert type(detect_block(response("nope", status=403))) is AccessDenied
    assert type(detect_block(response(CAPTCHA_PAGE, status=403))) is Captcha
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    err = detect_block(response("", status=429, **{"Retry-After": when}))
    assert isinstance(err, RateLimited)
    assert err.retry_after_s is not None and 100 < err.retry_after_s <= 120


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now=now) == 60
    assert parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_decode_body_handles_gbk_pages() -> None:
    text = "对不起，没有查到相关信息！"
    page = f'<html><head><meta charset="gb2312"></head><body>{text}</body></html>'.encode("gbk")
    assert text in decode_body(page, None)
    assert decode_body(text.encode("gbk"), None) == text  # undeclared: not UTF-8, so GB18030
    assert decode_body(text.encode("utf-8"), "utf-8") == text
