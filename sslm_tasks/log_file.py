"""The log file, ``<logdir>/sslm``, apart from the line shapes of :mod:`sslm_tasks.logs`:
concurrent-log-handler imports portalocker, and portalocker imports the redis client whenever
it is installed (~0.1 s), which the commands that write no log (``sslm-mgr -s``, ``-h``) must
not pay for.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import stat
import sys
from pathlib import Path
from typing import Final

from concurrent_log_handler import ConcurrentRotatingFileHandler

from sslm_tasks.errors import StoreError

#: Upstream's rotation: 200 KiB, four old files.
LOG_BYTES: Final = 204800
LOG_BACKUPS: Final = 4
#: Mode of every file of the log: the group (an admin group, a log shipper) may read it.
LOG_MODE: Final = 0o640
LOG_NAME: Final = "sslm"


class LogFile(ConcurrentRotatingFileHandler):
    """The rotating ``sslm`` log; a line that cannot be written (a full disk) is reported
    once on stderr instead of as a traceback per line: the work goes on, without its log."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            str(path),
            maxBytes=LOG_BYTES,
            backupCount=LOG_BACKUPS,
            encoding="utf-8",
            # A umask, not chmod: chmod would also widen an existing log the operator narrowed
            umask=0o777 & ~LOG_MODE,
            lock_file_directory=str(path.parent),
        )
        self._reported = False

    def emit_all(self, records: list[logging.LogRecord]) -> None:
        """Append ``records`` under one hold of the log's lock (:meth:`emit` takes it, with a
        stale-handle check, per line); the size is still checked before each line, so the
        log rotates where it would have line by line."""
        try:
            lines = [self.format(record) for record in records]
            self._do_lock()
            try:
                self._check_stream()
                for record, line in zip(records, lines, strict=True):
                    if self.shouldRollover(record):
                        self.doRollover()
                    self.do_write(line)
            finally:
                self._do_unlock()
        except Exception:
            self.handleError(records[0])

    def handleError(self, record: logging.LogRecord) -> None:
        if not self._reported:
            self._reported = True
            print(
                f"Error: {self.baseFilename}: cannot write the log ({sys.exc_info()[1]}); "
                "going on without it",
                file=sys.stderr,
            )


def open_log_file(logdir: Path) -> LogFile:
    """The handler of ``<logdir>/sslm``, once the file is known to be writable.

    Raises:
      StoreError: the log is a link, or cannot be created or opened for writing (a read-only
        or full file system); nothing has been written.
    """
    path = logdir / LOG_NAME
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        status = None
    except OSError as err:
        raise StoreError(f"{path}: cannot write the log: {err.strerror}") from None
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise StoreError(f"{path}: cannot write the log: it is not a regular file (a link?)")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, LOG_MODE)
        try:
            if status is None:
                os.fchmod(fd, LOG_MODE)  # the umask may have narrowed the mode given to open
        finally:
            os.close(fd)
    except OSError as err:
        raise StoreError(f"{path}: cannot write the log: {err.strerror}") from None
    return LogFile(path)


class RunLog(logging.handlers.MemoryHandler):
    """The lines of one ``sslm-mgr`` run, held in memory and appended to ``log`` in batches:
    each line through :meth:`LogFile.emit` costs the lock file's flock, a stat and a write
    (about 0.1 ms; 8 lines per service renewed). A warning or an error, a full buffer and
    the end of the run (``close``, which ``logging.shutdown`` also calls at exit) write what
    is held at once: a run killed with SIGKILL loses at most the lines since the last
    warning, never a warning itself.
    """

    #: Lines held at most before they are written.
    CAPACITY: Final = 512

    def __init__(self, log: LogFile) -> None:
        super().__init__(self.CAPACITY, flushLevel=logging.WARNING, target=log)
        self.log = log

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        super().setFormatter(fmt)
        self.log.setFormatter(fmt)

    def flush(self) -> None:
        self.acquire()
        try:
            if self.buffer:
                self.log.emit_all(self.buffer)
                self.buffer = []
        finally:
            self.release()
