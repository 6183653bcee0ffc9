"""The tree's run lock (``certs/.sslm.lock``): what keeps an in-process run and workers apart.

An in-process ``sslm-mgr`` run writes the store without the workers' locks: it holds this lock
exclusively instead, so that no other run writes at the same time. Workers serving the same tree
would not see that, and the two could, for one, rebuild a zone's TLSA file from different
states and drop records. So each worker holds the lock *shared* for as long as it serves the
tree: an in-process run then refuses to start (exit 3, naming the workers; send the run
through them), and a worker that starts during an in-process run waits for the run to end
before it takes a task. The pool processes of a worker share the hold of the process that
forked them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from sslm_tasks.errors import LockBusy
from sslm_tasks.locks.file import FileLease, FileLocker
from sslm_tasks.store.layout import RUN_LOCK

#: How often a worker waiting for an in-process run says so.
WAIT_NOTE_EVERY_S: Final = 30.0


def hold_for_workers(certs_dir: Path, *, note_wait: Callable[[str], None]) -> FileLease:
    """Hold the run lock of the tree at ``certs_dir`` shared, waiting as long as an in-process
    run holds it (``note_wait`` is told why, every :data:`WAIT_NOTE_EVERY_S`). The caller keeps
    the lease for as long as it serves the tree.

    Raises:
      StoreError: the lock file could not be created or opened.
    """
    locker, wait_s = FileLocker(certs_dir), 0.0
    while True:
        try:
            return locker.acquire(RUN_LOCK, ttl_s=WAIT_NOTE_EVERY_S, blocking_s=wait_s, shared=True)
        except LockBusy as err:
            note_wait(f"waiting for the in-process sslm-mgr run on this tree to end: {err}")
        wait_s = WAIT_NOTE_EVERY_S
