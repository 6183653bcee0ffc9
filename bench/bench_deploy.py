"""Deploy a roll to N servers over ssh through Redis and 2 deploy workers, against a sequential
loop of the same rsync and restart commands, and print the speed-up (issue 15's P4: at least 5x).

Setup, not timed: the repo's example conf.d (private CA) renewed, renewed again with ``-f`` and
rolled, in-process; then ``[smtp] servers = [smtp01.bench ... smtpNN.bench]`` with
``restart_cmd = '/bin/true'`` and ``depends = ['cert']``, and the deploy targets of that change
as ``deploy_targets`` computes them. One sshd on a free loopback port is every server
(``_sshd.py``): each alias sees its own, initially empty, directory at the production path, so
each server gets a whole copy of the tree, and the ssh user's shell is a plain ``/bin/sh``
(not this host's root bash with its ``.bashrc``). Its own redis-server and 2 deploy workers
(``celery -A sslm_tasks worker -Q deploy.default``) with the pool and concurrency the deploy
worker's launcher gives them (``sslm-worker --site``: SSLM_DEPLOY_CONCURRENCY threads, 8) and
the ssh settings (``SSLM_SSH_*``) in their environment, started by the integration tests' own
starters (``tests/integration/services.py``); the bench stops them all, also on error.

Timed, each from empty remote directories and without an open ssh connection to any of them:

(a) workers: one ``sslm.deploy.server`` task per server, sent as the fan-out sends them
    (target, changed services, ``site=`` keyword) but without its 5 s debounce ``countdown``;
    from the first send until the last result is in. Each server's copy and restart share one
    ssh connection (``SSLM_SSH_CONTROL_PERSIST_S``, 60 s).
(b) sequential: per server, the rsync command ``SshTransport.copy_argv()`` gives and the ssh
    command ``SshTransport.run()`` runs for the restart, as plain subprocesses, one server after
    the other, in this process, each connecting anew (``SSLM_SSH_CONTROL_PERSIST_S=0``): the
    loop upstream ssl-mgr runs. The target's baseline.
(c) sequential, sharing: the same loop with the same connection sharing as the workers, so
    (c)/(a) is what running deploys at once gives, and (b)/(c) what sharing gives.

An untimed round of 2 x workers x concurrency deploys through the workers comes first (worker
start, imports, threads, Redis connections), to other aliases (``warmNN.bench``), so no
connection it opens serves the timed round. After every round each remote directory must equal
production, sshd's log must show exactly 2 sessions per server (copy and restart: a retry would
add more), and 1 login per server when connections are shared, 2 when not.

Usage: .venv/bin/python bench/bench_deploy.py [--servers 50] [--workers 2]
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

from _sshd import PLAIN_SHELL, BenchSshd, start_sshd  # noqa: E402
from services import Services, WorkerStarter, producer, services_in, start_redis  # noqa: E402

from sslm_tasks.cli import mgr  # noqa: E402
from sslm_tasks.cli.launch import worker_command  # noqa: E402
from sslm_tasks.config.load import load_config  # noqa: E402
from sslm_tasks.config.settings import RuntimeSettings, load_settings  # noqa: E402
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
    what: str,
    sshd: BenchSshd,
    aliases: Sequence[str],
    prod: dict[str, bytes],
    before: tuple[int, int],
    *,
    logins_each: int,
) -> None:
    """Every server holds production, and each took exactly a copy and a restart session on
    ``logins_each`` logins since sshd had counted ``before`` (sessions, logins)."""
    for alias in aliases:
        if files_under(sshd.remote_dir(alias)) != prod:
            raise SystemExit(f"{what}: {alias} does not hold the production tree")
    seen = (sshd.sessions() - before[0], sshd.logins() - before[1])
    expected = (2 * len(aliases), logins_each * len(aliases))
    if seen != expected:
        raise SystemExit(f"{what}: sshd saw (sessions, logins) {seen}, expected {expected}")


def through_workers(
    send: Callable[[DeployTarget], Any], targets: Sequence[DeployTarget], timeout_s: float
) -> float:
    start = time.perf_counter()
    pending = [send(target) for target in targets]
    results = [result.get(timeout=timeout_s) for result in pending]
    elapsed = time.perf_counter() - start
    for target, result in zip(targets, results, strict=True):
        server = f"{target.server_class}:{target.host}"
        if result.get("server") != server or f"ran {RESTART_CMD}" not in result.get("detail"):
            raise SystemExit(f"deploy of {server}: unexpected result {result!r}")
    return elapsed


def run_step(argv: list[str]) -> None:
    done = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=STEP_TIMEOUT_S
    )
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr.strip()[-1000:]}")


def sequential(
    targets: Sequence[DeployTarget],
    restarts: Sequence[Sequence[str]],
    prod_dir: Path,
    settings: RuntimeSettings,
) -> tuple[float, list[float]]:
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


def launcher_pool() -> tuple[str, int]:
    """The pool and concurrency ``sslm-worker --site default`` gives a deploy worker."""
    argv = worker_command("default", None)
    return argv[argv.index("--pool") + 1], int(argv[argv.index("--concurrency") + 1])


def summary(what: str, seconds: float, count: int, per_server: Sequence[float] = ()) -> str:
    line = f"{what:<44}: {seconds:6.2f} s ({seconds / count * 1000:5.1f} ms/server"
    if per_server:
        ms = [t * 1000 for t in per_server]
        line += f"; min/median/max {min(ms):.0f}/{statistics.median(ms):.0f}/{max(ms):.0f} ms"
    return line + ")"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="deploy worker processes")
    args = parser.parse_args()
    count = args.servers
    for key in [key for key in os.environ if key.startswith("SSLM_")]:
        del os.environ[key]  # in-process setup first: no broker, no foreign ssh settings
    # The launcher refuses to build a worker's command without a broker; any URL will do.
    os.environ["SSLM_BROKER_URL"] = "redis://127.0.0.1:1/0"
    pool, concurrency = launcher_pool()
    del os.environ["SSLM_BROKER_URL"], os.environ["SSLM_SITE"]
    aliases = [f"smtp{i:02d}.bench" for i in range(1, count + 1)]
    warm = [f"warm{i:02d}.bench" for i in range(1, 2 * args.workers * concurrency + 1)]

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
        warmup = [DeployTarget("smtp", alias, "default", restart=True) for alias in warm]
        prod = files_under(prod_dir)

        sshd = start_sshd(work, prod_dir=prod_dir, aliases=[*aliases, *warm])
        running.callback(sshd.stop)
        redis = start_redis(services)
        starter = WorkerStarter(services, redis.url())
        env = {**sshd.env(), "SSL_MGR_TOPDIR": str(top)}
        started = [
            starter.start(
                f"bench-deploy-{n}@bench",
                queues=["deploy.default"],
                pool=pool,
                concurrency=concurrency,
                env=env,
            )
            for n in range(1, args.workers + 1)
        ]
        os.environ.update(sshd.env())  # the sequential loops' settings: the workers'
        os.environ["SSLM_BROKER_URL"] = redis.url()

        # A producer app of its own: sslm_tasks.app's was built on import, with no broker.
        app = producer(redis.url())

        def send(target: DeployTarget) -> Any:
            return app.send_task(
                "sslm.deploy.server", args=(target.to_json(), []), kwargs={"site": target.site}
            )

        try:
            through_workers(send, warmup, WARMUP_TIMEOUT_S)
        except Exception as err:
            logs = "\n".join(tail(worker.service.log) for worker in started)
            raise SystemExit(f"warm-up round failed: {err!r}\nworker logs:\n{logs}") from err

        def fresh_round() -> tuple[int, int]:
            reset_remotes(sshd, aliases)
            return sshd.sessions(), sshd.logins()

        before = fresh_round()
        workers_s = through_workers(send, targets, STEP_TIMEOUT_S)
        check_round("workers", sshd, aliases, prod, before, logins_each=1)

        sharing = load_settings()
        before = fresh_round()
        plain_s, plain_each = sequential(
            targets, restarts, prod_dir, sharing.model_copy(update={"ssh_control_persist_s": 0})
        )
        check_round("sequential", sshd, aliases, prod, before, logins_each=2)

        before = fresh_round()
        shared_s, shared_each = sequential(targets, restarts, prod_dir, sharing)
        check_round("sequential, sharing", sshd, aliases, prod, before, logins_each=1)

    shown = f"{args.workers} deploy workers x {concurrency} {pool}"
    print(f"servers: {count} (one sshd on loopback, {len(prod)} files)")
    print(f"ssh user's shell: {PLAIN_SHELL}, non-interactive (no .bashrc)")
    print(summary(f"(a) {shown}", workers_s, count))
    print(summary("(b) sequential rsync + restart", plain_s, count, plain_each))
    print(summary("(c) sequential, connection shared", shared_s, count, shared_each))
    print(f"speed-up (b)/(a), target >= 5          : {plain_s / workers_s:.2f}")
    print(f"from running at once (c)/(a)           : {shared_s / workers_s:.2f}")
    print(f"from sharing the connection (b)/(c)    : {plain_s / shared_s:.2f}")


if __name__ == "__main__":
    main()
