"""Renew and roll N private-CA services through Redis and 2 worker processes, against the same
N services renewed and rolled in-process, and print the wall-time ratio (the Celery overhead;
below 1 means the workers' parallelism pays for it).

Starts its own redis-server on a free loopback port and its own worker, and stops both.
Usage: .venv/bin/python bench/bench_pipeline.py [--services 100]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_private_ca import make_tree

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_mgr(top: Path, env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "sslm-mgr"), *args], cwd=top, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sslm-mgr {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=100)
    count = parser.parse_args().services
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("redis-server is not installed (scripts/setup.sh --dev)")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
    job = ("-f", "-renew", "-roll", "-roll-mins", "0", "bench.example:ALL")
    with tempfile.TemporaryDirectory() as tmp:
        in_process, pipelined = Path(tmp) / "a", Path(tmp) / "b"
        for top in (in_process, pipelined):
            make_tree(top, count)
            env = {**base_env, "SSL_MGR_TOPDIR": str(top)}
            run_mgr(top, env, "-renew", "-roll", "ca:ALL")
        baseline = run_mgr(in_process, {**base_env, "SSL_MGR_TOPDIR": str(in_process)}, *job)

        port, password = free_port(), secrets.token_hex(8)
        redis = subprocess.Popen(
            [
                redis_bin,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--requirepass",
                password,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        broker = f"redis://:{password}@127.0.0.1:{port}/0"
        env = {**base_env, "SSL_MGR_TOPDIR": str(pipelined), "SSLM_BROKER_URL": broker}
        worker = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "sslm_tasks",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--loglevel",
                "WARNING",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=pipelined,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1)
            run_mgr(pipelined, env, "-renew", "ca:ALL")  # waits until the worker is up and warm
            through_workers = run_mgr(pipelined, env, *job)
        finally:
            for process in (worker, redis):
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
    print(f"services                        : {count}")
    per_service = baseline / count * 1000
    print(f"in-process renew+roll           : {baseline:.2f} s ({per_service:.1f} ms/service)")
    print(
        f"redis + 2 worker processes      : {through_workers:.2f} s "
        f"({through_workers / count * 1000:.1f} ms/service)"
    )
    print(f"ratio workers / in-process      : {through_workers / baseline:.2f}")


if __name__ == "__main__":
    main()
