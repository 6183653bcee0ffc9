"""DANE for a service's life: TLSA records published ahead of a key change, and a roll that
waits until DNS really serves them.

The per-apex file ``tlsa.<apex>`` is rebuilt from the certificates every time a service of the
apex changes, so it follows ``dane_tls`` edits too (upstream only rewrote it at renewal). A zone
with a ``[[dns_update]]`` entry gets its records by RFC 2136 update instead of the include
(:mod:`sslm_tasks.dns.tlsa_update`); the store keeps the file all the same. It
holds every service's ``curr`` records, its ``next`` records while a roll is pending, and its
``prev`` records from the roll until the servers have taken the new certificate, and for a
service with ``key_standby`` its standby key's records all the time (:mod:`.standby`). A change of
the file is counted in the zone's refresh ledger (``dns.refresh``); the refresh itself runs
once for all pending zones, so many changes cost one ``--serial_bump``, and a crash in between
loses nothing.

The roll is gated on observation, not on a timer alone (field notes, "safe key change"): every
authoritative NS of the apex must serve the ``next`` records, and at least twice the largest
TTL a cache may hold must have passed since that was first seen: the TTL they are served with,
and the one of what the NS served at their owners before they were published (asked just
before, :func:`observe_before`), since a resolver that cached the old RRset knows nothing of
the new key until it expires. The old records are retired no sooner either. Both sightings and
TTLs are recorded in the service state (``DaneRoll``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from sslm_tasks.config.load import list_services
from sslm_tasks.config.models import CA_GROUP
from sslm_tasks.dns.lookup import primary_for, soa_serial
from sslm_tasks.dns.refresh import zone_apexes
from sslm_tasks.dns.tlsa import (
    TlsaRecord,
    group_file_text,
    listed_services,
    publish_group_file,
)
from sslm_tasks.dns.tlsa_update import publish_tlsa
from sslm_tasks.dns.update import updater_for
from sslm_tasks.errors import SslmError
from sslm_tasks.lifecycle import standby
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.record import DaneRoll
from sslm_tasks.lifecycle.tlsa_records import record_keys, version_records
from sslm_tasks.lifecycle.tlsa_sightings import Gate, cacheable_before, look, publishes
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import LinkName, ServiceRef
from sslm_tasks.store.versions import is_complete


def _group_services(ws: Workspace, group: str) -> list[ServiceRef]:
    """Every service of ``group`` that has files: configured ones and any selected ones."""
    names = set(list_services(ws.config.conf_dir / group))
    names |= {ref.service for ref in ws.config.services if ref.group == group}
    return [
        ServiceRef(group, name)
        for name in sorted(names)
        if ws.layout.service_dir(ServiceRef(group, name)).is_dir()
    ]


def publish_group(ws: Workspace, group: str) -> bool:
    """Rebuild ``tlsa.<group>`` and copy it to every ``tlsa_dirs`` entry when its records
    changed; a change marks the zone for a DNS refresh. Returns whether it changed.

    Idempotent. Holds the apex's lock (``tlsa:<apex>``) while it reads and writes, so two
    services of one zone renewed at once by different workers never drop each other's records.
    """
    if group == CA_GROUP:
        return False
    with ws.lock(f"tlsa:{group}"):
        return _publish_group(ws, group)


def _publish_group(ws: Workspace, group: str) -> bool:
    versions: dict[str, list[tuple[str, Sequence[TlsaRecord]]]] = {}
    for ref in _group_services(ws, group):
        ctx = ServiceContext(ws, ref)
        if not ctx.service.dane_tls:
            continue
        wanted: list[LinkName] = ["curr", "next"] if _next_publishable(ctx) else ["curr"]
        if ctx.record.dane.retire_prev:
            wanted.append("prev")
        entries: list[tuple[str, list[TlsaRecord]]] = [
            (which, version_records(ctx, which)) for which in wanted
        ]
        entries.append(("standby", standby.published_records(ctx)))
        versions[ref.service] = [(which, recs) for which, recs in entries if recs]
    if not versions and not ws.layout.group_tlsa(group).exists():
        return False
    text = group_file_text(group, versions)
    updater = updater_for(ws.config, group)
    if updater is not None:
        # The zone takes updates: the store keeps the file (what -s and the next rebuild read),
        # the zone gets the difference (dns.tlsa_update); no include, no refresh.
        store = ws.layout.group_tlsa(group)
        publish_group_file(text, apex=group, store_path=store, tlsa_dirs=[])
        records = [
            record for entries in versions.values() for _, recs in entries for record in recs
        ]
        return publish_tlsa(updater, records, published_path=ws.layout.group_tlsa_published(group))
    changed = publish_group_file(
        text, apex=group, store_path=ws.layout.group_tlsa(group), tlsa_dirs=_tlsa_dirs(ws)
    )
    if changed and _dns_restart_wanted(ws):
        ws.zone_refresher().note_change(group)
    return changed


def publish_for_service(ctx: ServiceContext) -> None:
    """The renew/roll step: bring the TLSA file of the service's apex up to date.

    A service without ``dane_tls`` that the file does not list has nothing to bring, and
    leaves the file alone: each service of the apex sees to its own records in its own step,
    so the many services of a zone without DANE do not each rebuild it (reading every
    service file of the zone, under the zone's lock)."""
    ref = ctx.ref
    if not ctx.service.dane_tls and ref.service not in listed_services(
        ctx.layout.group_tlsa(ref.group)
    ):
        return
    standby.prepare(ctx)
    observe_before(ctx)
    publish_group(ctx.ws, ref.group)
    standby.watch(ctx)


def _tlsa_dirs(ws: Workspace) -> list[Path]:
    dns = ws.config.main.dns
    return [ws.config.resolve(d) for d in dns.tlsa_dirs] if dns is not None else []


def _dns_restart_wanted(ws: Workspace) -> bool:
    """A TLSA change refreshes the zone when ``[dns]`` has a restart command and its
    ``depends`` is empty or names ``tlsa`` or ``dns`` (upstream's tags for a TLSA change)."""
    dns = ws.config.main.dns
    if dns is None or not dns.restart_cmd:
        return False
    return not dns.depends or bool({"tlsa", "dns"} & set(dns.depends))


def pending_refreshes(ws: Workspace) -> list[str]:
    """Every zone with a change since its last DNS refresh: TLSA files, and the challenge
    records of finished ACME orders, whose withdrawal waits for this refresh."""
    return ws.zone_refresher().pending()


def refresh_pending(
    ws: Workspace, groups: Iterable[str], *, everything: bool = False, wait_s: float = 0.0
) -> list[str]:
    """Run one DNS refresh for every zone with a change since its last refresh, and with
    ``everything`` every zone among ``groups`` too, as ``-dns`` asks.

    With ``wait_s``, wait up to that long until the zones' primary serves a newer serial, so
    that what follows (a deploy's DANE check) sees the new records: only the in-process run
    waits; workers move on and let their own retries absorb the delay.

    Returns the zones refreshed. A failed refresh leaves them pending, so the next run retries;
    one that another caller ran while this one waited leaves nothing to do.
    """
    pending = pending_refreshes(ws)
    if everything:
        # A zone that takes updates is re-signed by its server at each one: nothing to refresh.
        updated = {entry.domain for entry in ws.config.main.dns_update}
        zones = sorted((set(pending) | set(zone_apexes(groups))) - updated)
    else:
        zones = pending
    if not zones:
        return zones
    before = {zone: _primary_serial(ws, zone) for zone in zones} if wait_s > 0 else {}
    zones = ws.zone_refresher().refresh(zones, everything=everything)
    deadline = time.monotonic() + wait_s
    for zone, serial in before.items():
        while zone in zones and serial is not None and time.monotonic() < deadline:
            now_serving = _primary_serial(ws, zone)
            if now_serving is not None and now_serving != serial:
                break
            time.sleep(0.1)
    return zones


def _primary_serial(ws: Workspace, zone: str) -> int | None:
    """The serial the zone's primary serves, or None when there is no primary to ask."""
    if not ws.config.main.dns_primary:
        return None
    try:
        return soa_serial(primary_for(ws.config, zone), zone)
    except SslmError:
        return None


# --------------------------------------------------------------------------- the roll gate


def _adds_records(ctx: ServiceContext, upcoming: LinkName) -> bool:
    """Whether ``upcoming``'s records include one that is not published already: neither
    ``curr``'s nor, for a service with a standby key, the standby's."""
    published = record_keys(version_records(ctx, "curr"))
    published |= record_keys(standby.published_records(ctx))
    return not record_keys(version_records(ctx, upcoming)) <= published


def _changes_records(ctx: ServiceContext, upcoming: LinkName, going: LinkName) -> bool:
    """Whether the records of ``upcoming`` include one that ``going`` does not have."""
    return not record_keys(version_records(ctx, upcoming)) <= record_keys(
        version_records(ctx, going)
    )


def _next_publishable(ctx: ServiceContext) -> bool:
    """Whether ``next``'s records may go into the zone: once :func:`observe_before` recorded
    what caches may hold (only the service's own ``tlsa`` step does, right before it publishes
    them), or at once when they add no record (the same key, or the standby key, long
    published), nothing is served yet, or there is no ``[dns]`` to ask (the roll gate then
    stops the roll)."""
    ref = ctx.ref
    pending = ctx.link("next")
    if pending is None or ctx.record.dane.next_stamp == pending:
        return True
    if not publishes(ctx.ws.config, ref.group) or ctx.link("curr") is None:
        return True
    return not _adds_records(ctx, "next")


def observe_before(ctx: ServiceContext) -> None:
    """Before ``next``'s records are first published beside ``curr``'s: ask every
    authoritative NS how long caches may hold what it serves at their owners now (the RRset's
    TTL, or the negative-caching TTL where there is none), and record the largest as
    ``ttl_before`` for ``next``. That is the old RRset, and a resolver that cached it knows
    only the old key until it expires, however short the new records' TTL (issue 13: a TTL
    lowered with a renewal, 60 s to 4 s, let the roll come while resolvers held the old RRset).

    Once per ``next``; nothing to do without ``dane_tls``, ``[dns]``, a ``curr`` (a first
    certificate rolls at once), or when ``next`` adds no record (the key did not change, or it
    is the standby key, whose records were published long ago). A ``next`` that replaces one
    that never rolled keeps the larger TTL: caches may still hold what preceded both.

    Raises:
      DnsNoAnswer (transient): the primary, or every NS, did not answer: the records wait.
      DnsAnswerError / ConfigError: the primary refused, or no ``[[dns_primary]]`` fits.
    """
    svc, ref, layout, config = ctx.service, ctx.ref, ctx.layout, ctx.ws.config
    if not svc.dane_tls or not publishes(config, ref.group):
        return
    pending, current = ctx.link("next"), ctx.link("curr")
    if pending is None or current is None or pending == current:
        return
    if not is_complete(layout, ref, pending) or ctx.record.dane.next_stamp == pending:
        return
    if not _adds_records(ctx, "next"):
        return
    ttl = cacheable_before(ctx, version_records(ctx, "next"))
    dane = ctx.record.dane
    carried = dane.ttl_before if dane.next_stamp is not None else None
    ctx.record.dane = replace(
        dane,
        next_stamp=pending,
        ttl_before=max(ttl, carried or 0),
        ttl_served=None,
        next_seen=None,
        next_ns=None,
    )
    ctx.save()


def _note(ctx: ServiceContext) -> None:
    """Keep what a look saw, unless the look is read-only (``-d`` writes nothing)."""
    if ctx.repair:
        ctx.save()


def roll_gate(ctx: ServiceContext) -> Gate:
    """Whether DNS lets ``next`` become ``curr``: open when the service has no DANE, when the
    records do not change (``-r`` kept the key, or a standby service renewed on its key),
    when ``next`` holds the standby key and its records have long been served
    (:func:`standby.roll_gate`), or when every authoritative NS has served the ``next``
    records for twice the largest TTL a cache may hold: theirs, or that of what the NS
    served before they were published (``ttl_before``, :func:`observe_before`), so that no
    resolver still hands out an RRset without the new key.

    Each call makes one pass over the name servers and records the first time all served them.

    Raises:
      ConfigError: ``dane_tls`` without a ``[dns]`` section, or no ``[[dns_primary]]`` fits.
      DnsNoAnswer (transient): the primary did not answer.
    """
    if not ctx.service.dane_tls:
        return Gate(True, "no DANE records")
    if not _changes_records(ctx, "next", "curr"):
        return Gate(True, "TLSA records unchanged")
    by_standby = standby.roll_gate(ctx, version_records(ctx, "next"))
    if by_standby is not None:
        return by_standby
    dane = ctx.record.dane
    if dane.next_stamp != ctx.link("next"):
        return Gate(
            False,
            "the next TLSA records are not published yet: the tlsa step publishes them once "
            "the name servers said how long caches may hold the records there now",
        )
    sighting = look(ctx, version_records(ctx, "next"))
    dane.next_ns = sighting.counts
    if sighting.lagging:
        dane.next_seen = None
        _note(ctx)
        return Gate(False, "waiting for DNS: " + "; ".join(sighting.lagging))
    now = ctx.now()
    if dane.next_seen is None:
        dane.next_seen = now
    dane.ttl_served = sighting.ttl
    seen = dane.next_seen
    _note(ctx)
    ready = seen + timedelta(seconds=2 * max(dane.ttl_before or 0, sighting.ttl))
    if now < ready:
        return Gate(
            False,
            f"every NS serves the next TLSA records; waiting until {ready:%H:%M:%S} (2 x the "
            f"largest TTL: {sighting.ttl} s now, {dane.ttl_before} s before the change; "
            f"served since {seen.isoformat()})",
        )
    return Gate(True, f"every NS has served the next TLSA records since {seen.isoformat()}")


def rolled(ctx: ServiceContext) -> None:
    """After a roll: keep the old records published until the servers took the new certificate
    and until twice the TTLs the roll gate saw have passed since every NS served the new ones
    (the caller saves the record). A first certificate replaced nothing: nothing to retire.
    After a switch to the standby key, the new records were served long before: the standby's
    sighting and TTLs stand in for the gate's."""
    if not ctx.service.dane_tls:
        return
    if ctx.link("prev") is None:
        ctx.record.dane = DaneRoll()
        return
    dane = ctx.record.dane
    ttl = max(dane.ttl_before or 0, dane.ttl_served or 0)
    seen = dane.next_seen if dane.next_stamp == ctx.link("curr") else None
    switched = standby.sighting_of_curr(ctx)
    if switched is not None:
        seen, ttl = switched
    ctx.record.dane = DaneRoll(
        retire_prev=True,
        retire_after=None if seen is None else seen + timedelta(seconds=2 * ttl),
        retire_ttl=ttl,
    )


def retire_gate(ctx: ServiceContext) -> Gate:
    """Whether the old ``curr``'s records (now ``prev``'s) may go, as far as DNS goes (the
    servers are the caller's part): when ``curr``'s records are all of them anyway, or once
    ``retire_after`` has come. After a roll that did not wait for DNS (``-f``), ``retire_after``
    is set by the first look that sees every NS serve ``curr``'s records: twice the larger of
    the roll's TTLs and the one served then.

    Raises:
      ConfigError, DnsNoAnswer: as :func:`roll_gate`.
    """
    dane = ctx.record.dane
    if not _changes_records(ctx, "prev", "curr"):
        return Gate(True, "no old TLSA records to retire")
    now = ctx.now()
    if dane.retire_after is None:
        sighting = look(ctx, version_records(ctx, "curr"))
        if sighting.lagging:
            return Gate(False, "waiting for DNS: " + "; ".join(sighting.lagging))
        wait = 2 * max(dane.retire_ttl or 0, sighting.ttl)
        dane.retire_after = now + timedelta(seconds=wait)
        ctx.save()
    if now < dane.retire_after:
        return Gate(False, f"caches may hold the old records until {dane.retire_after:%H:%M:%S}")
    return Gate(True, f"no cache holds an RRset without the new key since {dane.retire_after}")
