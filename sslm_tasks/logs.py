"""One log for both ways of running: the same lines, in the same file, from ``sslm-mgr`` and
from every worker and beat process.

A line is ``2026-12-03T19:41:30Z INFO    example.com:mail-ec: step keygen``: the time in UTC
(ISO 8601), the level, then the message, which names the service, the step and the server it
concerns. With ``SSLM_LOG_FORMAT=json`` each line is one JSON object instead (``time``,
``level``, ``logger``, ``message``, and ``service``/``server``/``zone`` and ``step`` when the
line is a step's), for a log shipper.

The file (:mod:`sslm_tasks.log_file`) is ``<logdir>/sslm``, rotated at 200 KiB keeping four old
files (upstream's sizes). Many processes write it at once (an in-process run, the pool processes
of several workers), so it goes through concurrent-log-handler, which serialises writes and
rotation with a lock file beside the log; hand-written rotation across processes loses or
doubles lines. Every file of it is created 0640 whatever the umask, and a log that is a link is
refused: sslm follows no link it did not make. Workers and beat also write the lines to stdout,
where ``docker compose logs`` and journald read them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Final, Literal

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


#: The logger of step lines, looked up once: a no-op run writes several per service.
_STEPS = logging.getLogger("sslm")


def trace(
    step: str, where: str, detail: str = "", *, field: str = "service", level: int = logging.INFO
) -> None:
    """The line of a step that ran, the same in-process and on workers: ``<where>: step
    <name>[: <detail>]``, with ``step`` and ``service``/``server``/``zone`` (``field``) as
    fields of a JSON line."""
    _STEPS.log(
        level,
        "%s: step %s%s",
        where,
        step,
        f": {detail}" if detail else "",
        extra={"step": step, field: where},
    )
