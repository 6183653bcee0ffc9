"""Real services for the integration tests, started here on loopback and always stopped.

Every daemon runs in its own process group (``start_new_session``), so stopping it also stops
the children it forked (a prefork worker's pool). Nothing here reaches beyond 127.0.0.1.

A binary that is missing fails the test when ``CI`` is set and skips it otherwise, as in
dramatiq's tests: a laptop without redis-server may skip, CI must not pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu.exceptions import OperationalError
from redis import Redis
from redis.exceptions import RedisError
from support import free_port, unavailable

from sslm_tasks.app import create_app
from sslm_tasks.config.settings import RuntimeSettings

REPO = Path(__file__).resolve().parents[2]
#: Where the test-only task module (probe_tasks) lives, for a worker's PYTHONPATH.
TESTS_DIR = Path(__file__).resolve().parent
#: The virtualenv's bin: ``celery`` and ``python`` of the interpreter running the tests.
VENV_BIN = Path(sys.executable).parent

#: Prefixes of the variables our processes read; a developer's own values must not leak in.
OUR_VARIABLES = ("SSLM_", "SSL_MGR_", "FLOWER_")

#: Seconds a service gets to come up before the test fails with its log.
START_TIMEOUT_S = 20.0
#: A worker's environment for tests that SIGKILL one: the task it held goes to another worker
#: after 10 s (plus up to kombu's 10 s scan), and the time limits stay below that, as they must.
FAST_REDELIVERY = {
    "SSLM_VISIBILITY_TIMEOUT_S": "10",
    "SSLM_TASK_TIME_LIMIT_S": "8",
    "SSLM_TASK_SOFT_TIME_LIMIT_S": "6",
}


def require_binary(name: str) -> str:
    """Return the path of the executable ``name``, or fail (CI) / skip (laptop)."""
    path = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        unavailable(f"{name} is not installed (Debian: apt-get install {name})")
    return path


def wait_for(
    what: str,
    check: Callable[[], bool],
    *,
    timeout_s: float,
    log: Path | None = None,
    alive: Callable[[], bool] | None = None,
) -> float:
    """Poll ``check`` until true; return the seconds it took.

    Raises:
        AssertionError: ``timeout_s`` passed, or ``alive`` says the process died; the message
            ends with the tail of ``log``.
    """
    started = time.monotonic()
    while not check():
        elapsed = time.monotonic() - started
        if alive is not None and not alive():
            raise AssertionError(f"{what}: process exited{_tail(log)}")
        if elapsed > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s{_tail(log)}")
        time.sleep(0.1)
    return time.monotonic() - started


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- {log} (last {len(text)} lines) ---\n" + "\n".join(text)


@dataclass
class Service:
    """A daemon we started, in its own process group, logging to ``log``."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group: the daemon and every child, with no cleanup."""
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM the group (Celery's warm shutdown) and wait; SIGKILL after ``timeout_s``.

        Returns the exit status, negative for a signal (as :class:`subprocess.Popen`).
        """
        if self.alive:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout=10)
        # A pool child may outlive its parent by a moment; never leave one behind.
        self._signal_group(signal.SIGKILL)
        return int(self.process.returncode)

    def _signal_group(self, sig: signal.Signals) -> None:
        # ProcessLookupError: the whole group has exited already, nothing left to signal.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


class Services:
    """Starts daemons and stops every one of them at :meth:`stop_all` (a fixture finalizer)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Service] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO,
    ) -> Service:
        """Start ``argv`` in a new session, output to ``<workdir>/<name>.log``."""
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = Service(name, process, log)
        self.started.append(service)
        return service

    def stop_all(self) -> None:
        # The end of a test needs no graceful stop (a test of one stops its service itself):
        # SIGKILL, so a worker's warm shutdown cannot hold the teardown for its whole grace.
        for service in reversed(self.started):
            service.kill()
        self.started.clear()


# --- redis -------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A private redis-server on 127.0.0.1 with a password (persistence only if asked for)."""

    port: int
    password: str
    service: Service

    def url(self, db: int = 0, *, password: str | None = None) -> str:
        """The URL of database ``db``, with our password or the one given."""
        secret = self.password if password is None else password
        return f"redis://:{secret}@127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> Redis:
        return Redis.from_url(self.url(db), socket_timeout=5, socket_connect_timeout=5)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except RedisError:
            return False


def start_redis(
    services: Services,
    *,
    port: int | None = None,
    password: str | None = None,
    appendonly: bool = False,
) -> RedisServer:
    """Start redis-server on 127.0.0.1 and wait until it answers PING.

    By default on a free port with a new password and no persistence; pass both (and
    ``appendonly``, which keeps every write in an append-only file, as a production broker
    does) to bring a stopped one back with its data.
    """
    binary = require_binary("redis-server")
    directory = services.workdir / "redis"
    directory.mkdir(exist_ok=True)
    port = free_port() if port is None else port
    password = secrets.token_hex(16) if password is None else password
    service = services.spawn(
        f"redis-{len(services.started)}",
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--requirepass",
            password,
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            "--appendfsync",
            "always",
            "--dir",
            str(directory),
            "--protected-mode",
            "yes",
        ],
    )
    server = RedisServer(port, password, service)
    wait_for(
        "redis-server answers PING",
        server.answers,
        timeout_s=START_TIMEOUT_S,
        log=service.log,
        alive=lambda: service.alive,
    )
    return server


# --- celery --------------------------------------------------------------------------------


def celery_env(broker_url: str, **extra: str) -> dict[str, str]:
    """The environment of a celery process: ours minus any SSLM_* of the developer's shell,
    with the broker, the venv's bin first on PATH, and the test-only tasks importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_VARIABLES)}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(TESTS_DIR)
    env["SSLM_BROKER_URL"] = broker_url
    env.update(extra)
    return env


def producer(broker_url: str, **settings: Any) -> Any:
    """A Celery app of ours that publishes to ``broker_url`` (tests send tasks by name)."""
    return create_app(RuntimeSettings(broker_url=broker_url, **settings))


def control_ping_answered(app: Any, node: str) -> bool:
    """Whether worker ``node`` answers a broadcast ping: its consumer is up and listening.

    A broker that is down, or a pooled connection to a broker that restarted, is a "no".
    """
    try:
        replies = app.control.ping(destination=[node], timeout=0.5)
    except (RedisError, OperationalError):
        return False
    return any(node in reply for reply in replies)


@dataclass
class Worker:
    """A running ``celery worker`` process and its node name."""

    node: str
    service: Service

    def kill(self) -> None:
        self.service.kill()

    def terminate(self) -> int:
        return self.service.terminate()


@dataclass
class WorkerStarter:
    """Starts ``celery -A sslm_tasks worker`` processes on one broker (see :meth:`start`)."""

    services: Services
    broker_url: str

    def start(
        self,
        node: str,
        *,
        queues: Sequence[str] | None = None,
        pool: str = "solo",
        concurrency: int = 1,
        include: Sequence[str] = (),
        script: str | None = None,
        wait: bool = True,
        ping_queue: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Worker:
        """Start a worker named ``node`` (``name@host``) and, by default, wait until it works.

        ``script`` runs one of the repository's launch wrappers (``workers/issue.sh``) instead of
        the bare command: its own queues, pool and node name then apply, so ``node`` must be
        the name the script gives. Readiness is a broadcast ping answered by this very node,
        then a ``sslm.ping`` task sent to ``ping_queue`` (default: the first of ``queues``,
        ``issue`` when none) that must come back from it. ``env`` adds to :func:`celery_env`.
        """
        # Mingle and gossip only cost start-up time here: each test has its own broker.
        args = ["--without-mingle", "--without-gossip"]
        args += [f"--include={module}" for module in include]
        if script is not None:
            argv = ["sh", script, *args]
        else:
            argv = [
                str(VENV_BIN / "celery"),
                "-A",
                "sslm_tasks",
                "worker",
                *args,
                "--hostname",
                node,
                "--pool",
                pool,
                "--concurrency",
                str(concurrency),
                "--loglevel",
                (env or {}).get("SSLM_LOG_LEVEL", "INFO"),
            ]
            if queues:
                argv += ["--queues", ",".join(queues)]
        service = self.services.spawn(
            f"worker-{node}", argv, env=celery_env(self.broker_url, **(env or {}))
        )
        worker = Worker(node, service)
        if wait:
            self.wait_ready(worker, ping_queue or (queues[0] if queues else "issue"))
        return worker

    def wait_ready(self, worker: Worker, ping_queue: str) -> None:
        app = producer(self.broker_url)
        wait_for(
            f"worker {worker.node} answers a control ping",
            lambda: control_ping_answered(app, worker.node),
            timeout_s=START_TIMEOUT_S,
            log=worker.service.log,
            alive=lambda: worker.service.alive,
        )
        result = app.send_task("sslm.ping", queue=ping_queue, expires=START_TIMEOUT_S)
        assert result.get(timeout=START_TIMEOUT_S) == worker.node, _tail(worker.service.log)


@contextmanager
def services_in(workdir: Path) -> Iterator[Services]:
    """Yield a :class:`Services` whose daemons are all stopped on the way out."""
    services = Services(workdir)
    try:
        yield services
    finally:
        services.stop_all()
