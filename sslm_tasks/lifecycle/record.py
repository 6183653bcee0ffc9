"""One service's state record, typed: what the files cannot tell.

The links and certificates say which version is ``curr`` and when it expires; this record says
the rest, in one place per concern, each written by the step that owns it:

- the phase and the version it concerns, and when a waiting ``next`` may roll;
- the ACME order of the build in progress, and the dns-01 records it published (zones, the
  refresh tickets and serial targets of the propagation check);
- the http-01 token files written, by host (kept until removed, whatever the build);
- the dns-01 records added by RFC 2136 update, with their zone and server (likewise);
- the DANE roll: the TTLs caches may hold, when every NS was first seen serving ``next``, and
  whether (and until when) old records wait for the servers;
- ACME timing: the CA's renewal window (ARI) and the backoff after failed builds;
- what is failing now (a build, a roll, the production copy, a DNS publication), since when,
  how often, why, and the health last announced;
- the certificates of the service that were revoked (``sslm-mgr revoke``), and why;
- since when ``curr``'s key serves, and the standby key: its TTLs, when every NS served it;
- when production began to hold ``curr``: a server deploy that began later carries it. (The
  deploys themselves are recorded once per server, not per service, since one deploy carries
  every service: :mod:`sslm_tasks.lifecycle.deployment`.)

It is versioned. A record written by the release before (``extra`` holding string-keyed
entries) is read and upgraded transparently; a record from a newer release is refused, since
saving it would drop what that release wrote. A record that cannot be read at all is moved
aside (``state.json.corrupt-<stamp>``, kept for inspection), reported, and rebuilt from what the
files show, so one damaged file costs its service no more than a forgotten wait.

The JSON is small and holds URLs, names, times and statuses only; the store refuses to write
anything that looks like a private key (:mod:`sslm_tasks.store.state`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, TypeVar

from sslm_tasks.acme.order_state import OrderState
from sslm_tasks.acme.timing import RenewalWindow
from sslm_tasks.dns.servers import SerialTarget
from sslm_tasks.errors import StoreError

log = logging.getLogger(__name__)

#: The format this release writes. 1: the first release (``extra`` entries); 2: typed parts;
#: 3: ``dns_updates`` and the DANE roll's observed TTLs; 4: ``revocations``; 5: ``keys`` (the
#: key's age and the standby key); 6: ``prod_seen`` (the production copy as last verified). A
#: release that does not know a part must not drop it, so it refuses the newer record instead.
RECORD_VERSION: Final = 6

T = TypeVar("T")


class Phase(StrEnum):
    """Where a service is in its renew → roll cycle."""

    IDLE = "idle"
    #: Building version ``stamp``: key, CSR, order. The version dir is not complete yet.
    RENEWING = "renewing"
    #: Version ``stamp`` is complete and ``next`` points at it, waiting for its roll.
    ISSUED = "issued"
    #: Version ``stamp`` became ``curr``.
    ROLLED = "rolled"
    #: The last build failed; ``last_error`` says why, ``stamp`` is the build to resume.
    FAILED = "failed"


class BadRecord(ValueError):
    """Raised while decoding: the JSON is not a record this release (or the one before) wrote."""


def _time(raw: object, what: str) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise BadRecord(f"{what} = {raw!r}: expected an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as err:
        raise BadRecord(f"{what} = {raw!r}: {err}") from None
    if moment.tzinfo is None:
        raise BadRecord(f"{what} = {raw!r}: time without a zone")
    return moment


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _of(raw: object, kind: type[T], what: str) -> T:
    if not isinstance(raw, kind):
        raise BadRecord(f"{what} = {raw!r}: expected {kind.__name__}")
    return raw


def _str_or_none(raw: object, what: str) -> str | None:
    return None if raw is None else _of(raw, str, what)


def _int_or_none(raw: object, what: str) -> int | None:
    if isinstance(raw, bool):
        raise BadRecord(f"{what} = {raw!r}: expected int")
    return None if raw is None else _of(raw, int, what)


# --------------------------------------------------------------------------- the parts


@dataclass
class DnsPublication:
    """The dns-01 records of the recorded order: the zones they went into (recorded before
    they are written, so a killed run's records are still withdrawn), each zone's change count
    once they were counted (the refresh *ticket*: a refresh that covered it carried them), and
    the SOA serial every NS must reach (recorded once the primary served them)."""

    apexes: list[str] = field(default_factory=list)
    tickets: dict[str, int] = field(default_factory=dict)
    serials: dict[str, SerialTarget] = field(default_factory=dict)
    #: When the records were last counted as changes: the clock of the re-push.
    pushed: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "apexes": list(self.apexes),
            "tickets": dict(self.tickets),
            "serials": {apex: target.to_json() for apex, target in self.serials.items()},
            "pushed": _iso(self.pushed),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DnsPublication:
        try:
            serials = {
                str(apex): SerialTarget.from_json(target)
                for apex, target in _of(raw.get("serials", {}), dict, "serials").items()
            }
        except (KeyError, TypeError, ValueError) as err:
            raise BadRecord(f"serials: {err}") from None
        tickets = _of(raw.get("tickets", {}), dict, "tickets")
        return cls(
            apexes=[str(a) for a in _of(raw.get("apexes", []), list, "apexes")],
            tickets={str(k): _of(v, int, f"tickets.{k}") for k, v in tickets.items()},
            serials=serials,
            pushed=_time(raw.get("pushed"), "pushed"),
        )


@dataclass(frozen=True, order=True)
class UpdatedTxt:
    """One dns-01 TXT record added by RFC 2136 update: its zone, owner and value, and the
    server and key file the update went through (so the record can be deleted whatever the
    configuration says by then; the file path is recorded, never the key)."""

    apex: str
    owner: str
    value: str
    server: str
    port: int
    key_file: str

    def to_json(self) -> dict[str, Any]:
        return {
            "apex": self.apex,
            "owner": self.owner,
            "value": self.value,
            "server": self.server,
            "port": self.port,
            "key_file": self.key_file,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> UpdatedTxt:
        return cls(
            apex=_of(raw.get("apex"), str, "dns_updates.apex"),
            owner=_of(raw.get("owner"), str, "dns_updates.owner"),
            value=_of(raw.get("value"), str, "dns_updates.value"),
            server=_of(raw.get("server"), str, "dns_updates.server"),
            port=_of(raw.get("port"), int, "dns_updates.port"),
            key_file=_of(raw.get("key_file"), str, "dns_updates.key_file"),
        )


@dataclass
class DnsUpdates:
    """The dns-01 records the service added by RFC 2136 update: recorded before each update
    is sent (so a killed run's records are still deleted), dropped once deleted, whatever the
    build or the order. And, for ``order`` (its URL), the SOA serial every NS of each zone must
    reach, recorded once the primary served the order's records."""

    records: list[UpdatedTxt] = field(default_factory=list)
    order: str | None = None
    serials: dict[str, SerialTarget] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "records": [record.to_json() for record in self.records],
            "order": self.order,
            "serials": {apex: target.to_json() for apex, target in self.serials.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DnsUpdates:
        records = _of(raw.get("records", []), list, "dns_updates.records")
        try:
            serials = {
                str(apex): SerialTarget.from_json(target)
                for apex, target in _of(raw.get("serials", {}), dict, "serials").items()
            }
        except (KeyError, TypeError, ValueError) as err:
            raise BadRecord(f"dns_updates.serials: {err}") from None
        return cls(
            records=[UpdatedTxt.from_json(_of(r, dict, "dns_updates.records")) for r in records],
            order=_str_or_none(raw.get("order"), "dns_updates.order"),
            serials=serials,
        )


@dataclass
class OrderRecord:
    """The ACME order of build ``stamp`` (an order of another build is never resumed), and what
    it published in DNS."""

    stamp: str
    order: OrderState
    dns: DnsPublication = field(default_factory=DnsPublication)

    def to_json(self) -> dict[str, Any]:
        return {"stamp": self.stamp, "order": self.order.to_json(), "dns": self.dns.to_json()}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> OrderRecord:
        try:
            order = OrderState.from_json(_of(raw["order"], dict, "order"))
        except (KeyError, StoreError) as err:
            raise BadRecord(f"order: {err}") from None
        return cls(
            stamp=_of(raw.get("stamp"), str, "order.stamp"),
            order=order,
            dns=DnsPublication.from_json(_of(raw.get("dns", {}), dict, "order.dns")),
        )


@dataclass
class DaneRoll:
    """The DANE side of a roll, in two parts.

    The roll of ``next`` (``next_stamp``): the largest TTL a cache may hold for its owners
    from before its records were published (``ttl_before``: what every NS served there then,
    records or a negative answer), when every authoritative NS was first seen serving its
    records (and how many did at the last look), and the TTL they serve them with. A new
    ``next`` starts these over.

    The retirement of the old ``curr``'s records (``retire_prev``): they stay published until
    the servers took the new certificate and until ``retire_after``, twice the largest of
    those TTLs after every NS served the new records (None: not seen yet, after a forced roll;
    the retirement looks first, and waits twice ``retire_ttl`` or what it sees then).
    """

    next_seen: datetime | None = None
    next_ns: str | None = None
    retire_prev: bool = False
    next_stamp: str | None = None
    ttl_before: int | None = None
    ttl_served: int | None = None
    retire_after: datetime | None = None
    retire_ttl: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "next_seen": _iso(self.next_seen),
            "next_ns": self.next_ns,
            "retire_prev": self.retire_prev,
            "next_stamp": self.next_stamp,
            "ttl_before": self.ttl_before,
            "ttl_served": self.ttl_served,
            "retire_after": _iso(self.retire_after),
            "retire_ttl": self.retire_ttl,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DaneRoll:
        return cls(
            next_seen=_time(raw.get("next_seen"), "dane.next_seen"),
            next_ns=_str_or_none(raw.get("next_ns"), "dane.next_ns"),
            retire_prev=bool(raw.get("retire_prev", False)),
            next_stamp=_str_or_none(raw.get("next_stamp"), "dane.next_stamp"),
            ttl_before=_int_or_none(raw.get("ttl_before"), "dane.ttl_before"),
            ttl_served=_int_or_none(raw.get("ttl_served"), "dane.ttl_served"),
            retire_after=_time(raw.get("retire_after"), "dane.retire_after"),
            retire_ttl=_int_or_none(raw.get("retire_ttl"), "dane.retire_ttl"),
        )


@dataclass
class KeyPlan:
    """Which key the service serves since when, and its standby key (``key_standby``).

    ``curr_key`` is the SHA-256 of ``curr``'s public key (SubjectPublicKeyInfo, hex) and
    ``curr_key_since`` when sslm first saw ``curr`` hold it: the key's age, which decides when
    the standby replaces it. The standby key is named the same way (``standby_key``); its
    records are published once ``standby_ttl_before`` (what caches may hold at their owners
    from before, as for a roll) is known, and may be relied on from twice the larger TTL after
    ``standby_seen``, the first time every authoritative NS served them. Every ``standby_*``
    value belongs to ``standby_key``: a new standby starts them over.
    """

    curr_key: str | None = None
    curr_key_since: datetime | None = None
    standby_key: str | None = None
    standby_created: datetime | None = None
    standby_ttl_before: int | None = None
    standby_seen: datetime | None = None
    standby_ns: str | None = None
    standby_ttl_served: int | None = None
    #: The owners ``standby_ttl_before`` was asked for: a new one (a SAN added with a renewal)
    #: is asked too, and the standby must be seen again.
    standby_owners: list[str] = field(default_factory=list)

    @property
    def standby_cache_ttl(self) -> int:
        """The largest TTL a cache may hold at the standby's owners: from before its records
        were published, or theirs."""
        return max(self.standby_ttl_before or 0, self.standby_ttl_served or 0)

    @property
    def standby_ready_at(self) -> datetime | None:
        """From when no cache can hold an RRset without the standby's records: twice
        :attr:`standby_cache_ttl` after every NS first served them (None: not seen yet)."""
        if self.standby_seen is None:
            return None
        return self.standby_seen + timedelta(seconds=2 * self.standby_cache_ttl)

    def to_json(self) -> dict[str, Any]:
        return {
            "curr_key": self.curr_key,
            "curr_key_since": _iso(self.curr_key_since),
            "standby_key": self.standby_key,
            "standby_created": _iso(self.standby_created),
            "standby_ttl_before": self.standby_ttl_before,
            "standby_seen": _iso(self.standby_seen),
            "standby_ns": self.standby_ns,
            "standby_ttl_served": self.standby_ttl_served,
            "standby_owners": list(self.standby_owners),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> KeyPlan:
        return cls(
            curr_key=_str_or_none(raw.get("curr_key"), "keys.curr_key"),
            curr_key_since=_time(raw.get("curr_key_since"), "keys.curr_key_since"),
            standby_key=_str_or_none(raw.get("standby_key"), "keys.standby_key"),
            standby_created=_time(raw.get("standby_created"), "keys.standby_created"),
            standby_ttl_before=_int_or_none(
                raw.get("standby_ttl_before"), "keys.standby_ttl_before"
            ),
            standby_seen=_time(raw.get("standby_seen"), "keys.standby_seen"),
            standby_ns=_str_or_none(raw.get("standby_ns"), "keys.standby_ns"),
            standby_ttl_served=_int_or_none(
                raw.get("standby_ttl_served"), "keys.standby_ttl_served"
            ),
            standby_owners=[
                str(owner)
                for owner in _of(raw.get("standby_owners", []), list, "keys.standby_owners")
            ],
        )


@dataclass(frozen=True)
class AriPlan:
    """What the renew check remembers about the CA's answer for one ``curr`` (RFC 9773).

    Attributes:
      curr(str): the stamp of the ``curr`` version the plan is for; a new ``curr`` starts over.
      next_check(datetime | None): ask the CA again from this time on; None: never (the
        certificate expired, RFC 9773 §4.3.3).
      window(RenewalWindow | None): the CA's window; None when the lifetime rule decides.
      renew_at(datetime | None): the time drawn inside ``window``.
      replaces(str | None): the certificate ID to send with the renewal order.
      explanation_url(str | None): the CA's explanation of the window (a revocation notice).
    """

    curr: str
    next_check: datetime | None
    window: RenewalWindow | None = None
    renew_at: datetime | None = None
    replaces: str | None = None
    explanation_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        window = self.window
        return {
            "curr": self.curr,
            "next_check": _iso(self.next_check),
            "window": None if window is None else [_iso(window.start), _iso(window.end)],
            "renew_at": _iso(self.renew_at),
            "replaces": self.replaces,
            "explanation_url": self.explanation_url,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AriPlan:
        window = raw.get("window")
        start = end = None
        if window is not None:
            pair = _of(window, list, "ari.window")
            if len(pair) != 2:
                raise BadRecord(f"ari.window = {window!r}: expected [start, end]")
            start, end = _time(pair[0], "ari.window"), _time(pair[1], "ari.window")
        return cls(
            curr=_of(raw.get("curr"), str, "ari.curr"),
            next_check=_time(raw.get("next_check"), "ari.next_check"),
            window=None if start is None or end is None else RenewalWindow(start, end),
            renew_at=_time(raw.get("renew_at"), "ari.renew_at"),
            replaces=_str_or_none(raw.get("replaces"), "ari.replaces"),
            explanation_url=_str_or_none(raw.get("explanation_url"), "ari.explanation_url"),
        )

    def must_ask(self, *, now: datetime) -> bool:
        """Whether the CA's Retry-After has passed (never, once the certificate expired)."""
        return self.next_check is not None and now >= self.next_check


@dataclass(frozen=True)
class Backoff:
    """Failed attempts in a row, and when the next may start.

    Attributes:
      failures(int): 1 after the first failure.
      retry_at(datetime): no new attempt before this time.
      ca_asked(bool): ``retry_at`` is the CA's Retry-After.
    """

    failures: int
    retry_at: datetime
    ca_asked: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "failures": self.failures,
            "retry_at": _iso(self.retry_at),
            "ca_asked": self.ca_asked,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Backoff:
        retry_at = _time(raw.get("retry_at"), "backoff.retry_at")
        if retry_at is None:
            raise BadRecord("backoff.retry_at is missing")
        failures = _of(raw.get("failures"), int, "backoff.failures")
        return cls(failures=failures, retry_at=retry_at, ca_asked=bool(raw.get("ca_asked")))


@dataclass(frozen=True)
class Failure:
    """One thing that is failing for the service: since when, how often in a row, why, and
    when it is tried again (None: with the next run or check)."""

    since: datetime
    last: datetime
    reason: str
    attempts: int = 1
    retry_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "since": _iso(self.since),
            "last": _iso(self.last),
            "reason": self.reason,
            "attempts": self.attempts,
            "retry_at": _iso(self.retry_at),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Failure:
        since, last = (
            _time(raw.get("since"), "failures.since"),
            _time(raw.get("last"), "failures.last"),
        )
        if since is None or last is None:
            raise BadRecord("failures: since and last are required")
        return cls(
            since=since,
            last=last,
            reason=_of(raw.get("reason", ""), str, "failures.reason"),
            attempts=_of(raw.get("attempts", 1), int, "failures.attempts"),
            retry_at=_time(raw.get("retry_at"), "failures.retry_at"),
        )


@dataclass(frozen=True)
class Notified:
    """The health last announced for the service, and when (notifications go out once per
    change, and as reminders while it lasts)."""

    health: str
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"health": self.health, "at": _iso(self.at)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Notified:
        at = _time(raw.get("at"), "notified.at")
        if at is None:
            raise BadRecord("notified.at is missing")
        return cls(health=_of(raw.get("health"), str, "notified.health"), at=at)


@dataclass(frozen=True)
class Revocation:
    """One certificate of the service that was revoked: its version and serial (hex, as
    ``openssl x509 -serial`` shows it), the RFC 5280 reason name, when, and by whom (``acme``:
    the ACME CA accepted it; ``crl:<ca>``: the local CA listed it in its CRL)."""

    stamp: str
    serial: str
    reason: str
    at: datetime
    by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "stamp": self.stamp,
            "serial": self.serial,
            "reason": self.reason,
            "at": _iso(self.at),
            "by": self.by,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Revocation:
        at = _time(raw.get("at"), "revocations.at")
        if at is None:
            raise BadRecord("revocations.at is missing")
        return cls(
            stamp=_of(raw.get("stamp"), str, "revocations.stamp"),
            serial=_of(raw.get("serial"), str, "revocations.serial"),
            reason=_of(raw.get("reason"), str, "revocations.reason"),
            at=at,
            by=_of(raw.get("by"), str, "revocations.by"),
        )


# --------------------------------------------------------------------------- the record


@dataclass
class ServiceRecord:
    """Everything sslm remembers about one service beyond its files.

    ``updated`` is set on every save. ``notice`` says, once, what sslm had to repair in the
    record itself (a corrupt file moved aside).
    """

    phase: Phase = Phase.IDLE
    stamp: str | None = None
    #: For a build of a service a local CA signs: the CA's ``curr`` when the build started.
    #: A build resumed after the CA changed would sign against a chain that is gone: it
    #: starts afresh instead.
    build_signer: str | None = None
    #: The workflow (a worker chain, an in-process run) that started the build: the same
    #: workflow's step, delivered again after a crash, resumes it rather than forcing another.
    build_workflow: str | None = None
    #: When ``next`` may roll, fixed by a ``-roll-mins`` given to the renew that built it;
    #: None: ``min_roll_mins`` after its notBefore, as set when the roll is tried.
    roll_due: datetime | None = None
    #: When production began to hold the current ``curr``: a server deploy that began later
    #: carries it (:mod:`sslm_tasks.lifecycle.deployment`).
    prod_since: datetime | None = None
    #: What the production copy and its store versions were on disk (a digest of each file's
    #: identity: device, inode, size, times) when the copy was last found byte for byte as it
    #: should be; while they are still exactly that, the copy is not read again
    #: (:mod:`sslm_tasks.lifecycle.production`).
    prod_seen: str | None = None
    last_error: str | None = None
    updated: datetime | None = None
    order: OrderRecord | None = None
    web_tokens: dict[str, list[str]] = field(default_factory=dict)
    dns_updates: DnsUpdates = field(default_factory=DnsUpdates)
    dane: DaneRoll = field(default_factory=DaneRoll)
    ari: AriPlan | None = None
    backoff: Backoff | None = None
    #: What is failing now, by kind (``build``, ``roll``, ``production``, ``dns``, ``clean``);
    #: a kind's entry goes when that kind next succeeds.
    failures: dict[str, Failure] = field(default_factory=dict)
    notified: Notified | None = None
    notice: str | None = None
    #: The service's revoked certificates, oldest first.
    revocations: list[Revocation] = field(default_factory=list)
    keys: KeyPlan = field(default_factory=KeyPlan)

    def revoked(self, stamp: str | None) -> Revocation | None:
        """The revocation of version ``stamp``, if it was revoked."""
        return next((r for r in self.revocations if stamp is not None and r.stamp == stamp), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "phase": str(self.phase),
            "stamp": self.stamp,
            "build_signer": self.build_signer,
            "build_workflow": self.build_workflow,
            "roll_due": _iso(self.roll_due),
            "prod_since": _iso(self.prod_since),
            "prod_seen": self.prod_seen,
            "last_error": self.last_error,
            "updated": _iso(self.updated),
            "order": None if self.order is None else self.order.to_json(),
            "web_tokens": {host: list(paths) for host, paths in self.web_tokens.items()},
            "dns_updates": self.dns_updates.to_json(),
            "dane": self.dane.to_json(),
            "ari": None if self.ari is None else self.ari.to_json(),
            "backoff": None if self.backoff is None else self.backoff.to_json(),
            "failures": {kind: failure.to_json() for kind, failure in self.failures.items()},
            "notified": None if self.notified is None else self.notified.to_json(),
            "notice": self.notice,
            "revocations": [revocation.to_json() for revocation in self.revocations],
            "keys": self.keys.to_json(),
        }

    @classmethod
    def from_json(cls, raw: object) -> ServiceRecord:
        """Decode a record of this release, or upgrade one of the release before.

        Raises:
          BadRecord: it is neither (the message names the first bad entry).
          StoreError: it is from a newer release.
        """
        data = _of(raw, dict, "record")
        version = data.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise BadRecord(f"version = {version!r}: expected a number")
        if version > RECORD_VERSION:
            raise StoreError(
                f"state record version {version} was written by a newer sslm (this one reads up "
                f"to {RECORD_VERSION}); refusing to overwrite it"
            )
        if version == 1:
            data = _upgrade_v1(data)
        unknown = set(data) - _KEYS
        if unknown:
            raise BadRecord(f"unknown keys {sorted(unknown)}")
        return cls(
            phase=_phase(data.get("phase", "idle")),
            stamp=_str_or_none(data.get("stamp"), "stamp"),
            build_signer=_str_or_none(data.get("build_signer"), "build_signer"),
            build_workflow=_str_or_none(data.get("build_workflow"), "build_workflow"),
            # Before version 3 every renew recorded min_roll_mins as it was then; now only a
            # -roll-mins given to the renew is kept (lifecycle.roll): an older one goes.
            roll_due=_time(data.get("roll_due"), "roll_due") if version >= 3 else None,
            prod_since=_time(data.get("prod_since"), "prod_since"),
            prod_seen=_str_or_none(data.get("prod_seen"), "prod_seen"),
            last_error=_str_or_none(data.get("last_error"), "last_error"),
            updated=_time(data.get("updated"), "updated"),
            order=_part(data.get("order"), OrderRecord.from_json, "order"),
            web_tokens=_web_tokens(data.get("web_tokens", {})),
            dns_updates=DnsUpdates.from_json(_of(data.get("dns_updates", {}), dict, "dns_updates")),
            dane=DaneRoll.from_json(_of(data.get("dane", {}), dict, "dane")),
            ari=_part(data.get("ari"), AriPlan.from_json, "ari"),
            backoff=_part(data.get("backoff"), Backoff.from_json, "backoff"),
            failures={
                str(kind): Failure.from_json(_of(entry, dict, f"failures.{kind}"))
                for kind, entry in _of(data.get("failures", {}), dict, "failures").items()
            },
            notified=_part(data.get("notified"), Notified.from_json, "notified"),
            notice=_str_or_none(data.get("notice"), "notice"),
            revocations=[
                Revocation.from_json(_of(entry, dict, "revocations"))
                for entry in _of(data.get("revocations", []), list, "revocations")
            ],
            keys=KeyPlan.from_json(_of(data.get("keys", {}), dict, "keys")),
        )


_KEYS: Final = frozenset(ServiceRecord().to_json())
#: Phases whose ``stamp`` names a version an unfinished step still needs (clean keeps it).
_IN_FLIGHT: Final = frozenset({Phase.RENEWING, Phase.ISSUED, Phase.FAILED})


def in_flight(record: ServiceRecord) -> str | None:
    """The version a build or a waiting roll still needs, which has no link yet (or soon none)."""
    return record.stamp if record.phase in _IN_FLIGHT else None


def _phase(raw: object) -> Phase:
    # "rolling" was declared by the first release but never written; read it as rolled.
    value = "rolled" if raw == "rolling" else raw
    try:
        return Phase(_of(value, str, "phase"))
    except ValueError:
        raise BadRecord(f"phase = {raw!r}: unknown phase") from None


def _part(raw: object, decode: Callable[[Mapping[str, Any]], T], what: str) -> T | None:
    return None if raw is None else decode(_of(raw, dict, what))


def _web_tokens(raw: object) -> dict[str, list[str]]:
    tokens = _of(raw, dict, "web_tokens")
    return {
        str(host): [str(path) for path in _of(paths, list, f"web_tokens.{host}")]
        for host, paths in tokens.items()
    }


#: The first release's ``extra`` keys, by the part of the record they now belong to.
_V1_ORDER_KEYS: Final = {
    "acme_apexes": "apexes",
    "acme_tickets": "tickets",
    "acme_serials": "serials",
    "acme_pushed": "pushed",
}
_V1_KEYS: Final = frozenset(
    {
        "acme_order",
        "acme_order_stamp",
        "acme_web_tokens",
        "tlsa_next_seen",
        "tlsa_next_ns",
        "tlsa_retire_prev",
        "acme_ari",
        "acme_failures",
        *_V1_ORDER_KEYS,
    }
)


def _upgrade_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """The first release's record, in this release's shape (nothing of it is dropped)."""
    extra = _of(data.get("extra", {}), dict, "extra")
    unknown = set(extra) - _V1_KEYS
    if unknown:
        raise BadRecord(f"extra: unknown keys {sorted(unknown)}")
    order = None
    if extra.get("acme_order") is not None and extra.get("acme_order_stamp") is not None:
        order = {
            "stamp": extra["acme_order_stamp"],
            "order": extra["acme_order"],
            "dns": {new: extra[old] for old, new in _V1_ORDER_KEYS.items() if old in extra},
        }
    upgraded = {key: value for key, value in data.items() if key not in ("extra", "version")}
    upgraded.update(
        order=order,
        web_tokens=extra.get("acme_web_tokens", {}),
        dane={
            "next_seen": extra.get("tlsa_next_seen"),
            "next_ns": extra.get("tlsa_next_ns"),
            "retire_prev": bool(extra.get("tlsa_retire_prev")),
        },
        ari=extra.get("acme_ari"),
        backoff=extra.get("acme_failures"),
    )
    return upgraded
