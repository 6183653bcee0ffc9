"""``sslm-worker``, ``sslm-beat`` and ``sslm-flower``: the processes of the worker stack.

Each checks its settings, builds the ``celery`` command line that sslm runs that process with,
and replaces itself with it (exec): Celery then has the process id and gets its signals
directly (``docker stop``'s SIGTERM is Celery's warm shutdown). docker-compose, the systemd
units, ``workers/*.sh`` and the tests all start the stack through these three, so a wheel
install runs it the same way. Arguments a launcher does not know go to Celery after its own,
so they win (``sslm-worker --loglevel DEBUG``).

A bad setting is one line on stderr and exit 2, before Celery starts; a missing Flower or an
uncreatable beat schedule directory, exit 1. Every variable read here is in docs/workers.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sslm_tasks.config.settings import ENV_SOURCE, load_settings, read_secret
from sslm_tasks.errors import ConfigError
from sslm_tasks.routing import Queue, deploy_queue

from .console import console_script
from .version import add_version_flag

EXIT_FAILED, EXIT_USAGE = 1, 2
#: Celery with sslm's app, run by this interpreter: a launcher in a virtualenv starts that
#: virtualenv's Celery whatever ``PATH`` says.
CELERY = (sys.executable, "-m", "celery", "-A", "sslm_tasks")
#: The issue worker's processes, unless SSLM_ISSUE_CONCURRENCY says: its steps are CPU work
#: (keys, signatures) and fsyncs, which a process per core serves best.
DEFAULT_ISSUE_CONCURRENCY = 2
#: A deploy worker's threads, unless SSLM_DEPLOY_CONCURRENCY says. A deploy waits on ssh,
#: rsync, the server's restart and its probes nearly all the time, so one process runs many
#: at once on threads (bench/bench_deploy.py; docs/operations.md sizes them).
DEFAULT_DEPLOY_CONCURRENCY = 8
#: Flower's defaults: loopback only, unless FLOWER_ADDRESS says otherwise.
DEFAULT_FLOWER_ADDRESS, DEFAULT_FLOWER_PORT = "127.0.0.1", 5555
_PASS_ON = "Other options go to Celery after these, and win (see `celery {command} --help`)."


@console_script
def worker_main(argv: Sequence[str] | None = None) -> int:
    """``sslm-worker [--site NAME] [--queues Q,...]``: the issue worker, or a site's deploy
    worker; see :func:`worker_command`."""
    parser = _parser(
        "sslm-worker",
        "A Celery worker of sslm: the issue worker (queues issue and dns), or with --site the "
        "deploy worker of that site (queue deploy.<site>).",
        "worker",
    )
    parser.add_argument(
        "--site", help="be the deploy worker of this site (node deploy-<site>@<host>)"
    )
    parser.add_argument(
        "--queues",
        help="comma-separated queues instead of the kind's own (issue,dns or deploy.<site>)",
    )
    args, celery_args = parser.parse_known_args(argv)
    return _exec_checked(parser.prog, lambda: worker_command(args.site, args.queues), celery_args)


@console_script
def beat_main(argv: Sequence[str] | None = None) -> int:
    """``sslm-beat``: Celery beat with sslm's scheduler; see :func:`beat_command`."""
    parser = _parser(
        "sslm-beat",
        "Celery beat: sends the periodic renew, roll and clean checks. Run exactly one per broker.",
        "beat",
    )
    _, celery_args = parser.parse_known_args(argv)  # --help and --version only
    return _exec_checked(parser.prog, beat_command, celery_args)


@console_script
def flower_main(argv: Sequence[str] | None = None) -> int:
    """``sslm-flower``: Flower behind basic auth; see :func:`flower_command`."""
    parser = _parser(
        "sslm-flower",
        "Flower, the web monitor of the workers, with HTTP basic auth, on 127.0.0.1:5555 "
        "unless FLOWER_ADDRESS and FLOWER_PORT say otherwise.",
        "flower",
    )
    _, celery_args = parser.parse_known_args(argv)
    if importlib.util.find_spec("flower") is None:
        missing = "Flower is not installed: pip install 'sslm[monitor]'"
        print(f"{parser.prog}: {missing}", file=sys.stderr)
        return EXIT_FAILED
    return _exec_checked(parser.prog, flower_command, celery_args)


def worker_command(site: str | None, queues: str | None) -> list[str]:
    """The worker's command: queues ``issue,dns`` as node ``issue@%h``, or with ``site`` queue
    ``deploy.<site>`` as node ``deploy-<site>@%h``, setting ``SSLM_SITE`` to ``site`` for it;
    the issue worker with a prefork pool of SSLM_ISSUE_CONCURRENCY processes (2), a deploy
    worker with a pool of SSLM_DEPLOY_CONCURRENCY threads (8); at SSLM_LOG_LEVEL (INFO).

    Raises:
        ConfigError: a bad site name or setting, or no broker.
    """
    if site is None:
        node, own_queues = "issue", f"{Queue.ISSUE},{Queue.DNS}"
        pool = "prefork"
        concurrency = _positive_int("SSLM_ISSUE_CONCURRENCY", DEFAULT_ISSUE_CONCURRENCY)
    else:
        try:
            own_queues = deploy_queue(site)
        except ValueError as err:
            raise ConfigError("command line", "--site", site, str(err)) from err
        node = f"deploy-{site}"
        # Threads, not processes: a deploy's subprocesses and sockets release the GIL, so
        # eight cost one interpreter's memory. Celery's time limits do not apply to this
        # pool; every command and probe of a deploy has its own timeout instead.
        pool = "threads"
        concurrency = _positive_int("SSLM_DEPLOY_CONCURRENCY", DEFAULT_DEPLOY_CONCURRENCY)
        # The worker's own settings (its configured sites, the restart commands it runs) see
        # the site it serves.
        os.environ["SSLM_SITE"] = site
    _require_broker()
    return [
        *CELERY,
        "worker",
        "--queues",
        queues or own_queues,
        "--hostname",
        f"{node}@%h",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        _log_level(),
    ]


def beat_schedule() -> Path:
    """Where beat keeps its schedule: ``SSLM_BEAT_SCHEDULE``, else
    ``$XDG_STATE_HOME/sslm/celerybeat-schedule`` (``~/.local/state/sslm/...``)."""
    if os.environ.get("SSLM_BEAT_SCHEDULE"):
        return Path(os.environ["SSLM_BEAT_SCHEDULE"])
    xdg_state = os.environ.get("XDG_STATE_HOME")
    state = Path(xdg_state) if xdg_state else Path.home() / ".local" / "state"
    return state / "sslm" / "celerybeat-schedule"


def beat_command() -> list[str]:
    """Beat's command, with its schedule file where :func:`beat_schedule` says; the folder is
    made (0700) when missing, as beat cannot start without it.

    Raises:
        ConfigError: no broker or a bad setting.
        OSError: the schedule's folder cannot be made.
    """
    _require_broker()
    schedule = beat_schedule()
    schedule.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return [*CELERY, "beat", "--schedule", str(schedule), "--loglevel", _log_level()]


def flower_command() -> list[str]:
    """Flower's command: FLOWER_ADDRESS (127.0.0.1) and FLOWER_PORT (5555), and the logins of
    FLOWER_BASIC_AUTH or the file FLOWER_BASIC_AUTH_FILE names.

    The logins reach Flower through its environment, never its command line, which any user
    of the host can read (``ps``).

    Raises:
        ConfigError: no broker, no login, a login without a password, a bad port.
    """
    _require_broker()
    # Flower reads every FLOWER_* variable as one of its options and stops at one it does
    # not know, such as our _FILE variant.
    auth_file = os.environ.pop("FLOWER_BASIC_AUTH_FILE", "")
    if auth_file and os.environ.get("FLOWER_BASIC_AUTH"):
        raise ConfigError(
            ENV_SOURCE,
            "FLOWER_BASIC_AUTH_FILE",
            auth_file,
            "set FLOWER_BASIC_AUTH or FLOWER_BASIC_AUTH_FILE, not both",
        )
    if auth_file:
        logins = read_secret("FLOWER_BASIC_AUTH_FILE", Path(auth_file))
    else:
        logins = os.environ.get("FLOWER_BASIC_AUTH", "")
    os.environ["FLOWER_BASIC_AUTH"] = check_logins(logins)
    port = _positive_int("FLOWER_PORT", DEFAULT_FLOWER_PORT)
    if port > 65535:
        raise ConfigError(ENV_SOURCE, "FLOWER_PORT", port, "must be a TCP port, 1 to 65535")
    address = os.environ.get("FLOWER_ADDRESS") or DEFAULT_FLOWER_ADDRESS
    return [*CELERY, "flower", f"--address={address}", f"--port={port}"]


def check_logins(logins: str) -> str:
    """Return ``logins`` (``user:password[,user:password...]``, Flower's basic auth) when
    every entry has a user and a password.

    Raises:
        ConfigError: no logins, or an entry without a user or a password (Flower would let
            that user in with no password at all). The error never shows a password.
    """
    if not logins:
        raise ConfigError(
            ENV_SOURCE,
            "FLOWER_BASIC_AUTH",
            None,
            "must be user:password (or FLOWER_BASIC_AUTH_FILE name a file holding it): Flower "
            "shows every task and can stop workers",
        )
    for number, entry in enumerate(logins.split(","), start=1):
        user, colon, password = entry.partition(":")
        if not (user and colon and password):
            what = f"(user {user!r}) has no password" if user and colon else "is not user:password"
            raise ConfigError(
                ENV_SOURCE,
                "FLOWER_BASIC_AUTH",
                None,
                f"login {number} {what}; every login needs both",
            )
    return logins


def _parser(prog: str, description: str, command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=_PASS_ON.format(command=command),
        allow_abbrev=False,
    )
    add_version_flag(parser)
    return parser


def _exec_checked(prog: str, build: Callable[[], list[str]], celery_args: Sequence[str]) -> int:
    """Exec the command ``build`` returns, followed by ``celery_args``, in this process's
    (possibly amended) environment; or say why not, as ``prog``, and return the exit status."""
    try:
        argv = build()
    except ConfigError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_FAILED
    os.execv(argv[0], [*argv, *celery_args])


def _require_broker() -> None:
    # The whole environment is checked here, so a bad value is one line now rather than a
    # traceback from Celery's import of the app. Without a broker Celery would quietly try
    # amqp://guest@localhost.
    if load_settings().broker_url is None:
        raise ConfigError(
            ENV_SOURCE,
            "SSLM_BROKER_URL",
            None,
            "must name the broker, e.g. redis://:PASSWORD@127.0.0.1:6379/0 (or set "
            "SSLM_BROKER_URL_FILE)",
        )


def _positive_int(key: str, default: int) -> int:
    raw = os.environ.get(key) or str(default)
    if not re.fullmatch(r"[0-9]+", raw) or int(raw) < 1:
        raise ConfigError(ENV_SOURCE, key, raw, "must be a whole number above 0")
    return int(raw)


def _log_level() -> str:
    return os.environ.get("SSLM_LOG_LEVEL") or "INFO"
