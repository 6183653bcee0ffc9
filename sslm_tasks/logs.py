"""One log for both ways of running: the same lines, in the same file, from ``sslm-mgr`` and
from every worker and beat process.

A line is ``2026-12-03T19:41:30Z INFO    example.com:mail-ec: step keygen``: the time in UTC
(ISO 8601), the level, then the message, which names the service, the step and the server it
concerns. With ``SSLM_LOG_FORMAT=json`` each line is one JSON object instead (``time``,
``level``, ``logger``, ``message``, and ``service``/``server``/``zone`` and ``step`` when the
line is a step's), for a log shipper.

The file is ``<logdir>/sslm``, rotated at 200 KiB keeping four old files (upstream's sizes).
Many processes write it at once (an in-process run, the pool processes of several workers), so
it goes through concurrent-log-handler, which serialises writes and rotation with a lock file
beside the log; hand-written rotation across processes loses or doubles lines. Every file of
it is created 0640 whatever the umask, and a log that is a link is refused: sslm follows no
link it did not make. Workers and beat also write the lines to stdout, where ``docker compose
logs`` and journald read them.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

from concurrent_log_handler import ConcurrentRotatingFileHandler

from sslm_tasks.errors import StoreError

#: Upstream's rotation: 200 KiB, four old files.
LOG_BYTES: Final = 204800
LOG_BACKUPS: Final = 4
#: Mode of every file of the log: the group (an admin group, a log shipper) may read it.
LOG_MODE: Final = 0o640
LOG_NAME: Final = "sslm"
LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
#: What a step's line may carry beside its message (``extra=`` of the logging call).
FIELDS: Final = ("service", "server", "zone", "step")


#: ISO 8601, UTC, to the second.
TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


class LineFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <message>``; tracebacks follow as usual."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime(TIME_FORMAT, time.gmtime(record.created))


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime(TIME_FORMAT, time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({key: getattr(record, key) for key in FIELDS if hasattr(record, key)})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def formatter(kind: LogFormat) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else LineFormatter()


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


def send_to(handlers: Sequence[logging.Handler], level: int | str, kind: LogFormat) -> None:
    """Every logger's records at ``level`` and above go to ``handlers`` in the ``kind`` shape.

    Replaces the root logger's handlers rather than adding some, so calling it again (Celery
    sets up logging again in each pool process) never doubles a line.
    """
    shape = formatter(kind)
    for handler in handlers:
        handler.setFormatter(shape)
    root = logging.getLogger()
    root.handlers[:] = list(handlers)
    root.setLevel(level)


def trace(
    step: str, where: str, detail: str = "", *, field: str = "service", level: int = logging.INFO
) -> None:
    """The line of a step that ran, the same in-process and on workers: ``<where>: step
    <name>[: <detail>]``, with ``step`` and ``service``/``server``/``zone`` (``field``) as
    fields of a JSON line."""
    logging.getLogger("sslm").log(
        level,
        "%s: step %s%s",
        where,
        step,
        f": {detail}" if detail else "",
        extra={"step": step, field: where},
    )
