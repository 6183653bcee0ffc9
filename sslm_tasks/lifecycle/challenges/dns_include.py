"""dns-01 by zone include files: TXT records in ``acme-challenge.<apex>``, then a zone refresh.

The operator's zone ``$INCLUDE``s ``<acme_dir>/acme-challenge.<apex>`` (``dns.challenges``);
a change is counted in the zone's refresh ledger (``dns.refresh``) and the refresh itself
(``[dns] restart_cmd --serial_bump``) is left to the first look of :meth:`served`, so orders
publishing at the same time share one refresh. A name's records go into the longest zone among
the configured groups, ``[[dns_primary]]`` and ``[[dns_update]]`` domains, or else into the zone
the primary serves it in, found by SOA queries at the primary.

"Served" means: the primary serves every TXT value, and every NS of the zone (and each
``dns_xtra_ns``) serves the SOA serial the primary served once it had them, or a later one
(``dns.servers.SerialTarget``), so later looks ask only the NS.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from sslm_tasks.acme.order_state import ChallengeToPublish, OrderState
from sslm_tasks.config.files import MAIN_FILE
from sslm_tasks.config.load import zone_of
from sslm_tasks.config.models import ChallengeKind
from sslm_tasks.dns.challenges import ChallengeFile
from sslm_tasks.dns.lookup import extra_nameservers, primary_for, zone_cut
from sslm_tasks.dns.propagation import look_txt
from sslm_tasks.errors import ConfigError, LockBusy
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.record import DnsPublication

log = logging.getLogger("sslm")

#: A primary that still lacks this order's records this long after they were pushed gets the
#: zone refreshed again: a reload the name server dropped (one that came while it was still
#: loading or signing the previous one, seen with BIND's inline signing under bursts) would
#: otherwise leave the order waiting for a refresh nobody sends, until its bound.
REPUSH_AFTER_S: Final = 10.0


def order_tag(order: OrderState) -> str:
    """The owner tag of an order's TXT records: a short hash of the order URL."""
    return hashlib.sha256(order.url.encode()).hexdigest()[:16]


def apex_of(ctx: ServiceContext, name: str) -> str:
    """The zone a name's challenge record goes into: the longest configured one
    (``config.load.zone_of``); for a name in none of them, the zone the primary serves it in,
    found by asking it (``dns.lookup.zone_cut``).

    Raises:
      ConfigError: the name is in none of them, and the primary serves no zone that holds it
        (its record would be out of every zone).
      DnsNoAnswer (transient): the primary did not answer.
    """
    zone = zone_of(ctx.ws.config, ctx.ref.group, name) or _served(
        ctx, name.rstrip(".").lower().removeprefix("*.")
    )
    if zone is None:
        where = ctx.ws.config.conf_dir / MAIN_FILE
        raise ConfigError(
            where,
            "dns_primary",
            None,
            f"no zone for {name!r} (of {ctx.ref}): add a [[dns_primary]] entry with its domain",
        )
    return zone


def _served(ctx: ServiceContext, host: str) -> str | None:
    """The zone the configured primary serves ``host`` in, when there is a primary to ask and
    it serves one; else nothing (the caller's error then asks for a ``[[dns_primary]]``)."""
    try:
        primary = primary_for(ctx.ws.config, host)
    except ConfigError:
        return None
    zone = zone_cut(primary, host)
    if zone is not None:
        log.info("%s: the zone of %s is %s (its primary serves it)", ctx.ref, host, zone)
    return zone


class DnsIncludePublisher:
    """dns-01 for one service through the zones' include files (see the module doc)."""

    kind: ChallengeKind = "dns-01"

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def _record(self) -> DnsPublication | None:
        order = self._ctx.record.order
        return None if order is None else order.dns

    def _by_apex(
        self, challenges: Sequence[ChallengeToPublish]
    ) -> dict[str, list[ChallengeToPublish]]:
        by_apex: dict[str, list[ChallengeToPublish]] = defaultdict(list)
        for chall in challenges:
            by_apex[apex_of(self._ctx, chall.identifier)].append(chall)
        return dict(by_apex)

    def _file(self) -> ChallengeFile:
        config = self._ctx.ws.config
        dns = config.main.dns
        if dns is None or not dns.acme_dir:
            raise ConfigError(
                config.conf_dir / MAIN_FILE, "dns.acme_dir", None, "dns-01 needs a [dns] acme_dir"
            )
        dirs: list[Path] = [config.resolve(d) for d in dns.acme_dir]
        return ChallengeFile(
            layout=self._ctx.layout, acme_dirs=dirs, locker=self._ctx.ws.store_locker()
        )

    def publish(self, order: OrderState, challenges: Sequence[ChallengeToPublish]) -> None:
        """The order's TXT records into each apex's include, counted as changes of those zones.
        Idempotent: records present are not added again."""
        ctx, published = self._ctx, self._record()
        if published is None:
            raise ConfigError(ctx.ws.config.conf_dir / MAIN_FILE, "dns", None, "no order recorded")
        by_apex = self._by_apex(challenges)
        published.apexes = sorted(set(published.apexes) | set(by_apex))
        ctx.save()
        include, tag = self._file(), order_tag(order)
        for apex, challs in sorted(by_apex.items()):
            include.add(apex, [(c.identifier, c.value) for c in challs], order_id=tag)
        log.info(
            "%s: dns-01 records published in %s", ctx.ref, ", ".join(sorted(by_apex)) or "none"
        )
        # Every apex counts as changed, not only those whose file this call wrote: a run killed
        # between its write and its count would otherwise never get the zone refreshed.
        self._count(published, sorted(by_apex))
        # Its tickets lost to a power cut, the order waits for every change of its zones noted
        # so far (a ticket of None): a refresh more at worst, so no directory fsync.
        ctx.save(sync_dir=False)

    def _count(self, published: DnsPublication, zones: list[str]) -> None:
        refresher = self._ctx.ws.zone_refresher()
        published.tickets.update({apex: refresher.note_change(apex) for apex in zones})
        published.pushed = self._ctx.now()

    def served(
        self, order: OrderState, challenges: Sequence[ChallengeToPublish]
    ) -> tuple[bool, str]:
        """One pass over the name servers of every apex (see the module doc); first the
        refresh of the zones no refresh has carried these records into yet."""
        ctx, published = self._ctx, self._record()
        if published is None:
            return False, "no order recorded"
        by_apex = self._by_apex(challenges)
        targets = dict(published.serials)
        # Zones where no refresh has carried these records yet; whatever else is pending there
        # (another order's records, a finished one's withdrawal) is not this order's to refresh.
        refresher = ctx.ws.zone_refresher()
        pending = refresher.uncovered(
            {a: published.tickets.get(a) for a in by_apex if a not in targets}
        )
        if pending:
            try:
                refreshed = refresher.refresh(pending, wait=False)
            except LockBusy:
                return False, f"waiting for the running refresh of {', '.join(pending)}"
            if refreshed:
                log.info("%s: DNS refreshed for %s", ctx.ref, ", ".join(refreshed))
        extra = extra_nameservers(ctx.ws.config)
        lagging: list[str] = []
        seen: list[str] = []
        unserved: list[str] = []
        for apex, challs in sorted(by_apex.items()):
            primary = primary_for(ctx.ws.config, apex)
            records = [(c.name, c.value) for c in challs]
            target, results = look_txt(
                apex, primary, records, target=targets.get(apex), extra=extra
            )
            for result in results:
                (seen if result.ok else lagging).append(result.summary())
            if target is None:
                unserved.append(apex)
            else:
                targets[apex] = target
        changed = targets != published.serials
        published.serials = targets
        if unserved and self._repush_due(published):
            log.warning("%s: the primary lacks the records; refreshing %s again", ctx.ref, unserved)
            self._count(published, unserved)
            self._refresh(unserved, wait=False)
            lagging.append(f"refreshed {', '.join(unserved)} again")
            changed = True
        if changed:
            ctx.save()
        if lagging:
            return False, "; ".join(lagging)
        return True, "; ".join(seen) or "nothing to publish"

    def _repush_due(self, published: DnsPublication) -> bool:
        pushed = published.pushed
        return pushed is None or (self._ctx.now() - pushed).total_seconds() >= REPUSH_AFTER_S

    def _refresh(self, zones: list[str], *, wait: bool) -> None:
        """Refresh those of ``zones`` still pending. Without ``wait``, a refresh already
        running leaves them pending for the next look of :meth:`served`."""
        try:
            refreshed = self._ctx.ws.zone_refresher().refresh(zones, wait=wait)
        except LockBusy:
            if wait:
                raise
            log.info(
                "%s: a refresh of %s is running; left for the next look",
                self._ctx.ref,
                ", ".join(zones),
            )
            return
        if refreshed:
            log.info("%s: DNS refreshed for %s", self._ctx.ref, ", ".join(refreshed))

    def withdraw(self, order: OrderState | None, *, refresh: bool) -> None:
        """Remove the order's records from every apex it published in; count the changes,
        and refresh them unless ``refresh`` is False. The caller drops the order record."""
        published = self._record()
        if published is None or not published.apexes:
            return
        changed: list[str] = []
        if order is not None:
            include, tag = self._file(), order_tag(order)
            changed = [apex for apex in published.apexes if include.remove(apex, order_id=tag)]
        refresher = self._ctx.ws.zone_refresher()
        for apex in changed:
            refresher.note_change(apex)
        if refresh:
            self._refresh(list(published.apexes), wait=True)
        published.apexes = []
