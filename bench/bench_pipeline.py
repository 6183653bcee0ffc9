"""Renew and roll N private-CA services through Redis and W worker processes (2 unless
``--workers`` says otherwise), against the same N services renewed and rolled in-process, and
print the wall-time ratio (the Celery overhead; below 1 means the workers' parallelism pays for
it). Issue 15's targets: at most 1.0 with 2 processes, at most 0.7 with 4 on a 4-core machine.
More processes than cores still gain a little where the steps wait on the disk's fsyncs (their
waits overlap): docs/workers.md has the figures.

The two runs alternate, ``--rounds`` times (5 unless told): on a machine whose disk slows and
speeds up from one minute to the next (the fsyncs are most of a run), one pair of runs says
little, so each round's ratio is printed and the median is the figure. Every round renews
every service again (``-f``) on the same two trees.

Starts its own redis-server on a free loopback port and its own worker (the integration tests'
``services.py`` starters), and stops both, also on failure.
Usage: .venv/bin/python bench/bench_pipeline.py [--services 100] [--workers 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_private_ca import make_tree

REPO = Path(__file__).resolve().parent.parent
# Redis and the worker are started by the integration tests' own code (tests/integration/
# services.py), imported rather than copied; it imports tests/support.py by bare name, as
# pytest's ``pythonpath = ["tests"]`` allows, hence both directories.
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO / "tests")]

from services import VENV_BIN, WorkerStarter, celery_env, services_in, start_redis  # noqa: E402


def run_mgr(top: Path, env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [str(VENV_BIN / "sslm-mgr"), *args], cwd=top, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sslm-mgr {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (prefork)")
    parser.add_argument("--rounds", type=int, default=5, help="pairs of runs, alternating")
    args = parser.parse_args()
    count, workers = args.services, args.workers
    rounds: list[tuple[float, float]] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
    job = ("-f", "-renew", "-roll", "-roll-mins", "0", "bench.example:ALL")
    with tempfile.TemporaryDirectory() as tmp, services_in(Path(tmp)) as services:
        in_process, pipelined = Path(tmp) / "a", Path(tmp) / "b"
        for top in (in_process, pipelined):
            make_tree(top, count)
            env = {**base_env, "SSL_MGR_TOPDIR": str(top)}
            run_mgr(top, env, "-renew", "-roll", "ca:ALL")
        redis = start_redis(services)
        topdir = {"SSL_MGR_TOPDIR": str(pipelined)}
        WorkerStarter(services, redis.url()).start(
            "bench@pipeline", pool="prefork", concurrency=workers, env=topdir
        )
        env = celery_env(redis.url(), **topdir)
        run_mgr(pipelined, env, "-renew", "ca:ALL")  # warms the worker's processes up
        local_env = {**base_env, "SSL_MGR_TOPDIR": str(in_process)}
        for _ in range(args.rounds):
            rounds.append((run_mgr(in_process, local_env, *job), run_mgr(pipelined, env, *job)))
    print(f"services: {count}, {workers} worker processes, {os.cpu_count()} cores here")
    print("round  in-process ms/service  workers ms/service  ratio")
    for number, (local, remote) in enumerate(rounds, 1):
        print(
            f"{number:>5}  {local / count * 1000:>21.1f}  {remote / count * 1000:>18.1f}"
            f"  {remote / local:>5.2f}"
        )
    ratios = sorted(remote / local for local, remote in rounds)
    print(f"ratio workers / in-process, median of {len(ratios)}: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
