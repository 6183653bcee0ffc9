"""How long a worker keeps trying to publish the next step, and to store a result, while the
broker is away: as long as SSLM_BROKER_OUTAGE_S says (Celery's default gives up after 0.2 s)."""

from __future__ import annotations

import pytest

from sslm_tasks.app import (
    OUTAGE_FIRST_RETRY_S,
    OUTAGE_RETRY_MAX_S,
    OUTAGE_RETRY_STEP_S,
    celery_config,
    outage_retries,
)
from sslm_tasks.config.settings import load_settings


def covered(tries: int) -> float:
    """Seconds ``tries`` tries at the outage intervals wait in all."""
    waited, pause = 0.0, OUTAGE_FIRST_RETRY_S
    for _ in range(tries):
        waited += pause
        pause = min(pause + OUTAGE_RETRY_STEP_S, OUTAGE_RETRY_MAX_S)
    return waited


@pytest.mark.parametrize("outage_s", [5, 60, 300, 3600])
def test_the_retries_cover_the_outage_and_not_much_more(outage_s: float) -> None:
    tries = outage_retries(outage_s)
    assert covered(tries) >= outage_s
    assert covered(tries - 1) < outage_s


def test_publishing_and_result_writes_retry_for_the_configured_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSLM_BROKER_URL", "redis://127.0.0.1:6399/0")
    monkeypatch.setenv("SSLM_BROKER_OUTAGE_S", "120")
    config = celery_config(load_settings())
    policy = config["task_publish_retry_policy"]
    assert config["task_publish_retry"] is True
    assert policy["max_retries"] == outage_retries(120)
    assert covered(policy["max_retries"]) >= 120
    assert config["result_backend_always_retry"] is True
    assert config["result_backend_max_retries"] == outage_retries(120)
