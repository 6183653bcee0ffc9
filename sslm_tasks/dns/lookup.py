"""DNS queries sslm needs: the primary of an apex, its NS and MX hosts, SOA serials, TXT values.

Every query goes to an explicit server address and port, never to the system resolver: on the
machines sslm runs on ``/etc/resolv.conf`` may point off the box, and upstream's fallback to it
for NS host addresses asked a resolver nobody configured for this. So a ``[[dns_primary]]``
``server`` or a ``dns_xtra_ns`` entry must be an IP literal, and an NS host the primary has no
address for is reported as such by the caller instead of being looked up elsewhere.

Each query has a timeout and one retry (``tries=2``): a lost UDP datagram costs one more
try, a dead server costs ``tries * timeout_s`` and no more. Truncated answers are repeated
over TCP. Authoritative servers are asked without recursion (``dig +norecurse``), so they
answer from their own zone data, which is what the propagation checks compare.

Errors split as everywhere in sslm: :class:`DnsNoAnswer` is transient (no answer in time, a
network error or SERVFAIL: the server may be back or done loading next time);
:class:`DnsAnswerError` is permanent (the server answered and said no: REFUSED, NOTAUTH, or
no NS/SOA at the apex, which means the configuration names the wrong server or domain).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from sslm_tasks.config.files import MAIN_FILE
from sslm_tasks.config.load import Config
from sslm_tasks.config.models import DEFAULT_DOMAINS
from sslm_tasks.dns.servers import Nameserver, NsHost
from sslm_tasks.errors import ConfigError, PermanentError, TransientError

#: Seconds one try of one query may take.
QUERY_TIMEOUT_S = 2.0
#: Tries per query: the first one and one retry.
QUERY_TRIES = 2
#: Why a server must be an IP literal; shown in the ConfigError.
_NO_NAMES = (
    "must be an IP address: sslm never asks the system resolver (it may point off this "
    "machine), so it cannot look up a server name"
)


class DnsNoAnswer(TransientError):
    """A server gave no usable answer: timeout, network error or SERVFAIL. Worth retrying."""


class DnsAnswerError(PermanentError):
    """A server answered, but not with what the step needs (REFUSED, NOTAUTH, no NS or SOA)."""


@dataclass(frozen=True, order=True)
class MxHost:
    """One MX record of an apex; sorts by preference, then host."""

    preference: int
    host: str


def _text(name: dns.name.Name) -> str:
    """Lower-case presentation form without the final dot, as names appear in the config."""
    return name.to_text(omit_final_dot=True).lower()


def _name(name: str) -> dns.name.Name:
    return dns.name.from_text(name.strip().lower())


def primary_for(config: Config, apex: str) -> Nameserver:
    """The ``[[dns_primary]]`` server of ``apex``.

    An entry whose ``domain`` equals the apex (compared lower-case, without a final dot) wins;
    otherwise the first ``default`` or ``*`` entry. The first matching entry counts.

    Raises:
      ConfigError: no entry matches, or the matching entry's ``server`` is not an IP address
        (permanent: the file must change).
    """
    where = config.conf_dir / MAIN_FILE
    wanted = apex.strip().rstrip(".").lower()
    entries = list(enumerate(config.main.dns_primary))
    exact = [(i, e) for i, e in entries if e.domain.strip().rstrip(".").lower() == wanted]
    fallback = [(i, e) for i, e in entries if e.domain.strip().lower() in DEFAULT_DOMAINS]
    found = exact or fallback
    if not found:
        raise ConfigError(
            where, "dns_primary", None, f"no entry for {apex!r} and no 'default' or '*' entry"
        )
    index, entry = found[0]
    try:
        return Nameserver(entry.server.strip(), entry.port)
    except ValueError:
        problem = f"{_NO_NAMES} (the primary of {apex!r})"
        key = f"dns_primary[{index}].server"
        raise ConfigError(where, key, entry.server, problem) from None


def extra_nameservers(config: Config) -> list[Nameserver]:
    """``[globals] dns_xtra_ns`` as recursive servers on port 53, in the configured order.

    Raises:
      ConfigError: an entry is not an IP address (permanent).
    """
    servers: list[Nameserver] = []
    for index, entry in enumerate(config.main.globals.dns_xtra_ns):
        try:
            servers.append(Nameserver(entry.strip(), recursive=True))
        except ValueError:
            key = f"globals.dns_xtra_ns[{index}]"
            raise ConfigError(config.conf_dir / MAIN_FILE, key, entry, _NO_NAMES) from None
    return servers


def query(
    server: Nameserver,
    name: str,
    rdtype: str,
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
    tries: int = QUERY_TRIES,
) -> dns.message.Message:
    """Ask ``server`` for ``name``/``rdtype`` (class IN) and return its NOERROR/NXDOMAIN answer.

    A try that times out or meets a network or protocol error is repeated, up to ``tries``
    tries of at most ``timeout_s`` each (twice that if the answer is truncated and TCP follows).

    Raises:
      DnsNoAnswer: no try got an answer, or the server answered SERVFAIL (transient).
      DnsAnswerError: the server answered with another error rcode, e.g. REFUSED (permanent).
    """
    message = dns.message.make_query(_name(name), rdtype)
    if not server.recursive:
        message.flags &= ~dns.flags.RD
    asked = f"{name} {rdtype} at {server.label}"
    last = "no try made"
    for _ in range(tries):
        try:
            response, _tcp = dns.query.udp_with_fallback(
                message,
                server.address,
                timeout=timeout_s,
                port=server.port,
                ignore_unexpected=True,
            )
        except dns.exception.Timeout:
            last = "timed out"
            continue
        except (dns.exception.DNSException, OSError, EOFError) as err:
            last = f"{type(err).__name__}: {err}"
            continue
        rcode = response.rcode()
        if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return response
        if rcode == dns.rcode.SERVFAIL:
            raise DnsNoAnswer(f"{asked}: SERVFAIL")
        raise DnsAnswerError(f"{asked}: {dns.rcode.to_text(rcode)}")
    raise DnsNoAnswer(f"{asked}: no answer in {tries} tries of {timeout_s:g} s (last: {last})")


def query_rrset(
    server: Nameserver,
    name: str,
    rdtype: str,
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
    tries: int = QUERY_TRIES,
) -> dns.rrset.RRset | None:
    """The ``rdtype`` RRset ``server`` serves at ``name``; None when it has none (NXDOMAIN or
    no data). CNAMEs are not followed: an alias is "no records of this type" here.

    Raises:
      DnsNoAnswer / DnsAnswerError: as :func:`query`.
    """
    response = query(server, name, rdtype, timeout_s=timeout_s, tries=tries)
    return response.get_rrset(
        response.answer, _name(name), dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
    )


def zone_cut(
    server: Nameserver,
    name: str,
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
    tries: int = QUERY_TRIES,
) -> str | None:
    """The zone ``server`` serves that holds ``name`` (a wildcard counts as its base name): the
    first name, walking up from ``name``, at which it answers an SOA query with the SOA itself,
    as lego and cert-manager find the zone of a dns-01 record. Top-level domains are not asked.

    Returns None when ``server`` serves no zone that holds ``name``: it refuses every name on
    the way (an authoritative-only server refuses names outside its zones), or it hands out a
    delegation first (the name is in a child zone that other servers serve).

    Raises:
      DnsNoAnswer: a query got no answer in time, or SERVFAIL (transient).
    """
    labels = name.strip().rstrip(".").lower().removeprefix("*.").split(".")
    for start in range(len(labels) - 1):
        candidate = ".".join(labels[start:])
        try:
            response = query(server, candidate, "SOA", timeout_s=timeout_s, tries=tries)
        except DnsAnswerError:
            continue
        kind = dns.rdatatype.SOA
        if response.get_rrset(response.answer, _name(candidate), dns.rdataclass.IN, kind):
            return candidate
        delegated = any(rrset.rdtype == dns.rdatatype.NS for rrset in response.authority)
        if delegated and not response.flags & dns.flags.AA:
            return None
    return None


def cacheable_ttl(
    server: Nameserver,
    name: str,
    rdtype: str,
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
    tries: int = QUERY_TRIES,
) -> int:
    """How long a resolver may cache ``server``'s answer for ``name``/``rdtype``: the RRset's
    TTL, or for a name without such records the negative-caching TTL (RFC 2308 §5: the SOA of
    the authority section, its TTL capped by its MINIMUM).

    Raises:
      DnsNoAnswer / DnsAnswerError: as :func:`query`; DnsAnswerError also for a negative
        answer without an SOA (the server is not authoritative for ``name``).
    """
    response = query(server, name, rdtype, timeout_s=timeout_s, tries=tries)
    rrset = response.get_rrset(
        response.answer, _name(name), dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
    )
    if rrset is not None:
        return int(rrset.ttl)
    for authority in response.authority:
        for rdata in authority:
            if isinstance(rdata, SOA):
                return int(min(authority.ttl, rdata.minimum))
    raise DnsAnswerError(f"{name} {rdtype} at {server.label}: no records and no SOA")


def soa_serial(
    server: Nameserver, zone: str, *, timeout_s: float = QUERY_TIMEOUT_S, tries: int = QUERY_TRIES
) -> int:
    """The SOA serial ``server`` serves for ``zone``.

    Raises:
      DnsNoAnswer: no answer in time or SERVFAIL (transient).
      DnsAnswerError: the server refused, or serves no SOA at ``zone`` (permanent).
    """
    rrset = query_rrset(server, zone, "SOA", timeout_s=timeout_s, tries=tries)
    for rdata in rrset or ():
        if isinstance(rdata, SOA):
            return rdata.serial
    raise DnsAnswerError(f"{zone} SOA at {server.label}: no SOA record")


def txt_values(
    server: Nameserver, name: str, *, timeout_s: float = QUERY_TIMEOUT_S, tries: int = QUERY_TRIES
) -> list[str]:
    """The TXT values ``server`` serves at ``name``, each record's strings joined, sorted.

    Values are decoded as UTF-8 (undecodable bytes replaced); an empty list means none.

    Raises:
      DnsNoAnswer / DnsAnswerError: as :func:`query`.
    """
    rrset = query_rrset(server, name, "TXT", timeout_s=timeout_s, tries=tries)
    return sorted(
        b"".join(rdata.strings).decode("utf-8", "replace")
        for rdata in rrset or ()
        if isinstance(rdata, TXT)
    )


def _addresses(server: Nameserver, host: str, *, timeout_s: float, tries: int) -> list[str]:
    """The A, then AAAA addresses ``server`` serves for ``host``; none when it declines.

    An authoritative-only server REFUSEs names outside its zones: for an NS host in another
    provider's zone that means "no address here", not a broken primary.
    """
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            rrset = query_rrset(server, host, rdtype, timeout_s=timeout_s, tries=tries)
        except DnsAnswerError:
            return found
        found.extend(sorted(rdata.address for rdata in rrset or () if isinstance(rdata, A | AAAA)))
    return found


def nameservers(
    primary: Nameserver,
    apex: str,
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
    tries: int = QUERY_TRIES,
) -> list[NsHost]:
    """The authoritative NS hosts of ``apex`` and their A and AAAA addresses, all as served by
    ``primary``, sorted by name.

    Nothing falls back to another resolver: an NS host the primary serves no address for (or
    refuses to answer for, being outside its zones) comes back with no addresses, for the
    caller to report.

    Raises:
      DnsNoAnswer: the primary gave no answer in time or SERVFAIL (transient).
      DnsAnswerError: it refused the NS query, or serves no NS records at ``apex`` (permanent).
    """
    rrset = query_rrset(primary, apex, "NS", timeout_s=timeout_s, tries=tries)
    names = sorted({_text(rdata.target) for rdata in rrset or () if isinstance(rdata, NS)})
    if not names:
        raise DnsAnswerError(f"{apex} NS at {primary.label}: no NS records")
    return [
        NsHost(host, _addresses(primary, host, timeout_s=timeout_s, tries=tries)) for host in names
    ]


def mx_hosts(
    primary: Nameserver,
    apex: str,
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
    tries: int = QUERY_TRIES,
) -> list[MxHost]:
    """The MX records of ``apex`` at ``primary``, sorted by preference then host.

    Hosts with equal preferences are all kept (upstream's dict kept one of them). A null MX
    (RFC 7505, exchange ``.``) names no host and is left out, so a domain that takes no mail
    gives an empty list.

    Raises:
      DnsNoAnswer / DnsAnswerError: as :func:`query`.
    """
    rrset = query_rrset(primary, apex, "MX", timeout_s=timeout_s, tries=tries)
    found: Iterable[MxHost] = (
        MxHost(rdata.preference, _text(rdata.exchange))
        for rdata in rrset or ()
        if isinstance(rdata, MX) and rdata.exchange != dns.name.root
    )
    return sorted(found)
