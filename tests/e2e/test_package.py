"""The wheel works on first use: installed into a fresh virtualenv, every console script runs
from any folder, with nothing of the checkout on its path."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

from support import REPO
from wheel_install import WheelInstall

from sslm_tasks import __version__

SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def run_installed(
    install: WheelInstall, program: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``program`` of the fresh virtualenv in ``cwd``, with none of our variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SSLM_", "SSL_MGR_"))}
    clean.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(install.bin / program), *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_wheel_runs_from_any_folder(wheel_install: WheelInstall, tmp_path: Path) -> None:
    # Given the wheel installed into a fresh virtualenv, and a tree elsewhere than the checkout
    top = tmp_path / "top"
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # When the status and the worker's help are asked for from a folder of neither
    status = run_installed(
        wheel_install, "sslm-mgr", "-s", cwd=elsewhere, env={"SSL_MGR_TOPDIR": str(top)}
    )
    worker_help = run_installed(wheel_install, "sslm-worker", "--help", cwd=elsewhere)

    # Then both work, from the installed package, not the checkout
    assert status.returncode == 0, status.stdout + status.stderr
    for service in ("my-root", "my-int", "mail-ec", "mail-rsa", "web-ec"):
        assert f"  {service}\n" in status.stdout, status.stdout
    assert worker_help.returncode == 0, worker_help.stderr
    assert "--site" in worker_help.stdout
    located = run_installed(
        wheel_install,
        "python",
        "-c",
        "import sslm_tasks; print(sslm_tasks.__file__)",
        cwd=elsewhere,
    )
    assert Path(located.stdout.strip()).is_relative_to(wheel_install.bin.parent), located
    assert not (top / "certs").exists(), "-s wrote to the tree"


def test_every_console_script_says_its_version(wheel_install: WheelInstall, tmp_path: Path) -> None:
    assert SCRIPTS == [
        "sslm-beat",
        "sslm-dhparm",
        "sslm-flower",
        "sslm-info",
        "sslm-metrics",
        "sslm-mgr",
        "sslm-tlsa-hash",
        "sslm-verify",
        "sslm-worker",
    ]
    for script in SCRIPTS:
        shown = run_installed(wheel_install, script, "--version", cwd=tmp_path)
        assert (shown.returncode, shown.stdout) == (0, f"{script} {__version__}\n"), shown.stderr


def test_flower_without_the_monitor_extra_says_what_to_install(
    wheel_install: WheelInstall, tmp_path: Path
) -> None:
    run = run_installed(
        wheel_install,
        "sslm-flower",
        cwd=tmp_path,
        env={"SSLM_BROKER_URL": "redis://127.0.0.1:1/0", "FLOWER_BASIC_AUTH": "ops:pw"},
    )
    assert run.returncode == 1
    assert run.stderr == "sslm-flower: Flower is not installed: pip install 'sslm[monitor]'\n"
