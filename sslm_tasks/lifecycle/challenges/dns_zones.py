"""dns-01 for a service whose names may lie in zones of both kinds: each challenge goes to the
publisher of its zone, include files (:mod:`.dns_include`) or RFC 2136 updates
(:mod:`.dns_update`), as ``[[dns_update]]`` says.

One publisher that splits by zone, rather than one publisher per zone for the ACME steps to
juggle: the steps stay blind to DNS (http-01 has no zones), an order that spans zones of both
kinds is still one publish and one look, and each way keeps what it already does for many
zones at once (one refresh for all include zones, one update per updated zone).
"""

from __future__ import annotations

from collections.abc import Sequence

from sslm_tasks.acme.order_state import ChallengeToPublish, OrderState
from sslm_tasks.config.load import update_of
from sslm_tasks.config.models import ChallengeKind
from sslm_tasks.errors import SslmError
from sslm_tasks.lifecycle.challenges.dns_include import DnsIncludePublisher
from sslm_tasks.lifecycle.challenges.dns_update import DnsUpdatePublisher
from sslm_tasks.lifecycle.context import ServiceContext

_Publisher = DnsIncludePublisher | DnsUpdatePublisher


class DnsZonesPublisher:
    """dns-01 for one service, each zone's records through the way its zone takes them."""

    kind: ChallengeKind = "dns-01"

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._include = DnsIncludePublisher(ctx)
        self._update = DnsUpdatePublisher(ctx)

    def _split(
        self, challenges: Sequence[ChallengeToPublish]
    ) -> list[tuple[_Publisher, list[ChallengeToPublish]]]:
        """Each publisher with the challenges of its zones; one without any is left out (the
        include files' would ask for an ``acme_dir`` that a setup by update need not have)."""
        config, group = self._ctx.ws.config, self._ctx.ref.group
        by_update = [c for c in challenges if update_of(config, group, c.identifier)]
        by_include = [c for c in challenges if c not in by_update]
        split: list[tuple[_Publisher, list[ChallengeToPublish]]] = [
            (self._include, by_include),
            (self._update, by_update),
        ]
        return [(publisher, challs) for publisher, challs in split if challs]

    def publish(self, order: OrderState, challenges: Sequence[ChallengeToPublish]) -> None:
        for publisher, challs in self._split(challenges):
            publisher.publish(order, challs)

    def served(
        self, order: OrderState, challenges: Sequence[ChallengeToPublish]
    ) -> tuple[bool, str]:
        looks = [publisher.served(order, challs) for publisher, challs in self._split(challenges)]
        if not looks:
            return True, "nothing to publish"
        return all(ready for ready, _ in looks), "; ".join(text for _, text in looks)

    def withdraw(self, order: OrderState | None, *, refresh: bool) -> None:
        """Both ways withdraw what they recorded, whatever the configuration says now.

        Raises:
          SslmError: the first that failed (the other still withdrew).
        """
        failures: list[SslmError] = []
        for publisher in (self._include, self._update):
            try:
                publisher.withdraw(order, refresh=refresh)
            except SslmError as err:
                failures.append(err)
        if failures:
            raise failures[0]
