"""The in-process log file has the line shape the workers write to stdout (support.LOG_LINE,
checked for a worker in tests/integration/test_compose.py)."""

from __future__ import annotations

from pathlib import Path

from support import LOG_LINE, RunMgr


def test_the_log_file_lines_have_the_shared_shape(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew", "ca:my-root").returncode == 0
    lines = (topdir / "logs/sslm").read_text().splitlines()
    assert lines
    for line in lines:
        assert LOG_LINE.fullmatch(line), line
    # (the wording of the steps is the lifecycle's; the shape is what is shared)
    assert any(" ca:my-root: step keygen" in line for line in lines), lines
