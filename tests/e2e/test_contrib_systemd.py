"""contrib/systemd: every unit passes ``systemd-analyze verify``, runs a console script of the
package, and is hardened as docs/installation.md says."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from support import BIN, REPO

UNITS = REPO / "contrib/systemd"
#: Where the units expect the console scripts (docs/installation.md links them there).
SCRIPTS_DIR = Path("/usr/local/bin")
#: The host's own units (targets such as multi-user.target and timers.target), which the
#: verification's root must hold for the [Install] and ordering references to resolve.
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
HARDENING = {
    "ProtectSystem": ["strict"],
    "PrivateTmp": ["yes"],
    "NoNewPrivileges": ["yes"],
    "UMask": ["0077"],
}


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> every value it is given (systemd allows a key more than once)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            found.setdefault(f"{section}.{key}", []).append(value)
    return found


def services() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


def test_the_units_are_the_ones_docs_name() -> None:
    assert sorted(p.name for p in UNITS.iterdir()) == [
        "sslm-beat.service",
        "sslm-flower.service",
        "sslm-metrics.service",
        "sslm-renew.service",
        "sslm-renew.timer",
        "sslm-roll.service",
        "sslm-roll.timer",
        "sslm-worker.service",
        "sslm-worker@.service",
    ]
    installation = (REPO / "docs/installation.md").read_text()
    for unit in UNITS.iterdir():
        assert unit.name in installation, f"{unit.name} is not documented"


def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail(
            "systemd-analyze is not installed, so the units cannot be checked (Debian: "
            "apt-get install systemd; scripts/setup.sh --dev installs it)"
        )
    # Given a root with the host's units, the console scripts where the units run them from,
    # and our units; verify looks for commands and the units they reference inside --root
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    scripts = root / SCRIPTS_DIR.relative_to("/")
    scripts.mkdir(parents=True)
    for program in _exec_programs():
        shutil.copy2(BIN / program.name, scripts / program.name)
    ours = root / "etc/systemd/system"
    shutil.copytree(UNITS, ours)

    # When systemd verifies them (a template is verified as an instance of itself)
    run = subprocess.run(
        [analyze, "verify", f"--root={root}", *map(str, sorted(ours.iterdir()))],
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Then it has nothing to say: a misspelt key or value is only a warning, with exit 0
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout + run.stderr == ""


def _exec_programs() -> set[Path]:
    return {
        Path(command.split()[0])
        for unit in services()
        for command in unit_settings(unit)["Service.ExecStart"]
    }


def test_every_unit_runs_a_console_script_of_the_package() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for program in _exec_programs():
        assert program.parent == SCRIPTS_DIR
        assert program.name in scripts, program


@pytest.mark.parametrize("unit", services(), ids=lambda p: p.name)
def test_every_service_is_hardened(unit: Path) -> None:
    settings = unit_settings(unit)
    for key, value in HARDENING.items():
        assert settings.get(f"Service.{key}") == value, key
    # Each writes only where it must: the store (workers, in-process runs), beat's state;
    # Flower and the metrics nowhere.
    writes = settings.get("Service.ReadWritePaths", []) + settings.get("Service.StateDirectory", [])
    if unit.name in ("sslm-flower.service", "sslm-metrics.service"):
        assert writes == []
    else:
        assert writes, "writes nowhere"


def test_the_metrics_unit_runs_as_no_owner_of_the_store() -> None:
    # The store's owner could read its own private keys; the group sslm reads the rest
    settings = unit_settings(UNITS / "sslm-metrics.service")
    assert settings.get("Service.DynamicUser") == ["yes"]
    assert "Service.User" not in settings
    assert settings.get("Service.SupplementaryGroups") == ["sslm"]
