"""One-pass propagation checks: does every server already serve what we published?

Each function asks every server once (concurrently, so a pass lasts about as long as the
slowest server's ``tries * timeout_s``) and returns a :class:`PropagationResult`. None of them
waits or loops until DNS catches up: the caller (a task) retries with a countdown while the
result is not ``ok``, and gives up at its deadline with :meth:`PropagationResult.summary`,
which names every lagging server and what it served (issue 4: "a clear timeout naming the
lagging server").

Failures are split by who failed. What is asked at the primary (its SOA serial, the NS set,
the NS addresses, the TXT records) is the reference, so a failure there raises
:class:`~sslm_tasks.dns.lookup.DnsNoAnswer` (transient) or
:class:`~sslm_tasks.dns.lookup.DnsAnswerError` (permanent). A server being checked that does
not answer is only one more lagging server: it is reported in ``lagging`` and ``errors``,
never raised, so one dead secondary cannot hide what the others serve.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from sslm_tasks.dns.lookup import (
    QUERY_TIMEOUT_S,
    QUERY_TRIES,
    DnsAnswerError,
    DnsNoAnswer,
    cacheable_ttl,
    nameservers,
    query_rrset,
    soa_serial,
    txt_values,
)
from sslm_tasks.dns.servers import Nameserver, NsHost, SerialTarget

#: SOA serials are 32-bit serial numbers (RFC 1982, SERIAL_BITS = 32).
SERIAL_MODULUS = 1 << 32
_SERIAL_HALF = 1 << 31
#: Characters of a record shown in a report before it is cut.
_SHOWN = 48


def serial_at_least(served: int, target: int) -> bool:
    """Whether SOA serial ``served`` is ``target`` or newer, in RFC 1982 serial arithmetic.

    ``served`` is newer when it is ahead by less than 2**31, modulo 2**32, so a serial that
    wrapped past 4294967295 still counts as newer (upstream asked for equality, so a secondary
    that had already moved on never matched). Serials exactly 2**31 apart are undefined by the
    RFC and count as not caught up.

    Raises:
      ValueError: a serial is outside 0 .. 2**32 - 1.
    """
    for serial in (served, target):
        if not 0 <= serial < SERIAL_MODULUS:
            raise ValueError(f"SOA serial {serial} is not a 32-bit unsigned number")
    return (served - target) % SERIAL_MODULUS < _SERIAL_HALF


@dataclass(frozen=True)
class PropagationResult:
    """What one pass found.

    Fields:
      ok: every server serves ``expected``.
      expected: what every server must serve, in words (``example.test SOA serial >= 7``).
      caught_up: labels of the servers that serve it.
      lagging: one line per server that does not (yet): ``<label>: <what it served>``,
        including servers that did not answer and NS hosts without an address.
      errors: label -> reason, for the lagging servers that gave no usable answer.
      ttl: the largest TTL served for the records (:func:`check_records` only; None if no
        server served any).
    """

    ok: bool
    expected: str
    caught_up: list[str] = field(default_factory=list)
    lagging: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    ttl: int | None = None

    def summary(self) -> str:
        """One line for logs and the final error: what was expected and who lags."""
        counts = f"{len(self.caught_up)} of {len(self.caught_up) + len(self.lagging)}"
        if self.ok:
            return f"{self.expected}: served by all {counts} servers"
        return f"{self.expected}: served by {counts} servers; lagging: {'; '.join(self.lagging)}"


@dataclass(frozen=True)
class _Seen:
    """One server's outcome: caught up or not, what it served, and TTL when relevant."""

    label: str
    ok: bool
    served: str
    error: str | None = None
    ttl: int | None = None


#: A probe asks one server and says what it saw; DnsNoAnswer/DnsAnswerError mean no answer.
_Probe = Callable[[Nameserver], _Seen]


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}..."


def _ask_all(servers: Sequence[Nameserver], probe: _Probe) -> list[_Seen]:
    """Run ``probe`` on every server at once; a server's DNS failure becomes its outcome."""

    def guarded(server: Nameserver) -> _Seen:
        try:
            return probe(server)
        except (DnsNoAnswer, DnsAnswerError) as err:
            return _Seen(server.label, False, str(err), error=str(err))

    if not servers:
        return []
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        return list(pool.map(guarded, servers))


def _unique(servers: Iterable[Nameserver]) -> list[Nameserver]:
    """``servers`` without a second entry for the same address and port, in order."""
    seen: dict[tuple[str, int], Nameserver] = {}
    for server in servers:
        seen.setdefault((server.address, server.port), server)
    return list(seen.values())


def _unresolved(hosts: Iterable[NsHost], primary: Nameserver) -> list[_Seen]:
    """An NS host without addresses at the primary cannot be checked, so it lags."""
    reason = f"the primary {primary.label} serves no A or AAAA for it (no other resolver is asked)"
    return [_Seen(host.name, False, reason, error=reason) for host in hosts if not host.addresses]


def _result(expected: str, seen: Iterable[_Seen]) -> PropagationResult:
    outcomes = list(seen)
    ttls = [one.ttl for one in outcomes if one.ttl is not None]
    return PropagationResult(
        ok=all(one.ok for one in outcomes),
        expected=expected,
        caught_up=[one.label for one in outcomes if one.ok],
        lagging=[f"{one.label}: {one.served}" for one in outcomes if not one.ok],
        errors={one.label: one.error for one in outcomes if one.error is not None},
        ttl=max(ttls) if ttls else None,
    )


def _owner(name: str) -> str:
    return name.strip().rstrip(".").lower()


def check_txt(
    primary: Nameserver,
    records: Iterable[tuple[str, str]],
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
    tries: int = QUERY_TRIES,
) -> PropagationResult:
    """Whether ``primary`` serves every expected TXT ``(name, value)``; one query per name.

    A value must equal one TXT record's joined strings (upstream accepted a substring); other
    records at the name (another order's challenge) do not matter. The result's ``lagging``
    has one line per name that lacks a value. Idempotent, no side effects.

    Raises:
      DnsNoAnswer: the primary gave no answer in time or SERVFAIL (transient).
      DnsAnswerError: the primary refused the query (permanent).
    """
    wanted: dict[str, set[str]] = defaultdict(set)
    for name, value in records:
        wanted[_owner(name)].add(value)
    lagging: list[str] = []
    for name, values in sorted(wanted.items()):
        served = txt_values(primary, name, timeout_s=timeout_s, tries=tries)
        missing = sorted(values - set(served))
        if missing:
            lagging.append(f"{primary.label}: {name} TXT lacks {missing}, serves {served}")
    expected = f"TXT {sorted((n, v) for n, vs in wanted.items() for v in vs)}"
    caught_up = [] if lagging else [primary.label]
    return PropagationResult(not lagging, expected, caught_up, lagging)


def serial_target(
    apex: str, primary: Nameserver, *, timeout_s: float = QUERY_TIMEOUT_S, tries: int = QUERY_TRIES
) -> SerialTarget:
    """The primary's SOA serial of ``apex`` now, and its NS hosts and their addresses.

    Raises:
      DnsNoAnswer: the primary gave no answer in time or SERVFAIL (transient).
      DnsAnswerError: the primary refused, or serves no SOA or NS at ``apex`` (permanent).
    """
    serial = soa_serial(primary, apex, timeout_s=timeout_s, tries=tries)
    return SerialTarget(serial, nameservers(primary, apex, timeout_s=timeout_s, tries=tries))


def check_serial(
    apex: str,
    primary: Nameserver,
    *,
    target: SerialTarget | None = None,
    extra: Sequence[Nameserver] = (),
    timeout_s: float = QUERY_TIMEOUT_S,
    tries: int = QUERY_TRIES,
) -> PropagationResult:
    """Whether every authoritative NS of ``apex`` and every ``extra`` server serves the
    ``target`` serial or a newer one (RFC 1982, see :func:`serial_at_least`).

    Without ``target``, the primary's current serial and NS set, asked in this same pass
    (:func:`serial_target`). Each NS address (IPv4 and IPv6) is one server on port 53.
    ``extra`` is ``dns_xtra_ns`` (:func:`~sslm_tasks.dns.lookup.extra_nameservers`). Compare
    with what the primary serves, not with the zone file: inline signing may publish a higher
    serial than the file's. Idempotent, no side effects.

    Raises:
      DnsNoAnswer: the primary gave no answer in time or SERVFAIL (transient).
      DnsAnswerError: the primary refused, or serves no SOA or NS at ``apex`` (permanent).
    """
    whose = "the primary's" if target is None else "the primary's with the records"
    if target is None:
        target = serial_target(apex, primary, timeout_s=timeout_s, tries=tries)
    servers = _unique([*(s for host in target.hosts for s in host.servers()), *extra])

    def probe(server: Nameserver) -> _Seen:
        served = soa_serial(server, apex, timeout_s=timeout_s, tries=tries)
        return _Seen(server.label, serial_at_least(served, target.serial), f"serial {served}")

    seen = [*_ask_all(servers, probe), *_unresolved(target.hosts, primary)]
    return _result(f"{apex} SOA serial >= {target.serial} ({whose})", seen)


def look_txt(
    apex: str,
    primary: Nameserver,
    records: Iterable[tuple[str, str]],
    *,
    target: SerialTarget | None,
    extra: Sequence[Nameserver] = (),
) -> tuple[SerialTarget | None, list[PropagationResult]]:
    """One look at published TXT ``records`` of ``apex`` (dns-01: "the records at the primary,
    every NS at a serial >= the one that carried them"): without ``target``, whether the
    primary serves them all (:func:`check_txt`); once it does, the serial it serves then
    (:func:`serial_target`, returned for the caller to keep for later looks) and whether every
    NS and ``extra`` server serves that serial (:func:`check_serial`). Idempotent.

    Returns:
      The target (None while the primary lacks a record) and what was checked, in order.

    Raises:
      DnsNoAnswer / DnsAnswerError: the primary did not answer, or refused.
    """
    results = []
    if target is None:
        txt = check_txt(primary, records)
        if not txt.ok:
            return None, [txt]
        results.append(txt)
        # Asked after the records were seen, so this serial holds them.
        target = serial_target(apex, primary)
    results.append(check_serial(apex, primary, target=target, extra=extra))
    return target, results


def check_records(
    apex: str,
    primary: Nameserver,
    rdtype: str,
    name: str,
    expected_rdata: Iterable[str],
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
    tries: int = QUERY_TRIES,
) -> PropagationResult:
    """Whether every authoritative NS of ``apex`` serves all of ``expected_rdata`` at ``name``.

    ``expected_rdata`` are records in zone-file form (``3 1 1 ab12...``); they are compared
    as parsed data, so case and spacing of the text do not matter. A server may serve more
    records than expected (the DANE roll's ``curr`` next to ``next``). The NS set and
    addresses come from the primary in this same pass; ``ttl`` in the result is the largest
    TTL served, which the roll needs to know how long to wait. Idempotent, no side effects.

    Raises:
      ValueError: an expected record does not parse as ``rdtype``.
      DnsNoAnswer: the primary gave no answer in time or SERVFAIL (transient).
      DnsAnswerError: the primary refused, or serves no NS at ``apex`` (permanent).
    """
    kind = dns.rdatatype.from_text(rdtype)
    try:
        expected = {dns.rdata.from_text(dns.rdataclass.IN, kind, text) for text in expected_rdata}
    except dns.exception.DNSException as err:
        raise ValueError(f"expected {rdtype} record does not parse: {err}") from err
    hosts = nameservers(primary, apex, timeout_s=timeout_s, tries=tries)
    servers = _unique(s for host in hosts for s in host.servers())

    def probe(server: Nameserver) -> _Seen:
        rrset = query_rrset(server, name, rdtype, timeout_s=timeout_s, tries=tries)
        served = set(rrset or ())
        missing = sorted(_shorten(rdata.to_text()) for rdata in expected - served)
        what = f"lacks {missing}, serves {len(served)} {rdtype} record(s)"
        return _Seen(server.label, not missing, what, ttl=rrset.ttl if rrset else None)

    seen = [*_ask_all(servers, probe), *_unresolved(hosts, primary)]
    return _result(f"{_owner(name)} {rdtype}: {len(expected)} record(s)", seen)


def cached_ttls(
    apex: str,
    primary: Nameserver,
    rdtype: str,
    names: Iterable[str],
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
    tries: int = QUERY_TRIES,
) -> PropagationResult:
    """How long resolvers may hold what every authoritative NS of ``apex`` serves now at
    ``names`` (:func:`~sslm_tasks.dns.lookup.cacheable_ttl`): ``ttl`` in the result is the
    largest, over every name and every NS that answered. Taken before records are published at
    those names, it says how long a cache may still hand out the answer they change.

    ``ok`` is whether every NS answered for every name; one that did not is in ``lagging``.
    Idempotent, no side effects.

    Raises:
      DnsNoAnswer: the primary gave no answer in time or SERVFAIL (transient).
      DnsAnswerError: the primary refused, or serves no NS at ``apex`` (permanent).
    """
    owners = sorted({_owner(name) for name in names})
    hosts = nameservers(primary, apex, timeout_s=timeout_s, tries=tries)
    servers = _unique(s for host in hosts for s in host.servers())

    def probe(server: Nameserver) -> _Seen:
        ttl = max(
            (
                cacheable_ttl(server, owner, rdtype, timeout_s=timeout_s, tries=tries)
                for owner in owners
            ),
            default=0,
        )
        return _Seen(server.label, True, f"TTL {ttl}", ttl=ttl)

    seen = [*_ask_all(servers, probe), *_unresolved(hosts, primary)]
    return _result(f"TTL of {len(owners)} {rdtype} owner(s) of {apex}", seen)
