"""Settings of webhook delivery, as validated data.

    WebhookConfig()                                          # the defaults below
    WebhookConfig(allow=["127.0.0.1/32", "hooks.internal"])  # let these private addresses / names through
    WebhookConfig.from_env()                                 # CERTQ_WEBHOOK_* environment variables

Environment (for `certq serve` and `certq worker`): CERTQ_WEBHOOK_ALLOW (comma-separated CIDRs or host names that
may be called although they resolve to loopback/private addresses), CERTQ_WEBHOOK_TIMEOUT_S,
CERTQ_WEBHOOK_CONCURRENCY, CERTQ_WEBHOOK_RETRY_PERIOD_S.

The retry schedule: attempt n failed -> wait `first_retry_s * 2**(n-1)` (at most `max_retry_s`), give or take
`jitter` (0.2: +-20 %), or longer when the receiver's Retry-After asks for it (honoured up to
`max_retry_after_s`); a delivery whose next attempt would fall after `retry_period_s` (3 days) from its creation
fails for good. With the defaults that is 30 s, 1, 2, 4 ... 512 min, then every 12 h: about 16 attempts.
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, field_validator

_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # CIDRs or host names a webhook may point at even though they resolve to a refused address (loopback,
    # private, link-local ...): an internal receiver of the employer's, the tests' loopback receiver.
    allow: tuple[str, ...] = ()
    timeout_s: float = Field(10.0, gt=0, le=60)  # one request, connect to last byte of the answer's head
    concurrency: int = Field(16, ge=1, le=256)  # requests in flight per dispatching process
    per_endpoint: int = Field(2, ge=1, le=32)  # of which to one endpoint: a slow receiver holds only these
    round_s: float = Field(8.0, gt=0, le=600)  # a tick claims new deliveries for this long, then returns
    lease_s: float = Field(60.0, gt=0)  # a claimed delivery is this worker's for this long (then anyone's)
    first_retry_s: float = Field(30.0, gt=0)
    max_retry_s: float = Field(12 * 3600.0, gt=0)
    jitter: float = Field(0.2, ge=0, lt=1)
    retry_period_s: float = Field(3 * 86400.0, gt=0)  # a delivery is retried for this long, then fails
    max_retry_after_s: float = Field(24 * 3600.0, ge=0)  # a longer Retry-After is cut to this
    events_per_tick: int = Field(500, ge=1, le=100_000)  # events turned into deliveries per endpoint per tick
    rotation_grace_s: float = Field(24 * 3600.0, ge=0)  # after a rotation the old secret signs too, this long
    max_endpoints: int = Field(20, ge=1, le=1000)  # per organisation

    @field_validator("allow", mode="before")
    @classmethod
    def _allow(cls, v: object) -> tuple[str, ...]:
        items = [v] if isinstance(v, str) else list(v or [])  # type: ignore[call-overload]
        out: list[str] = []
        for raw in items:
            item = str(raw).strip().lower()
            if not item:
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                if not _HOST.match(item):
                    raise ValueError(f"not a CIDR or host name: {raw!r}") from None
            out.append(item)
        return tuple(out)

    @cached_property
    def allowed_networks(self) -> tuple[Network, ...]:
        nets: list[Network] = []
        for item in self.allow:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                continue
        return tuple(nets)

    @cached_property
    def allowed_hosts(self) -> frozenset[str]:
        return frozenset(i.rstrip(".") for i in self.allow if not _is_network(i))

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1, 2 ...), before jitter."""
        return min(self.first_retry_s * 2 ** min(attempt - 1, 60), self.max_retry_s)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WebhookConfig:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get("CERTQ_WEBHOOK_ALLOW"):
            values["allow"] = [c for c in env["CERTQ_WEBHOOK_ALLOW"].split(",") if c.strip()]
        for name, key in (
            ("CERTQ_WEBHOOK_TIMEOUT_S", "timeout_s"),
            ("CERTQ_WEBHOOK_CONCURRENCY", "concurrency"),
            ("CERTQ_WEBHOOK_RETRY_PERIOD_S", "retry_period_s"),
        ):
            if env.get(name):
                values[key] = env[name]
        return cls.model_validate(values)


def _is_network(item: str) -> bool:
    try:
        ipaddress.ip_network(item, strict=False)
    except ValueError:
        return False
    return True
