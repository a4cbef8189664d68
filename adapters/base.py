"""What every adapter is, and the typed outcomes it may raise.

An adapter turns a `Query` into HTTP requests and the responses into certificates. It does no I/O: it is a
generator that yields `HttpRequest`s and receives `HttpResponse`s, and returns a non-empty list of
certificates or raises one of the errors below. The runner (aggregator/runner.py) owns the session,
deadlines, retries, rate limits and the circuit breaker, and maps these errors to source outcomes.

    def lookup(self, query):               # a two-step flow
        resp = yield HttpRequest("GET", self.url("/person"), params={"keyword": query.number})
        token = self.parse_token(resp)      # raises NotFound / Captcha / ParseError ...
        resp = yield HttpRequest("GET", self.url("/licences"), params={"token": token})
        return self.parse_licences(resp)

Positive evidence only: a parser returns certificates when it sees them and raises `NotFound` when it sees
the source's own "nothing found" message. Anything else is `ParseError` (or a kind of `AccessDenied`).

The exceptions, with the outcome kind each is reported as:

    NotFound                       the source positively holds nothing (outcome not_found)
    SourceError                    the source could not answer (outcome unavailable)
    ├── AccessDenied               blocked: the source refused us (WAF page, 403)
    │   ├── Banned                 blocked: an explicit ban message
    │   ├── Captcha                captcha: a person must solve it; certq never does
    │   └── RateLimited            rate_limited: the source said "too many requests" (429)
    ├── UpstreamError              upstream_error: 5xx, reset, cut short (retried while time is left)
    │   ├── Maintenance            upstream_error: the source's maintenance page (not retried)
    │   └── RedirectLoop           upstream_error (aggregator/runner.py)
    ├── ParseError                 parse_error: neither a result nor a not-found message; names `where`
    ├── SourceTimeout              timeout
    ├── CircuitOpen                circuit_open: certq's breaker keeps the source resting
    └── Throttled                  rate_limited: certq's OWN limit had no slot in time; nothing was sent
                                   (aggregator/runner.py; not the source refusing us, so no breaker failure)
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from aggregator.models import Certificate, ErrorKind, ManualLink, Query


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    params: Mapping[str, str] | None = None
    data: Mapping[str, str] | None = None  # form body
    json: Any = None  # JSON body
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    url: str
    headers: Mapping[str, str]
    text: str
    elapsed_ms: float = 0.0

    def json(self) -> Any:
        import json

        return json.loads(self.text)


LookupFlow = Generator[HttpRequest, HttpResponse, list[Certificate]]


class Adapter(Protocol):
    """An HTTP source: `lookup` is a generator of requests that returns certificates."""

    def lookup(self, query: Query) -> LookupFlow: ...


class LinkAdapter(Protocol):
    """A link-out source: no request, only what a person must do."""

    def link(self, query: Query) -> ManualLink: ...


# --- Typed outcomes -------------------------------------------------------------------------------


class NotFound(Exception):
    """The source positively said it holds nothing for this query."""


class SourceError(Exception):
    """A source could not answer. `kind` is the outcome reported; `suspend_s` a hint for the breaker."""

    kind: ClassVar[ErrorKind] = ErrorKind.UPSTREAM_ERROR
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", *, suspend_s: float | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        self.suspend_s = suspend_s


class AccessDenied(SourceError):
    """The source refused us (WAF page, 403, ban message)."""

    kind = ErrorKind.BLOCKED


class Banned(AccessDenied):
    """An explicit ban: "您的IP最近有可疑的攻击行为，请明日再试" or similar."""


class Captcha(AccessDenied):
    """The source wants a person to solve a captcha. certq never solves them."""

    kind = ErrorKind.CAPTCHA


class RateLimited(AccessDenied):
    """HTTP 429 or a "too many requests" message; `retry_after_s` when the source said."""

    kind = ErrorKind.RATE_LIMITED

    def __init__(self, message: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(message, suspend_s=retry_after_s)
        self.retry_after_s = retry_after_s


class UpstreamError(SourceError):
    """5xx, connection reset, a body cut short: worth a retry while time is left."""

    kind = ErrorKind.UPSTREAM_ERROR
    retryable = True


class Maintenance(UpstreamError):
    """The source's own maintenance page: not retried within one lookup."""

    retryable = False


class ParseError(SourceError):
    """The response has neither a result nor a not-found message. `where` names the selector or field."""

    kind = ErrorKind.PARSE_ERROR

    def __init__(self, where: str, detail: str = "") -> None:
        super().__init__(f"parsing error at {where}" + (f": {detail}" if detail else ""))
        self.where = where


class SourceTimeout(SourceError):
    kind = ErrorKind.TIMEOUT


class CircuitOpen(SourceError):
    kind = ErrorKind.CIRCUIT_OPEN
