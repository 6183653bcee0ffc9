"""File locks with ``flock``: for one host, and free the moment their holder dies.

``flock`` belongs to the open file, so the kernel drops it when the holder exits in any way,
``kill -9`` included; no TTL or stale-lock detection is needed. Lock files are never deleted:
unlinking a lock file lets a waiter lock the old inode while a newcomer creates and locks a
new one, and both believe they hold the lock (the "stale ``.unlock`` file" family of bugs
certmagic moved away from). Upstream deleted its file on release for an inotify wakeup; we poll.

The descriptor is close-on-exec, so commands we run (rsync, restarts) never inherit a lock. A
process that *forks without exec* while holding a lease shares it with the child; don't.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from sslm_tasks.errors import LockBusy, StoreError
from sslm_tasks.locks import Lease, Locker, poll_delays
from sslm_tasks.store.atomic import ensure_dir
from sslm_tasks.store.layout import DIR_MODE_GROUP, KEY_MODE, lock_file_name

_HOLDER_MAX = 256


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (it may have been replaced)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class FileLease(Lease):
    """A held ``flock``; see :class:`~sslm_tasks.locks.Lease` for the contract."""

    def __init__(self, name: str, path: Path, fd: int, *, shared: bool = False) -> None:
        self._name = name
        self._path = path
        self._fd: int | None = fd
        self._shared = shared

    @property
    def name(self) -> str:
        return self._name

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Clear the holder note first, so a waiter never blames a holder that has left
            # (a shared holder leaves it: others may still hold the lock with it).
            if not self._shared:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def refresh(self) -> None:
        """Check the lock is still ours; there is no TTL to extend.

        Raises:
          LockBusy: the lease was released, or its file was deleted or replaced (so a newcomer
            may hold a lock on the new file).
        """
        if self._fd is None or not _same_file(self._fd, self._path):
            raise LockBusy(f"lock {self._name!r} was lost ({self._path})")


class FileLocker(Locker):
    """Named ``flock`` locks in ``directory``; lock ``n`` is the file ``.<encoded n>.lock``.

    The file records the holder's pid and host, for the :class:`LockBusy` message only.
    ``ttl_s`` is accepted for the :class:`~sslm_tasks.locks.Locker` protocol and otherwise
    ignored: the lock ends with the process.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, name: str) -> Path:
        """The file that holds lock ``name`` (see ``layout.lock_file_name``)."""
        return self.directory / lock_file_name(name)

    def acquire(
        self, name: str, *, ttl_s: float, blocking_s: float = 0, shared: bool = False
    ) -> FileLease:
        """Take lock ``name``; see :meth:`sslm_tasks.locks.Locker.acquire`.

        Creates ``directory`` (0750) and the lock file (0600) when missing. ``shared``: held
        together with other shared holders, never with an exclusive one (``flock`` LOCK_SH).

        Raises:
          ValueError: ``ttl_s`` is not positive or ``name`` is empty.
          LockBusy: still held by another after ``blocking_s`` seconds.
          StoreError: the directory or the lock file could not be created, opened or written.
        """
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        path = self.path_for(name)
        ensure_dir(self.directory, mode=DIR_MODE_GROUP)
        deadline = time.monotonic() + blocking_s
        delays = poll_delays()
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, KEY_MODE)
            except OSError as err:
                raise StoreError(f"opening lock file {path}: {err.strerror or err}") from err
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = os.pread(fd, _HOLDER_MAX, 0).decode(errors="replace").strip()
                finally:
                    os.close(fd)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    held_by = f"held by {holder}" if holder else "holder unknown"
                    raise LockBusy(f"lock {name!r} is busy ({held_by}; {path})") from None
                time.sleep(min(next(delays), remaining))
                continue
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, path):
                break
            # Someone removed or replaced the file between our open and our flock: the lock we
            # got is on an orphan inode, which excludes nobody. Start over on the current file.
            os.close(fd)
        lease = FileLease(name, path, fd, shared=shared)
        try:
            who = "sslm workers, e.g. " if shared else ""
            note = f"{who}pid {os.getpid()} on {socket.gethostname()}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, note, 0)
        except OSError as err:
            lease.release()
            # A full disk, most often: one line naming the file, not a traceback.
            raise StoreError(f"writing lock file {path}: {err.strerror or err}") from err
        except BaseException:
            lease.release()
            raise
        return lease
