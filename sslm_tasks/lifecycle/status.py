"""What ``sslm-mgr -s`` shows: read-only, from the files and the service state.

Unlike upstream's ``-s``, this touches no network and changes nothing on disk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sslm_tasks.crypto.inspect import cert_info
from sslm_tasks.deploy.targets import depends_on
from sslm_tasks.lifecycle import acme_timing, dane
from sslm_tasks.lifecycle.build import load_version_cert, renew_decision
from sslm_tasks.lifecycle.deploy_record import read_outcomes
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.renewal import format_renew_in
from sslm_tasks.store.layout import LinkName, ServiceRef
from sslm_tasks.store.state import load_state
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


def _version(ws: Workspace, ref: ServiceRef, which: LinkName) -> VersionStatus | None:
    stamp = read_link(ws.layout, ref, which)
    cert = load_version_cert(ws, ref, which)
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


def _servers(ws: Workspace, ref: ServiceRef) -> list[dict[str, object]]:
    outcomes = read_outcomes(ws)
    found: list[dict[str, object]] = []
    for name, section in ws.config.main.server_sections():
        if not depends_on(section, [ref], ["cert"]):
            continue
        for host in section.servers:
            outcome = outcomes.get(f"{name}:{host}")
            last = (
                asdict(outcome) if outcome is not None else {"at": None, "ok": None, "detail": None}
            )
            found.append({"server": f"{name}:{host}", **last})
    return found


def service_status(ws: Workspace, ref: ServiceRef) -> ServiceStatus:
    state = load_state(ws.layout, ref)
    decision = renew_decision(ws, ref)
    return ServiceStatus(
        group=ref.group,
        service=ref.service,
        phase=str(state.phase),
        curr=_version(ws, ref, "curr"),
        next=_version(ws, ref, "next"),
        renew_in=format_renew_in(decision),
        renew_in_days=decision.days_to_renew,
        renew_due=decision.due,
        ari=acme_timing.plan_text(ws, ref, state),
        next_attempt=acme_timing.waiting(ws, ref, state),
        roll_due=state.roll_due,
        tlsa_next_seen=state.extra.get(dane.SEEN_KEY),
        tlsa_retiring_prev=bool(state.extra.get(dane.RETIRE_KEY)),
        tlsa_next_ns=state.extra.get(dane.NS_KEY),
        servers=_servers(ws, ref),
        last_error=state.last_error,
    )
