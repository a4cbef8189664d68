"""The web service's settings: read from CERTQ_WEB_* variables, validated, and applied at start-up."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from pydantic import ValidationError

from aggregator.web.config import WebConfig
from tests.web_support import build_env, quiet_config, web_client


def test_settings_come_from_the_environment() -> None:
    web = WebConfig.from_env(
        {
            "CERTQ_WEB_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1",
            "CERTQ_WEB_IP_PER_MINUTE": "30",
            "CERTQ_WEB_FREEZE_GC": "1",
        }
    )
    assert web.trusted_proxies == ["10.0.0.0/8", "192.168.1.1"]
    assert web.ip_per_minute == 30 and web.key_per_minute == WebConfig().key_per_minute
    assert web.freeze_gc is True and WebConfig.from_env({}).freeze_gc is False


@pytest.mark.parametrize(
    ("var", "value"),
    [("CERTQ_WEB_TRUSTED_PROXIES", "not-a-network"), ("CERTQ_WEB_IP_PER_MINUTE", "-1"), ("CERTQ_WEB_DEADLINE_S", "0")],
)
def test_a_bad_setting_is_refused_naming_it(var: str, value: str) -> None:
    with pytest.raises(ValidationError) as e:
        WebConfig.from_env({var: value})
    assert WebConfig.model_fields.keys() & {str(err["loc"][0]) for err in e.value.errors()}


@pytest.mark.parametrize("freeze", [False, True])
def test_a_server_process_freezes_what_start_up_made_out_of_the_collectors_way(tmp_path: Path, freeze: bool) -> None:
    env = build_env(tmp_path)
    gc.unfreeze()
    try:
        with web_client(env, quiet_config(freeze_gc=freeze)) as client:
            assert client.get("/healthz").status_code == 200
            assert (gc.get_freeze_count() > 0) is freeze
    finally:
        gc.unfreeze()
