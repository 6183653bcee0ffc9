"""Queues and the one router that maps every task name to its queue.

Work is split by kind so each kind can be scaled and placed on its own: issuing (keys, CSRs,
ACME, the store, rolls, cleaning) on ``issue``, zone include writes and nameserver checks on
``dns``, and copying to servers on one ``deploy.<site>`` queue per site, so that a site's deploy
workers run where that site's servers can be reached. Tasks never name a queue themselves
(no ``queue=`` on decorators): routes live here only, and adding a queue means adding the
worker that consumes it to ``docker-compose.yml`` and to ``sslm-worker`` (``cli/launch.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from kombu.entity import Exchange
from kombu.entity import Queue as KombuQueue

from sslm_tasks.config.load import find_conf_dir, load_main
from sslm_tasks.config.models import DEFAULT_SITE, SITE_NAME
from sslm_tasks.config.settings import load_settings


class Queue(StrEnum):
    """The kinds of work, each with its own queue (deploy: one queue per site)."""

    #: Everything that builds or changes certificates: the walk of a service (renew, ACME,
    #: roll, production, TLSA), the fan-out of its deploys, the beat scans, clean. Consumed by
    #: ``sslm-worker``.
    ISSUE = "issue"
    #: Zone refreshes: ``-dns``, and the refresh that follows retired TLSA records. Consumed by
    #: ``sslm-worker`` too: it is quick work.
    DNS = "dns"
    #: Prefix of the per-site deploy queues ``deploy.<site>``. Consumed by
    #: ``sslm-worker --site <site>`` on a host of that site.
    DEPLOY = "deploy"


class TaskName(StrEnum):
    """Every task's name, ``sslm.<layer>.<verb>``: what is on the wire and in Flower."""

    WALK = "sslm.lifecycle.walk"
    DEPLOY_SERVER = "sslm.deploy.server"
    DEPLOY_POST_COPY = "sslm.deploy.post_copy"
    DNS_REFRESH = "sslm.dns.refresh"
    DNS_REFRESH_PENDING = "sslm.dns.refresh_pending"
    RENEW_SCAN = "sslm.renew.scan"
    ROLL_SCAN = "sslm.roll.scan"
    CLEAN_SERVICE = "sslm.clean.service"
    CLEAN_ALL = "sslm.clean.all"


#: Task name prefixes and the queue their tasks go to. A name matching none goes to
#: :attr:`Queue.ISSUE`, the queue every installation has a worker for.
_PREFIX_QUEUES: Mapping[str, Queue] = {
    "sslm.lifecycle.": Queue.ISSUE,
    "sslm.renew.": Queue.ISSUE,
    "sslm.roll.": Queue.ISSUE,
    "sslm.clean.": Queue.ISSUE,
    "sslm.dns.": Queue.DNS,
    "sslm.deploy.": Queue.DEPLOY,
}


def deploy_queue(site: str) -> str:
    """Return the name of the deploy queue of ``site``.

    Raises:
        ValueError: ``site`` cannot be part of a queue name. Permanent.
    """
    if not SITE_NAME.fullmatch(site):
        raise ValueError(f"site {site!r} cannot name a deploy queue")
    return f"{Queue.DEPLOY}.{site}"


def route_task(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    task: Any = None,
    **kw: Any,
) -> dict[str, str]:
    """Celery router (``task_routes``): the queue for a task, from its name alone.

    ``sslm.deploy.*`` tasks go to ``deploy.<site>`` where ``site`` is their keyword argument
    (positional arguments are not inspected: deploy tasks must pass ``site=`` by keyword),
    ``"default"`` when they have none. An explicit ``queue=`` given when sending still wins,
    as Celery merges the sender's options over the route.

    Raises:
        ValueError: a deploy task names a site that cannot be a queue name.
    """
    queue = next(
        (queue for prefix, queue in _PREFIX_QUEUES.items() if name.startswith(prefix)),
        Queue.ISSUE,
    )
    if queue is Queue.DEPLOY:
        return {"queue": deploy_queue(str((kwargs or {}).get("site", DEFAULT_SITE)))}
    return {"queue": queue.value}


def _queue(name: str) -> KombuQueue:
    # The same shape Celery gives a queue it creates on the fly for a route
    # (task_create_missing_queues): a direct exchange of the queue's own name. Declaring it
    # any other way would make RabbitMQ refuse the second declaration (PRECONDITION_FAILED).
    exchange = Exchange(name, type="direct")  # type: ignore[no-untyped-call]
    return KombuQueue(name, exchange, routing_key=name)  # type: ignore[no-untyped-call]


def all_queues(sites: Iterable[str]) -> list[KombuQueue]:
    """Return every queue of an installation whose deploy sites are ``sites``.

    This is what a worker started without ``-Q`` consumes, so that one worker can serve a
    single-host installation entirely.

    Raises:
        ValueError: a site cannot be part of a queue name.
    """
    names = [Queue.ISSUE.value, Queue.DNS.value]
    names += sorted({deploy_queue(site) for site in sites})
    return [_queue(name) for name in names]


def configured_sites() -> set[str]:
    """Return the deploy sites of this installation: ``default``, the ``[sites]`` of
    ``ssl-mgr.conf``, ``SSLM_SITE`` and ``SSLM_SITES``.

    Called once when a worker starts, never on the publishing path.

    Raises:
        ConfigError: the environment or ``ssl-mgr.conf`` holds a bad site name, or there is
            no ``conf.d`` to read.
    """
    settings = load_settings()
    main = load_main(find_conf_dir())
    return {DEFAULT_SITE, settings.site, *settings.sites, *main.sites}
