"""Real services for the integration tests, started here on loopback and always stopped.

Every daemon runs in its own process group (``start_new_session``), so stopping it also stops
the children it forked (a prefork worker's pool). What leaves that group (a child that starts a
session of its own, a daemon) is stopped by a cleanup its starter registers (``at_stop``; sshd's
in ``sshd.py``). Nothing here reaches beyond 127.0.0.1.

A binary that is missing fails the test when ``CI`` is set and skips it otherwise, as in
dramatiq's tests: a laptop without redis-server may skip, CI must not pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqp.exceptions import AMQPError
from kombu import Connection
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
    #: Seconds :meth:`Services.stop_all` gives a SIGTERM before it kills; ``None``: kill at once.
    graceful_stop_s: float | None = None

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
        self._after_stop: list[Callable[[], None]] = []

    def at_stop(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` at :meth:`stop_all`, once every service is stopped (the last one
        registered first): for what a service leaves that its process group does not hold."""
        self._after_stop.append(cleanup)

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
        # A service that asked for a graceful stop (a broker that flushes and deregisters)
        # gets a SIGTERM and its few seconds first.
        for service in reversed(self.started):
            if service.graceful_stop_s is not None:
                service.terminate(timeout_s=service.graceful_stop_s)
            else:
                service.kill()
        self.started.clear()
        # Each runs, even after one failed: the first failure is raised at the end.
        failed: list[BaseException] = []
        while self._after_stop:
            try:
                self._after_stop.pop()()
            except Exception as err:  # raised below, once the rest ran
                failed.append(err)
        if failed:
            raise failed[0]


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


# --- rabbitmq ------------------------------------------------------------------------------

#: Where Debian keeps RabbitMQ's own scripts. /usr/sbin/rabbitmq-server is a wrapper that, run
#: as root, switches to the rabbitmq user and the system's /var/lib/rabbitmq: not ours.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
#: A RabbitMQ node takes about 4 s to boot here, more on a loaded machine.
RABBITMQ_START_TIMEOUT_S = 60.0


@dataclass
class RabbitMQServer:
    """A private RabbitMQ node on 127.0.0.1: its own epmd, node name, data, logs and user."""

    port: int
    user: str
    password: str
    node: str
    #: The environment its CLI tools need to reach it (cookie in HOME, epmd port).
    env: dict[str, str]
    service: Service

    def url(self, vhost: str = "") -> str:
        """The AMQP URL of ``vhost`` (default: ``/``)."""
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}/{vhost}"

    def answers(self) -> bool:
        """Whether an AMQP connection with our user opens (the node has booted)."""
        try:
            with Connection(self.url(), connect_timeout=1) as connection:
                connection.ensure_connection(max_retries=1)
            return True
        except (OSError, OperationalError, AMQPError):
            return False

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n <node> args`` against this node; fails the test on an error."""
        # The CLI is an Erlang node too, by default on one of 35672-35682, which the machine's
        # own rabbitmqctl and other tests' use as well: a free port of its own.
        port = str(free_port())
        env = {**self.env, "RABBITMQ_CTL_DIST_PORT_MIN": port, "RABBITMQ_CTL_DIST_PORT_MAX": port}
        return subprocess.run(
            [str(_rabbitmq_binary("rabbitmqctl")), "-n", self.node, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )


def _rabbitmq_binary(name: str) -> Path:
    """RabbitMQ's own script ``name`` (never the su wrapper in /usr/sbin), or fail/skip."""
    path = RABBITMQ_BIN / name
    if not path.exists():
        unavailable(f"{path} is missing (Debian: apt-get install rabbitmq-server)")
    return path


def start_rabbitmq(services: Services) -> RabbitMQServer:
    """Start a RabbitMQ node of our own on 127.0.0.1 and wait until AMQP logins work.

    Nothing is shared with a RabbitMQ the machine may run: a free AMQP port, a free Erlang
    distribution port, an epmd of its own on a free port (started here, so it is stopped
    here: the one a node starts itself daemonizes and would outlive the test), a unique node
    name, HOME (the Erlang cookie), data and logs under the test's directory, its own
    rabbitmq.conf (a new user and password), rabbitmq-env.conf and no plugins. It is stopped
    with SIGTERM (a clean shutdown) at the end of the test, SIGKILL after 15 s.
    """
    server_bin = _rabbitmq_binary("rabbitmq-server")
    epmd = require_binary("epmd")
    base = services.workdir / "rabbitmq"
    base.mkdir(exist_ok=True)
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    node = f"sslm-test-{port}@localhost"
    user, password = "sslm", secrets.token_hex(16)
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = 127.0.0.1:{port}\n"
        f"default_user = {user}\n"
        f"default_pass = {password}\n"
        "loopback_users = none\n"
    )
    (base / "enabled_plugins").write_text("[].\n")
    # Our own env file: Debian's /etc/rabbitmq/rabbitmq-env.conf names the system's node.
    (base / "rabbitmq-env.conf").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    env.update(
        HOME=str(base),
        RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
        RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
        RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
        RABBITMQ_LOG_BASE=str(base / "log"),
        RABBITMQ_NODENAME=node,
        RABBITMQ_DIST_PORT=str(dist_port),
        ERL_EPMD_PORT=str(epmd_port),
        ERL_EPMD_ADDRESS="127.0.0.1",
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
    )
    epmd_service = services.spawn(
        f"epmd-{epmd_port}", [epmd, "-address", "127.0.0.1", "-port", str(epmd_port)], env=env
    )
    wait_for(
        "epmd listens",
        lambda: _listening(epmd_port),
        timeout_s=START_TIMEOUT_S,
        log=epmd_service.log,
        alive=lambda: epmd_service.alive,
    )
    service = services.spawn(f"rabbitmq-{port}", [str(server_bin)], env=env, cwd=base)
    service.graceful_stop_s = 15.0
    server = RabbitMQServer(port, user, password, node, env, service)
    wait_for(
        f"rabbitmq node {node} accepts an AMQP login",
        server.answers,
        timeout_s=RABBITMQ_START_TIMEOUT_S,
        log=service.log,
        alive=lambda: service.alive,
    )
    return server


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


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
