"""RFC 2136 dynamic updates of one zone, signed with a TSIG key (RFC 8945), by dnspython.

sslm changes a zone by update only record by record: it adds and deletes *exact* records
(owner, type and data), never a whole RRset, so the records other orders or the operator keep
at the same owner stay (RFC 2136 §2.5.1 and §2.5.4). Adding a record that is there, or deleting
one that is not, changes nothing, so an update sent again (a task delivered twice, a run
resumed) is harmless. Where sslm must be sure of what it replaces (TLSA), the update carries
prerequisites (§2.4.2, §2.4.3): the RRset at each owner is exactly what sslm expects, or the
server applies nothing.

Every update goes over TCP (``dns.query.tcp``) to the configured server, which may be the
zone's primary or a hidden primary; the server bumps the zone's SOA serial and re-signs (BIND
with inline signing), so there is no refresh command.

Errors split as everywhere in sslm, each message naming the zone, the server and the key name
(never the secret): the server refusing the change (REFUSED, NOTAUTH) or the key (BADSIG,
BADKEY, BADTIME) is an :class:`UpdateRefused` (permanent: the policy, the key file or the clock
must change); a prerequisite that does not hold is an :class:`UpdatePrerequisiteFailed`
(permanent: the zone holds something sslm did not put there); no answer in time, a network
error or SERVFAIL is a :class:`~sslm_tasks.dns.lookup.DnsNoAnswer` (transient).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update

from sslm_tasks.config.load import Config, update_key
from sslm_tasks.config.tsig import TsigKey
from sslm_tasks.dns.lookup import DnsNoAnswer, query_rrset
from sslm_tasks.dns.servers import Nameserver
from sslm_tasks.errors import PermanentError

#: Seconds an update may take: one TCP exchange, on which the server also writes its journal.
UPDATE_TIMEOUT_S: Final = 10.0

#: What each refusal means for the operator, by rcode (the server's) or TSIG error.
_REFUSALS: Final = {
    "REFUSED": "the server's update-policy does not let this key change these records, or the "
    "zone takes no updates",
    "NOTAUTH": "the server is not authoritative for the zone",
    "BADSIG": "the server knows the key name but not this secret: the key_file holds another "
    "key than the server's",
    "BADKEY": "the server does not know the key name",
    "BADTIME": "this machine's clock and the server's differ by more than the TSIG fudge "
    "(300 s): set the clocks right",
    "BADTRUNC": "the server refused the truncated signature",
}
#: RFC 2136 §2.4 prerequisite failures.
_PREREQUISITE_RCODES: Final = frozenset(
    {dns.rcode.YXDOMAIN, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.NXRRSET}
)
_PEER_ERRORS: Final = {
    dns.tsig.PeerBadSignature: "BADSIG",
    dns.tsig.PeerBadKey: "BADKEY",
    dns.tsig.PeerBadTime: "BADTIME",
    dns.tsig.PeerBadTruncation: "BADTRUNC",
}


class UpdateRefused(PermanentError):
    """The server refused the update or its signature; retrying cannot help."""


class UpdatePrerequisiteFailed(PermanentError):
    """A prerequisite of the update does not hold: nothing of it was applied."""


@dataclass(frozen=True)
class Record:
    """One exact resource record: an absolute owner (with its final dot), a TTL, the data."""

    owner: str
    ttl: int
    rdata: dns.rdata.Rdata

    def __str__(self) -> str:
        return f"{self.owner} {self.ttl} {dns.rdatatype.to_text(self.rdata.rdtype)} {self.rdata}"


@dataclass(frozen=True)
class RRsetIs:
    """A prerequisite: the RRset of ``rdtype`` at ``owner`` holds exactly ``rdatas`` (none: the
    owner has no records of that type)."""

    owner: str
    rdtype: dns.rdatatype.RdataType
    rdatas: frozenset[dns.rdata.Rdata]


def txt_rdata(value: str) -> dns.rdata.Rdata:
    """The TXT data of one dns-01 value (base64url: one string, never longer than 255)."""
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [value.encode()])


@dataclass(frozen=True)
class ZoneUpdater:
    """Sends updates of ``zone`` to ``server``, signed with ``key``.

    Parameters:
      zone(str): the zone apex, without a final dot.
      server(Nameserver): where the updates go (an IP address and port).
      key(TsigKey): the key that signs them.
      timeout_s(float): one update's bound.
    """

    zone: str
    server: Nameserver
    key: TsigKey
    timeout_s: float = UPDATE_TIMEOUT_S

    @property
    def label(self) -> str:
        """How errors name the update: ``zone example.test at 127.0.0.53 with key k``."""
        return f"zone {self.zone} at {self.server.label} with key {self.key.name}"

    def apply(
        self,
        *,
        add: Sequence[Record] = (),
        delete: Sequence[Record] = (),
        require: Sequence[RRsetIs] = (),
    ) -> None:
        """One update: if every ``require`` holds, delete the exact records ``delete``, then add
        ``add``; all of it or, when a prerequisite fails, none. Idempotent without
        prerequisites (present records are not added twice, absent ones not deleted).

        Raises:
          UpdateRefused: REFUSED, NOTAUTH or a TSIG error (permanent).
          UpdatePrerequisiteFailed: a prerequisite does not hold (permanent).
          DnsNoAnswer: no answer in time, a network error, or SERVFAIL (transient).
          PermanentError: another error rcode (FORMERR, NOTZONE, NOTIMP...).
        """
        message = dns.update.UpdateMessage(self.zone)
        for prerequisite in require:
            if prerequisite.rdatas:
                message.present(prerequisite.owner, *prerequisite.rdatas)
            else:
                message.absent(prerequisite.owner, prerequisite.rdtype)
        for record in delete:
            message.delete(record.owner, record.rdata)
        for record in add:
            message.add(record.owner, record.ttl, record.rdata)
        message.use_tsig(self.key.key)
        self._check(self._send(message))

    def default_ttl(self) -> int:
        """The TTL of the zone's SOA record at the server: what a record without a TTL of its
        own gets in a zone file whose ``$TTL`` the SOA shares.

        Raises:
          DnsNoAnswer / DnsAnswerError: as :func:`~sslm_tasks.dns.lookup.query`.
        """
        rrset = query_rrset(self.server, self.zone, "SOA")
        if rrset is None:
            raise PermanentError(f"{self.label}: the server serves no SOA for the zone")
        return int(rrset.ttl)

    def _send(self, message: dns.update.UpdateMessage) -> dns.message.Message:
        try:
            return dns.query.tcp(
                message, self.server.address, timeout=self.timeout_s, port=self.server.port
            )
        except tuple(_PEER_ERRORS) as err:
            code = _PEER_ERRORS[type(err)]
            raise UpdateRefused(f"update of {self.label}: {code}: {_REFUSALS[code]}") from None
        except dns.exception.Timeout:
            raise DnsNoAnswer(
                f"update of {self.label}: no answer in {self.timeout_s:g} s"
            ) from None
        except (dns.exception.DNSException, OSError, EOFError) as err:
            raise DnsNoAnswer(f"update of {self.label}: {type(err).__name__}: {err}") from None

    def _check(self, response: dns.message.Message) -> None:
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        name = dns.rcode.to_text(rcode)
        where = f"update of {self.label}"
        if rcode == dns.rcode.SERVFAIL:
            raise DnsNoAnswer(f"{where}: SERVFAIL")
        if rcode in _PREREQUISITE_RCODES:
            raise UpdatePrerequisiteFailed(f"{where}: {name}: a prerequisite does not hold")
        if name in _REFUSALS:
            raise UpdateRefused(f"{where}: {name}: {_REFUSALS[name]}")
        raise PermanentError(f"{where}: {name}")


def updater(config: Config, zone: str, server: str, port: int, key_file: str) -> ZoneUpdater:
    """The updater of ``zone`` through ``server``:``port`` with the key in ``key_file`` (the
    values of a ``[[dns_update]]`` entry, or those recorded with records to delete).

    Raises:
      ConfigError: the key file is unfit (see ``config.load.update_key``).
    """
    return ZoneUpdater(zone, Nameserver(server, port), update_key(config, key_file))


def updater_for(config: Config, zone: str) -> ZoneUpdater | None:
    """The updater of ``zone`` as its ``[[dns_update]]`` entry says; None without one.

    Raises:
      ConfigError: the entry's key file is unfit.
    """
    entry = config.main.update_of(zone)
    if entry is None:
        return None
    return updater(config, zone, entry.server, entry.port, entry.key_file)


def absolute(owner: str) -> str:
    """``owner`` lower-cased, with one final dot: the form records are compared in."""
    return dns.name.from_text(owner.strip().lower()).to_text()
