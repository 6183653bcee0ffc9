"""ACME dns-01 issuance end to end, in-process: ``sslm-mgr -renew`` of a service signed by the
lab's Pebble, its challenges published through the lab's BIND (primary and secondary).

Run under the lab lock:
``flock /tmp/sslm-lab.lock .venv/bin/pytest -q tests/integration/test_acme_issue.py``.
"""

from __future__ import annotations

import json
import logging
import stat
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lab_acme import (
    APEXES,
    SVC,
    enqueue,
    mgr,
    ordered_build,
    records_left,
    set_dns_check_delay,
    zones_awaiting_refresh,
)
from lab_dns import DnsLab
from lab_pebble import Pebble
from services import RedisServer, WorkerStarter, wait_for

from sslm_tasks.acme.orders import OrderFailed
from sslm_tasks.cli import local
from sslm_tasks.cli.local import run_in_process
from sslm_tasks.cli.run import RunRequest
from sslm_tasks.config.load import load_config
from sslm_tasks.dns.challenges import parse_include_text
from sslm_tasks.lifecycle import acme_sign
from sslm_tasks.lifecycle.challenges.dns_include import REPUSH_AFTER_S
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import RunOptions, Workspace, utc_now
from sslm_tasks.store.layout import ServiceRef

pytestmark = pytest.mark.integration


def web_workspace(
    topdir: Path, *, clock: Callable[[], datetime] = utc_now
) -> tuple[Workspace, ServiceRef]:
    """A workspace for ``example.test:web`` of ``topdir``, in-process."""
    config, refs = load_config(["example.test:web"], conf_dir=topdir / "conf.d")
    return Workspace(config=config, clock=clock), refs[0]


def test_dns01_certificate_with_a_wildcard_and_two_apexes(
    acme_topdir: Path, dns_lab: DnsLab, pebble: Pebble
) -> None:
    # When the service is renewed the first time
    first = mgr(acme_topdir, "-renew", "example.test:web")

    # Then it is issued by Pebble, for every name, and rolled into curr
    assert first.returncode == 0, first.stdout + first.stderr
    curr = acme_topdir / "certs" / SVC / "curr"
    assert pebble.verify_output(curr).strip().endswith("OK")
    # and the stored intermediate is Pebble's
    assert pebble.intermediates_pem().strip() in (curr / "chain.pem").read_bytes()
    text = subprocess.run(
        ["openssl", "x509", "-in", str(curr / "cert.pem"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("DNS:example.test", "DNS:*.example.test", "DNS:www.other.test"):
        assert name in text
    # and the account is under cb/, its key readable by the owner only
    keys = list((acme_topdir / "certs" / SVC / "cb").rglob("private_key.json"))
    assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    # and the challenge records are gone again, from files the zones still include, and the
    # refresh at the end of the run took them out of DNS too
    assert records_left(dns_lab) == {apex: [] for apex in APEXES}
    assert zones_awaiting_refresh(acme_topdir) == []
    assert dns_lab.refresh(*APEXES).returncode == 0
    # and a second renew finds nothing due
    issued = curr.resolve()
    again = mgr(acme_topdir, "-renew", "example.test:web")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "renewing" not in again.stdout, again.stdout
    assert curr.resolve() == issued


def test_records_the_zone_does_not_serve_fail_the_build_keep_curr_and_resume(
    acme_topdir: Path,
    dns_lab: DnsLab,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a current certificate
    assert mgr(acme_topdir, "-renew", "example.test:web").returncode == 0
    curr = acme_topdir / "certs" / SVC / "curr"
    before = (curr / "cert.pem").read_bytes()
    # and an acme_dir the zones do not include
    elsewhere = tmp_path / "not-included"
    elsewhere.mkdir()
    main = acme_topdir / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text().replace(str(dns_lab.acme_dir), str(elsewhere)))

    # When a forced renewal runs in-process with a short bound
    monkeypatch.setenv("SSLM_ACME_WAIT_S", "3")
    monkeypatch.setattr(local, "POLL_S", 0.2)
    config, refs = load_config(["example.test:web"], conf_dir=acme_topdir / "conf.d")
    ws = Workspace(config=config, options=RunOptions(force=True))
    report = run_in_process(ws, refs, RunRequest(renew=True))

    # Then it fails naming the step and the server that lacks the records
    assert not report.ok
    failure = " ".join(report.outcomes[0].actions)
    assert "acme_propagated: not done after 3 s" in failure, failure
    assert f"{dns_lab.primary}" in failure and "TXT lacks" in failure, failure
    # and curr is what it was, the order kept for the next run
    assert (curr / "cert.pem").read_bytes() == before
    assert not (acme_topdir / "certs" / SVC / "next").exists()
    state = json.loads((acme_topdir / "certs" / SVC / "state.json").read_text())
    order_url = state["order"]["order"]["url"]

    # When the setup is repaired and the service renewed again once the first failure's
    # backoff (1 minute) has passed (no -f: the build resumes)
    main.write_text(main.read_text().replace(str(elsewhere), str(dns_lab.acme_dir)))
    config, refs = load_config(["example.test:web"], conf_dir=acme_topdir / "conf.d")
    after_backoff = datetime.now(UTC) + timedelta(minutes=2)
    # Only what the resumed run logs: the first run's "created order" is captured too whenever
    # an earlier test on the same worker left the loggers at INFO.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        resumed = run_in_process(
            Workspace(config=config, clock=lambda: after_backoff), refs, RunRequest(renew=True)
        )

    # Then the same order finishes: no second order for the same build
    assert resumed.ok, resumed.outcomes[0].actions
    assert f"resumed order {order_url}" in caplog.text
    assert "created order" not in caplog.text
    assert (acme_topdir / "certs" / SVC / "next").exists()
    assert records_left(dns_lab) == {apex: [] for apex in APEXES}


def test_workers_issue_the_same_certificate_through_the_acme_tasks(
    acme_topdir: Path, pebble: Pebble, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a worker on every queue, and dns_check_delay as a short first countdown
    set_dns_check_delay(acme_topdir, 1)
    worker = workers.start(
        "all@acme", pool="prefork", concurrency=2, env={"SSL_MGR_TOPDIR": str(acme_topdir)}
    )

    # When the CLI enqueues the renewal
    result = enqueue(acme_topdir, redis_server, "-renew", "example.test:web")

    # Then the ACME tasks ran between csr and store, and the chain verifies to Pebble's root
    assert result.returncode == 0, result.stdout + result.stderr
    curr = acme_topdir / "certs" / SVC / "curr"
    assert pebble.verify_output(curr).strip().endswith("OK")
    log = worker.service.log_text()
    for step in ("order", "publish", "propagated", "answer", "validated", "finalize"):
        assert f"example.test:web: step acme_{step}" in log, step
    state = json.loads((acme_topdir / "certs" / SVC / "state.json").read_text())
    assert state["order"] is None  # the finished order's record is gone
    # and the withdrawn records leave DNS with the debounced refresh after the renewal
    wait_for(
        "the refresh after the renewal",
        lambda: zones_awaiting_refresh(acme_topdir) == [],
        timeout_s=30,
        log=worker.service.log,
    )


def test_a_challenge_pebble_rejects_fails_the_order_and_withdraws_its_records(
    acme_topdir: Path, dns_lab: DnsLab
) -> None:
    # Given a build whose order was created and published, but answered before DNS had
    # the records (the lab's include is emptied: the CA finds no TXT value)
    ws, ref = web_workspace(acme_topdir)
    ordered_build(ws, ref)
    acme_sign.publish(ServiceContext(ws, ref))
    for apex in APEXES:
        dns_lab.acme_file(apex).write_text(";; emptied by the test\n")
    assert dns_lab.refresh(*APEXES).returncode == 0
    acme_sign.answer(ServiceContext(ws, ref))

    # When the authorizations are polled
    deadline = time.monotonic() + 30
    with pytest.raises(OrderFailed) as failed:
        while time.monotonic() < deadline:
            ready, _ = acme_sign.validated(ServiceContext(ws, ref))
            assert not ready
            time.sleep(0.2)

    # Then the order failed with Pebble's reason, its record is gone, so is every record
    assert "unauthorized" in str(failed.value) and "TXT" in str(failed.value), failed.value
    state = json.loads((acme_topdir / "certs" / SVC / "state.json").read_text())
    assert state["order"] is None
    store_file = acme_topdir / "certs/example.test/acme-challenge.example.test"
    assert parse_include_text(store_file.read_text(), source=store_file) == []
    # and the next run orders anew and succeeds
    report = run_in_process(ws, [ref], RunRequest(renew=True))
    assert report.ok, report.outcomes[0].actions
    assert (acme_topdir / "certs" / SVC / "curr").exists()


def test_records_a_primary_did_not_load_are_refreshed_again_after_a_while(
    acme_topdir: Path, dns_lab: DnsLab
) -> None:
    # Given a build whose records are published, and their zones refreshed
    clock = [datetime.now(UTC)]
    ws, ref = web_workspace(acme_topdir, clock=lambda: clock[0])
    ordered_build(ws, ref)
    acme_sign.publish(ServiceContext(ws, ref))
    assert ws.zone_refresher().refresh(APEXES) == sorted(APEXES)
    # and a primary that lost them: it loaded the zones without them, and the includes got them
    # back without a reload (as when the name server drops a reload that came during another)
    saved = {apex: dns_lab.acme_file(apex).read_text() for apex in APEXES}
    for apex in APEXES:
        dns_lab.acme_file(apex).write_text(";; emptied by the test\n")
    assert dns_lab.refresh(*APEXES).returncode == 0
    # (both zones: one that still served them would rightly not be refreshed again)
    wait_for(
        "the primary to drop the records",
        lambda: (
            not any(
                dns_lab.txt(f"_acme-challenge.{name}", dns_lab.primary)
                for name in ("example.test", "www.other.test")
            )
        ),
        timeout_s=10,
    )
    for apex, text in saved.items():
        dns_lab.acme_file(apex).write_text(text)

    # When propagation is checked soon after the publish, it waits and refreshes nothing
    calls = len(dns_lab.refresh_calls())
    ready, detail = acme_sign.propagated(ServiceContext(ws, ref))
    assert not ready and "again" not in detail, detail
    assert len(dns_lab.refresh_calls()) == calls

    # When it is checked once the re-push delay has passed
    clock[0] += timedelta(seconds=REPUSH_AFTER_S)
    ready, detail = acme_sign.propagated(ServiceContext(ws, ref))

    # Then the zones are refreshed again, once, and the records are served
    assert "refreshed example.test, other.test again" in detail, detail
    assert len(dns_lab.refresh_calls()) == calls + 1
    wait_for(
        "the records served again",
        lambda: acme_sign.propagated(ServiceContext(ws, ref))[0],
        timeout_s=15,
    )
    assert len(dns_lab.refresh_calls()) == calls + 1


def test_the_first_look_refreshes_what_publish_counted_and_the_target_stays_put(
    acme_topdir: Path, dns_lab: DnsLab
) -> None:
    # Given a build whose order is created
    ws, ref = web_workspace(acme_topdir)
    ordered_build(ws, ref)
    calls = len(dns_lab.refresh_calls())

    # When its records are published
    acme_sign.publish(ServiceContext(ws, ref))

    # Then nothing is refreshed yet: both zones wait for the propagation step's first look
    assert len(dns_lab.refresh_calls()) == calls
    assert zones_awaiting_refresh(acme_topdir) == sorted(APEXES)

    # When propagation is looked at until every server serves the records
    wait_for(
        "the records propagated",
        lambda: acme_sign.propagated(ServiceContext(ws, ref))[0],
        timeout_s=15,
    )

    # Then one refresh covered both zones, and the serials the records need are kept
    assert len(dns_lab.refresh_calls()) == calls + 1
    state = json.loads((acme_topdir / "certs" / SVC / "state.json").read_text())
    targets = state["order"]["dns"]["serials"]
    assert sorted(targets) == sorted(APEXES)
    assert all(target["serial"] == dns_lab.serial(apex=apex) for apex, target in targets.items())

    # When another change of both zones is counted (another order publishing)
    for apex in APEXES:
        ws.zone_refresher().note_change(apex)

    # Then this order's next look refreshes nothing for it, and is still ready
    ready, detail = acme_sign.propagated(ServiceContext(ws, ref))
    assert ready, detail
    assert len(dns_lab.refresh_calls()) == calls + 1
    assert zones_awaiting_refresh(acme_topdir) == sorted(APEXES)


def test_a_look_whose_records_a_refresh_carried_does_not_refresh_for_later_changes(
    acme_topdir: Path, dns_lab: DnsLab
) -> None:
    # Given a build whose records are published and carried by a refresh
    ws, ref = web_workspace(acme_topdir)
    ordered_build(ws, ref)
    acme_sign.publish(ServiceContext(ws, ref))
    assert ws.zone_refresher().refresh(APEXES) == sorted(APEXES)
    # and changes of both zones counted after it (other orders publishing)
    for apex in APEXES:
        ws.zone_refresher().note_change(apex)
    calls = len(dns_lab.refresh_calls())

    # When propagation is looked at until every server serves the records
    wait_for(
        "the records propagated",
        lambda: acme_sign.propagated(ServiceContext(ws, ref))[0],
        timeout_s=15,
    )

    # Then it refreshed nothing: the others' changes wait for their own orders
    assert len(dns_lab.refresh_calls()) == calls
    assert zones_awaiting_refresh(acme_topdir) == sorted(APEXES)
