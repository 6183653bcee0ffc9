"""A service's health is judged at its renew target, whatever the random draw of the run
that judges it: a notification, ``-s`` and the metrics must not flip between "expiring" and
"ok" from one look to the next while a service is inside its renew spread."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from support import RunMgr

from sslm_tasks.config.load import load_config
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.current import renew_decision
from sslm_tasks.lifecycle.health import health
from sslm_tasks.lifecycle.workspace import Workspace, utc_now
from sslm_tasks.renewal import MiddleOfSpread
from sslm_tasks.store.layout import ServiceRef

WEB = ServiceRef("example.com", "web-ec")


class Edge(random.Random):
    """Draws the low or the high end of every range: one of the two extreme renew points."""

    def __init__(self, *, high: bool) -> None:
        super().__init__()
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


@pytest.mark.parametrize("high", [False, True], ids=["early draw", "late draw"])
def test_the_verdict_inside_the_spread_does_not_depend_on_the_draw(
    topdir: Path, mgr: RunMgr, high: bool
) -> None:
    # Given an issued service that renews 30 days before expiry, give or take 5, looked at
    # just after that target
    service_file = topdir / "conf.d/example.com/web-ec"
    service_file.write_text(
        service_file.read_text().replace(
            "signing_ca = 'my-int'\n",
            "signing_ca = 'my-int'\nrenew_expire_days = 30\nrenew_expire_days_spread = 10\n",
        )
    )
    assert mgr("-renew", "-roll").returncode == 0
    config, _ = load_config([str(WEB)], conf_dir=topdir / "conf.d")
    now = utc_now()
    target = renew_decision(
        ServiceContext(Workspace(config=config, clock=lambda: now), WEB), rng=MiddleOfSpread()
    )
    assert target.days_to_renew is not None and target.spread_days > 0
    moment = now + timedelta(days=target.days_to_renew, minutes=1)
    # When a run whose draw is the earliest or the latest renew point judges it
    ws = Workspace(config=config, clock=lambda: moment, rng=Edge(high=high))
    other = Workspace(config=config, clock=lambda: moment, rng=Edge(high=not high))
    drawn = renew_decision(ServiceContext(ws, WEB)).due
    assert drawn != renew_decision(ServiceContext(other, WEB)).due  # the draws disagree
    verdict = health(ServiceContext(ws, WEB, repair=False), {})
    # Then both say what the target says: past it, the certificate is expiring
    assert verdict.word == "expiring", verdict
