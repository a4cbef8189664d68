"""The job engine's settings: defaults, environment, and a bad value refused naming its variable."""

from __future__ import annotations

import pytest

from aggregator.config import ConfigError
from aggregator.jobs.config import JobsConfig


def test_defaults_and_the_chunk_they_give() -> None:
    config = JobsConfig.from_env({})
    assert (config.lease_s, config.lookup_concurrency, config.lookup_deadline_s) == (30.0, 16, 60.0)
    assert config.chunk == 32
    assert JobsConfig.from_env({"CERTQ_JOBS_LOOKUP_CONCURRENCY": "200"}).chunk == 200


def test_a_bad_value_is_a_configuration_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as e:
        JobsConfig.from_env({"CERTQ_JOBS_LEASE_S": "soon", "CERTQ_JOBS_TICK_CRON": "every minute"})
    assert "CERTQ_JOBS_LEASE_S" in str(e.value) and "CERTQ_JOBS_TICK_CRON" in str(e.value)
    with pytest.raises(ConfigError, match="CERTQ_MONITOR_PER_TICK"):
        JobsConfig.from_env({"CERTQ_MONITOR_PER_TICK": "0"})
