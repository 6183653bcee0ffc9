"""Failures are state: what is failing for a service, by kind, with time, reason and attempts.

A failed step is recorded under the kind of work it belongs to (``build``: every step that makes
a new version; ``roll``; ``production``; ``dns``: the zone's TLSA file and its refresh;
``clean``), in the service's record, and stays there until that kind of work next succeeds.
``sslm-mgr -s``, the monitoring check, the metrics and the notifications all read it from there
(:mod:`sslm_tasks.lifecycle.health`), so they agree, in-process and on workers alike. The
failures of servers (a deploy, a verify probe) are kept per server in the deploy ledger
(:mod:`sslm_tasks.lifecycle.deployment`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final

from sslm_tasks.errors import SslmError
from sslm_tasks.lifecycle import acme_timing
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.record import Failure, Phase

log = logging.getLogger("sslm")

#: Steps outside the build, by the kind of work they fail; any other step fails the build.
_KIND_OF_STEP: Final = {
    "roll_gate": "roll",
    "roll": "roll",
    "production": "production",
    "tlsa": "dns",
    "clean": "clean",
}
BUILD: Final = "build"


def kind_of(error: BaseException | None) -> str:
    """The kind of work a step's error failed (``build`` when it names no step)."""
    step = error.step if isinstance(error, SslmError) else None
    return _KIND_OF_STEP.get(step or "", BUILD)


def record(
    ctx: ServiceContext, kind: str, reason: str, *, retry_at: datetime | None = None
) -> Failure:
    """Record (or count once more) a failure of ``kind``; the caller saves the record."""
    now = ctx.now()
    before = ctx.record.failures.get(kind)
    failure = Failure(
        since=now if before is None else before.since,
        last=now,
        reason=reason,
        attempts=1 if before is None else before.attempts + 1,
        retry_at=retry_at,
    )
    ctx.record.failures[kind] = failure
    ctx.record.last_error = reason
    return failure


def clear(ctx: ServiceContext, kind: str) -> None:
    """``kind`` succeeded: it is no longer failing (saved only when it was)."""
    if ctx.record.failures.pop(kind, None) is not None:
        if not ctx.record.failures:
            ctx.record.last_error = None
        log.info("%s: %s works again", ctx.ref, kind)
        ctx.save()


def record_step_failure(ctx: ServiceContext, message: str, *, error: BaseException | None) -> None:
    """A step of the service failed with ``error``: record it under its kind and save.

    A failed build keeps its stamp so the next run resumes it; one of an ACME service is also
    counted in the backoff, with the CA's Retry-After if ``error`` (or its cause) carries one,
    so the next check waits (``acme_timing``).

    Raises:
      StoreError: the record could not be written (a full disk, a read-only tree).
    """
    if not ctx.layout.service_dir(ctx.ref).is_dir():
        return  # nothing was written for this service; keep it that way
    record_ = ctx.reload()
    kind = kind_of(error)
    retry_at = None
    if kind == BUILD:
        building = record_.phase in (Phase.RENEWING, Phase.FAILED) and record_.stamp is not None
        if building:
            acme_timing.note_failure(ctx, error)
            retry_at = None if record_.backoff is None else record_.backoff.retry_at
        if record_.phase == Phase.RENEWING:
            record_.phase = Phase.FAILED
    record(ctx, kind, message, retry_at=retry_at)
    ctx.save()
