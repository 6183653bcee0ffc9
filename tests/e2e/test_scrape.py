"""The exporter's memory on a real tree, with its clock moved by the test: a service whose
files did not change is rendered again when the clock alone changes what it shows (its renew
point, its expiry), and only then."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import RunMgr

from sslm_tasks.cli.scrape import HEALTH, READY, Survey
from sslm_tasks.crypto.inspect import load_certs
from sslm_tasks.lifecycle.workspace import utc_now


def shown(survey: Survey, family: tuple[str, str, tuple[str, ...]], **labels: str) -> float:
    text = survey.collect().decode()
    for metrics in text_string_to_metric_families(text):
        for sample in metrics.samples:
            if sample.name == family[0] and sample.labels == labels:
                return sample.value
    raise AssertionError(f"{family[0]} {labels} not shown")


def test_the_clock_alone_turns_a_service_expiring_then_expired(
    topdir: Path, mgr: RunMgr, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an issued tree, and an exporter whose clock the test sets
    assert mgr("-renew").returncode == 0
    monkeypatch.setenv("SSL_MGR_TOPDIR", str(topdir))
    now = [utc_now()]
    survey = Survey(clock=lambda: now[0])
    web = {"group": "example.com", "service": "web-ec"}
    assert shown(survey, HEALTH, health="ok", **web) == 1
    cert = load_certs((topdir / "certs/example.com/web-ec/curr/cert.pem").read_bytes())[0]
    expires: datetime = cert.not_valid_after_utc

    # When the clock passes web-ec's renew point (30 days before it expires)
    now[0] = expires - timedelta(days=29)

    # Then it is expiring, though none of its files changed
    assert shown(survey, HEALTH, health="expiring", **web) == 1
    assert shown(survey, READY, condition="False", **web) == 1
    # and once it expired, still not ready
    now[0] = expires + timedelta(seconds=1)
    assert shown(survey, READY, condition="False", **web) == 1
    assert shown(survey, HEALTH, health="expiring", **web) == 1
