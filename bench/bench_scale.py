"""sslm at 1,000 and 10,000 services: what a run costs when nothing is due, and what a broker
run sends. Each figure is printed for both sizes with the growth factor (10 = linear).

The tree is built quickly: the CAs and one service are issued for real, and that service's
store and production copy are copied to every other one (same dates, so nothing is due).
Measured (each a separate process, wall time and peak RSS):
- ``sslm-mgr -renew`` in-process, nothing due;
- ``sslm-mgr -s`` and ``sslm-mgr -s --json``;
- ``load_config`` of the whole tree (in this process);
- ``sslm-mgr -renew --no-wait`` over a Redis with no worker: the number of messages queued,
  the largest one, and Redis's memory per queued service.

Starts its own redis-server on a free loopback port and stops it.
Usage: .venv/bin/python bench/bench_scale.py [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_private_ca import make_tree

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO / "tests")]

from services import VENV_BIN, services_in, start_redis  # noqa: E402

from sslm_tasks.config.load import load_config  # noqa: E402

GROUP = "bench.example"


def build(top: Path, count: int) -> None:
    make_tree(top, count)
    env = {**os.environ, "SSL_MGR_TOPDIR": str(top)}
    env.pop("SSLM_BROKER_URL", None)
    done = subprocess.run(
        [str(VENV_BIN / "sslm-mgr"), "-renew", "-roll", "ca:ALL", f"{GROUP}:svc000"],
        cwd=top,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    for tree in (top / "certs" / GROUP, top / "prod-certs" / GROUP):
        template = tree / "svc000"
        for i in range(1, count):
            shutil.copytree(template, tree / f"svc{i:03d}", symlinks=True)


def measure(top: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one sslm-mgr run."""
    run_env = {**os.environ, "SSL_MGR_TOPDIR": str(top), **(env or {})}
    if "SSLM_BROKER_URL" not in (env or {}):
        run_env.pop("SSLM_BROKER_URL", None)
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(VENV_BIN / "sslm-mgr"), *args],
        cwd=top,
        env=run_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):
        raise SystemExit(f"sslm-mgr {' '.join(args)} exited {code}")
    return elapsed, usage.ru_maxrss / 1024


def broker_figures(top: Path, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work, services_in(Path(work)) as services:
        redis = start_redis(services)
        client = redis.client()
        base = client.info("memory")["used_memory"]
        seconds, _ = measure(top, "-renew", "--no-wait", env={"SSLM_BROKER_URL": redis.url()})
        messages = client.llen("issue")
        largest = max((len(item) for item in client.lrange("issue", 0, -1)), default=0)
        used = client.info("memory")["used_memory"] - base
    return {
        "--no-wait s": seconds,
        "messages": messages,
        "largest message KB": largest / 1024,
        "Redis KB per service": used / 1024 / count,
    }


def figures(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        build(top, count)
        found: dict[str, float] = {}
        start = time.perf_counter()
        load_config([], conf_dir=top / "conf.d")
        found["load_config s"] = time.perf_counter() - start
        for name, args in (
            ("-renew (nothing due)", ("-renew",)),
            ("-s", ("-s",)),
            ("-s --json", ("-s", "--json")),
        ):
            seconds, peak = measure(top, *args)
            found[f"{name} s"] = seconds
            found[f"{name} MB"] = peak
        found.update(broker_figures(top, count))
        return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    sizes = [int(size) for size in parser.parse_args().sizes.split(",")]
    results = {size: figures(size) for size in sizes}
    first = sizes[0]
    print(f"{'figure':<28}" + "".join(f"{size:>12}" for size in sizes) + "   growth")
    for name in results[first]:
        values = [results[size][name] for size in sizes]
        growth = values[-1] / values[0] if values[0] else float("nan")
        print(f"{name:<28}" + "".join(f"{value:>12.3f}" for value in values) + f"   {growth:.1f}x")


if __name__ == "__main__":
    main()
