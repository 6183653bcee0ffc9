"""Publishing ACME challenges where the CA will look: one interface, one class per way.

An ACME order is proven by publishing what the CA asks for (dns-01: TXT records; http-01:
token files on the web servers), making sure it is really served, and taking it down after.
:class:`ChallengePublisher` states that contract once; :mod:`.dns_include` (zone include files
and a zone refresh), :mod:`.dns_update` (RFC 2136 updates signed with TSIG) and :mod:`.web_root`
(token files written locally or over ssh) implement it, and :mod:`.dns_zones` sends each dns-01
challenge to the way its zone is configured for, so the ACME steps
(:mod:`sslm_tasks.lifecycle.acme_sign`) never know which one they talk to.

Each publisher records what it published in the service's record *before* writing it, so a
run killed half-way is cleaned up later, whatever the configuration says by then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sslm_tasks.acme.order_state import ChallengeToPublish, OrderState
from sslm_tasks.config.models import ChallengeKind
from sslm_tasks.errors import SslmError
from sslm_tasks.lifecycle.challenges.dns_zones import DnsZonesPublisher
from sslm_tasks.lifecycle.challenges.web_root import WebRootPublisher
from sslm_tasks.lifecycle.context import ServiceContext


class ChallengePublisher(Protocol):
    """Where one service's challenges go.

    Every method is idempotent, so a redelivered or retried step repeats it safely; each
    records what it did in the service's record (the caller's context) and saves it at its
    own durability points.
    """

    kind: ChallengeKind

    def publish(self, order: OrderState, challenges: Sequence[ChallengeToPublish]) -> None:
        """Make ``challenges`` of ``order`` available (written, and counted for a refresh).

        Raises:
          ConfigError: the configuration has no place for them.
          SslmError: writing failed (transient when a server was unreachable).
        """

    def served(
        self, order: OrderState, challenges: Sequence[ChallengeToPublish]
    ) -> tuple[bool, str]:
        """One look: True when every challenge is served where the CA will look; the text
        names what lags. Makes no promise to wait.

        Raises:
          TransientError: a server did not answer; ask again.
          PermanentError: a server refused.
        """

    def withdraw(self, order: OrderState | None, *, refresh: bool) -> None:
        """Take down what this service published, as its record says (``order`` tags the
        records of that order). With ``refresh`` False the change waits for the next refresh
        (records nobody asks for do no harm for a few seconds).

        Raises:
          SslmError: a removal failed; what is left stays recorded for the next try.
        """


def publisher_for(ctx: ServiceContext, kind: ChallengeKind) -> ChallengePublisher:
    """The publisher of ``kind`` for the service of ``ctx``."""
    if kind == "http-01":
        return WebRootPublisher(ctx)
    return DnsZonesPublisher(ctx)


def withdraw_everything(ctx: ServiceContext, order: OrderState | None, *, refresh: bool) -> None:
    """Take down whatever any publisher recorded for the service, not only the configured
    kind's: a killed run may have published under a configuration that changed since.

    Raises:
      SslmError: the first removal that failed (the others were still tried).
    """
    failures: list[SslmError] = []
    publishers: tuple[ChallengePublisher, ...] = (WebRootPublisher(ctx), DnsZonesPublisher(ctx))
    for publisher in publishers:
        try:
            publisher.withdraw(order, refresh=refresh)
        except SslmError as err:
            failures.append(err)
    if failures:
        raise failures[0]


__all__ = ["ChallengePublisher", "publisher_for", "withdraw_everything"]
