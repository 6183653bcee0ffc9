"""When the renew check of a service signed by an ACME CA may start an order: the CA's renewal
window (ARI, RFC 9773) and the backoff after failed builds.

Two parts of the service's record (:mod:`sslm_tasks.lifecycle.record`), written under the
service's lock:

* ``ari``, the plan for the current certificate: the CA's window, the one random time drawn
  inside it, when to ask the CA again, and the certificate ID to send as ``replaces``. The time
  is drawn once and kept until the CA moves the window, so every check (beat twice a day, cron,
  a by-hand ``-renew``) acts on the same draw, and the CA is not asked again before the time its
  Retry-After gave. A plan without a window (the CA has no ``renewalInfo``, or did not answer)
  only remembers when to ask again; the lifetime rule (``renewal.decide``) decides meanwhile.
* ``backoff``, how many builds in a row failed and when the next attempt may start:
  ``acme.timing.retry_time_after_failure``, where the CA's Retry-After wins over 1 min,
  10 min, 100 min, then daily. A stored version clears it.

The parts that decide (:func:`merge_plan`, :func:`after_failure`) are pure and take the clock
as a parameter; :func:`due` is the only function that talks to the CA, and it never raises for
network trouble.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from sslm_tasks.acme.directory import connect, has_resource, server_for
from sslm_tasks.acme.network import suggested_retry
from sslm_tasks.acme.renewal_info import (
    RenewalPlan,
    fallback_plan,
    plan_renewal,
)
from sslm_tasks.acme.timing import retry_time_after_failure
from sslm_tasks.config.load import acme_ca_of
from sslm_tasks.config.models import CaInfo
from sslm_tasks.errors import SslmError
from sslm_tasks.lifecycle.acme_plan import ari_verdict, backoff_waiting, describe
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.record import AriPlan, Backoff, ServiceRecord
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.renewal import RenewDecision
from sslm_tasks.store import layout as files
from sslm_tasks.store.read import read_bytes

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- ARI


def merge_plan(
    previous: AriPlan | None, fresh: RenewalPlan, *, curr: str, answered: bool
) -> AriPlan:
    """The plan to remember after asking the CA about ``curr``.

    Parameters:
      previous(AriPlan | None): the remembered plan (for any ``curr``).
      fresh(RenewalPlan): ``plan_renewal``'s answer (or ``fallback_plan``'s).
      curr(str): the stamp of the current version.
      answered(bool): the CA gave its window, or its directory has no ``renewalInfo``; False
        when asking failed.

    The time drawn earlier is kept while the CA's window stays the same (RFC 9773 §4.2: pick a
    time once; drawing anew at every check would pull the renewal towards the window's start).
    When asking failed, the last window stands, with the new time to ask again: the CA may have
    moved it early ahead of a revocation, which the lifetime rule would miss.
    """
    kept = previous if previous is not None and previous.curr == curr else None
    if fresh.source == "ari" and fresh.window is not None:
        same = kept is not None and kept.window == fresh.window and kept.renew_at is not None
        return AriPlan(
            curr=curr,
            next_check=fresh.next_check,
            window=fresh.window,
            renew_at=kept.renew_at if same and kept is not None else fresh.renew_at,
            replaces=fresh.replaces,
            explanation_url=fresh.explanation_url,
        )
    if not answered and kept is not None and kept.window is not None:
        return replace(kept, next_check=fresh.next_check)
    return AriPlan(curr=curr, next_check=fresh.next_check)


def remembered_replaces(ctx: ServiceContext) -> str | None:
    """``replaces`` for a new order: ``curr``'s certificate ID, when the CA gave a window for
    it (so the CA knows that certificate; another CA's would be refused)."""
    plan = ctx.record.ari
    curr = ctx.link("curr")
    if plan is None or plan.curr != curr or plan.window is None:
        return None
    return plan.replaces


def _acme_ca(ctx: ServiceContext) -> CaInfo | None:
    return acme_ca_of(ctx.ws.config, ctx.ref)


def _ask(
    ws: Workspace, ca: CaInfo, cert_pem: bytes, *, now: datetime, lifetime_renew_at: datetime
) -> tuple[RenewalPlan, bool]:
    """The CA's answer for the certificate, and whether it answered (see :func:`merge_plan`)."""
    try:
        client = connect(server_for(ca, test=ws.options.acme_test_server), None)
    except SslmError as err:
        # The directory first: a CA that is down must not fail the check any more than a
        # failing renewalInfo does (ConfigError included: the order will name it).
        return fallback_plan(err, now=now, lifetime_renew_at=lifetime_renew_at), False
    fresh = plan_renewal(client, cert_pem, now=now, rng=ws.rng, lifetime_renew_at=lifetime_renew_at)
    offered = has_resource(client.directory, "renewalInfo")
    return fresh, fresh.source != "lifetime" or not offered


def due(ctx: ServiceContext, decision: RenewDecision, *, record: bool) -> tuple[bool, str]:
    """(due, reason) for ``curr``: by the CA's window when it offers ARI, else ``decision``.

    Only services of an ACME CA with a ``curr`` that has not expired ask; the CA is asked when
    the remembered plan is for another ``curr`` or its recheck time has come, and the new plan
    is remembered unless ``record`` is False (the dry run, which holds no lock).

    Never raises for network trouble: the lifetime rule decides then, and the CA is asked
    again after its Retry-After or within the hour.
    """
    ca = _acme_ca(ctx)
    curr = ctx.link("curr")
    expired = decision.days_left is None or decision.days_left <= 0
    if ca is None or curr is None or decision.renew_at is None or expired:
        return decision.due, decision.reason
    now = ctx.now()
    plan = ctx.record.ari
    if plan is None or plan.curr != curr or plan.must_ask(now=now):
        cert_pem = read_bytes(ctx.layout.version_dir(ctx.ref, curr) / files.CERT)
        fresh, answered = _ask(ctx.ws, ca, cert_pem, now=now, lifetime_renew_at=decision.renew_at)
        plan = merge_plan(plan, fresh, curr=curr, answered=answered)
        if record:
            ctx.record.ari = plan
            ctx.save()
    verdict = ari_verdict(plan, now=now)
    return (decision.due, decision.reason) if verdict is None else verdict


# --------------------------------------------------------------------------- backoff


def after_failure(
    previous: Backoff | None, *, now: datetime, retry_after: datetime | None
) -> Backoff:
    """The backoff after one more failed build; ``retry_after`` is the CA's, if it sent one."""
    failures = 1 if previous is None else previous.failures + 1
    return Backoff(
        failures=failures,
        retry_at=retry_time_after_failure(failures, now=now, retry_after=retry_after),
        ca_asked=retry_after is not None,
    )


def retry_after_in(error: BaseException | None) -> datetime | None:
    """The CA's Retry-After carried by ``error`` or an error it was raised from."""
    while error is not None:
        suggested = suggested_retry(error)
        if suggested is not None:
            return suggested
        error = error.__cause__
    return None


def waiting(ctx: ServiceContext) -> str | None:
    """Why the renew check must not start or resume a build yet; None: it may."""
    backoff = ctx.record.backoff
    if backoff is None or _acme_ca(ctx) is None:
        return None
    return backoff_waiting(backoff, now=ctx.now())


def note_failure(ctx: ServiceContext, error: BaseException | None) -> None:
    """Count a failed build of an ACME service in its record (the caller saves it)."""
    if _acme_ca(ctx) is None:
        return
    record: ServiceRecord = ctx.record
    record.backoff = after_failure(record.backoff, now=ctx.now(), retry_after=retry_after_in(error))
    log.info("%s: %s", ctx.ref, describe(record.backoff))
