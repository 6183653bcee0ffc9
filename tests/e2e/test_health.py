"""``sslm-mgr --health`` without a broker: one verdict line, exit 0 or 1 (never 2, which
Docker reserves), nothing left behind. With a broker and workers: test_compose.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import RunMgr, run_tool


def test_a_fresh_tree_is_healthy_and_keeps_nothing_of_the_check(topdir: Path, mgr: RunMgr) -> None:
    run = mgr("--health")
    assert (run.returncode, run.stdout) == (
        0,
        f"healthy: conf.d {topdir}/conf.d; store {topdir}/certs writable\n",
    )
    assert sorted(p.name for p in topdir.iterdir()) == ["conf.d"]


def test_a_store_that_takes_no_file_is_unhealthy_unless_skipped(topdir: Path, mgr: RunMgr) -> None:
    # Given a "store" that is a file, where nobody (not even root) can make a file
    (topdir / "certs").write_text("")

    # Then the check names it, and beat's check (no store) passes
    run = mgr("--health")
    assert (run.returncode, run.stdout) == (
        1,
        f"unhealthy: store {topdir}/certs is not writable: Not a directory\n",
    )
    assert mgr("--health", "--no-store").returncode == 0


@pytest.mark.parametrize(
    ("args", "env", "problem"),
    [
        (["--queue", "issue"], {}, "--queue needs a broker: SSLM_BROKER_URL is not set"),
        ([], {"SSLM_TASK_TIME_LIMIT_S": "ten"}, "environment: SSLM_TASK_TIME_LIMIT_S = 'ten': "),
        ([], {"SSL_MGR_TOPDIR": "/nonexistent"}, "conf.d: SSL_MGR_TOPDIR = '/nonexistent': "),
    ],
)
def test_what_is_wrong_is_one_line_and_exit_1(
    topdir: Path, args: list[str], env: dict[str, str], problem: str
) -> None:
    # From a folder without conf.d, so that only SSL_MGR_TOPDIR can lead to one
    run = run_tool(
        "sslm-mgr", "--health", *args, cwd=topdir.parent, env={"SSL_MGR_TOPDIR": str(topdir), **env}
    )
    assert run.returncode == 1
    assert run.stdout.startswith(f"unhealthy: {problem}")
    assert run.stdout.count("\n") == 1
    assert run.stderr == ""
