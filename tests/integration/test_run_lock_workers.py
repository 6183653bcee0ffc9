"""An in-process run and workers never write one tree at once: workers hold the tree's run lock
shared while they serve it, an in-process run takes it alone (``locks.tree``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from services import RedisServer, WorkerStarter
from support import REPO, chain_verifies, run_tool

from sslm_tasks.locks.file import FileLocker
from sslm_tasks.store.layout import RUN_LOCK


@pytest.fixture
def topdir(tmp_path: Path) -> Path:
    top = tmp_path / "top"
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    return top


def test_an_in_process_run_refuses_while_workers_serve_the_tree(
    topdir: Path, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a worker serving the tree
    worker = workers.start("all@runlock", env={"SSL_MGR_TOPDIR": str(topdir)})
    # When an in-process run starts on it
    alone = run_tool("sslm-mgr", "-renew", "--lock-wait", "1", cwd=topdir)
    # Then it refuses, naming the workers, and writes nothing
    assert alone.returncode == 3, alone.stdout + alone.stderr
    assert "lock 'sslm' is busy (held by sslm workers" in alone.stderr, alone.stderr
    assert not (topdir / "certs" / "example.com").exists()
    # and the same run through the workers goes
    broker = {"SSLM_BROKER_URL": redis_server.url()}
    through = run_tool("sslm-mgr", "-renew", cwd=topdir, env=broker, timeout=180)
    assert through.returncode == 0, through.stdout + through.stderr
    assert chain_verifies(topdir, "example.com/mail-ec")
    # When the worker has stopped, an in-process run goes again
    assert worker.terminate() == 0
    again = run_tool("sslm-mgr", "-renew", "-f", "example.com:mail-ec", cwd=topdir)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_worker_starting_during_an_in_process_run_waits_for_it(
    topdir: Path, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given an in-process run holding the tree's run lock
    certs = topdir / "certs"
    run_lease = FileLocker(certs).acquire(RUN_LOCK, ttl_s=60)
    # When a worker starts on the tree
    worker = workers.start("late@runlock", env={"SSL_MGR_TOPDIR": str(topdir)}, wait=False)
    # Then it takes no task while the run lasts (not ready within the start timeout), and
    # says why
    with pytest.raises(AssertionError, match="answers a control ping: not within"):
        workers.wait_ready(worker, "issue")
    assert "waiting for the in-process sslm-mgr run" in worker.service.log_text()
    # When the run ends, the worker serves
    run_lease.release()
    workers.wait_ready(worker, "issue")
