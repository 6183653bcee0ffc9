"""``sslm-mgr`` without a broker: the pipeline walked in this process.

Every selected service is walked through the stages the request asks for
(:func:`sslm_tasks.lifecycle.pipeline.service_stages`), one service at a time in dependency
order, calling the same step functions the workers' tasks call; a wait is asked again after a
short sleep. Then the finish runs once for everything that changed: each server restarts once
however many services changed.

A failure stays with its service and with what it signs: a CA that failed to renew leaves its
leaves untouched (they are reported as failed too), every other service goes on. That holds for
any error, including a failure to record the failure (a full disk, a corrupt record): it is
reported on the service, never raised out of the run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

from sslm_tasks.config.load import signer_of
from sslm_tasks.config.settings import load_settings
from sslm_tasks.errors import PermanentError, SslmError
from sslm_tasks.lifecycle import (
    acme_sign,
    build,
    deployment,
    dry_run,
    failures,
    finish,
    notify,
    pipeline,
    steps,
)
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.pipeline import Segment, Step, Walk
from sslm_tasks.lifecycle.steps import CLEANED, PRODUCTION_UPDATED
from sslm_tasks.lifecycle.verdict import Verdict
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.logs import trace
from sslm_tasks.store.layout import ServiceRef

from .run import RunReport, RunRequest, ServiceOutcome

log = logging.getLogger("sslm")

#: The pause between two looks of a wait, unless the CA asked for a longer one (its
#: Retry-After, ``pipeline.pause``). In one process a look costs a DNS pass or one request, so
#: a short fixed pause beats the workers' growing countdowns (each a message).
POLL_S: Final = 0.5


def _until_ready(ctx: ServiceContext, step: Step, wait_s: float) -> Verdict:
    """Look until ``step`` is ready; after ``wait_s`` the build fails with the last thing seen.

    Raises:
      PermanentError: not ready within ``wait_s``, or failed for good.
    """
    deadline = time.monotonic() + wait_s
    while True:
        verdict = pipeline.look(ctx, step)
        if verdict.go:
            return verdict
        left = deadline - time.monotonic()
        if left <= 0:
            raise PermanentError(
                f"{ctx.ref}: {step.name}: not done after {wait_s:g} s: {verdict.detail}"
            )
        time.sleep(pipeline.pause(POLL_S, verdict, left_s=left))


def walk_segment(ctx: ServiceContext, segment: Segment, walk: Walk, *, wait_s: float) -> None:
    """One segment in this process: its wait until ready, then its steps, each patient step
    that is not done yet asked again until it is."""
    waiting = pipeline.pending(segment, walk)
    if waiting is not None:
        walk.note(ctx, waiting[1], _until_ready(ctx, waiting[1], wait_s))
    start = 0
    while (stuck := pipeline.run_steps(ctx, segment, walk, start=start)) is not None:
        index, _ = stuck
        step = segment.steps[index][1]
        walk.note(ctx, step, _until_ready(ctx, step, wait_s))
        start = index + 1


def walk_service(ctx: ServiceContext, request: RunRequest, *, wait_s: float) -> Walk:
    """Every stage the request asks of one service, in order; a wait is given ``wait_s``."""
    stages = pipeline.service_stages(
        renew_it=request.renew,
        roll_it=request.roll,
        wanted=ctx.ws.options.dev,
        acme=acme_sign.is_acme(ctx),
    )
    walk = Walk()
    for segment in pipeline.segments(stages):
        walk_segment(ctx, segment, walk, wait_s=wait_s)
    return walk


def _links(ctx: ServiceContext) -> tuple[str | None, str | None]:
    return ctx.link("curr"), ctx.link("next")


def _service_turn(
    ws: Workspace,
    ref: ServiceRef,
    outcome: ServiceOutcome,
    request: RunRequest,
    report: RunReport,
    run_id: str,
    wait_s: float,
) -> None:
    ctx = ServiceContext(ws, ref, workflow=run_id)
    before = _links(ctx)
    walk = walk_service(ctx, request, wait_s=wait_s)
    # What the walk left in the record is what the finish's retire looks for: the others'
    # records need not be read again.
    outcome.retiring = ctx.record.dane.retire_prev
    for line in walk.said:
        if line.startswith(CLEANED):
            report.cleaned[str(ref)] = line.removeprefix(CLEANED).split(", ")
        else:
            outcome.note(line)
    outcome.changed = _links(ctx) != before
    outcome.synced = PRODUCTION_UPDATED in walk.said


def _isolated(
    ws: Workspace, ref: ServiceRef, outcome: ServiceOutcome, work: Callable[[], object]
) -> bool:
    """Run one service's ``work``; a failure is recorded on it and goes no further."""
    try:
        work()
    except SslmError as err:
        _record(ws, ref, outcome, str(err), err)
        return False
    except Exception as err:
        log.exception("%s: unexpected error", ref)
        _record(ws, ref, outcome, f"internal error: {type(err).__name__}: {err}", err)
        return False
    return True


def _record(
    ws: Workspace, ref: ServiceRef, outcome: ServiceOutcome, message: str, error: BaseException
) -> None:
    """The failure goes into the report, and into the service's record when it can: a record
    that cannot be written (a full disk, a read-only tree) is reported too, never raised."""
    outcome.fail(message)
    try:
        failures.record_step_failure(ServiceContext(ws, ref), message, error=error)
    except (SslmError, OSError) as err:
        outcome.note(f"the failure could not be recorded: {err}")


def run_in_process(ws: Workspace, refs: Sequence[ServiceRef], request: RunRequest) -> RunReport:
    """Run the requested stages for every service, one at a time, in dependency order, then the
    finish for what changed (and, with ``--clean-all``, clean the services not selected)."""
    if request.dry_run:
        return RunReport([_dry_run_turn(ws, ref) for ref in refs])
    outcomes: list[ServiceOutcome] = []
    report = RunReport(outcomes)
    run_id = f"run-{uuid.uuid4()}"
    wait_s = load_settings().acme_wait_s
    failed: set[ServiceRef] = set()
    for ref in refs:
        outcome = ServiceOutcome(ref)
        outcomes.append(outcome)
        signer = signer_of(ws.config, ref)
        if signer is not None and signer in failed:
            outcome.fail(f"signing CA {signer} failed in this run")
            failed.add(ref)
            continue
        if not _isolated(
            ws,
            ref,
            outcome,
            partial(_service_turn, ws, ref, outcome, request, report, run_id, wait_s),
        ):
            failed.add(ref)
    report.prod_changed = [o.ref for o in outcomes if o.ok and (o.changed or o.synced)]
    _finish(ws, report, request)
    _announce(ws, [o.ref for o in outcomes])
    walked = {o.ref for o in outcomes}
    for ref in request.clean_refs or ():
        if ref not in walked:  # --clean-all reaches services this run did not select
            cleaned = ServiceOutcome(ref)
            outcomes.append(cleaned)
            _isolated(ws, ref, cleaned, partial(_clean, ws, ref, report))
    return report


def _finish(ws: Workspace, report: RunReport, request: RunRequest) -> None:
    """DNS refresh → deploy and verify each server → retire old TLSA → DNS refresh."""
    outcomes = report.outcomes
    # A production copy that was repaired needs its servers' post_copy_cmd and restarts too.
    changed = [o.ref for o in outcomes if o.ok and (o.changed or o.synced)]
    groups = sorted({o.ref.group for o in outcomes})
    # New TLSA records go out before the servers change, so a deploy's DANE check finds them.
    dev = ws.options.dev
    _refresh_dns(ws, report, groups, everything=request.refreshes_dns(ws.config, dev))
    force = dev.force_restarts
    # A server whose deploy failed is tried again when its time comes, change or not.
    retry = deployment.due_retries(ws)
    if changed or dev.certs_prod or force or retry:
        chosen = finish.targets(ws, changed, force=force, everyone=dev.certs_prod, retry=retry)
        for target in chosen:
            deployed = finish.deploy(ws, target, changed)
            if not deployed.ok:
                report.deploy_failures.append(deployed.detail)
        if changed or dev.certs_prod or force:
            report.deploy_failures += finish.post_copies(ws)
    try:
        retired = finish.retire(ws, [o.ref for o in outcomes if o.ok and o.retiring])
    except SslmError as err:
        report.deploy_failures.append(f"TLSA: {err}")
        retired = []
    if retired:
        _refresh_dns(ws, report, groups, everything=False)


def _announce(ws: Workspace, refs: Sequence[ServiceRef]) -> None:
    """The notifications the run's outcome calls for; they never fail the run."""
    try:
        notify.announce(ws, refs, deployment.read_ledger(ws))
    except SslmError as err:
        log.warning("notifications: %s", err)


def _refresh_dns(
    ws: Workspace, report: RunReport, groups: Sequence[str], *, everything: bool
) -> None:
    try:
        zones = finish.refresh_dns(
            ws, groups, everything=everything, wait_s=finish.DNS_PUBLISH_WAIT_S
        )
    except SslmError as err:
        report.deploy_failures.append(f"DNS refresh: {err}")
        return
    report.dns_refreshed += zones


def _clean(ws: Workspace, ref: ServiceRef, report: RunReport) -> None:
    verdict = steps.clean(ServiceContext(ws, ref))
    trace("clean", str(ref), verdict.detail)
    if verdict.detail:
        report.cleaned[str(ref)] = verdict.detail.removeprefix(CLEANED).split(", ")


def _dry_run_turn(ws: Workspace, ref: ServiceRef) -> ServiceOutcome:
    """One service's dry run; a failure is reported but, unlike a real build's, not recorded in
    its record: the next real run must not wait for, or resume, a build that was thrown away."""
    outcome = ServiceOutcome(ref)
    try:
        outcome.note(_dry_run_service(ServiceContext(ws, ref)))
    except SslmError as err:
        outcome.fail(f"dry run: {err}")
    return outcome


def _dry_run_service(ctx: ServiceContext) -> str:
    """``-n`` for one service: when it is due (or ``-f``) and signed by an ACME CA, a throwaway
    build whose order is taken up to valid authorizations, then discarded.

    Raises:
      SslmError: the order failed; nothing of the throwaway build is left behind.
    """
    if not acme_sign.is_acme(ctx):
        return "dry run: not signed by an ACME CA, nothing to exercise"
    building = build.in_progress(ctx)
    if building is not None:
        return f"dry run: build {building} is in progress and is left alone"
    found = build.check_renew(ctx)
    if not found.build:
        return f"dry run: {found.reason}"
    stages = (pipeline.Stage("dry run", (pipeline.KEYGEN, pipeline.CSR, *pipeline.ACME_DRY_RUN)),)
    wait_s = load_settings().acme_wait_s
    with dry_run.throwaway_build(ctx) as stamp:
        walk = Walk()
        for segment in pipeline.segments(stages):
            walk_segment(ctx, segment, walk, wait_s=wait_s)
    return (
        f"dry run: every authorization is valid; no certificate was asked for, build {stamp} "
        "discarded"
    )
