"""The configuration a run remembers (``certs/.config-remembered``), through ``sslm-mgr``: a run
that works on the tree keeps it, ``-s`` only reads it, and a file changed after it was kept is
read again, its errors and all."""

from __future__ import annotations

import time
from pathlib import Path

from support import RunMgr, edit

from sslm_tasks.config.remembered import FILE_NAME
from sslm_tasks.store.identity import RACY_S


def test_a_run_keeps_it_and_the_show_reads_a_changed_file_again(topdir: Path, mgr: RunMgr) -> None:
    kept = topdir / "certs" / FILE_NAME
    time.sleep(RACY_S + 0.1)  # the copied files must be old enough to vouch for
    # A run that works on the tree keeps its load (the store made first, with its lock), the
    # running user's alone
    done = mgr("-renew", "-roll")
    assert done.returncode == 0, done.stdout + done.stderr
    assert kept.stat().st_mode & 0o777 == 0o600
    # A show writes nothing
    kept.unlink()
    assert mgr("-s").returncode == 0
    assert not kept.exists()
    done = mgr("-renew")
    assert done.returncode == 0, done.stdout + done.stderr
    assert kept.is_file()
    shown = mgr("-s")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    # A service file changed since (its size kept) is read again: its error is shown
    edit(topdir / "conf.d/example.com/web-ec", "ec_algo = 'secp384r1'", "ec_algo = 'secp999r1'")
    broken = mgr("-s")
    assert broken.returncode == 2
    assert "web-ec" in broken.stderr and "secp999r1" in broken.stderr
