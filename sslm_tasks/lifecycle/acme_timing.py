"""When the renew check of a service signed by an ACME CA may start an order: the CA's renewal
window (ARI, RFC 9773) and the backoff after failed builds.

Two records in the service state (``ServiceState.extra``), written under the service's lock:

* ``acme_ari``, the plan for the current certificate: the CA's window, the one random time drawn
  inside it, when to ask the CA again, and the certificate ID to send as ``replaces``. The time
  is drawn once and kept until the CA moves the window, so every check (beat twice a day, cron,
  a by-hand ``-renew``) acts on the same draw, and the CA is not asked again before the time its
  Retry-After gave. A plan without a window (the CA has no ``renewalInfo``, or did not answer)
  only remembers when to ask again; the lifetime rule (``renewal.decide``) decides meanwhile.
* ``acme_failures``, how many builds in a row failed and when the next attempt may start:
  ``renewal_info.retry_time_after_failure``, where the CA's Retry-After wins over 1 min,
  10 min, 100 min, then daily. A stored version clears it.

The parts that decide (:class:`AriPlan`, :func:`merge_plan`, :class:`Backoff`,
:func:`after_failure`) are pure and take the clock as a parameter; :func:`due` is the only
function that talks to the CA, and it never raises for network trouble.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from sslm_tasks.acme.directory import connect, has_resource, server_for
from sslm_tasks.acme.network import AcmeTransientError
from sslm_tasks.acme.renewal_info import (
    RenewalPlan,
    RenewalWindow,
    fallback_plan,
    plan_renewal,
    retry_time_after_failure,
)
from sslm_tasks.config.load import acme_ca_of
from sslm_tasks.config.models import CaInfo
from sslm_tasks.errors import SslmError
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.renewal import RenewDecision
from sslm_tasks.store import layout as files
from sslm_tasks.store.layout import ServiceRef
from sslm_tasks.store.state import ServiceState, load_state, save_state
from sslm_tasks.store.versions import read_link

log = logging.getLogger(__name__)

#: State keys (``ServiceState.extra``) this module owns.
ARI_KEY: Final = "acme_ari"
FAILURES_KEY: Final = "acme_failures"


def show(moment: datetime) -> str:
    """A time as the reasons and the status print it: ``2026-05-01 12:00:00 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _time(raw: object) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError(f"expected an ISO 8601 time, got {raw!r}")
    return datetime.fromisoformat(raw)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


# --------------------------------------------------------------------------- ARI


@dataclass(frozen=True)
class AriPlan:
    """What the renew check remembers about the CA's answer for one ``curr``.

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
    def from_json(cls, raw: dict[str, Any]) -> AriPlan:
        """Inverse of :meth:`to_json`.

        Raises:
          ValueError, KeyError, TypeError: ``raw`` is no plan this module wrote.
        """
        window = raw["window"]
        start, end = (None, None) if window is None else (_time(window[0]), _time(window[1]))
        return cls(
            curr=str(raw["curr"]),
            next_check=_time(raw["next_check"]),
            window=None if start is None or end is None else RenewalWindow(start, end),
            renew_at=_time(raw["renew_at"]),
            replaces=raw["replaces"],
            explanation_url=raw["explanation_url"],
        )

    def must_ask(self, *, now: datetime) -> bool:
        """Whether the CA's Retry-After has passed (never, once the certificate expired)."""
        return self.next_check is not None and now >= self.next_check

    def verdict(self, *, now: datetime) -> tuple[bool, str] | None:
        """(due, reason) by the CA's window; None when the lifetime rule decides."""
        if self.window is None or self.renew_at is None:
            return None
        window = f"{show(self.window.start)} .. {show(self.window.end)}"
        if self.renew_at > now:
            return (
                False,
                f"renew at {show(self.renew_at)}, in the CA's renewal window {window} (ARI)",
            )
        why = f"due: in the CA's renewal window {window} (ARI)"
        if self.explanation_url:
            why += f"; the CA explains: {self.explanation_url}"
        return True, why


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


def remembered_plan(state: ServiceState) -> AriPlan | None:
    """The plan in the state record; None when there is none or it cannot be read (it is
    only a memory of the CA's answer: asking again is always safe)."""
    raw = state.extra.get(ARI_KEY)
    if raw is None:
        return None
    try:
        return AriPlan.from_json(raw)
    except (ValueError, KeyError, TypeError) as err:
        log.warning("unreadable renewal plan %r, asking the CA again: %s", raw, err)
        return None


def remembered_replaces(ws: Workspace, ref: ServiceRef) -> str | None:
    """``replaces`` for a new order of ``ref``: ``curr``'s certificate ID, when the CA gave a
    window for it (so the CA knows that certificate; another CA's would be refused)."""
    plan = remembered_plan(load_state(ws.layout, ref))
    curr = read_link(ws.layout, ref, "curr")
    if plan is None or plan.curr != curr or plan.window is None:
        return None
    return plan.replaces


def _acme_ca(ws: Workspace, ref: ServiceRef) -> CaInfo | None:
    return acme_ca_of(ws.config, ref)


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


def due(
    ws: Workspace, ref: ServiceRef, decision: RenewDecision, *, record: bool
) -> tuple[bool, str]:
    """(due, reason) for ``curr``: by the CA's window when it offers ARI, else ``decision``.

    Only services of an ACME CA with a ``curr`` that has not expired ask; the CA is asked when
    the remembered plan is for another ``curr`` or its recheck time has come, and the new plan
    is remembered unless ``record`` is False (the dry run, which holds no lock).

    Never raises for network trouble: the lifetime rule decides then, and the CA is asked
    again after its Retry-After or within the hour.
    """
    ca = _acme_ca(ws, ref)
    curr = read_link(ws.layout, ref, "curr")
    expired = decision.days_left is None or decision.days_left <= 0
    if ca is None or curr is None or decision.renew_at is None or expired:
        return decision.due, decision.reason
    now = ws.clock()
    state = load_state(ws.layout, ref)
    plan = remembered_plan(state)
    if plan is None or plan.curr != curr or plan.must_ask(now=now):
        cert_pem = (ws.layout.version_dir(ref, curr) / files.CERT).read_bytes()
        fresh, answered = _ask(ws, ca, cert_pem, now=now, lifetime_renew_at=decision.renew_at)
        plan = merge_plan(plan, fresh, curr=curr, answered=answered)
        if record:
            state.extra[ARI_KEY] = plan.to_json()
            save_state(ws.layout, ref, state, now=now)
    verdict = plan.verdict(now=now)
    return (decision.due, decision.reason) if verdict is None else verdict


def plan_text(ws: Workspace, ref: ServiceRef, state: ServiceState) -> str | None:
    """The status line of the remembered window for ``curr``; None without one."""
    plan = remembered_plan(state)
    if plan is None or plan.window is None or plan.renew_at is None:
        return None
    if plan.curr != read_link(ws.layout, ref, "curr"):
        return None
    text = (
        f"renew at {show(plan.renew_at)} (window {show(plan.window.start)} .. "
        f"{show(plan.window.end)})"
    )
    return text + ("" if plan.next_check is None else f"; asks again after {show(plan.next_check)}")


# --------------------------------------------------------------------------- backoff


@dataclass(frozen=True)
class Backoff:
    """Failed builds in a row, and when the next may start.

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
    def from_json(cls, raw: dict[str, Any]) -> Backoff:
        """Inverse of :meth:`to_json`.

        Raises:
          ValueError, KeyError, TypeError: ``raw`` is no record this module wrote.
        """
        retry_at = _time(raw["retry_at"])
        if retry_at is None:
            raise ValueError("retry_at is missing")
        return cls(failures=int(raw["failures"]), retry_at=retry_at, ca_asked=bool(raw["ca_asked"]))

    def waiting(self, *, now: datetime) -> str | None:
        """Why no attempt may start at ``now``; None once ``retry_at`` has come."""
        if now >= self.retry_at:
            return None
        return self.describe()

    def describe(self) -> str:
        plural = "s" if self.failures != 1 else ""
        why = " (the CA's Retry-After)" if self.ca_asked else ""
        return (
            f"{self.failures} failed attempt{plural}; next attempt after {show(self.retry_at)}"
            f"{why} (-f tries now)"
        )


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
        if isinstance(error, AcmeTransientError) and error.retry_after is not None:
            return error.retry_after
        error = error.__cause__
    return None


def backoff_of(state: ServiceState) -> Backoff | None:
    """The recorded backoff; None when there is none or it cannot be read (then the next
    attempt is not held back, as before any failure)."""
    raw = state.extra.get(FAILURES_KEY)
    if raw is None:
        return None
    try:
        return Backoff.from_json(raw)
    except (ValueError, KeyError, TypeError) as err:
        log.warning("unreadable failure record %r, not waiting: %s", raw, err)
        return None


def waiting(ws: Workspace, ref: ServiceRef, state: ServiceState) -> str | None:
    """Why the renew check of ``ref`` must not start or resume a build yet; None: it may."""
    backoff = backoff_of(state)
    if backoff is None or _acme_ca(ws, ref) is None:
        return None
    return backoff.waiting(now=ws.clock())


def note_failure(
    ws: Workspace, ref: ServiceRef, state: ServiceState, error: BaseException | None
) -> None:
    """Count a failed build of an ACME service in ``state`` (the caller saves it)."""
    if _acme_ca(ws, ref) is None:
        return
    backoff = after_failure(backoff_of(state), now=ws.clock(), retry_after=retry_after_in(error))
    state.extra[FAILURES_KEY] = backoff.to_json()
    log.info("%s: %s", ref, backoff.describe())


def clear_failures(state: ServiceState) -> None:
    """A build succeeded: the next failure counts from one again."""
    state.extra.pop(FAILURES_KEY, None)
