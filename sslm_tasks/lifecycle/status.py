"""What sslm knows about one service now, read from its files, its record and the deploy
ledger: what ``sslm-mgr -s`` prints (as text or JSON), what ``-s --check`` judges and what
``sslm-metrics`` exports, so that all three say the same.

Reading only: nothing here changes a file or asks the network (use a context with
``repair=False``). Values are machine values (times, numbers, flags); the command line formats
them. A status judges the renew point by the middle of its spread (:class:`MiddleOfSpread`), so
it says the same on every look; a run draws inside the spread.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from cryptography import x509

from sslm_tasks.config.load import acme_ca_of
from sslm_tasks.crypto.inspect import load_certs
from sslm_tasks.errors import StoreError
from sslm_tasks.lifecycle.cert_book import BookedCert, CertDetails, details_of
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.current import (
    due_time,
    once_each,
    read_version_cert,
    renew_decision,
)
from sslm_tasks.lifecycle.deployment import ServerOutcome, servers_using
from sslm_tasks.lifecycle.health import AT_TARGET, Health, health
from sslm_tasks.lifecycle.record import AriPlan, Backoff, DaneRoll, Phase, Revocation
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.renewal import MiddleOfSpread, RenewDecision
from sslm_tasks.store.layout import CERT, LinkName, ServiceRef
from sslm_tasks.store.read import read_bytes
from sslm_tasks.store.versions import STAMP_FORMAT

#: How the DANE gate records its last look at the nameservers (``lifecycle.dane``).
_NS_COUNT: Final = re.compile(r"(\d+) of (\d+)")


@dataclass
class ReadingWorkspace(Workspace):
    """The workspace of a status: it draws with :class:`MiddleOfSpread`."""

    rng: random.Random = field(default_factory=MiddleOfSpread)


@dataclass(frozen=True)
class VersionStatus:
    stamp: str
    not_before: datetime
    not_after: datetime
    #: None unless asked for (``service_status(..., details=True)``).
    details: CertDetails | None

    @property
    def lifetime_days(self) -> float:
        return (self.not_after - self.not_before).total_seconds() / 86400


@dataclass(frozen=True)
class ServerStatus:
    """A server that uses the service: whether it holds the service's ``curr``, and how its
    last deploy ended (None: never deployed)."""

    server: str
    has_curr: bool
    last: ServerOutcome | None


@dataclass(frozen=True)
class NameserverCount:
    """How many authoritative nameservers served every ``next`` TLSA record at the last look,
    of how many asked."""

    serving: int
    asked: int


@dataclass(frozen=True)
class KeyStatus:
    """The key plan of a service with ``key_standby``: how old ``curr``'s key is, when it is to
    change, and the standby key that replaces it (named by its public key's SHA-256)."""

    curr_key: str | None
    curr_key_since: datetime | None
    rollover_days: float
    standby_key: str | None
    standby_created: datetime | None
    #: When every authoritative NS was first seen serving the standby's TLSA records.
    standby_seen: datetime | None
    standby_ns: NameserverCount | None
    #: From when the standby may replace the key (twice the cache TTL after ``standby_seen``).
    standby_ready_at: datetime | None


@dataclass(frozen=True)
class ServiceStatus:
    ref: ServiceRef
    #: The moment the status was read (the workspace's clock).
    read_at: datetime
    health: Health
    phase: Phase
    curr: VersionStatus | None
    next: VersionStatus | None
    #: The lifetime rule's answer, judged at the renew target (no spread drawn).
    renew: RenewDecision
    #: ACME: the CA's renewal window (ARI) remembered for ``curr``.
    ari: AriPlan | None
    #: ACME: failed builds in a row and when the next may start.
    backoff: Backoff | None
    #: When a waiting ``next`` may roll.
    roll_due: datetime | None
    dane: DaneRoll
    tlsa_next_ns: NameserverCount | None
    servers: list[ServerStatus]
    #: Since when the service has been pending (see :func:`pending_since`).
    pending_since: datetime | None
    #: When the build in progress began (its version's stamp); None without one.
    build_started: datetime | None
    last_error: str | None
    #: What sslm had to repair in the service's record itself (a corrupt file moved aside).
    notice: str | None
    #: The service's revoked certificates (``sslm-mgr revoke``), oldest first.
    revocations: list[Revocation] = field(default_factory=list)
    #: With ``key_standby`` only.
    keys: KeyStatus | None = None

    @property
    def renew_at(self) -> datetime | None:
        """When ``curr`` becomes due: the time drawn in the CA's window (ARI) when there is
        one, else the lifetime rule's renew target."""
        if self.ari is not None and self.ari.renew_at is not None:
            return self.ari.renew_at
        return self.renew.renew_at


def published_cert(ctx: ServiceContext, which: LinkName) -> x509.Certificate | None:
    """The certificate the production tree holds for ``which``: what servers are given, and
    what a reader that may not enter the store's version directories (the metrics, running
    without access to private keys) can read. None when production has no copy (it never
    holds ``prev``)."""
    if which == "prev":
        return None
    path = ctx.layout.prod_version_dir(ctx.ref, which) / CERT
    try:
        return load_certs(read_bytes(path))[0]
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreError(f"reading {path}: {err.strerror or err}") from err


#: Reads the certificate a link points at for a status: parsed, or known from the book.
StatusLoader = Callable[[ServiceContext, LinkName], x509.Certificate | BookedCert | None]


def booked_or_parsed(ctx: ServiceContext, which: LinkName) -> x509.Certificate | BookedCert | None:
    """The certificate a link points at, as a status reads it: from the workspace's book of
    details when the book knows the file's bytes (no parse: a third of ``-s`` at 10,000
    services), else parsed; None when the link or file is missing."""
    pem = read_version_cert(ctx, which)
    if pem is None:
        return None
    book = ctx.ws.cert_book
    known = None if book is None else book.look_up(pem)
    return known if known is not None else load_certs(pem)[0]


def _version(
    ctx: ServiceContext, which: LinkName, load: StatusLoader, *, details: bool
) -> VersionStatus | None:
    stamp = ctx.link(which)
    cert = load(ctx, which)
    if stamp is None or cert is None:
        return None
    described = None
    if isinstance(cert, BookedCert):
        described = cert.details if details else None
    elif details:
        book = ctx.ws.cert_book
        described = details_of(cert) if book is None else book.details(cert)
    return VersionStatus(stamp, cert.not_valid_before_utc, cert.not_valid_after_utc, described)


def _ari_for(plan: AriPlan | None, curr: VersionStatus | None) -> AriPlan | None:
    """The remembered ARI plan when it is for ``curr`` and holds the CA's window."""
    if plan is None or curr is None or plan.curr != curr.stamp or plan.window is None:
        return None
    return plan if plan.renew_at is not None else None


def nameserver_count(recorded: str | None) -> NameserverCount | None:
    """The DANE gate's ``"<serving> of <asked>"``, as numbers."""
    found = None if recorded is None else _NS_COUNT.fullmatch(recorded)
    return None if found is None else NameserverCount(int(found[1]), int(found[2]))


def _stamp_time(stamp: str | None) -> datetime | None:
    if stamp is None:
        return None
    try:
        return datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def pending_since(
    ctx: ServiceContext, health_: Health, curr: VersionStatus | None, roll_due: datetime | None
) -> datetime | None:
    """Since when the service has been waiting, for a check that warns about work that stays
    pending: the earliest of when a waiting ``next`` could roll, when production got a
    ``curr`` some server still lacks, and, without any certificate, when sslm last wrote the
    service's record. None when nothing is pending, or when sslm never worked on the service."""
    if health_.word != "pending":
        return None
    moments: list[datetime] = []
    if roll_due is not None and ctx.record.phase == Phase.ISSUED:
        moments.append(roll_due)
    if health_.pending_servers and curr is not None:
        moments.append(ctx.record.prod_since or curr.not_before)
    if curr is None and ctx.record.updated is not None:
        moments.append(ctx.record.updated)
    return min(moments, default=None)


def service_status(
    ctx: ServiceContext,
    ledger: dict[str, ServerOutcome],
    *,
    details: bool = True,
    load: StatusLoader = booked_or_parsed,
) -> ServiceStatus:
    """The status of the service of ``ctx`` (a read-only context: ``repair=False``; its
    workspace a :class:`ReadingWorkspace`). ``details``: also the names and
    algorithms of the certificates, for people; ``load`` reads the certificates (from the
    store, or :func:`published_cert`).

    Raises:
      StoreError: a link, the record or the ledger is unreadable.
    """
    record = ctx.record
    load = once_each(load)
    using = servers_using(ctx.ws.config.main, ctx.ref)
    # At the renew target, as health judges (a reading workspace draws there too).
    renew = renew_decision(ctx, load=load, rng=AT_TARGET)
    judged = health(ctx, ledger, load=load, servers=using, renew=renew)
    curr = _version(ctx, "curr", load, details=details)
    lacking = set(judged.pending_servers)
    servers = [ServerStatus(key, key not in lacking, ledger.get(key)) for key in using]
    building = record.phase in (Phase.RENEWING, Phase.FAILED)
    roll_due = due_time(ctx, load=load)
    return ServiceStatus(
        ref=ctx.ref,
        read_at=ctx.now(),
        health=judged,
        phase=record.phase,
        curr=curr,
        next=_version(ctx, "next", load, details=details),
        renew=renew,
        ari=_ari_for(record.ari, curr),
        backoff=record.backoff if acme_ca_of(ctx.ws.config, ctx.ref) else None,
        roll_due=roll_due,
        dane=record.dane,
        tlsa_next_ns=nameserver_count(record.dane.next_ns),
        servers=servers,
        pending_since=pending_since(ctx, judged, curr, roll_due),
        build_started=_stamp_time(record.stamp) if building else None,
        last_error=record.last_error,
        notice=record.notice,
        revocations=list(record.revocations),
        keys=_key_status(ctx),
    )


def _key_status(ctx: ServiceContext) -> KeyStatus | None:
    if not ctx.service.key_standby:
        return None
    keys = ctx.record.keys
    return KeyStatus(
        curr_key=keys.curr_key,
        curr_key_since=keys.curr_key_since,
        rollover_days=ctx.service.rollover_days,
        standby_key=keys.standby_key,
        standby_created=keys.standby_created,
        standby_seen=keys.standby_seen,
        standby_ns=nameserver_count(keys.standby_ns),
        standby_ready_at=keys.standby_ready_at,
    )
