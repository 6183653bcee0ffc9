"""``sslm-mgr --health``: what a container orchestrator or a service monitor needs to know
(the flags are in :mod:`sslm_tasks.cli.mgr`'s parser).

The checks, each where it applies:

1. the environment parses (``SSLM_*``, and the broker's secret file can be read);
2. ``conf.d`` is found (workers and beat read it);
3. the store, ``<topdir>/certs``, takes a new file (a file is made and removed again; the
   topdir when no run has made ``certs/`` yet). ``--no-store`` skips it, for beat, which
   has no store;
4. the broker answers and accepts the password, when ``SSLM_BROKER_URL`` is set;
5. each ``--queue NAME`` is consumed by a worker on this host: a Celery node named
   ``<name>@<this host>`` (the launchers name their workers ``issue@%h`` and
   ``deploy-<site>@%h``) lists it in ``inspect active_queues``.

One line on stdout says the verdict: ``healthy: ...`` and exit 0, or ``unhealthy: ...``
naming every failed check and exit 1. Never 2: Docker reserves that status of a health check.
Celery and kombu are imported only when a broker is configured, so the check stays quick for
in-process installations.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sslm_tasks.config.load import find_conf_dir
from sslm_tasks.config.settings import RuntimeSettings, load_settings, redact_url
from sslm_tasks.errors import SslmError

EXIT_HEALTHY, EXIT_UNHEALTHY = 0, 1
#: Seconds the workers get to answer ``inspect active_queues``: the broadcast waits this long
#: for every worker, as Celery cannot know how many there are.
QUEUE_REPLY_WAIT_S = 2.0
#: Seconds to reach and log in to the broker.
BROKER_WAIT_S = 5.0


def main(args: argparse.Namespace) -> int:
    """Run the checks ``args`` ask for, print the verdict line and return the exit status."""
    healthy, problems = check(args.health_queues, store=not args.health_no_store)
    if problems:
        print(f"unhealthy: {'; '.join(problems)}")
        return EXIT_UNHEALTHY
    print(f"healthy: {'; '.join(healthy)}")
    return EXIT_HEALTHY


def check(queues: Sequence[str], *, store: bool) -> tuple[list[str], list[str]]:
    """Run the checks; return what was found healthy and what is wrong, one phrase each."""
    healthy: list[str] = []
    problems: list[str] = []
    try:
        settings = load_settings()
    except SslmError as err:
        return healthy, [str(err)]
    try:
        conf_dir = find_conf_dir()
    except SslmError as err:
        problems.append(str(err))
    else:
        healthy.append(f"conf.d {conf_dir}")
        if store:
            _check_store(conf_dir.parent / "certs", healthy, problems)
    if settings.broker_url is None:
        if queues:
            problems.append("--queue needs a broker: SSLM_BROKER_URL is not set")
        return healthy, problems
    if _check_broker(settings.broker_url, healthy, problems) and queues:
        _check_queues(settings, queues, healthy, problems)
    return healthy, problems


def _check_store(certs: Path, healthy: list[str], problems: list[str]) -> None:
    # Where a worker writes first: certs/ itself, or the topdir that it will be made in.
    target = certs if certs.exists() else certs.parent
    try:
        handle, name = tempfile.mkstemp(prefix=".sslm-health-", dir=target)
    except OSError as err:
        problems.append(f"store {certs} is not writable: {err.strerror}")
        return
    os.close(handle)
    os.unlink(name)
    healthy.append(f"store {certs} writable")


def _check_broker(url: str, healthy: list[str], problems: list[str]) -> bool:
    # Imported here, not at the top: without a broker the check needs no Celery, kombu or
    # redis (half a second of imports, every time the orchestrator asks).
    from sslm_tasks.broker import check_broker

    try:
        check_broker(url, timeout_s=BROKER_WAIT_S)
    except SslmError as err:
        problems.append(str(err))
        return False
    healthy.append(f"broker {redact_url(url)} answers")
    return True


def _check_queues(
    settings: RuntimeSettings, queues: Sequence[str], healthy: list[str], problems: list[str]
) -> None:
    from sslm_tasks.app import create_app

    host = socket.gethostname()
    replies = create_app(settings).control.inspect(timeout=QUEUE_REPLY_WAIT_S).active_queues() or {}
    consumed = {
        node: {queue["name"] for queue in node_queues}
        for node, node_queues in replies.items()
        if node.endswith(f"@{host}")
    }
    for queue in queues:
        nodes = sorted(node for node, names in consumed.items() if queue in names)
        if nodes:
            healthy.append(f"queue {queue} consumed by {', '.join(nodes)}")
        else:
            workers = ", ".join(sorted(consumed)) or "none"
            problems.append(f"no worker on {host} consumes queue {queue} (workers here: {workers})")
