"""Slow clients: uvicorn's HTTP protocol with a deadline for every request head and a cap on connections per IP.

    uvicorn.Config(app, http=guarded_protocol(web))             # this WebConfig's limits (one process)
    uvicorn.run("aggregator.web.app:create_app", factory=True, workers=4, http=guarded_protocol())
                                                                # each worker reads CERTQ_WEB_* itself

uvicorn (0.54) waits for a request head for ever: a client that sends one header line every few seconds
holds its connection, a file descriptor and a parser as long as it likes, and enough of them starve the
server ("slowloris"). These classes are uvicorn's own protocols (httptools, and h11) with three rules added,
all per connection and all settled on the event loop, before the app sees anything:

- Head deadline (`WebConfig.header_timeout`, default 10 s; 0 = off). A new connection has that long from
  connect to deliver a complete request head; on a keep-alive connection, each next head has that long from
  its first byte (idle time before that first byte stays uvicorn's --timeout-keep-alive, 5 s, which any byte
  cancels, so trickling bytes between requests meets this deadline instead). Otherwise the connection is
  closed without an answer, as nginx does. Once a head is in, the request is not timed: its handler runs and
  its response streams as long as they need.
- Body rate. While a request body is still coming and the server is ready for it, at least
  `MIN_BODY_RATE` bytes a second (100 B/s, averaged over windows of header_timeout) must arrive, or the
  connection is closed and the app's receive() reports a disconnect. Not counted while the client waits for
  "100 Continue" or while the server itself has stopped reading (its buffer is full, or requests are
  pipelined). Off with the head deadline. Bytes a client keeps sending after its response was complete (a
  body the app did not read) count as the next head.
- Connections per IP (`WebConfig.max_connections_per_ip`, default 64; 0 = off). A connection from a socket
  peer IP that already holds that many open connections to this server is answered at once with a minimal
  `429` (Connection: close, no keep-alive) and closed before anything of its request is read: it costs one
  write. A client that reads the answer sees why; one whose request was already on the wire may see a
  reset instead (the server does not linger to read it). The count is per server (one per worker process)
  and per IP address. The peer is the TCP peer: behind a reverse proxy that is the proxy, whose connections
  carry many clients, so peers in `CERTQ_WEB_TRUSTED_PROXIES` are not capped (cap on the proxy instead:
  nginx `limit_conn`).
- Head size. A request head longer than `MAX_HEAD_BYTES` (64 KiB) is answered 431 and closed (uvicorn's
  httptools protocol sets no bound; h11 resets at about 16 KiB).

WebSocket upgrades leave these rules (and the count) when the connection is handed to the WebSocket protocol.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from aggregator.web.config import WebConfig

log = logging.getLogger("aggregator.web")

MIN_BODY_RATE = 100  # bytes per second a request body must average while the server waits for it
MAX_HEAD_BYTES = 64 * 1024  # a request head (request line and headers) longer than this is refused
_TOO_LARGE_HEAD = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 35\r\nConnection: close\r\n\r\n"
    b"request head larger than 64 KiB\r\n\r\n"
)
REFUSAL = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 39\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"too many connections from your address\n"
)
REFUSAL_LOG_EVERY_S = 10.0  # at most one warning per process this often, however many connections are refused

# Open connections per peer IP, one table per uvicorn server (its ServerState), so that servers sharing a
# process (tests) keep separate counts.
_open_per_ip: weakref.WeakKeyDictionary[ServerState, dict[str, int]] = weakref.WeakKeyDictionary()
_refusals = {"count": 0, "logged_at": float("-inf")}


@dataclass(frozen=True)
class Limits:
    header_timeout: float  # seconds; 0 = off (and the body rate with it)
    max_per_ip: int  # 0 = off
    min_body_rate: float = MIN_BODY_RATE
    # Peers whose connections carry many clients (CERTQ_WEB_TRUSTED_PROXIES): not capped per IP.
    uncapped: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_head_bytes: int = MAX_HEAD_BYTES

    @classmethod
    def of(cls, web: WebConfig) -> Limits:
        return cls(
            header_timeout=web.header_timeout,
            max_per_ip=web.max_connections_per_ip,
            uncapped=web.trusted_networks,
        )

    def capped(self, ip: str) -> bool:
        if not self.max_per_ip:
            return False
        if not self.uncapped:
            return True
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return True
        return not any(address in net for net in self.uncapped)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head past MAX_HEAD_BYTES."""


class SlowClientGuard:
    """Mixin for a uvicorn HTTP protocol class: the three rules of the module docstring.

    `limits` is None on the classes below: the first connection in a process reads them from CERTQ_WEB_*
    (what worker processes need); `guarded_protocol(web)` makes a subclass with them set.
    """

    limits: ClassVar[Limits | None] = None

    # set by uvicorn's protocol
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    server_state: ServerState
    client: tuple[str, int] | None
    cycle: Any
    flow: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls.limits is None:
            cls.limits = Limits.of(WebConfig.from_env())
        self._limits: Limits = cls.limits
        self._awaiting_head = True  # no complete head since connect or since the last response ended
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._received = 0  # bytes read on this connection
        self._window_start = 0  # self._received when the current body window began
        self._ip: str | None = None  # set while this connection counts against its IP's cap
        self._head_bytes = 0  # bytes of the current head parsed so far
        self._oversized = False  # the head passed MAX_HEAD_BYTES: answered 431, closing

    # --- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        cap = self._limits.max_per_ip
        if self.client and self._limits.capped(self.client[0]):
            ip = self.client[0]
            table = _open_per_ip.setdefault(self.server_state, {})
            held = table.get(ip, 0)
            if held >= cap:
                self._refuse(ip, cap)
                return
            table[ip] = held + 1
            self._ip = ip
        if self._limits.header_timeout:
            self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        super().data_received(data)  # type: ignore[misc]
        if not self._limits.header_timeout or self.transport.is_closing():
            return
        if self._awaiting_head:
            if self._head_timer is None:  # the first byte of a head (a new connection's timer is running)
                self._arm_head_timer()
        elif self._body_timer is None and self._body_pending():
            self._window_start = self._received
            self._body_timer = self.loop.call_later(self._limits.header_timeout, self._check_body)

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        super().connection_lost(exc)  # type: ignore[misc]

    # --- hooks into uvicorn's protocols --------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        # A pipelined request may have started inside; otherwise the next head is awaited (its deadline
        # starts with its first byte: until then uvicorn's keep-alive timeout applies).
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._awaiting_head = True
            self._head_bytes = 0

    def handle_websocket_upgrade(self, *args: Any, **kwargs: Any) -> None:
        self._leave()
        super().handle_websocket_upgrade(*args, **kwargs)  # type: ignore[misc]

    def _close_oversized_head(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(_TOO_LARGE_HEAD)
            self.transport.close()

    def _head_arrived(self) -> None:
        self._awaiting_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    # --- the rules -----------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self._limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            log.debug("closing %s: no complete request head within %.1f s", self._peer(), self._limits.header_timeout)
            self.transport.close()

    def _body_pending(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_complete and not cycle.disconnected

    def _check_body(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._awaiting_head or not self._body_pending():
            return
        window = self._limits.header_timeout
        if not self.flow.read_paused and not self.cycle.waiting_for_100_continue:
            need = max(1, int(self._limits.min_body_rate * window))
            if self._received - self._window_start < need:
                log.debug("closing %s: request body slower than %d bytes in %.1f s", self._peer(), need, window)
                self.transport.close()
                return
        self._window_start = self._received
        self._body_timer = self.loop.call_later(window, self._check_body)

    def _refuse(self, ip: str, cap: int) -> None:
        self.transport.write(REFUSAL)
        self.transport.close()
        _refusals["count"] += 1
        now = time.monotonic()
        if now - _refusals["logged_at"] >= REFUSAL_LOG_EVERY_S:
            log.warning(
                "refused %d connection(s) over the cap of %d per IP (CERTQ_WEB_MAX_CONNECTIONS_PER_IP); last from %s",
                _refusals["count"],
                cap,
                ip,
            )
            _refusals["count"], _refusals["logged_at"] = 0, now

    def _leave(self) -> None:
        """Stop this connection's timers and give back its place in its IP's count (once)."""
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._awaiting_head = False
        if self._ip is not None:
            table = _open_per_ip.get(self.server_state)
            if table is not None:
                left = table.get(self._ip, 0) - 1
                if left > 0:
                    table[self._ip] = left
                else:
                    table.pop(self._ip, None)
            self._ip = None

    def _peer(self) -> str:
        return "%s:%d" % self.client if self.client else "a client"


class GuardedH11Protocol(SlowClientGuard, H11Protocol):
    """uvicorn's h11 protocol with the slow-client rules."""

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # h11 produced a Request: a whole head is in
            self._head_arrived()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed: h11 only
    GuardedHttpToolsProtocol: type[asyncio.Protocol] | None = None
else:

    class GuardedHttpToolsProtocol(SlowClientGuard, HttpToolsProtocol):  # type: ignore[no-redef]
        """uvicorn's httptools protocol with the slow-client rules."""

        # httptools itself sets no bound on a head (h11 resets at about 16 KiB): count its parts as they are
        # parsed, and past MAX_HEAD_BYTES answer 431 and stop (an exception from a callback stops the parser;
        # uvicorn's own 400 for it is then not sent).

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._head_arrived()
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            if not self._oversized:
                super().send_400_response(msg)

        def _count_head(self, n: int) -> None:
            self._head_bytes += n
            if self._head_bytes > self._limits.max_head_bytes:
                self._oversized = True
                self._close_oversized_head()
                raise _HeadTooLarge


def guarded_protocol(web: WebConfig | None = None, http: str = "auto") -> type[asyncio.Protocol]:
    """The class to pass as `uvicorn.Config(http=...)`: httptools if installed ("auto"), else h11.

    With `web`, a subclass bound to its limits (for a server in this process). Without, the module's class,
    which reads CERTQ_WEB_* in the process that serves: uvicorn pickles its config for --workers, and a class
    travels by name, so each worker imports this module and reads its own environment.
    """
    if http not in ("auto", "httptools", "h11"):
        raise ValueError(f"unknown HTTP implementation {http!r} (auto, httptools, h11)")
    if http == "h11" or GuardedHttpToolsProtocol is None:
        if http == "httptools":
            raise ValueError("httptools is not installed")
        base: type[SlowClientGuard] = GuardedH11Protocol
    else:
        base = GuardedHttpToolsProtocol  # type: ignore[assignment]
    if web is None:
        return base  # type: ignore[return-value]
    bound = type(base.__name__, (base,), {"limits": Limits.of(web), "__module__": __name__})
    return bound  # type: ignore[return-value]
