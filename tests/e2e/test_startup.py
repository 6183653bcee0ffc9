"""What ``sslm-mgr`` imports on the paths that need no broker: no Celery, kombu or redis; and
on ``-h``, no configuration layer either.

A structural check, not a timing one: ``python -X importtime`` names every module a run
imported, and a broker client on these paths costs start-up time (redis alone ~0.1 s) for
nothing. ``bench/bench_startup.py`` measures the time itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

from support import RunMgr, run_tool

#: The packages only a run with a broker may import.
BROKER_PACKAGES = frozenset({"celery", "kombu", "redis"})
#: ``sslm-mgr`` arguments that never talk to a broker.
COMMANDS = (("-s",), ("-s", "--json"), ("-s", "--check"), ("-h",))
#: What only a command that reads the configuration may import: the models are pydantic's and
#: check names and keys with cryptography; the help and the parser need neither.
CONFIG_PACKAGES = frozenset({"pydantic", "pydantic_core", "cryptography"})


def imported_packages(importtime: str) -> set[str]:
    """The top-level packages named by ``-X importtime`` lines (``import time: us | us | name``)."""
    return {
        line.rpartition("|")[2].strip().split(".")[0]
        for line in importtime.splitlines()
        if line.startswith("import time:") and not line.endswith("| imported package")
    }


def test_commands_without_a_broker_import_no_broker_client(topdir: Path, mgr: RunMgr) -> None:
    issued = mgr("-renew", "-roll")
    assert issued.returncode == 0, issued.stderr
    for args in COMMANDS:
        run = run_tool("sslm-mgr", *args, cwd=topdir, wrapper=(sys.executable, "-X", "importtime"))
        assert run.returncode == 0, run.stderr
        packages = imported_packages(run.stderr)
        assert "sslm_tasks" in packages, "no -X importtime lines read"
        forbidden = BROKER_PACKAGES | (CONFIG_PACKAGES if args == ("-h",) else frozenset())
        assert not packages & forbidden, (
            f"sslm-mgr {' '.join(args)} imports {sorted(packages & forbidden)}"
        )
