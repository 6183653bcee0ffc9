"""Deploy a roll to N servers over ssh through Redis and 2 deploy worker processes, against a
sequential loop of the same rsync and restart commands, and print the wall-time ratio (below 1:
the workers' parallelism more than pays for Celery).

Setup, not timed: the repo's example conf.d (private CA) renewed, renewed again with ``-f`` and
rolled, in-process; then ``[smtp] servers = [smtp01.bench ... smtpNN.bench]`` with
``restart_cmd = '/bin/true'`` and ``depends = ['cert']``, and the deploy targets of that change
as ``deploy_fanout`` computes them. One sshd on a free loopback port is every server
(``_sshd.py``): each alias sees its own, initially empty, directory at the production path, so
each server gets a whole copy of the tree. Its own redis-server and one
``celery -A sslm_tasks worker -Q deploy.default --concurrency 2``, with the ssh settings
(``SSLM_SSH_COMMAND``) in its environment, started by the integration tests' own starters
(``tests/integration/services.py``); the bench stops all three, also on error.

Timed, each from empty remote directories:

(a) workers: one ``sslm.deploy.server`` task per server, sent as ``deploy_fanout`` sends them
    (target, changed services, ``site=`` keyword) but without its 5 s debounce ``countdown``;
    from the first send until the last result is in.
(b) sequential: per server, the rsync command ``SshTransport.copy_argv()`` gives and the ssh
    command ``SshTransport.run()`` runs for the restart, as plain subprocesses, one server after
    the other, in this process (same ``SSLM_SSH_*`` settings as the worker).

An untimed round of 2 x concurrency deploys through the workers comes first (worker start,
imports, connections). After every round each remote directory must equal production, and
sshd's log must show exactly 2 sessions per server (copy and restart: a retry would add more).

Usage: .venv/bin/python bench/bench_deploy.py [--servers 50] [--concurrency 2]
Needs root (sshd runs in mount namespaces), openssh-server, rsync and redis-server.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# sshd's tools, Redis and the worker come from the integration tests' own code
# (tests/integration/services.py, sshd.py), imported rather than copied; those modules import
# tests/support.py by bare name, as pytest's ``pythonpath = ["tests"]`` allows.
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO / "tests")]

from _sshd import BenchSshd, start_sshd  # noqa: E402
from services import Services, WorkerStarter, producer, services_in, start_redis  # noqa: E402

from sslm_tasks.cli import mgr  # noqa: E402
from sslm_tasks.config.load import load_config  # noqa: E402
from sslm_tasks.config.settings import load_settings  # noqa: E402
from sslm_tasks.deploy.targets import DeployTarget, deploy_targets  # noqa: E402
from sslm_tasks.deploy.transport import SshTransport  # noqa: E402

RESTART_CMD = "/bin/true"
#: Limit for one rsync or ssh command of the sequential loop, and for each task's result.
STEP_TIMEOUT_S = 60.0
#: The warm-up round also waits for the worker to start.
WARMUP_TIMEOUT_S = 90.0


def build_tree(top: Path, aliases: Sequence[str]) -> None:
    """The example tree, renewed and rolled in-process, then with the ``[smtp]`` servers."""
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    os.environ["SSL_MGR_TOPDIR"] = str(top)
    for args in (["-renew"], ["-f", "-renew", "-roll", "-roll-mins", "0", "example.com:ALL"]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = mgr.main(args)
        if code != 0:
            raise SystemExit(f"sslm-mgr {' '.join(args)} failed:\n{out.getvalue()}")
    # Added after the roll, so the in-process roll above deployed nothing.
    main = top / "conf.d" / "ssl-mgr.conf"
    servers = ", ".join(f"'{alias}'" for alias in aliases)
    main.write_text(
        main.read_text()
        + f"\n[smtp]\n    servers = [{servers}]\n    restart_cmd = '{RESTART_CMD}'\n"
        + "    depends = ['cert']\n"
    )


def files_under(top: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(top)): path.read_bytes()
        for path in sorted(top.rglob("*"))
        if path.is_file()
    }


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


def reset_remotes(sshd: BenchSshd, aliases: Sequence[str]) -> None:
    for alias in aliases:
        shutil.rmtree(sshd.remote_dir(alias))
        sshd.remote_dir(alias).mkdir()


def check_round(
    what: str, sshd: BenchSshd, aliases: Sequence[str], prod: dict[str, bytes], sessions: int
) -> int:
    """Every server holds production, and each took exactly a copy and a restart session."""
    for alias in aliases:
        if files_under(sshd.remote_dir(alias)) != prod:
            raise SystemExit(f"{what}: {alias} does not hold the production tree")
    now = sshd.sessions()
    if now - sessions != 2 * len(aliases):
        raise SystemExit(
            f"{what}: sshd started {now - sessions} sessions, expected {2 * len(aliases)}"
        )
    return now


def through_workers(
    send: Callable[[DeployTarget], Any], targets: Sequence[DeployTarget], timeout_s: float
) -> float:
    start = time.perf_counter()
    pending = [send(target) for target in targets]
    results = [result.get(timeout=timeout_s) for result in pending]
    elapsed = time.perf_counter() - start
    for target, result in zip(targets, results, strict=True):
        if result.get("host") != target.host or result.get("ran") != [RESTART_CMD]:
            raise SystemExit(f"deploy of {target.host}: unexpected result {result!r}")
    return elapsed


def run_step(argv: list[str]) -> None:
    done = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=STEP_TIMEOUT_S
    )
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr.strip()[-1000:]}")


def sequential(
    targets: Sequence[DeployTarget], restarts: Sequence[Sequence[str]], prod_dir: Path
) -> tuple[float, list[float]]:
    settings = load_settings()
    per_server = []
    start = time.perf_counter()
    for target in targets:
        began = time.perf_counter()
        transport = SshTransport.from_settings(target.host, settings)
        run_step(transport.copy_argv(prod_dir))
        for argv in restarts:
            # The very argv SshTransport.run() executes for a restart command.
            run_step(transport._run_argv(argv))
        per_server.append(time.perf_counter() - began)
    return time.perf_counter() - start, per_server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=2, help="deploy worker processes")
    args = parser.parse_args()
    count, concurrency = args.servers, args.concurrency
    for key in [key for key in os.environ if key.startswith("SSLM_")]:
        del os.environ[key]  # in-process setup first: no broker, no foreign ssh settings
    aliases = [f"smtp{i:02d}.bench" for i in range(1, count + 1)]

    with (
        tempfile.TemporaryDirectory(prefix="sslm-bench-deploy-") as tmp,
        contextlib.ExitStack() as running,
    ):
        work = Path(tmp)
        services: Services = running.enter_context(services_in(work))
        top = work / "top"
        build_tree(top, aliases)
        config, _ = load_config([])
        prod_dir = config.layout().prod_dir
        targets = deploy_targets(config.main, [], ["cert"])
        restarts = config.main.smtp.restart_cmd
        if [t.host for t in targets] != aliases or not all(t.restart for t in targets):
            raise SystemExit(f"unexpected deploy targets: {targets}")
        prod = files_under(prod_dir)

        sshd = start_sshd(work, prod_dir=prod_dir, aliases=aliases)
        running.callback(sshd.stop)
        redis = start_redis(services)
        worker = WorkerStarter(services, redis.url()).start(
            "bench-deploy@bench",
            queues=["deploy.default"],
            pool="prefork",
            concurrency=concurrency,
            env={**sshd.env(), "SSL_MGR_TOPDIR": str(top)},
        )
        os.environ.update(sshd.env())  # the sequential loop's settings: the worker's
        os.environ["SSLM_BROKER_URL"] = redis.url()

        # A producer app of its own: sslm_tasks.app's was built on import, with no broker.
        app = producer(redis.url())

        def send(target: DeployTarget) -> Any:
            return app.send_task(
                "sslm.deploy.server", args=(target.to_json(), []), kwargs={"site": target.site}
            )

        sessions = sshd.sessions()
        warmup = targets[: 2 * concurrency]
        try:
            through_workers(send, warmup, WARMUP_TIMEOUT_S)
        except Exception as err:
            raise SystemExit(
                f"warm-up round failed: {err!r}\nworker log:\n{tail(worker.service.log)}"
            ) from err
        sessions = check_round("warm-up", sshd, [t.host for t in warmup], prod, sessions)

        reset_remotes(sshd, aliases)
        workers_s = through_workers(send, targets, STEP_TIMEOUT_S)
        sessions = check_round("workers", sshd, aliases, prod, sessions)

        reset_remotes(sshd, aliases)
        sequential_s, per_server = sequential(targets, restarts, prod_dir)
        check_round("sequential", sshd, aliases, prod, sessions)

    ms = [t * 1000 for t in per_server]
    print(f"servers                          : {count} (one sshd on loopback, {len(prod)} files)")
    print(
        f"{concurrency} deploy worker processes        : {workers_s:.2f} s "
        f"({workers_s / count * 1000:.1f} ms/server)"
    )
    print(
        f"sequential rsync + restart       : {sequential_s:.2f} s "
        f"({sequential_s / count * 1000:.1f} ms/server; min/median/max "
        f"{min(ms):.0f}/{statistics.median(ms):.0f}/{max(ms):.0f} ms)"
    )
    print(f"ratio workers / sequential       : {workers_s / sequential_s:.2f}")


if __name__ == "__main__":
    main()
