"""dns-01 by RFC 2136 update: the order's TXT records added to, and deleted from, the zones that
have a ``[[dns_update]]`` entry, signed with the entry's TSIG key.

Each record is recorded in the service's record (``dns_updates``: zone, owner, value, server,
port and key file) *before* the update that adds it is sent, and dropped only once an update
deleted it, so a killed run's records are deleted later. The deleting update goes through the
zone's ``[[dns_update]]`` entry as configured then (a key rotated since), or, when the zone has
none any more, through the recorded server and key file.

Records are added and deleted as exact records (``dns.update``): an apex and its wildcard, or
another order of the same zone, keep their values at the same owner; an update sent again
changes nothing. There is no refresh: the server re-signs the zone itself.

"Served" is what the include files' publisher checks (``dns.propagation.look_txt``): the
primary of ``[[dns_primary]]`` serves every value (the update server may be that primary or a
hidden one), then every NS serves the serial the primary served with them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

from sslm_tasks.acme.order_state import ChallengeToPublish, OrderState
from sslm_tasks.config.files import MAIN_FILE
from sslm_tasks.config.load import Config
from sslm_tasks.config.models import ChallengeKind
from sslm_tasks.dns.challenges import CHALLENGE_TTL
from sslm_tasks.dns.lookup import extra_nameservers, primary_for
from sslm_tasks.dns.propagation import look_txt
from sslm_tasks.dns.update import Record, absolute, txt_rdata, updater
from sslm_tasks.errors import ConfigError, SslmError
from sslm_tasks.lifecycle.challenges.dns_include import apex_of
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.record import UpdatedTxt

log = logging.getLogger("sslm")

#: The records one update carries: those of one zone through one server and key file.
_Route = tuple[str, str, int, str]


def _route(config: Config, record: UpdatedTxt) -> _Route:
    """Where an update about ``record`` goes: through its zone's ``[[dns_update]]`` entry as
    configured now (a key rotated or fixed since), else as recorded (the entry is gone)."""
    entry = config.main.update_of(record.apex)
    if entry is None:
        return (record.apex, record.server, record.port, record.key_file)
    return (record.apex, entry.server, entry.port, entry.key_file)


def _by_route(config: Config, records: Sequence[UpdatedTxt]) -> dict[_Route, list[UpdatedTxt]]:
    routes: dict[_Route, list[UpdatedTxt]] = defaultdict(list)
    for record in records:
        routes[_route(config, record)].append(record)
    return dict(sorted(routes.items()))


def _same(record: UpdatedTxt) -> tuple[str, str, str]:
    """What makes two recorded records one DNS record: zone, owner and value."""
    return (record.apex, record.owner, record.value)


class DnsUpdatePublisher:
    """dns-01 for one service through RFC 2136 updates (see the module doc)."""

    kind: ChallengeKind = "dns-01"

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def _records(self, challenges: Sequence[ChallengeToPublish]) -> list[UpdatedTxt]:
        """What ``challenges`` add, each in its zone through the zone's ``[[dns_update]]``.

        Raises:
          ConfigError: a name's zone has no ``[[dns_update]]`` entry (the caller routes only
            names of zones that have one), or no zone at all.
        """
        config = self._ctx.ws.config
        records = []
        for chall in challenges:
            apex = apex_of(self._ctx, chall.identifier)
            entry = config.main.update_of(apex)
            if entry is None:
                where = config.conf_dir / MAIN_FILE
                raise ConfigError(where, "dns_update", None, f"no entry for the zone {apex!r}")
            owner = absolute(chall.name)
            records.append(
                UpdatedTxt(apex, owner, chall.value, entry.server, entry.port, entry.key_file)
            )
        return records

    def publish(self, order: OrderState, challenges: Sequence[ChallengeToPublish]) -> None:
        """Record, then add, the order's TXT records: one update per zone. Idempotent."""
        ctx = self._ctx
        part = ctx.record.dns_updates
        wanted = self._records(challenges)
        if part.order != order.url:
            part.order, part.serials = order.url, {}
        fresh = {_same(record) for record in wanted}
        part.records = sorted([r for r in part.records if _same(r) not in fresh] + wanted)
        ctx.save()
        for (apex, server, port, key_file), records in _by_route(ctx.ws.config, wanted).items():
            updater(ctx.ws.config, apex, server, port, key_file).apply(
                add=[Record(r.owner, CHALLENGE_TTL, txt_rdata(r.value)) for r in records]
            )
        zones = sorted({record.apex for record in wanted})
        log.info("%s: dns-01 records added by update in %s", ctx.ref, ", ".join(zones) or "none")

    def served(
        self, order: OrderState, challenges: Sequence[ChallengeToPublish]
    ) -> tuple[bool, str]:
        """One pass over the name servers of every zone (see the module doc)."""
        ctx = self._ctx
        part = ctx.record.dns_updates
        by_apex: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for record in self._records(challenges):
            by_apex[record.apex].append((record.owner, record.value))
        targets = dict(part.serials) if part.order == order.url else {}
        extra = extra_nameservers(ctx.ws.config)
        seen: list[str] = []
        lagging: list[str] = []
        for apex, records in sorted(by_apex.items()):
            primary = primary_for(ctx.ws.config, apex)
            target, results = look_txt(
                apex, primary, records, target=targets.get(apex), extra=extra
            )
            for result in results:
                (seen if result.ok else lagging).append(result.summary())
            if target is not None:
                targets[apex] = target
        if part.order == order.url and targets != part.serials:
            part.serials = targets
            ctx.save()
        if lagging:
            return False, "; ".join(lagging)
        return True, "; ".join(seen) or "nothing to publish"

    def withdraw(self, order: OrderState | None, *, refresh: bool) -> None:
        """Delete every recorded record, one update per zone and server; each zone's records
        leave the record once their update succeeded, so a retry sends only what failed.
        ``order`` and ``refresh`` do not matter: the record says what to delete, and the
        server re-signs at once.

        Raises:
          SslmError: the first update that failed (the others were still sent).
        """
        ctx = self._ctx
        part = ctx.record.dns_updates
        if not part.records:
            return
        left: list[UpdatedTxt] = []
        errors: list[SslmError] = []
        routes = _by_route(ctx.ws.config, part.records)
        for (apex, server, port, key_file), records in routes.items():
            try:
                updater(ctx.ws.config, apex, server, port, key_file).apply(
                    delete=[Record(r.owner, CHALLENGE_TTL, txt_rdata(r.value)) for r in records]
                )
            except SslmError as err:
                log.warning("%s: deleting dns-01 records: %s", ctx.ref, err)
                left += records
                errors.append(err)
        deleted = sorted({r.apex for r in part.records} - {r.apex for r in left})
        part.records = left
        if not left:
            part.order, part.serials = None, {}
        ctx.save()
        if deleted:
            log.info("%s: dns-01 records deleted by update in %s", ctx.ref, ", ".join(deleted))
        if errors:
            raise errors[0]
