"""What a service's record says of its ACME timing, without asking the CA: the verdict of the
remembered ARI plan, whether the backoff still holds, and their status lines. Apart from
:mod:`sslm_tasks.lifecycle.acme_timing`, which asks the CA, so that ``sslm-mgr -s`` imports
neither the acme library nor requests.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sslm_tasks.lifecycle.record import AriPlan, Backoff


def show(moment: datetime) -> str:
    """A time as the reasons and the status print it: ``2026-05-01 12:00:00 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ari_verdict(plan: AriPlan, *, now: datetime) -> tuple[bool, str] | None:
    """(due, reason) by the CA's window; None when the lifetime rule decides."""
    if plan.window is None or plan.renew_at is None:
        return None
    window = f"{show(plan.window.start)} .. {show(plan.window.end)}"
    if plan.renew_at > now:
        return False, f"renew at {show(plan.renew_at)}, in the CA's renewal window {window} (ARI)"
    why = f"due: in the CA's renewal window {window} (ARI)"
    if plan.explanation_url:
        why += f"; the CA explains: {plan.explanation_url}"
    return True, why


def plan_text(plan: AriPlan) -> str | None:
    """The status line of a remembered window; None for a plan without one."""
    if plan.window is None or plan.renew_at is None:
        return None
    text = (
        f"renew at {show(plan.renew_at)} (window {show(plan.window.start)} .. "
        f"{show(plan.window.end)})"
    )
    return text + ("" if plan.next_check is None else f"; asks again after {show(plan.next_check)}")


def backoff_waiting(backoff: Backoff, *, now: datetime) -> str | None:
    """Why no attempt may start at ``now``; None once ``retry_at`` has come."""
    return None if now >= backoff.retry_at else describe(backoff)


def describe(backoff: Backoff) -> str:
    plural = "s" if backoff.failures != 1 else ""
    why = " (the CA's Retry-After)" if backoff.ca_asked else ""
    return (
        f"{backoff.failures} failed attempt{plural}; next attempt after {show(backoff.retry_at)}"
        f"{why} (-f tries now)"
    )
