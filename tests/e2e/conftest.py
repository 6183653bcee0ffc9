"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from wheel_install import WheelInstall, install_wheel


@pytest.fixture(scope="session")
def wheel_install() -> Iterator[WheelInstall]:
    """sslm installed from its wheel into a fresh virtualenv, shared by the tests that need it;
    readable by every user (the entry point test runs it as uid 10001)."""
    base = Path(tempfile.mkdtemp(prefix="sslm-wheel-"))
    base.chmod(0o755)
    try:
        yield install_wheel(base)
    finally:
        shutil.rmtree(base)
