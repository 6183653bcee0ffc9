"""ACME issuance when things go wrong, through the real pipeline: a worker SIGKILLed in the
middle of the ACME steps, a badNonce storm, a CA that is down, a secondary that never catches
up. Real Redis, real ``celery worker`` processes, the lab's Pebble and BIND (primary and
secondary); ``SSLM_ACME_WAIT_S`` keeps the bounds short.

Each failure must name its cause, leave ``curr`` as it was and keep the order to resume; each
recovery must finish the order it has, never order twice (Pebble's own log counts the orders).

Run under the lab lock:
``flock /tmp/sslm-lab.lock .venv/bin/pytest -q tests/integration/test_acme_failures.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from lab_acme import (
    enqueue,
    last_error,
    mgr,
    recorded_order,
    service_dir,
    set_dns_check_delay,
    use_pebble,
)
from lab_dns import DnsLab
from lab_pebble import Pebble, start_pebble
from services import FAST_REDELIVERY, RedisServer, Services, Worker, WorkerStarter, wait_for
from support import tree_snapshot

pytestmark = pytest.mark.integration

SERVICE = "example.test:web"
#: A badNonce storm that still lets every request through sooner or later: with the library's
#: one retry a request fails with probability 0.5², so a step of 4 to 6 signed requests
#: needs a few tries.
NONCE_STORM = 50
#: Through workers each failed try waits a countdown (0.25 s, later 0.5, 1, 2 s...): a milder
#: storm keeps the test short (a step of 6 requests then fails a try with probability 0.2).
WORKER_NONCE_STORM = 20
#: The bound of every ACME step in these tests (``SSLM_ACME_WAIT_S``): on workers the checks
#: come every 0.25 s, then after 1.5, 2.5 and 4.5 s, and the one after 8.5 s gives up.
SHORT_WAIT = {"SSLM_ACME_WAIT_S": "5"}


def kept(topdir: Path) -> dict[str, str]:
    """What a failed renewal must leave alone: ``curr`` (its link and files) and production."""
    curr = service_dir(topdir) / "curr"
    return {
        "curr": os.readlink(curr),
        **tree_snapshot(curr.resolve()),
        **{f"prod/{k}": v for k, v in tree_snapshot(topdir / "prod-certs").items()},
    }


def given_curr(topdir: Path) -> dict[str, str]:
    """Issue the service's first certificate in-process; what must then stay as it is."""
    first = mgr(topdir, "-renew", SERVICE)
    assert first.returncode == 0, first.stdout + first.stderr
    return kept(topdir)


def assert_nothing_half_done(topdir: Path, before: dict[str, str]) -> None:
    """``curr`` and production as they were, no ``next``, no signed certificate outside
    ``curr`` and no temp file anywhere: the failed build holds its key and CSR only."""
    assert kept(topdir) == before
    svc = service_dir(topdir)
    assert not (svc / "next").exists()
    curr = (svc / "curr").resolve()
    for version in (svc / "db").iterdir():
        if version != curr:
            assert not (version / "cert.pem").exists(), version
            assert not (version / "chain.pem").exists(), version
    leftovers = [p for p in topdir.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def start_worker(
    workers: WorkerStarter, topdir: Path, node: str, *, include: Sequence[str] = (), **env: str
) -> Worker:
    return workers.start(node, include=include, env={"SSL_MGR_TOPDIR": str(topdir), **env})


def status(topdir: Path) -> str:
    """``-s`` of the service after its build failed: failing, so exit status 1."""
    shown = mgr(topdir, "-s", SERVICE)
    assert shown.returncode == 1, shown.stderr
    assert "health : failing" in shown.stdout, shown.stdout
    return shown.stdout


def another_pebble(services: Services, dns_lab: DnsLab, workdir: Path, nonce_reject: int) -> Pebble:
    return start_pebble(
        services,
        workdir,
        dns_server=f"{dns_lab.primary}:{dns_lab.port}",
        nonce_reject=nonce_reject,
    )


# --------------------------------------------------------------------------- a worker killed


@pytest.mark.parametrize(
    ("step", "after"),
    [("acme_order", "1"), ("acme_propagated", "0")],
    ids=["right-after-ordering", "inside-the-propagation-wait"],
)
def test_a_worker_killed_in_an_acme_step_leaves_its_order_to_the_next_worker(
    acme_topdir: Path,
    pebble: Pebble,
    redis_server: RedisServer,
    workers: WorkerStarter,
    tmp_path: Path,
    step: str,
    after: str,
) -> None:
    # Given a worker that pauses in an ACME step once the order is created and recorded (right
    # after the order step, or in the wait for the records to reach every name server), and
    # fast redelivery
    set_dns_check_delay(acme_topdir, 1)
    marker = tmp_path / "ordered"
    slow = start_worker(
        workers,
        acme_topdir,
        "slow@acme",
        include=["slow_steps"],
        SLOW_STEP=step,
        SLOW_AFTER=after,
        SLOW_S="60",
        SLOW_MARKER=str(marker),
        **FAST_REDELIVERY,
    )

    # When the renewal is enqueued and that worker is SIGKILLed in the pause
    sent = enqueue(acme_topdir, redis_server, "-renew", SERVICE, "--no-wait")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_for("the order is recorded", marker.exists, timeout_s=30, log=slow.service.log)
    ordered = recorded_order(acme_topdir)
    assert ordered is not None
    slow.kill()

    # Then another worker takes the step again and finishes that same order
    spare = start_worker(workers, acme_topdir, "spare@acme", **FAST_REDELIVERY)
    curr = service_dir(acme_topdir) / "curr"
    wait_for(
        "the spare worker issues the certificate",
        lambda: (curr / "cert.pem").exists(),
        timeout_s=50,
        log=spare.service.log,
    )
    log = spare.service.log_text()
    assert f"certificate of order {ordered}" in log, log
    if step == "acme_order":
        assert f"resumed order {ordered}" in log, log
    assert pebble.orders_created() == [ordered.rsplit("/", 1)[-1]]
    assert pebble.verify_output(curr).strip().endswith("OK")
    assert recorded_order(acme_topdir) is None


# --------------------------------------------------------------------------- badNonce


@pytest.mark.parametrize("pebble", [NONCE_STORM], indirect=True)
def test_a_badnonce_storm_is_ridden_out_in_process_with_one_order(
    acme_topdir: Path, pebble: Pebble
) -> None:
    # Given a CA that rejects half of all good nonces (the pebble fixture, parametrized)

    # When the service is renewed in-process
    result = mgr(acme_topdir, "-renew", SERVICE)

    # Then it is issued all the same, from a single order
    assert result.returncode == 0, result.stdout + result.stderr
    assert pebble.verify_output(service_dir(acme_topdir) / "curr").strip().endswith("OK")
    assert len(pebble.orders_created()) == 1
    assert f"reject {NONCE_STORM}% of good nonces" in pebble.service.log_text()


@pytest.mark.parametrize("pebble", [WORKER_NONCE_STORM], indirect=True)
def test_a_badnonce_storm_is_ridden_out_on_workers_with_one_order(
    acme_topdir: Path, pebble: Pebble, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a CA that rejects a fifth of all good nonces, and a worker
    set_dns_check_delay(acme_topdir, 1)
    worker = start_worker(workers, acme_topdir, "issue@acme")

    # When the renewal goes through the worker
    result = enqueue(acme_topdir, redis_server, "-renew", SERVICE)

    # Then it is issued all the same, from a single order
    assert result.returncode == 0, result.stdout + result.stderr + worker.service.log_text()
    assert pebble.verify_output(service_dir(acme_topdir) / "curr").strip().endswith("OK")
    assert len(pebble.orders_created()) == 1


def test_badnonce_on_every_request_fails_in_process_naming_it_and_keeps_curr(
    acme_topdir: Path, services: Services, dns_lab: DnsLab, tmp_path: Path
) -> None:
    # Given a current certificate, and then a CA that rejects every nonce
    before = given_curr(acme_topdir)
    use_pebble(acme_topdir, another_pebble(services, dns_lab, tmp_path / "storm", 100))

    # When a forced renewal runs in-process
    result = mgr(acme_topdir, "-f", "-renew", SERVICE, env=SHORT_WAIT)

    # Then it fails after the bound, naming badNonce, and nothing is half done
    assert result.returncode == 1, result.stdout + result.stderr
    assert "acme_order: not done after 5 s" in result.stdout, result.stdout
    assert "badNonce" in result.stdout, result.stdout
    assert_nothing_half_done(acme_topdir, before)


def test_badnonce_on_every_request_fails_on_workers_after_bounded_retries(
    acme_topdir: Path,
    services: Services,
    dns_lab: DnsLab,
    redis_server: RedisServer,
    workers: WorkerStarter,
    tmp_path: Path,
) -> None:
    # Given a current certificate, a CA that rejects every nonce, and a worker
    before = given_curr(acme_topdir)
    use_pebble(acme_topdir, another_pebble(services, dns_lab, tmp_path / "storm", 100))
    worker = start_worker(workers, acme_topdir, "issue@acme", **SHORT_WAIT)

    # When a forced renewal goes through the worker
    result = enqueue(acme_topdir, redis_server, "-f", "-renew", SERVICE)

    # Then the order step tried again with growing countdowns, then failed naming badNonce
    assert result.returncode == 1, result.stdout + result.stderr
    assert "acme_order: not done after 8.5 s" in result.stdout, result.stdout
    assert "badNonce" in result.stdout, result.stdout
    log = worker.service.log_text()
    assert "acme_order: not yet" in log and "again in 2 s" in log and "again in 4 s" in log
    # and the status says so, with curr as it was
    assert "badNonce" in status(acme_topdir)
    assert_nothing_half_done(acme_topdir, before)


# --------------------------------------------------------------------------- the CA is down


def test_an_unreachable_ca_fails_in_process_naming_its_directory_and_keeps_curr(
    acme_topdir: Path, pebble: Pebble
) -> None:
    # Given a current certificate, and then the CA stopped
    before = given_curr(acme_topdir)
    pebble.service.terminate()

    # When a forced renewal runs in-process
    result = mgr(acme_topdir, "-f", "-renew", SERVICE, env=SHORT_WAIT)

    # Then it fails after the bound, naming the directory that did not answer
    assert result.returncode == 1, result.stdout + result.stderr
    assert "acme_order: not done after 5 s" in result.stdout, result.stdout
    assert f"{pebble.directory_url}: ACME server unreachable" in result.stdout, result.stdout
    assert_nothing_half_done(acme_topdir, before)


def test_an_unreachable_ca_fails_on_workers_after_retries_naming_its_directory(
    acme_topdir: Path, pebble: Pebble, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a current certificate, the CA stopped, and a worker
    before = given_curr(acme_topdir)
    pebble.service.terminate()
    worker = start_worker(workers, acme_topdir, "issue@acme", **SHORT_WAIT)

    # When a forced renewal goes through the worker
    result = enqueue(acme_topdir, redis_server, "-f", "-renew", SERVICE)

    # Then the order step retried with backoff, then failed naming the directory URL
    assert result.returncode == 1, result.stdout + result.stderr
    unreachable = f"{pebble.directory_url}: ACME server unreachable"
    assert unreachable in result.stdout, result.stdout
    log = worker.service.log_text()
    assert "again in 2 s" in log and "again in 4 s" in log, log
    # and the service's status and state say so, with curr as it was
    assert unreachable in status(acme_topdir)
    assert "acme_order: not done after 8.5 s" in last_error(acme_topdir)
    assert_nothing_half_done(acme_topdir, before)


# --------------------------------------------------------------------------- DNS lags


def test_a_secondary_that_never_catches_up_fails_on_workers_after_the_bound(
    acme_topdir: Path, dns_lab: DnsLab, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a current certificate, a secondary that answers but no longer transfers the
    # zones, and a worker
    before = given_curr(acme_topdir)
    set_dns_check_delay(acme_topdir, 1)
    dns_lab.start_secondary(lagging=True)
    start_worker(workers, acme_topdir, "issue@acme", **SHORT_WAIT)

    # When a forced renewal goes through the worker
    result = enqueue(acme_topdir, redis_server, "-f", "-renew", SERVICE)

    # Then the propagation step gives up after the bound, naming the lagging server (the pauses:
    # dns_check_delay, then 0.25, 0.25, 0.25, 0.5, 1, 2 s)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "acme_propagated: not done after 5.25 s" in result.stdout, result.stdout
    assert dns_lab.secondary in result.stdout, result.stdout
    assert dns_lab.secondary in status(acme_topdir)
    # and curr is as it was, the order kept for the next run
    assert_nothing_half_done(acme_topdir, before)
    assert recorded_order(acme_topdir) is not None
