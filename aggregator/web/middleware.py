"""The ASGI layers every request passes, outermost first (plain ASGI, no per-request task or copy):

1. `Front`, three jobs in one layer: counts and times every request by route template and status (metrics);
   `RateLimit-Limit`, `-Remaining`, `-Reset` and `-Policy` on every response to a request that went through a
   rate limit (allowed or not, problem documents included); any exception becomes an RFC 9457 problem
   document, there is never a bare 500 page.
2. `Gate`: the client IP (proxy headers only from trusted proxies), the body size limit (checked against
   Content-Length up front and while the body streams in), the caller's key (`Authorization: Bearer`;
   an unknown or revoked key is a 401, never a silent downgrade to public) and the rate limit (per key, or
   per client IP for anonymous callers and for requests with a bad key). Probes, metrics and static files
   are neither rate limited nor authenticated: they answer whatever Authorization header comes with them.

What a route needs is left in the request state: `principal` (roles.Principal) and `client_ip`; the rate
limit's decision is left there too (`ratelimit.RATELIMIT_STATE`), for the headers (a batch replaces it with
the decision that charged its pairs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aggregator.errors import describe
from aggregator.web.clientip import client_ip
from aggregator.web.config import WebConfig
from aggregator.web.metrics import Metrics
from aggregator.web.problems import (
    BodyTooLarge,
    InvalidKey,
    TooManyRequests,
    UploadTooLarge,
    WebError,
    problem_response,
)
from aggregator.web.ratelimit import RATELIMIT_IDENT, RATELIMIT_STATE, Decision, ratelimit_headers
from aggregator.web.roles import Principal
from aggregator.web.services import Services

log = logging.getLogger("aggregator.web")

# Paths that are never rate limited nor authenticated (probes, scrapes, assets; `endpoint.PROBE` declares the
# endpoints among them, and the API description leaves the Gate's problems off those).
UNLIMITED_PREFIXES = ("/healthz", "/readyz", "/metrics", "/static/", "/favicon.ico")


_GATE_HEADERS = frozenset((b"content-type", b"content-length", b"authorization"))


class Front:
    """The outer layer, three jobs in one pass (one send wrapper, one frame): every HTTP request counted and
    timed by route template and status (once, outermost); the RateLimit-* headers added to
    the response from the decision the Gate, or a batch, left in the request state, whatever the response is
    (an answer, a 429 or another problem document); and any exception that escapes a route (or the Gate)
    turned into a problem document, never a bare 500 page."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                decision = scope.get("state", {}).get(RATELIMIT_STATE)
                if isinstance(decision, Decision):
                    headers = list(message.get("headers", []))
                    present = {k.lower() for k, _ in headers}
                    for k, v in ratelimit_headers(decision).items():
                        if k.lower().encode("latin-1") not in present:
                            headers.append((k.lower().encode("latin-1"), v.encode("latin-1")))
                    message = {**message, "headers": headers}
                status = message["status"]
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception as exc:  # noqa: BLE001 - the one place that answers for every failure
                err = describe(exc)
                if err.status >= 500:
                    if isinstance(exc, WebError):  # an expected, typed outage (not ready, audit log down): no trace
                        log.warning("%s %s: %s", scope.get("method"), scope.get("path"), err.en)
                    else:
                        log.exception("%s %s failed", scope.get("method"), scope.get("path"))
                if started:  # too late for a problem document; the server closes the connection
                    raise
                await problem_response(exc)(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(label, scope["method"], status, time.perf_counter() - t0)


class Gate:
    """Client IP, body limit, authentication and rate limiting, in that order."""

    def __init__(self, app: ASGIApp, config: WebConfig, services: Callable[[], Services]) -> None:
        self.app = app
        self.config = config
        self.services = services  # the app's services (built by the lifespan, so looked up per request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cfg = self.config
        ip = client_ip(scope, cfg.trusted_networks)
        request_state = scope.setdefault("state", {})
        request_state["client_ip"] = ip

        found: dict[bytes, bytes] = {}  # the first of each of the three headers, in one pass
        for k, v in scope.get("headers", ()):
            if k in _GATE_HEADERS and k not in found:
                found[k] = v
        raw_type = found.get(b"content-type")
        content_type = raw_type.decode("latin-1").lower() if raw_type is not None else ""
        limit = cfg.upload_limit if content_type.startswith("multipart/") else cfg.body_limit
        raw_length = found.get(b"content-length")
        length = raw_length.decode("latin-1") if raw_length is not None else None
        too_large = UploadTooLarge if content_type.startswith("multipart/") else BodyTooLarge
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise too_large(limit)

        path: str = scope.get("path", "")
        limited = not path.startswith(UNLIMITED_PREFIXES)
        raw_auth = found.get(b"authorization") if limited else None  # probes ignore any key
        auth = raw_auth.decode("latin-1") if raw_auth is not None else None
        if auth is None:
            principal = Principal.anonymous()
        else:
            scheme, _, token = auth.partition(" ")
            try:
                if scheme.lower() != "bearer" or not token.strip():
                    raise InvalidKey()
                principal = await self.services().keys.authenticate(token.strip())
            except InvalidKey:
                await self._limit(request_state, f"ip:{ip}", cfg.ip_per_minute, "ip")  # guessing keys: the IP's
                raise
        request_state["principal"] = principal

        if limited:
            if principal.key_id is not None:
                await self._limit(request_state, f"key:{principal.key_id}", cfg.key_per_minute, "key")
            else:
                await self._limit(request_state, f"ip:{ip}", cfg.ip_per_minute, "ip")

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, receive_limited, send)

    async def _limit(self, state: dict[str, object], ident: str, per_minute: int, scope_name: str) -> None:
        if per_minute <= 0:
            return
        services = self.services()
        decision = await services.limiter.hit(ident, per_minute)
        state[RATELIMIT_STATE], state[RATELIMIT_IDENT] = decision, ident
        if not decision.allowed:
            services.metrics.rate_limited.labels(scope_name).inc()
            raise TooManyRequests(scope_name, per_minute, decision.retry_after_s)
