"""Fixtures: a copy of the example configuration in a temp topdir, and ``sslm-mgr`` on it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from support import REPO, RunMgr, run_tool


@pytest.fixture
def topdir(tmp_path: Path) -> Path:
    """A topdir holding a copy of the repo's example conf.d (private CA, no network)."""
    top = tmp_path / "top"
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    return top


@pytest.fixture
def mgr(topdir: Path) -> RunMgr:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_tool("sslm-mgr", *args, cwd=topdir, env=env)

    return run
