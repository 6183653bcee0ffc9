"""The CA's Retry-After is honoured while waiting, in-process and on workers (issue 13, item 7).

Pebble 2.4 sends no Retry-After, so the lab's front (``lab_acme_front``) holds back the
answers of a CA that is not done yet: the order's authorizations, read once more, say
``pending``, and the finalized order says ``processing``, each with ``Retry-After: 2``. Every
request reaches the front, which notes when it arrived: the next poll must come no sooner than
the CA asked. A walker's own pause is shorter (0.5 s in-process, 0.25 s as a worker's first
countdowns), so only an honoured Retry-After spaces the polls that far.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_acme import SVC, enqueue, mgr, set_dns_check_delay
from lab_acme_front import AUTHORIZATION_PATH, ORDER_PATHS, AcmeFront, acme_front
from lab_pebble import Pebble
from services import RedisServer, WorkerStarter

pytestmark = pytest.mark.integration

NAME = "example.test:web"
RETRY_AFTER_S = 2


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


def hold(front: AcmeFront) -> None:
    """One poll of the order's three authorizations, then its finalize and the read after it,
    are answered "not yet, come back in RETRY_AFTER_S"."""
    front.hold_retry_after = str(RETRY_AFTER_S)
    front.hold_authorizations = 3
    front.hold_orders = 2


def assert_honoured(front: AcmeFront) -> None:
    for paths in ((AUTHORIZATION_PATH,), ORDER_PATHS):
        held, following = front.held_then_next(paths)
        waited = following.at - held.at
        assert waited >= RETRY_AFTER_S, f"{following.path} asked again after {waited:.2f} s"


def test_the_in_process_waits_honour_the_cas_retry_after(
    topdir: Path, front: AcmeFront, pebble: Pebble
) -> None:
    hold(front)
    result = mgr(topdir, "-renew", NAME)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_honoured(front)
    assert pebble.verify_output(topdir / "certs" / SVC / "curr").strip().endswith("OK")


def test_the_workers_countdowns_honour_the_cas_retry_after(
    topdir: Path,
    front: AcmeFront,
    pebble: Pebble,
    redis_server: RedisServer,
    workers: WorkerStarter,
) -> None:
    # (the first propagation check after 1 s, not the default minute: it is not what is tested)
    set_dns_check_delay(topdir, 1)
    worker = workers.start(
        "all@retry-after", pool="prefork", concurrency=2, env={"SSL_MGR_TOPDIR": str(topdir)}
    )
    hold(front)
    result = enqueue(topdir, redis_server, "-renew", NAME)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_honoured(front)
    log = worker.service.log_text()
    assert "acme_validated: not yet" in log and "acme_finalize: not yet" in log
    assert pebble.verify_output(topdir / "certs" / SVC / "curr").strip().endswith("OK")
