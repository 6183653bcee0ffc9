"""A zone's TLSA records by RFC 2136 update: the records ``tlsa.<apex>`` lists, sent as the
smallest change from what sslm published last, on the condition that the zone still holds it.

What sslm published last is kept in the store beside ``tlsa.<apex>``, in
``certs/<apex>/tlsa.<apex>.published`` (JSON, one entry per record: owner, TTL, usage, selector,
matching type, data), written only after the server accepted the update. Each update:

1. deletes the records sslm published that are no longer wanted and adds the wanted ones it has
   not published (a record whose TTL changes is deleted and added again), one exact record at a
   time, so whatever else an owner holds is never touched by the change itself;
2. carries, for every owner it changes, the prerequisite that the owner's TLSA RRset is exactly
   what sslm published there last (or that it has none, for a new owner). A record added,
   changed or removed by hand (or by another program) at one of those owners makes the server
   apply nothing, and sslm reports the owner and the difference (:class:`TlsaHandEdited`)
   instead of overwriting anyone's work. Owners the change does not touch are not checked.

A run killed after the server applied an update but before the file recorded it finds the
server holding what it wanted: the prerequisite of the old state fails, a second update whose
only content is the prerequisite of the wanted state passes, and the file is brought up to
date. So the step is idempotent, whichever instant a run was killed at.

Callers hold the apex's lock (``tlsa:<apex>``), as for the include file: one writer at a time.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from sslm_tasks.dns.lookup import DnsAnswerError, DnsNoAnswer, query_rrset
from sslm_tasks.dns.tlsa import TlsaRecord
from sslm_tasks.dns.update import (
    Record,
    RRsetIs,
    UpdatePrerequisiteFailed,
    ZoneUpdater,
    absolute,
)
from sslm_tasks.errors import PermanentError, StoreError
from sslm_tasks.store.atomic import write_atomic
from sslm_tasks.store.layout import PUBLIC_MODE

_TLSA: Final = dns.rdatatype.TLSA
#: Characters of a record shown in a report: its fields and the first 24 hex digits.
_SHOWN: Final = 32


class TlsaHandEdited(PermanentError):
    """The zone holds other TLSA records than sslm published at an owner it must change."""


#: One published record: owner (absolute, lower case), TTL, and the rdata as text.
Published = tuple[str, int, str]


def _entry(record: TlsaRecord, ttl: int) -> Published:
    rdata = f"{record.usage} {record.selector} {record.matching} {record.data.lower()}"
    return (absolute(record.owner), ttl, rdata)


def read_published(path: Path) -> set[Published]:
    """What sslm published last (empty when it never did).

    Raises:
      StoreError: the file exists but cannot be read as this module wrote it.
    """
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as err:
        raise StoreError(f"reading {path}: {err}") from err
    try:
        return {_decode(item) for item in raw["records"]}
    except (KeyError, TypeError, ValueError) as err:
        raise StoreError(f"{path}: not a record of published TLSA records ({err})") from err


def _decode(item: dict[str, Any]) -> Published:
    rdata = f"{int(item['usage'])} {int(item['selector'])} {int(item['matching'])} {item['data']}"
    return (absolute(str(item["owner"])), int(item["ttl"]), rdata)


def _write_published(path: Path, zone: str, published: Iterable[Published]) -> None:
    records = []
    for owner, ttl, rdata in sorted(published):
        usage, selector, matching, data = rdata.split()
        records.append(
            {
                "owner": owner,
                "ttl": ttl,
                "usage": int(usage),
                "selector": int(selector),
                "matching": int(matching),
                "data": data,
            }
        )
    text = json.dumps({"zone": zone, "records": records}, indent=1) + "\n"
    write_atomic(path, text.encode(), mode=PUBLIC_MODE)


def _rdata(text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, _TLSA, text)


def _record(entry: Published) -> Record:
    owner, ttl, rdata = entry
    return Record(owner, ttl, _rdata(rdata))


def _rrsets(published: Iterable[Published], owners: Iterable[str]) -> list[RRsetIs]:
    """The prerequisite that each of ``owners`` holds exactly the records of ``published``."""
    by_owner: dict[str, set[dns.rdata.Rdata]] = defaultdict(set)
    for owner, _ttl, rdata in published:
        by_owner[owner].add(_rdata(rdata))
    return [RRsetIs(owner, _TLSA, frozenset(by_owner[owner])) for owner in sorted(owners)]


def publish_tlsa(
    updater: ZoneUpdater, records: Sequence[TlsaRecord], *, published_path: Path
) -> bool:
    """Bring the zone's TLSA records in line with ``records`` (see the module doc); returns
    whether an update was sent. A record without a TTL gets the zone's SOA TTL.

    Raises:
      TlsaHandEdited: an owner to change holds other records than sslm published there last;
        nothing was changed.
      UpdateRefused / PermanentError: the server refused the update (policy, key, clock).
      DnsNoAnswer: the server did not answer (transient).
      StoreError: the record of what was published cannot be read or written.
    """
    default_ttl: int | None = None
    wanted: set[Published] = set()
    for record in records:
        ttl = record.ttl
        if ttl is None:
            default_ttl = updater.default_ttl() if default_ttl is None else default_ttl
            ttl = default_ttl
        wanted.add(_entry(record, ttl))
    last = read_published(published_path)
    removed, added = last - wanted, wanted - last
    if not removed and not added:
        return False
    owners = {owner for owner, _, _ in removed | added}
    try:
        updater.apply(
            delete=[_record(entry) for entry in sorted(removed)],
            add=[_record(entry) for entry in sorted(added)],
            require=_rrsets(last, owners),
        )
    except UpdatePrerequisiteFailed:
        try:
            # Applied already, by a run killed before it could record so?
            updater.apply(require=_rrsets(wanted, owners))
        except UpdatePrerequisiteFailed:
            raise TlsaHandEdited(_hand_edits(updater, last, owners)) from None
    _write_published(published_path, updater.zone, wanted)
    return True


def _hand_edits(updater: ZoneUpdater, last: set[Published], owners: Iterable[str]) -> str:
    """The error of a failed prerequisite: each owner whose records differ from what sslm
    published there, with what the server serves that sslm did not publish and what it lacks
    of sslm's (as far as a query at the server tells)."""
    expected: dict[str, set[str]] = defaultdict(set)
    for owner, _ttl, rdata in last:
        expected[owner].add(_rdata(rdata).to_text())
    lines = []
    for owner in sorted(owners):
        try:
            rrset = query_rrset(updater.server, owner, "TLSA")
        except (DnsNoAnswer, DnsAnswerError) as err:
            lines.append(f"{owner} (what it holds is unknown: {err})")
            continue
        served = {rdata.to_text() for rdata in rrset or ()}
        foreign, missing = sorted(served - expected[owner]), sorted(expected[owner] - served)
        if foreign:
            lines.append(f"{owner} holds {_short(foreign)}, which sslm did not publish")
        if missing:
            lines.append(f"{owner} lacks {_short(missing)}, which sslm published")
    found = "; ".join(lines) or "(no difference when asked again: they changed meanwhile)"
    return (
        f"TLSA of {updater.label}: the zone holds other records than sslm published last: "
        f"{found}. sslm changed nothing: it changes an owner only while it holds exactly what "
        "sslm published there (remove the other records, or move them elsewhere; "
        "see docs/dane.md)"
    )


def _short(rdatas: Sequence[str]) -> str:
    return ", ".join(text if len(text) <= _SHOWN else f"{text[:_SHOWN]}..." for text in rdatas)
