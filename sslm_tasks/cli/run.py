"""What ``sslm-mgr`` asks for and what it reports, whichever way the work runs.

The in-process runner (:mod:`sslm_tasks.cli.local`) and the broker client
(:mod:`sslm_tasks.cli.remote`) both take a :class:`RunRequest` and fill a :class:`RunReport`
of one :class:`ServiceOutcome` per service, so the report (:mod:`sslm_tasks.cli.report`) and the
exit status are the same for both.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sslm_tasks.store.layout import ServiceRef

if TYPE_CHECKING:
    # Only named in annotations: sslm-mgr's parser takes its options from here, and -h must
    # not load the configuration layer (pydantic, the models) for them.
    from sslm_tasks.config.load import Config
    from sslm_tasks.lifecycle.workspace import DevSteps

#: ``sslm-mgr``'s exit statuses (see :mod:`sslm_tasks.cli.mgr`).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 3
#: How long a run waits for another run on the same tree before giving up.
DEFAULT_LOCK_WAIT_S = 120.0
#: How long the CLI follows the workflows it enqueued before giving up waiting.
DEFAULT_WAIT_S = 1800.0

#: ``sslm-mgr revoke``: the first argument that makes the command line ``revoke``'s.
REVOKE_COMMAND = "revoke"

log = logging.getLogger("sslm")


def add_follow_arguments(parser: argparse.ArgumentParser, *, what: str, no_wait: str) -> None:
    """The options of a command that may wait for another run (``--lock-wait``) and, with a
    broker, follow ``what`` it sent (``--no-wait``: ``no_wait`` instead; ``--wait-timeout``)."""
    parser.add_argument(
        "--lock-wait",
        type=float,
        default=DEFAULT_LOCK_WAIT_S,
        help="Seconds to wait for another run (default %(default)s)",
    )
    parser.add_argument("--no-wait", action="store_true", help=f"With a broker: {no_wait}")
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=DEFAULT_WAIT_S,
        help=f"With a broker: seconds to follow {what} (default %(default)s)",
    )


@dataclass(frozen=True)
class RunRequest:
    renew: bool = False
    roll: bool = False
    #: ``-dns``: refresh the zones of the selected groups at the end of the run.
    dns_refresh: bool = False
    #: ``-n``: only the ACME dry run of each service; nothing else.
    dry_run: bool = False
    clean_refs: Sequence[ServiceRef] | None = None

    def acts(self, dev: DevSteps) -> bool:
        """Whether the run works on the tree (renew, roll, refresh, a dev step), rather than
        only showing it."""
        return self.renew or self.roll or self.dns_refresh or dev.any()

    def refreshes_dns(self, config: Config, dev: DevSteps) -> bool:
        """``-dns``, or ``dev -fsr`` where a DNS restart command exists."""
        dns = config.main.dns
        return self.dns_refresh or (
            dev.force_restarts and dns is not None and bool(dns.restart_cmd)
        )


@dataclass
class ServiceOutcome:
    """What happened to one service in one run: lines of the report, one exit status."""

    ref: ServiceRef
    ok: bool = True
    actions: list[str] = field(default_factory=list)
    #: True when ``curr`` or ``next`` now names a different version than before the run.
    changed: bool = False
    #: True when the service's production copy was rewritten.
    synced: bool = False
    #: Another run or workflow holds the service (exit 3 when nothing else failed).
    busy: bool = False
    #: Its old TLSA records wait to be retired once its servers hold the new ``curr``.
    retiring: bool = False

    def note(self, text: str) -> None:
        self.actions.append(text)

    def fail(self, text: str) -> None:
        self.ok = False
        self.note(f"FAILED: {text}")
        log.warning("%s: FAILED: %s", self.ref, text)


@dataclass
class RunReport:
    outcomes: list[ServiceOutcome]
    prod_changed: list[ServiceRef] = field(default_factory=list)
    cleaned: dict[str, list[str]] = field(default_factory=dict)
    deploy_failures: list[str] = field(default_factory=list)
    dns_refreshed: list[str] = field(default_factory=list)
    #: Lines of deploys that went well (workers report them per server).
    deployed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes) and not self.deploy_failures

    @property
    def busy(self) -> bool:
        return any(outcome.busy for outcome in self.outcomes)
