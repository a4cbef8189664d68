"""The job engine's settings, validated once: `JobsConfig.from_env()` reads CERTQ_JOBS_* (and
CERTQ_MONITOR_PER_TICK); a bad value is a start-up error naming the variable, never a silent default.

    CERTQ_JOBS_LEASE_S              30     a worker's hold on a job, renewed at every chunk; a dead worker's job
                                           is taken over this long after its last renewal
    CERTQ_JOBS_TICK_CRON            * * * * * */10   the periodic tick (cron, 6th column = seconds)
    CERTQ_JOBS_LOOKUP_CONCURRENCY   16     lookups of one job in flight at once, per worker
    CERTQ_JOBS_LOOKUP_DEADLINE_S    60     how long a job's lookup may wait for rate-limit slots and answers
    CERTQ_MONITOR_PER_TICK          2000   monitored members queued per tick at most
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aggregator.config import ConfigError

ENV = {
    "CERTQ_JOBS_LEASE_S": "lease_s",
    "CERTQ_JOBS_TICK_CRON": "tick_cron",
    "CERTQ_JOBS_LOOKUP_CONCURRENCY": "lookup_concurrency",
    "CERTQ_JOBS_LOOKUP_DEADLINE_S": "lookup_deadline_s",
    "CERTQ_MONITOR_PER_TICK": "monitor_per_tick",
}


class JobsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lease_s: float = Field(30.0, ge=1, le=3600)
    tick_cron: str = "* * * * * */10"
    lookup_concurrency: int = Field(16, ge=1, le=256)
    lookup_deadline_s: float = Field(60.0, gt=0, le=3600)
    monitor_per_tick: int = Field(2000, ge=1, le=1_000_000)

    @field_validator("tick_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        import croniter

        if not croniter.croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r}")
        return value

    @property
    def chunk(self) -> int:
        """Members verified, then stored with the job's progress, at a time: small enough that a taken-over job
        redoes little, large enough to keep every lookup slot busy."""
        return min(max(8, 2 * self.lookup_concurrency), 200)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobsConfig:
        env = os.environ if environ is None else environ
        values = {key: env[name] for name, key in ENV.items() if env.get(name)}
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            names = {key: name for name, key in ENV.items()}
            where = ", ".join(f"{names.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}" for err in e.errors())
            raise ConfigError([f"job settings: {where}"]) from e
