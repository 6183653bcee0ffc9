"""DANE for a service's life: TLSA records published ahead of a key change, and a roll that
waits until DNS really serves them.

The per-apex file ``tlsa.<apex>`` is rebuilt from the certificates every time a service of the
apex changes, so it follows ``dane_tls`` edits too (upstream only rewrote it at renewal). A zone
with a ``[[dns_update]]`` entry gets its records by RFC 2136 update instead of the include
(:mod:`sslm_tasks.dns.tlsa_update`); the store keeps the file all the same. It
holds every service's ``curr`` records, its ``next`` records while a roll is pending, and its
``prev`` records from the roll until the servers have taken the new certificate. A change of
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
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from sslm_tasks.config.files import MAIN_FILE
from sslm_tasks.config.load import Config, list_services
from sslm_tasks.config.models import CA_GROUP, ServiceConfig
from sslm_tasks.crypto.inspect import load_certs
from sslm_tasks.dns.lookup import DnsNoAnswer, mx_hosts, primary_for, soa_serial
from sslm_tasks.dns.propagation import cached_ttls, check_records
from sslm_tasks.dns.refresh import zone_apexes
from sslm_tasks.dns.tlsa import (
    TlsaRecord,
    group_file_text,
    listed_services,
    publish_group_file,
    service_file_text,
)
from sslm_tasks.dns.tlsa import service_records as tlsa_records
from sslm_tasks.dns.tlsa_update import publish_tlsa
from sslm_tasks.dns.update import updater_for
from sslm_tasks.errors import ConfigError, SslmError
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.record import DaneRoll
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store import layout as files
from sslm_tasks.store.atomic import write_atomic
from sslm_tasks.store.layout import LinkName, ServiceRef
from sslm_tasks.store.versions import is_complete, read_link


def _cert(ctx: ServiceContext, which: LinkName) -> tuple[str, x509.Certificate] | None:
    layout, ref = ctx.layout, ctx.ref
    stamp = read_link(layout, ref, which)
    if stamp is None or not is_complete(layout, ref, stamp):
        return None
    return stamp, load_certs((layout.version_dir(ref, stamp) / files.CERT).read_bytes())[0]


def _dns_sans(cert: x509.Certificate) -> list[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.DNSName))


def _needs_mx(svc: ServiceConfig) -> bool:
    return any(entry.port == 25 or entry.subtype == "MX" for entry in svc.dane_tls)


def version_records(ctx: ServiceContext, which: LinkName) -> list[TlsaRecord]:
    """The TLSA records of one version (none without ``dane_tls`` or without that version).

    Also (re)writes the version's ``tlsa.rr`` when its content changed, unless the context
    only reads (``-d``, ``-s``: they write nothing).

    Raises:
      ConfigError: an MX-based entry but no usable ``[[dns_primary]]`` for the apex.
      DnsNoAnswer (transient) / DnsAnswerError: the MX lookup at the primary failed.
    """
    svc, ref = ctx.service, ctx.ref
    found = _cert(ctx, which)
    if not svc.dane_tls or found is None:
        return []
    stamp, cert = found
    mx: list[str] = []
    if _needs_mx(svc):
        mx = [host.host for host in mx_hosts(primary_for(ctx.ws.config, ref.group), ref.group)]
    records, _warnings = tlsa_records(
        cert, svc.dane_tls, ttl=svc.dane_tls_ttl, apex=ref.group, sans=_dns_sans(cert), mx_hosts=mx
    )
    text = service_file_text(records, apex=ref.group, service=ref.service, stamp=stamp)
    path = ctx.layout.version_dir(ref, stamp) / files.TLSA_RR
    if ctx.repair and (not path.is_file() or path.read_text() != text):
        write_atomic(path, text.encode(), mode=files.PUBLIC_MODE)
    return records


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
        entries = [(which, version_records(ctx, which)) for which in wanted]
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
    observe_before(ctx)
    publish_group(ctx.ws, ref.group)


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


@dataclass(frozen=True)
class Gate:
    open: bool
    reason: str


def _keys(records: Iterable[TlsaRecord]) -> set[tuple[str, int, int, int, str]]:
    return {record.key for record in records}


def _changes_records(ctx: ServiceContext, upcoming: LinkName, going: LinkName) -> bool:
    """Whether the records of ``upcoming`` include one that ``going`` does not have."""
    return not _keys(version_records(ctx, upcoming)) <= _keys(version_records(ctx, going))


def _publishes(config: Config, group: str) -> bool:
    """Whether sslm puts the group's TLSA records into its zone: through ``[dns]`` include
    files, or by RFC 2136 update (``[[dns_update]]``)."""
    return config.main.dns is not None or config.main.update_of(group) is not None


def _next_publishable(ctx: ServiceContext) -> bool:
    """Whether ``next``'s records may go into the zone: once :func:`observe_before` recorded
    what caches may hold (only the service's own ``tlsa`` step does, right before it publishes
    them), or at once when they add no key, nothing is served yet, or there is no ``[dns]`` to
    ask (the roll gate then stops the roll)."""
    layout, ref = ctx.layout, ctx.ref
    pending = read_link(layout, ref, "next")
    if pending is None or ctx.record.dane.next_stamp == pending:
        return True
    if not _publishes(ctx.ws.config, ref.group) or read_link(layout, ref, "curr") is None:
        return True
    return not _changes_records(ctx, "next", "curr")


def observe_before(ctx: ServiceContext) -> None:
    """Before ``next``'s records are first published beside ``curr``'s: ask every
    authoritative NS how long caches may hold what it serves at their owners now (the RRset's
    TTL, or the negative-caching TTL where there is none), and record the largest as
    ``ttl_before`` for ``next``. That is the old RRset, and a resolver that cached it knows
    only the old key until it expires, however short the new records' TTL (issue 13: a TTL
    lowered with a renewal, 60 s to 4 s, let the roll come while resolvers held the old RRset).

    Once per ``next``; nothing to do without ``dane_tls``, ``[dns]``, a ``curr`` (a first
    certificate rolls at once), or when the key did not change. A ``next`` that replaces one
    that never rolled keeps the larger TTL: caches may still hold what preceded both.

    Raises:
      DnsNoAnswer (transient): the primary, or every NS, did not answer: the records wait.
      DnsAnswerError / ConfigError: the primary refused, or no ``[[dns_primary]]`` fits.
    """
    svc, ref, layout, config = ctx.service, ctx.ref, ctx.layout, ctx.ws.config
    if not svc.dane_tls or not _publishes(config, ref.group):
        return
    pending, current = read_link(layout, ref, "next"), read_link(layout, ref, "curr")
    if pending is None or current is None or pending == current:
        return
    if not is_complete(layout, ref, pending) or ctx.record.dane.next_stamp == pending:
        return
    if not _changes_records(ctx, "next", "curr"):
        return
    owners = {record.owner for record in version_records(ctx, "next")}
    look = cached_ttls(ref.group, primary_for(config, ref.group), "TLSA", owners)
    if look.ttl is None:
        raise DnsNoAnswer(f"{ref}: what caches may hold: no NS answered: {look.summary()}")
    dane = ctx.record.dane
    carried = dane.ttl_before if dane.next_stamp is not None else None
    ctx.record.dane = replace(
        dane,
        next_stamp=pending,
        ttl_before=max(look.ttl, carried or 0),
        ttl_served=None,
        next_seen=None,
        next_ns=None,
    )
    ctx.save()


@dataclass(frozen=True)
class _Sighting:
    """One pass over every authoritative NS for the records of a version."""

    lagging: list[str]
    ttl: int
    counts: str


def _look(ctx: ServiceContext, which: LinkName) -> _Sighting:
    """Does every authoritative NS of the apex serve every record of ``which``? The largest
    TTL served (observed: with ``dane_tls_ttl = 0`` it is the zone's default).

    Raises:
      ConfigError: ``dane_tls`` without a ``[dns]`` section, or no ``[[dns_primary]]`` fits.
      DnsNoAnswer (transient): the primary did not answer.
    """
    ref, config = ctx.ref, ctx.ws.config
    if not _publishes(config, ref.group):
        where = config.conf_dir / MAIN_FILE
        raise ConfigError(
            where, "dns", None, "dane_tls needs a [dns] section with tlsa_dirs, or [[dns_update]]"
        )
    primary = primary_for(config, ref.group)
    by_owner: dict[str, list[str]] = {}
    for record in version_records(ctx, which):
        text = f"{record.usage} {record.selector} {record.matching} {record.data}"
        by_owner.setdefault(record.owner, []).append(text)
    lagging = []
    ttl = 0
    serving_all: set[str] | None = None  # servers that serve every owner's records
    asked: set[str] = set()
    for owner, expected in by_owner.items():
        result = check_records(ref.group, primary, "TLSA", owner, expected)
        ttl = max(ttl, result.ttl or 0)
        serving = set(result.caught_up)
        asked |= serving | {line.split(": ", 1)[0] for line in result.lagging}
        serving_all = serving if serving_all is None else serving_all & serving
        if not result.ok:
            lagging.append(result.summary())
    return _Sighting(lagging, ttl, f"{len(serving_all or ())} of {len(asked)}")


def _note(ctx: ServiceContext) -> None:
    """Keep what a look saw, unless the look is read-only (``-d`` writes nothing)."""
    if ctx.repair:
        ctx.save()


def roll_gate(ctx: ServiceContext) -> Gate:
    """Whether DNS lets ``next`` become ``curr``: open when the service has no DANE, when the
    records do not change (``-r`` kept the key), or when every authoritative NS has served the
    ``next`` records for twice the largest TTL a cache may hold: theirs, or that of what the NS
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
    dane = ctx.record.dane
    if dane.next_stamp != read_link(ctx.layout, ctx.ref, "next"):
        return Gate(
            False,
            "the next TLSA records are not published yet: the tlsa step publishes them once "
            "the name servers said how long caches may hold the records there now",
        )
    sighting = _look(ctx, "next")
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
    (the caller saves the record). A first certificate replaced nothing: nothing to retire."""
    if not ctx.service.dane_tls:
        return
    if read_link(ctx.layout, ctx.ref, "prev") is None:
        ctx.record.dane = DaneRoll()
        return
    dane = ctx.record.dane
    ttl = max(dane.ttl_before or 0, dane.ttl_served or 0)
    seen = dane.next_seen if dane.next_stamp == read_link(ctx.layout, ctx.ref, "curr") else None
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
        sighting = _look(ctx, "curr")
        if sighting.lagging:
            return Gate(False, "waiting for DNS: " + "; ".join(sighting.lagging))
        wait = 2 * max(dane.retire_ttl or 0, sighting.ttl)
        dane.retire_after = now + timedelta(seconds=wait)
        ctx.save()
    if now < dane.retire_after:
        return Gate(False, f"caches may hold the old records until {dane.retire_after:%H:%M:%S}")
    return Gate(True, f"no cache holds an RRset without the new key since {dane.retire_after}")
