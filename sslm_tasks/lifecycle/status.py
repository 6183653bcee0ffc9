"""What ``sslm-mgr -s`` shows: read-only, from the files and the service state.

Unlike upstream's ``-s``, this touches no network and changes nothing on disk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sslm_tasks.crypto.inspect import cert_info
from sslm_tasks.lifecycle import acme_timing
from sslm_tasks.lifecycle.build import load_version_cert, renew_decision
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.deployment import ServerOutcome, lacking, servers_using
from sslm_tasks.lifecycle.roll import due_time
from sslm_tasks.renewal import format_renew_in
from sslm_tasks.store.layout import LinkName
from sslm_tasks.store.versions import read_link


@dataclass(frozen=True)
class VersionStatus:
    stamp: str
    expires: datetime
    issued: datetime
    lifetime_days: float
    issuer: str
    subject: str
    pubkey: str
    sans: list[str]
    sig_algo: str


@dataclass(frozen=True)
class ServiceStatus:
    group: str
    service: str
    phase: str
    curr: VersionStatus | None
    next: VersionStatus | None
    renew_in: str
    #: Days until the renew target (negative once it has passed); None without a certificate.
    renew_in_days: float | None
    renew_due: bool
    #: ACME: the CA's renewal window (ARI) for ``curr`` and the time drawn in it, as remembered.
    ari: str | None
    #: ACME: failed attempts and when the next may start, while a wait is in effect.
    next_attempt: str | None
    roll_due: str | None
    #: DANE: when every authoritative NS was first seen serving ``next``'s TLSA records.
    tlsa_next_seen: str | None
    #: DANE: the old ``curr``'s records stay published until the servers took the new one.
    tlsa_retiring_prev: bool
    #: DANE: how many authoritative NS served all ``next`` records at the last look.
    tlsa_next_ns: str | None
    #: Last deploy (and verify) of each server that uses this service.
    servers: list[dict[str, object]]
    last_error: str | None
    #: What sslm had to repair in the service's record itself (a corrupt file moved aside).
    notice: str | None

    def to_json(self) -> dict[str, Any]:
        def encode(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {key: encode(item) for key, item in value.items()}
            if isinstance(value, list):
                return [encode(item) for item in value]
            return value

        result: dict[str, Any] = encode(asdict(self))
        return result


def _version(ctx: ServiceContext, which: LinkName) -> VersionStatus | None:
    stamp = read_link(ctx.layout, ctx.ref, which)
    cert = load_version_cert(ctx, which)
    if stamp is None or cert is None:
        return None
    info = cert_info(cert)
    return VersionStatus(
        stamp=stamp,
        expires=info.not_after,
        issued=info.not_before,
        lifetime_days=info.lifetime_days,
        issuer=info.issuer,
        subject=info.subject,
        pubkey=info.pubkey,
        sans=info.sans,
        sig_algo=info.sig_algo,
    )


def _servers(ctx: ServiceContext, ledger: dict[str, ServerOutcome]) -> list[dict[str, object]]:
    pending = set(lacking(ctx, ledger))
    found: list[dict[str, object]] = []
    for key in servers_using(ctx.ws.config.main, ctx.ref):
        outcome = ledger.get(key)
        found.append(
            {
                "server": key,
                "at": None if outcome is None else outcome.at,
                "ok": None if outcome is None else outcome.ok,
                "detail": None if outcome is None else outcome.detail,
                "has_curr": key not in pending,
            }
        )
    return found


def service_status(ctx: ServiceContext, ledger: dict[str, ServerOutcome]) -> ServiceStatus:
    """The status of the service of ``ctx`` (a read-only context: ``repair=False``)."""
    record = ctx.record
    decision = renew_decision(ctx)
    dane = record.dane
    return ServiceStatus(
        group=ctx.ref.group,
        service=ctx.ref.service,
        phase=str(record.phase),
        curr=_version(ctx, "curr"),
        next=_version(ctx, "next"),
        renew_in=format_renew_in(decision),
        renew_in_days=decision.days_to_renew,
        renew_due=decision.due,
        ari=acme_timing.plan_text(ctx),
        next_attempt=acme_timing.waiting(ctx),
        roll_due=None if (due := due_time(ctx)) is None else due.isoformat(),
        tlsa_next_seen=None if dane.next_seen is None else dane.next_seen.isoformat(),
        tlsa_retiring_prev=dane.retire_prev,
        tlsa_next_ns=dane.next_ns,
        servers=_servers(ctx, ledger),
        last_error=record.last_error,
        notice=record.notice,
    )
