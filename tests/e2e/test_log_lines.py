"""The in-process log file has the line shape the workers write to stdout (support.LOG_LINE,
checked for a worker in tests/integration/test_compose.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support import LOG_LINE, RunMgr

from sslm_tasks.cli import mgr as sslm_mgr


def test_the_log_file_lines_have_the_shared_shape(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew", "ca:my-root").returncode == 0
    lines = (topdir / "logs/sslm").read_text().splitlines()
    assert lines
    for line in lines:
        assert LOG_LINE.fullmatch(line), line
    # (the wording of the steps is the lifecycle's; the shape is what is shared)
    assert any(" ca:my-root: step keygen" in line for line in lines), lines


def test_a_run_with_nothing_to_do_logs_one_line_per_service(topdir: Path, mgr: RunMgr) -> None:
    # Given every service issued and rolled
    assert mgr("-renew", "-roll").returncode == 0
    log = topdir / "logs/sslm"
    # When the daily renew finds nothing due
    start = len(log.read_text())
    assert mgr("-renew").returncode == 0
    lines = log.read_text()[start:].splitlines()
    # Then each service logged its check, and nothing of the routine steps that found nothing
    steps = [line for line in lines if ": step " in line]
    checks = [line for line in steps if ": step check: renew in " in line]
    assert len(checks) == 5 and len(steps) == 5, lines
    # And with SSLM_LOG_LEVEL=DEBUG those routine steps are there too
    start = len(log.read_text())
    assert mgr("-renew", env={"SSLM_LOG_LEVEL": "DEBUG"}).returncode == 0
    debug = log.read_text()[start:]
    for step in ("roll_gate", "production", "tlsa", "clean"):
        assert f"DEBUG   example.com:web-ec: step {step}\n" in debug, debug


def test_a_bad_log_level_is_refused_before_anything_is_written(topdir: Path, mgr: RunMgr) -> None:
    result = mgr("-renew", env={"SSLM_LOG_LEVEL": "LOUD"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "SSLM_LOG_LEVEL" in result.stderr and "LOUD" in result.stderr, result.stderr
    assert not (topdir / "certs").exists() and not (topdir / "logs").exists()


def test_an_in_process_run_has_written_its_lines_when_it_returns(
    topdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given sslm-mgr called in this process, which holds a run's lines in memory (RunLog)
    monkeypatch.setenv("SSL_MGR_TOPDIR", str(topdir))
    monkeypatch.delenv("SSLM_BROKER_URL", raising=False)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    # When the run returns (the process goes on: a test, a caller of its own)
    assert sslm_mgr.main(["-renew", "ca:my-root"]) == 0
    # Then its lines are in the file already, not left to the interpreter's exit
    assert " ca:my-root: step keygen" in (topdir / "logs/sslm").read_text()
