"""When an ACME service renews: the CA's ARI window (RFC 9773) and the backoff after a failed
order, against the lab's Pebble behind a front (``lab_acme_front``) that serves renewal
information and can rate-limit newOrder.

``sslm-mgr -renew`` runs as users run it; checks at other times run the same in-process
pipeline (``run_in_process``) with the workspace's clock moved, as ``sslm-mgr`` has no clock
switch. Run under the lab lock:
``flock /tmp/sslm-lab.lock .venv/bin/pytest -q tests/integration/test_acme_renew_timing.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from lab_acme import mgr, service_dir
from lab_acme_front import AcmeFront, Reply, acme_front
from lab_pebble import Pebble
from services import RedisServer, WorkerStarter

from sslm_tasks.acme.renewal_info import TEMPORARY_RECHECK, cert_id
from sslm_tasks.cli.local import run_in_process
from sslm_tasks.cli.run import RunReport, RunRequest
from sslm_tasks.config.load import load_config
from sslm_tasks.lifecycle.workspace import RunOptions, Workspace

pytestmark = pytest.mark.integration

NAME = "example.test:web"


@pytest.fixture
def front(pebble: Pebble) -> Iterator[AcmeFront]:
    with acme_front(pebble) as started:
        yield started


@pytest.fixture
def topdir(acme_topdir: Path, pebble: Pebble, front: AcmeFront) -> Path:
    """The ACME topdir, its CA reached through the front."""
    ca_info = acme_topdir / "conf.d/ca-info.conf"
    ca_info.write_text(ca_info.read_text().replace(pebble.directory_url, front.directory_url))
    return acme_topdir


def curr_id(topdir: Path) -> str:
    """The ARI certificate ID of ``curr``."""
    pem = (service_dir(topdir) / "curr/cert.pem").read_bytes()
    return cert_id(x509.load_pem_x509_certificate(pem))


def state_of(topdir: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((service_dir(topdir) / "state.json").read_text())
    return state


def renew_at(topdir: Path, moment: datetime, *, force: bool = False) -> RunReport:
    """``-renew`` in-process with the clock at ``moment``."""
    config, refs = load_config([NAME], conf_dir=topdir / "conf.d")
    ws = Workspace(config=config, options=RunOptions(force=force), clock=lambda: moment)
    return run_in_process(ws, refs, RunRequest(renew=True))


def actions(report: RunReport) -> str:
    return "\n".join(report.outcomes[0].actions)


def issue_first(topdir: Path, front: AcmeFront) -> str:
    """The first certificate (no curr: no renewal info asked, no ``replaces``); its ID."""
    first = mgr(topdir, "-renew", NAME)
    assert first.returncode == 0, first.stdout + first.stderr
    assert front.renewal_info_asked() == []
    assert [order.get("replaces") for order in front.new_orders()] == [None]
    return curr_id(topdir)


def test_a_window_that_has_passed_renews_now_and_the_order_replaces_curr(
    topdir: Path, front: AcmeFront
) -> None:
    # Given a current certificate, and a CA whose window for it has passed
    old = issue_first(topdir, front)
    now = datetime.now(UTC)
    front.window(now - timedelta(days=2), now - timedelta(days=1))

    # When the service is renewed
    result = mgr(topdir, "-renew", NAME)

    # Then the check asked the CA about curr and renewed at once
    assert result.returncode == 0, result.stdout + result.stderr
    assert "renewing: due: in the CA's renewal window" in result.stdout, result.stdout
    assert front.renewal_info_asked() == [old]
    # and the new order told the CA which certificate it replaces
    assert front.new_orders()[-1].get("replaces") == old
    assert (service_dir(topdir) / "next").exists()


def test_a_future_window_is_drawn_once_and_asked_again_only_after_retry_after(
    topdir: Path, front: AcmeFront
) -> None:
    # Given a current certificate, and a window 10 days ahead, to be asked again in 6 hours
    old = issue_first(topdir, front)
    now = datetime.now(UTC)
    front.window(now + timedelta(days=10), now + timedelta(days=12), retry_after="21600")

    # When the service is checked
    first = renew_at(topdir, now)

    # Then it is not due; the reason names the time drawn in the CA's window
    assert first.ok and not first.outcomes[0].changed
    assert "in the CA's renewal window" in actions(first), actions(first)
    drawn = state_of(topdir)["ari"]["renew_at"]
    # and -s shows it, without asking the CA
    status = mgr(topdir, "-s", NAME)
    assert "ARI : renew at" in status.stdout, status.stdout
    assert front.renewal_info_asked() == [old]

    # When it is checked again before the CA's Retry-After, even once the CA moved its window
    second = renew_at(topdir, now + timedelta(hours=5))
    front.window(now - timedelta(days=2), now - timedelta(days=1), retry_after="21600")
    third = renew_at(topdir, now + timedelta(hours=5, minutes=59))

    # Then the CA is not asked, and the same draw decides
    assert front.renewal_info_asked() == [old]
    assert not second.outcomes[0].changed and not third.outcomes[0].changed
    assert state_of(topdir)["ari"]["renew_at"] == drawn

    # When the Retry-After has passed
    due = renew_at(topdir, now + timedelta(hours=6))

    # Then the CA is asked again, its moved window makes the service due, and the order
    # replaces curr
    assert due.ok, actions(due)
    assert front.renewal_info_asked() == [old, old]
    assert "renewing: due: in the CA's renewal window" in actions(due), actions(due)
    assert front.new_orders()[-1].get("replaces") == old


def test_a_failing_renewal_info_endpoint_leaves_the_lifetime_rule(
    topdir: Path, front: AcmeFront
) -> None:
    # Given a current certificate, and a CA whose renewal information fails
    old = issue_first(topdir, front)
    front.renewal_reply = Reply(500, {"Content-Type": "text/plain"}, b"internal error")
    now = datetime.now(UTC)

    # When the service is renewed
    result = mgr(topdir, "-renew", NAME)

    # Then the check does not fail: the lifetime rule finds the 5-year certificate not due
    assert result.returncode == 0, result.stdout + result.stderr
    assert "renew in" in result.stdout and "renewing" not in result.stdout, result.stdout
    assert front.renewal_info_asked() == [old]
    # and the CA is asked again within the hour
    plan = state_of(topdir)["ari"]
    assert plan["window"] is None
    recheck = datetime.fromisoformat(plan["next_check"])
    assert now + TEMPORARY_RECHECK <= recheck <= datetime.now(UTC) + TEMPORARY_RECHECK


def rate_limited_first_order(topdir: Path, front: AcmeFront) -> None:
    """The first order answered 429 with Retry-After: 3600: the run fails, naming it."""
    front.limit_orders = 1
    failed = mgr(topdir, "-renew", NAME)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "creating the order: rateLimited" in failed.stdout, failed.stdout
    assert len(front.new_orders()) == 1


def test_a_rate_limited_order_waits_for_retry_after_unless_forced(
    topdir: Path, front: AcmeFront
) -> None:
    # Given a run whose order the CA refused with 429, Retry-After: 3600
    rate_limited_first_order(topdir, front)
    asked = len(front.seen)

    # When the service is renewed again
    again = mgr(topdir, "-renew", NAME)

    # Then the CA is not contacted, and the reason names when the next attempt may start
    assert again.returncode == 0, again.stdout + again.stderr
    assert "next attempt after" in again.stdout, again.stdout
    assert "(the CA's Retry-After)" in again.stdout, again.stdout
    assert len(front.seen) == asked
    # and -s says so
    status = mgr(topdir, "-s", NAME)
    assert "next attempt : 1 failed attempt; next attempt after" in status.stdout, status.stdout

    # When the renewal is forced
    forced = mgr(topdir, "-renew", "-f", NAME)

    # Then the build resumes and the certificate is issued; the count is reset
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert (service_dir(topdir) / "curr/cert.pem").is_file()
    assert state_of(topdir)["backoff"] is None


def test_a_rate_limited_order_is_retried_once_its_retry_after_has_passed(
    topdir: Path, front: AcmeFront
) -> None:
    # Given a run whose order the CA refused with 429, Retry-After: 3600
    rate_limited_first_order(topdir, front)

    # When the service is checked an hour later
    later = renew_at(topdir, datetime.now(UTC) + timedelta(hours=1, minutes=1))

    # Then the build resumes with a new order and succeeds; the count is reset
    assert later.ok, actions(later)
    assert "renewing: resuming build" in actions(later)
    assert len(front.new_orders()) == 2
    assert (service_dir(topdir) / "curr/cert.pem").is_file()
    assert state_of(topdir)["backoff"] is None


def test_workers_record_the_rate_limit_and_the_next_check_waits_for_it(
    topdir: Path, front: AcmeFront, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a worker on every queue, and a CA that rate-limits the first order
    workers.start("all@timing", pool="prefork", concurrency=2, env={"SSL_MGR_TOPDIR": str(topdir)})
    front.limit_orders = 1
    broker = {"SSLM_BROKER_URL": redis_server.url()}

    # When the CLI enqueues the renewal
    failed = mgr(topdir, "-renew", NAME, env=broker)

    # Then the order task fails once, without retrying into the limit, and the failure holds
    # the CA's Retry-After
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert len(front.new_orders()) == 1
    backoff = state_of(topdir)["backoff"]
    assert backoff["failures"] == 1 and backoff["ca_asked"] is True

    # When the renewal is enqueued again
    asked = len(front.seen)
    again = mgr(topdir, "-renew", NAME, env=broker)

    # Then the workers' check waits for it and the CA is not contacted
    assert "next attempt after" in again.stdout, again.stdout + again.stderr
    assert len(front.seen) == asked
