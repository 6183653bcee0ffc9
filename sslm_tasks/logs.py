"""The one shape of sslm's log lines, for every place they go.

An in-process run writes them to ``<logdir>/sslm``; workers and beat write them to stdout,
where ``docker compose logs`` and journald collect them. Both use :class:`LineFormatter`, so a
grep that works on the file works on a container's log.

The shape is upstream's (local time, two spaces, the message), with the level named only from
WARNING up: the routine lines stay as ssl-mgr wrote them, and a problem stands out.
"""

from __future__ import annotations

import logging
from typing import IO

#: Upstream's timestamp: local time to the second.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_ROUTINE = "%(asctime)s  %(message)s"
_PROBLEM = "%(asctime)s  %(levelname)s: %(message)s"


class LineFormatter(logging.Formatter):
    """``2026-11-27 18:18:32  example.com:mail-ec: renewing: forced``, and
    ``2026-11-27 18:18:33  WARNING: ...`` for warnings and worse (tracebacks follow as usual)."""

    def __init__(self) -> None:
        super().__init__(_ROUTINE, TIME_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        shape = _PROBLEM if record.levelno >= logging.WARNING else _ROUTINE
        return shape % record.__dict__


def log_to_stream(stream: IO[str], level: int | str) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` as sslm lines.

    Replaces the root logger's handlers rather than adding one, so calling it again (Celery
    sets up logging again in each pool process) never doubles a line.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
