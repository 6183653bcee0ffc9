"""The Celery application: ``celery -A sslm_tasks.app worker`` (or ``-A sslm_tasks``) finds ``app``.

Policy that every task shares lives here, set once: JSON only (messages carry names, never
key material), one prefetched message per process, time limits, results that expire, events
for Flower, and the Redis visibility timeout that decides how soon the task of a worker that
died runs again. Per-task reliability (``acks_late``) is set on each task that is idempotent,
not globally.

Importing this module reads the environment (:func:`~sslm_tasks.config.settings.load_settings`)
and contacts no service.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

from celery import Celery, Task, bootsteps, signals  # type: ignore[import-untyped]

from sslm_tasks.broker_transport import TRANSPORT as REDIS_TRANSPORT
from sslm_tasks.config.load import load_settings_only
from sslm_tasks.config.settings import ENV_SOURCE, RuntimeSettings, is_redis_url, load_settings
from sslm_tasks.deploy.connections import close_all
from sslm_tasks.errors import ConfigError, SslmError
from sslm_tasks.locks.file import FileLease
from sslm_tasks.locks.tree import hold_for_workers
from sslm_tasks.log_file import open_log_file
from sslm_tasks.logs import send_to
from sslm_tasks.routing import Queue, all_queues, configured_sites, route_task
from sslm_tasks.schedule import beat_entries
from sslm_tasks.store.atomic import ensure_dir
from sslm_tasks.store.layout import DIR_MODE_GROUP

#: Modules that hold tasks. The task layer may not exist yet in a checkout: a worker must
#: still start (and answer ``sslm.ping``) without it, rather than die on an ImportError.
TASK_MODULES = ("sslm_tasks.tasks",)

#: Seconds between kombu's scans of Redis's unacked set for messages whose visibility timeout
#: has passed. kombu's default interval, stated here because it bounds redelivery together
#: with the timeout: a task of a dead worker runs again after timeout + up to this long.
UNACKED_RESTORE_INTERVAL_S = 10


def _redis_transport_options(settings: RuntimeSettings) -> dict[str, Any]:
    return {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": UNACKED_RESTORE_INTERVAL_S,
        # kombu only scans on every 10th tick by default, which turns a 20 s timeout into
        # minutes (measured: no redelivery within 90 s); 1 makes the interval above the bound.
        "unacked_restore_throttle": 1,
        # Without it a publish to a broker that vanished without closing the TCP connection
        # waits forever (kombu's docs); BRPOP itself times out after 1 s, far below this.
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
    }


#: Seconds between two tries to publish or to store a result while the broker is away: the
#: first tries come quickly (a restart is often over in a second), then every few seconds.
OUTAGE_FIRST_RETRY_S = 0.2
OUTAGE_RETRY_STEP_S = 0.5
OUTAGE_RETRY_MAX_S = 3.0


def outage_retries(outage_s: float) -> int:
    """How many tries at the outage intervals cover ``outage_s`` seconds."""
    tries, waited, pause = 0, 0.0, OUTAGE_FIRST_RETRY_S
    while waited < outage_s:
        waited += pause
        pause = min(pause + OUTAGE_RETRY_STEP_S, OUTAGE_RETRY_MAX_S)
        tries += 1
    return tries


def celery_config(settings: RuntimeSettings) -> dict[str, Any]:
    """Return the Celery configuration for ``settings``; see the module docstring for why."""
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        # Acknowledge before running unless a task says otherwise: only tasks proven
        # idempotent may run twice, and those set acks_late=True themselves.
        "task_acks_late": False,
        # For those acks_late tasks, a child process killed mid-task (OOM, time limit) puts
        # the message back rather than acknowledging a task that never finished.
        "task_reject_on_worker_lost": True,
        # A worker process holds one message it is not running at most, so a busy or dying
        # worker keeps few tasks from the others.
        "worker_prefetch_multiplier": 1,
        # acks_late tasks go back to the broker when the connection drops; running them on
        # would make two copies run at once.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        # Workers outlive a broker outage of any length and resume when it comes back.
        "broker_connection_max_retries": None,
        # Publishing the next step of a workflow (and the CLI's sends) keeps trying for as long
        # as SSLM_BROKER_OUTAGE_S: Celery's default gives up after 3 tries in 0.2 s, which lost
        # the rest of a workflow to a Redis restart of a few seconds.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": outage_retries(settings.broker_outage_s),
            "interval_start": OUTAGE_FIRST_RETRY_S,
            "interval_step": OUTAGE_RETRY_STEP_S,
            "interval_max": OUTAGE_RETRY_MAX_S,
        },
        # Likewise storing a step's result: the CLI and the next step read it.
        "result_backend_always_retry": True,
        "result_backend_max_retries": outage_retries(settings.broker_outage_s),
        "result_backend_base_sleep_between_retries_ms": int(OUTAGE_FIRST_RETRY_S * 1000),
        "result_backend_max_sleep_between_retries_ms": int(OUTAGE_RETRY_MAX_S * 1000),
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "result_expires": settings.result_expires_s,
        # No STARTED state: one backend write less per task, and the CLI's progress needs only
        # to know which steps have finished.
        "task_track_started": False,
        # Task events cost three broker messages per task (measured: about a third of the
        # pipeline's overhead), so workers send them only while a monitor asks: Flower turns
        # them on in every worker it sees (its --enable-events, on by default).
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "task_routes": (route_task,),
        # Three scans, whatever the number of services: each reads conf.d when it runs.
        "beat_schedule": beat_entries(settings),
        "task_default_queue": Queue.ISSUE.value,
    }
    if is_redis_url(settings.broker_url):
        # RabbitMQ rejects unknown transport options; these are Redis's alone.
        config["broker_transport_options"] = _redis_transport_options(settings)
        # kombu's own Redis transport, except that a worker holding messages survives a
        # broker restart (see sslm_tasks/broker_transport.py).
        config["broker_transport"] = REDIS_TRANSPORT
    return config


class _RequireBroker(bootsteps.Step):  # type: ignore[misc]  # Celery has no type hints
    """Stop a worker that has no broker configured, before it connects anywhere.

    Without ``SSLM_BROKER_URL`` Celery would fall back to ``amqp://guest@localhost`` and could
    quietly serve some other installation's RabbitMQ.
    """

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        if not parent.app.conf.broker_url:
            raise ConfigError(
                file=ENV_SOURCE,
                key="SSLM_BROKER_URL",
                value=None,
                problem="a worker needs a broker, e.g. redis://:PASSWORD@127.0.0.1:6379/0",
            )
        super().__init__(parent, **kwargs)


def create_app(settings: RuntimeSettings) -> Celery:
    """Build a Celery app configured from ``settings``; contacts no service.

    The module-level :data:`app` is the one workers run; tests build others to reach their
    own broker.
    """
    include = [name for name in TASK_MODULES if importlib.util.find_spec(name) is not None]
    celery_app = Celery("sslm", include=include, set_as_current=False)
    celery_app.conf.update(celery_config(settings))
    celery_app.steps["worker"].add(_RequireBroker)
    return celery_app


app = create_app(load_settings())


@signals.celeryd_init.connect  # type: ignore[untyped-decorator]
def _consume_configured_queues(conf: Any, **kwargs: Any) -> None:
    # Set here, at worker start, rather than in create_app: the sites come from the
    # configuration, which publishers (the CLI) need not read just to send a task. A worker
    # started with -Q still picks its subset of these.
    try:
        conf.task_queues = all_queues(configured_sites())
    except ConfigError as err:
        # Celery logs and swallows exceptions from signal handlers, and the worker would go on
        # consuming the default queue only. SystemExit is not swallowed: stop, saying why.
        raise SystemExit(f"sslm worker: {err}") from err


#: The worker's shared hold on the tree's run lock, kept for the process's life.
_tree_hold: list[FileLease] = []


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _keep_in_process_runs_out(**kwargs: Any) -> None:
    # Before the pool starts, so its processes inherit the hold (locks.tree).
    try:
        certs = ensure_dir(load_settings_only().layout().certs_dir, mode=DIR_MODE_GROUP)
        _tree_hold.append(hold_for_workers(certs, note_wait=logging.getLogger("sslm").warning))
    except SslmError as err:
        raise SystemExit(f"sslm worker: {err}") from err


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _close_ssh_connections(**kwargs: Any) -> None:
    # A prefork pool process ends with os._exit, without atexit: close its shared ssh
    # connections and remove its sslm-ssh-* directory here (a no-op if it made none).
    close_all()


@signals.setup_logging.connect  # type: ignore[untyped-decorator]
def _log_sslm_lines(loglevel: int, logfile: str | None, **kwargs: Any) -> None:
    # Workers and beat write the lines of the in-process run, to stdout (where `docker compose
    # logs` and journald read them) or to the file --logfile names, and to <logdir>/sslm, the
    # in-process run's own log file. Connecting here replaces Celery's own logging set-up.
    stream = open(logfile, "a", encoding="utf-8") if logfile else sys.stdout  # noqa: SIM115
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    problem = None
    try:
        config = load_settings_only()
        handlers.append(open_log_file(ensure_dir(config.log_dir(), mode=DIR_MODE_GROUP)))
    except SslmError as err:
        problem = err
    settings = load_settings()
    send_to(handlers, loglevel, settings.log_format)
    if problem is not None:
        logging.getLogger("sslm").warning("no log file, stdout only: %s", problem)


@app.task(name="sslm.ping", bind=True)  # type: ignore[untyped-decorator]
def ping(self: Task) -> str:
    """Answer with the worker's node name: proves a worker consumes the queue it was sent to."""
    return str(self.request.hostname)
