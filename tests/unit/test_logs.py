"""One shape of log line for the in-process log file and the workers' stdout."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from support import LOG_LINE

from sslm_tasks.logs import LineFormatter, log_to_stream


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("sslm_tasks.test", level, __file__, 1, message, None, None)


def test_routine_lines_keep_upstreams_shape_and_problems_name_their_level() -> None:
    formatter = LineFormatter()
    info = formatter.format(record(logging.INFO, "example.com:mail-ec: renewing: forced"))
    warning = formatter.format(record(logging.WARNING, "lock 'x' not released"))
    assert LOG_LINE.fullmatch(info) and LOG_LINE.fullmatch(warning)
    assert info[19:] == "  example.com:mail-ec: renewing: forced"
    assert warning[19:] == "  WARNING: lock 'x' not released"


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)


@pytest.mark.usefixtures("root_handlers")
def test_setting_up_again_writes_each_line_once() -> None:
    # Given the set-up run twice, as Celery does in the main and in each pool process
    first, second = io.StringIO(), io.StringIO()
    log_to_stream(first, "INFO")
    log_to_stream(second, logging.INFO)

    # When a module logs, Then the line is written once, in sslm's shape, where it now goes
    logging.getLogger("sslm_tasks.deploy").info("deployed smtp1")
    logging.getLogger("celery.worker").debug("below the level")
    assert first.getvalue() == ""
    (line,) = second.getvalue().splitlines()
    assert LOG_LINE.fullmatch(line) and line.endswith("  deployed smtp1")
