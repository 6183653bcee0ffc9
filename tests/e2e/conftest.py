"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from wheel_install import WheelInstall, install_wheel


@pytest.fixture(scope="session")
def wheel_install(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str, testrun_uid: str
) -> Iterator[WheelInstall]:
    """sslm installed from its wheel into a fresh virtualenv, shared by the tests that need it;
    readable by every user (the entry point test runs it as uid 10001).

    Built once per test run and shared by pytest-xdist's workers through two locks in the run's
    own temporary folder: a worker holds ``wheel-use.lock`` shared while it may use the install,
    and ``wheel-build.lock`` only while it builds or reads it; the last one done with it (the
    one that can make its hold exclusive) removes it.
    """
    run_dir = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        run_dir = run_dir.parent  # the controller's folder, above every worker's
    base = Path(tempfile.gettempdir()) / f"sslm-wheel-{testrun_uid}"
    record = base / "install.json"
    with (run_dir / "wheel-use.lock").open("a") as use:
        fcntl.flock(use, fcntl.LOCK_SH)
        with (run_dir / "wheel-build.lock").open("a") as build:
            fcntl.flock(build, fcntl.LOCK_EX)
            if record.is_file():
                saved = json.loads(record.read_text())
                installed = WheelInstall(
                    Path(saved["bin"]), Path(saved["wheel"]), saved["install_s"]
                )
            else:
                shutil.rmtree(base, ignore_errors=True)  # what a failed build left
                base.mkdir()
                base.chmod(0o755)
                installed = install_wheel(base)
                record.write_text(
                    json.dumps(
                        {
                            "bin": str(installed.bin),
                            "wheel": str(installed.wheel),
                            "install_s": installed.install_s,
                        }
                    )
                )
        try:
            yield installed
        finally:
            try:
                fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another worker still uses it, and removes it when done
            else:
                shutil.rmtree(base)
