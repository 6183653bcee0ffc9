"""FileLocker: exclusive across processes and names, freed when the holder dies (kill -9)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sslm_tasks.errors import LockBusy
from sslm_tasks.locks import POLL_FIRST_S, POLL_MAX_S, Locker, poll_delays
from sslm_tasks.locks.file import FileLocker
from sslm_tasks.store.layout import RUN_LOCK, Layout

NAME = "renew:example.com:mail"

HOLDER = """
import sys, time
from pathlib import Path
from sslm_tasks.locks.file import FileLocker
lease = FileLocker(Path(sys.argv[1])).acquire(sys.argv[2], ttl_s=60)
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def locker(tmp_path: Path) -> Locker:
    # Typed as the protocol: mypy checks FileLocker fits it wherever this is used.
    return FileLocker(tmp_path / "locks")


@pytest.fixture
def child_holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding NAME, until the test kills it."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "locks"), NAME],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)


def test_second_acquire_in_one_process_is_busy_and_names_the_holder(locker: Locker) -> None:
    # Given the lock is held, when it is asked for again
    with locker.acquire(NAME, ttl_s=30), pytest.raises(LockBusy) as busy:
        locker.acquire(NAME, ttl_s=30)
    # Then it was busy, naming the lock and this process
    assert NAME in str(busy.value)
    assert f"pid {os.getpid()} on {socket.gethostname()}" in str(busy.value)
    # And after the with block it is free again
    locker.acquire(NAME, ttl_s=30).release()


def test_different_names_do_not_exclude_each_other(locker: Locker) -> None:
    with locker.acquire("renew:a.com:mail", ttl_s=30), locker.acquire("renew:a.com:web", ttl_s=30):
        pass


def test_other_process_is_excluded_and_its_death_frees_the_lock(
    locker: Locker, child_holder: subprocess.Popen[str]
) -> None:
    # Given another process holds the lock
    # When this process asks, then it is busy and the message names the child's pid
    with pytest.raises(LockBusy, match=f"pid {child_holder.pid} on "):
        locker.acquire(NAME, ttl_s=30)
    # When the holder is killed with SIGKILL (no cleanup code runs)
    os.kill(child_holder.pid, signal.SIGKILL)
    child_holder.wait(timeout=10)
    # Then the lock can be taken at once
    lease = locker.acquire(NAME, ttl_s=30)
    lease.refresh()
    lease.release()


def test_blocking_acquire_waits_for_the_release(locker: Locker) -> None:
    # Given a holder that releases after a short while
    first = locker.acquire(NAME, ttl_s=30)
    timer = threading.Timer(0.2, first.release)
    timer.start()
    try:
        # When another caller is willing to wait, then it gets the lock once released
        started = time.monotonic()
        with locker.acquire(NAME, ttl_s=30, blocking_s=10):
            assert time.monotonic() - started >= 0.15
    finally:
        timer.cancel()


def test_blocking_acquire_gives_up_after_blocking_s(locker: Locker) -> None:
    with locker.acquire(NAME, ttl_s=30):
        started = time.monotonic()
        with pytest.raises(LockBusy):
            locker.acquire(NAME, ttl_s=30, blocking_s=0.3)
        assert 0.3 <= time.monotonic() - started < 3


def test_lock_file_is_private_and_kept_after_release(tmp_path: Path) -> None:
    # Given a lease taken and released
    locker = FileLocker(tmp_path / "locks")
    locker.acquire(NAME, ttl_s=30).release()
    # Then the file stays (deleting it would let two holders lock two inodes), at 0600, empty
    path = locker.path_for(NAME)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b""


def test_refresh_detects_a_lost_lock(tmp_path: Path) -> None:
    # Given a held lease whose file someone deleted
    locker = FileLocker(tmp_path / "locks")
    lease = locker.acquire(NAME, ttl_s=30)
    locker.path_for(NAME).unlink()
    # Then refresh reports the lease as lost, and a newcomer can lock the new file
    with pytest.raises(LockBusy, match="lost"):
        lease.refresh()
    locker.acquire(NAME, ttl_s=30).release()
    lease.release()


def test_refresh_after_release_is_lost_and_release_is_idempotent(locker: Locker) -> None:
    lease = locker.acquire(NAME, ttl_s=30)
    lease.release()
    lease.release()
    with pytest.raises(LockBusy, match="lost"):
        lease.refresh()


def test_run_lock_is_the_layout_lock_file(tmp_path: Path) -> None:
    # Given a tree, when the run lock is taken on its certs dir
    layout = Layout(topdir=tmp_path, prod_dir=tmp_path / "prod")
    with FileLocker(layout.certs_dir).acquire(RUN_LOCK, ttl_s=30):
        # Then the locked file is the one the layout names, inside the tree
        assert layout.lock_file().read_text().startswith(f"pid {os.getpid()} ")


def test_ttl_must_be_positive(locker: Locker) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        locker.acquire(NAME, ttl_s=0)


def test_waiters_look_again_soon_then_less_often() -> None:
    # Most locks are held for milliseconds: the first looks come quickly, later ones are capped
    delays = poll_delays()
    first = [next(delays) for _ in range(12)]
    assert first[:3] == [POLL_FIRST_S, 2 * POLL_FIRST_S, 4 * POLL_FIRST_S]
    assert first == sorted(first)
    assert first[-1] == POLL_MAX_S
