"""One log for both paths: one line shape (or JSON lines), one file, set up once per process."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import LOG_LINE

from sslm_tasks.errors import StoreError
from sslm_tasks.log_file import RunLog, open_log_file
from sslm_tasks.logs import JsonFormatter, LineFormatter, send_to


def record(level: int, message: str, **extra: str) -> logging.LogRecord:
    made = logging.LogRecord("sslm", level, __file__, 1, message, None, None)
    made.created = 1796326890.0  # 2026-12-03T19:41:30Z
    made.__dict__.update(extra)
    return made


def test_a_line_is_utc_time_level_and_message() -> None:
    formatter = LineFormatter()
    info = formatter.format(record(logging.INFO, "example.com:mail-ec: step keygen"))
    warning = formatter.format(record(logging.WARNING, "lock 'x' not released"))
    assert info == "2026-12-03T19:41:30Z INFO    example.com:mail-ec: step keygen"
    assert warning == "2026-12-03T19:41:30Z WARNING lock 'x' not released"
    assert LOG_LINE.fullmatch(info) and LOG_LINE.fullmatch(warning)


def test_json_lines_carry_the_steps_fields() -> None:
    line = JsonFormatter().format(
        record(logging.INFO, "smtp:mx1: step deploy", server="smtp:mx1", step="deploy")
    )
    assert json.loads(line) == {
        "time": "2026-12-03T19:41:30Z",
        "level": "INFO",
        "logger": "sslm",
        "message": "smtp:mx1: step deploy",
        "server": "smtp:mx1",
        "step": "deploy",
    }


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
    send_to([logging.StreamHandler(first)], "INFO", "text")
    send_to([logging.StreamHandler(second)], logging.INFO, "text")

    # When a module logs, Then the line is written once, in sslm's shape, where it now goes
    logging.getLogger("sslm_tasks.deploy").info("deployed smtp1")
    logging.getLogger("celery.worker").debug("below the level")
    assert first.getvalue() == ""
    (line,) = second.getvalue().splitlines()
    assert LOG_LINE.fullmatch(line) and line.endswith(" deployed smtp1")


def test_a_log_that_is_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("theirs\n")
    (tmp_path / "sslm").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="not a regular file"):
        open_log_file(tmp_path)
    assert (tmp_path / "elsewhere").read_text() == "theirs\n"


def test_a_runs_lines_are_held_until_a_warning_or_the_flush(tmp_path: Path) -> None:
    # Given a run's log
    run_log = RunLog(open_log_file(tmp_path))
    run_log.setFormatter(LineFormatter())
    try:
        # When info lines are logged, they are held (one append per batch, not per line)
        run_log.handle(record(logging.INFO, "svc: step keygen"))
        run_log.handle(record(logging.INFO, "svc: step csr"))
        assert (tmp_path / "sslm").read_text() == ""
        # Then a warning writes them at once, with itself, in order
        run_log.handle(record(logging.WARNING, "svc: lock not released"))
        lines = (tmp_path / "sslm").read_text().splitlines()
        assert [line.split(" ", 2)[2].strip() for line in lines] == [
            "svc: step keygen",
            "svc: step csr",
            "svc: lock not released",
        ]
        # And the run's end writes what is left, every line once
        run_log.handle(record(logging.INFO, "svc: step store"))
        run_log.flush()
        run_log.flush()
        assert (tmp_path / "sslm").read_text().count("step store") == 1
        assert all(LOG_LINE.fullmatch(line) for line in lines)
    finally:
        run_log.close()
