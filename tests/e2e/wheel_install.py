"""The package as users get it: a wheel built from the files the Dockerfile copies, installed
into a fresh virtualenv without the network (the ``wheel_install`` fixture of conftest.py)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import BIN, REPO

#: Wheels of every runtime dependency, downloaded by ``scripts/setup.sh --dev``: the fresh
#: virtualenv is installed from them alone, with no network.
WHEELHOUSE = BIN.parent / "wheelhouse"
#: The system's interpreter for the fresh virtualenv: a user other than root can run it (the
#: entry point test runs the package as uid 10001), which the developer's one may not allow.
SYSTEM_PYTHON = Path("/usr/bin/python3")
#: Where the Dockerfile gathers the package's sources before ``pip install``.
DOCKER_SOURCE = "/tmp/sslm-src"


@dataclass(frozen=True)
class WheelInstall:
    """A fresh virtualenv with sslm installed from its wheel, and how long the install took."""

    bin: Path
    wheel: Path
    install_s: float


def docker_sources() -> list[str]:
    """The files and folders the Dockerfile copies to build the package from."""
    sources: list[str] = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        words = shlex.split(line) if line.startswith("COPY ") else []
        if words and words[-1].startswith(DOCKER_SOURCE):
            sources += words[1:-1]
    return sources


def _run(argv: list[str | Path]) -> None:
    run = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, f"{argv}:\n{run.stdout}\n{run.stderr}"


def install_wheel(base: Path) -> WheelInstall:
    """Build the wheel in ``base`` and install it into ``base/venv``; fail the test, saying
    what is missing, when it cannot be done here."""
    if not (WHEELHOUSE / ".complete").is_file():
        pytest.fail(f"{WHEELHOUSE} is missing: scripts/setup.sh --dev downloads it")
    if not SYSTEM_PYTHON.is_file():
        pytest.fail(f"{SYSTEM_PYTHON} is missing (Debian: apt-get install python3-venv)")
    source = base / "src"
    source.mkdir()
    for name in docker_sources():
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name)
    _run(
        [BIN / "python", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", base / "dist", source]
    )  # fmt: skip
    (wheel,) = (base / "dist").glob("sslm-*.whl")
    _run([SYSTEM_PYTHON, "-m", "venv", base / "venv"])
    started = time.monotonic()
    _run(
        [base / "venv/bin/pip", "install", "--no-index", "--find-links", WHEELHOUSE,
         "--disable-pip-version-check", wheel]
    )  # fmt: skip
    install_s = time.monotonic() - started
    print(f"wheel install into a fresh virtualenv: {install_s:.1f} s")
    return WheelInstall(base / "venv/bin", wheel, install_s)
