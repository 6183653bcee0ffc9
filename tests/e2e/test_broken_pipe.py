"""Every console script ends quietly when the reader of its output has gone (``... | head``):
no traceback, the status a shell shows for a program ended by SIGPIPE."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest
from support import BIN, REPO, RunMgr

from sslm_tasks.cli.console import EXIT_BROKEN_PIPE

SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def into_closed_pipe(argv: list[str], *, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with stdout a pipe whose reader has already gone, so that the first byte it
    writes fails as it does for ``argv | head -0``."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
        env["SSL_MGR_TOPDIR"] = str(cwd)
        return subprocess.run(
            argv, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120, cwd=cwd, env=env
        )
    finally:
        os.close(writer)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_ends_quietly_when_its_help_goes_nowhere(
    script: str, tmp_path: Path
) -> None:
    run = into_closed_pipe([str(BIN / script), "--help"], cwd=tmp_path)
    assert run.stderr == ""
    # argparse itself drops a message it cannot write at once (one longer than stdout's
    # buffer): then the help just went nowhere, with status 0
    assert run.returncode in (0, EXIT_BROKEN_PIPE)


@pytest.mark.parametrize("args", [["-s"], ["-s", "--json"], ["-s", "--check"], ["-renew"]])
def test_sslm_mgr_output_cut_short_is_quiet(args: list[str], topdir: Path, mgr: RunMgr) -> None:
    # Given an issued tree, so that every command has lines to write
    assert mgr("-renew").returncode == 0
    run = into_closed_pipe([str(BIN / "sslm-mgr"), *args], cwd=topdir)
    assert run.stderr == ""
    assert run.returncode == EXIT_BROKEN_PIPE
