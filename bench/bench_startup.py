"""``sslm-mgr -s`` and ``sslm-mgr -h`` start-up, as a ratio of ``python -c 'import
cryptography.x509'`` measured in the same run (issue 15, target 6: ``-s`` within 2x).

The topdir is a copy of the example ``conf.d`` (5 private-CA services) issued once, so ``-s``
reads real certificates, and renewed once more so that the configuration is remembered
(``certs/.config-remembered``, what every later run finds); ``-s`` is also measured with that
file moved away, reading and validating the configuration files. The commands run in turn,
round after round, so a machine whose speed drifts slows them all alike; each ratio is the
median of the per-round ratios. Wall time of the whole process, start-up included; the
baseline runs on the same interpreter (this venv's).

Usage: .venv/bin/python bench/bench_startup.py [--rounds 21]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sslm_tasks.config.remembered import FILE_NAME
from sslm_tasks.store.identity import RACY_S

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
BASELINE = (sys.executable, "-c", "import cryptography.x509")
COMMANDS = {"sslm-mgr -s": ("-s",), "sslm-mgr -h": ("-h",), "-s, files read": ("-s",)}


def wall_seconds(argv: Sequence[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}")
    return elapsed


def spread(runs: Sequence[float]) -> str:
    return f"{statistics.median(runs):.3f} ({min(runs):.3f}-{max(runs):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as work:
        top = Path(work)
        shutil.copytree(REPO / "conf.d", top / "conf.d")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
        env["SSL_MGR_TOPDIR"] = str(top)
        mgr = str(VENV_BIN / "sslm-mgr")
        wall_seconds([mgr, "-renew", "-roll"], env)
        time.sleep(RACY_S + 0.1)  # the copied files must be old enough to be remembered
        wall_seconds([mgr, "-renew"], env)
        kept = top / "certs" / FILE_NAME
        if not kept.is_file():
            raise SystemExit(f"the renew did not remember the configuration in {kept}")
        base: list[float] = []
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(rounds + 1):  # the first round warms the page cache and is dropped
            base.append(wall_seconds(BASELINE, env))
            for name, args in COMMANDS.items():
                moved = name.endswith("files read")
                if moved:
                    kept.rename(kept.with_name("away"))
                times[name].append(wall_seconds([mgr, *args], env))
                if moved:
                    kept.with_name("away").rename(kept)
    base = base[1:]
    print(f"{rounds} rounds, median wall seconds (min-max)")
    print(f"  {'import cryptography.x509':<24} {spread(base)}")
    for name, runs in times.items():
        runs = runs[1:]
        ratio = statistics.median(t / b for t, b in zip(runs, base, strict=True))
        print(f"  {name:<24} {spread(runs)}  {ratio:.2f}x the baseline")


if __name__ == "__main__":
    main()
