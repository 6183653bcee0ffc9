"""Celery tasks: thin adapters from a message of names to a piece of the pipeline.

A task takes names and JSON scalars (group, service, run options, which segment), loads the
configuration and the service's record fresh from disk (the world may have changed since the
message was sent), holds the service's lock, calls the pipeline's own functions and returns a
small typed result. Orchestration lives in :mod:`sslm_tasks.lifecycle.pipeline` (what runs, in
which order, how long to wait) and :mod:`sslm_tasks.workflows` (the canvases); the claim that
keeps one workflow per service lives in :class:`ServiceTask`, once.

Every service task is idempotent and runs with ``acks_late``: a worker killed mid-step gets its
message redelivered, and the step then does only what its files show is missing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cache
from typing import Any, Final, NoReturn, TypedDict

from celery import Task  # type: ignore[import-untyped]

from sslm_tasks.app import app
from sslm_tasks.commands import DEFAULT_TIMEOUT_S
from sslm_tasks.config.load import (
    Config,
    load_config,
    load_settings_only,
    remember_config,
    signer_of,
)
from sslm_tasks.config.settings import RuntimeSettings, load_settings
from sslm_tasks.deploy.server import post_copy
from sslm_tasks.deploy.targets import DeployTarget, unattached_post_copies
from sslm_tasks.dns.refresh import refresh_zones
from sslm_tasks.errors import LockBusy, PermanentError, SslmError, TransientError
from sslm_tasks.lifecycle import (
    acme_sign,
    build,
    deployment,
    failures,
    finish,
    notify,
    pipeline,
    revoke,
    steps,
)
from sslm_tasks.lifecycle.cert_book import CertBook
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.current import due_time
from sslm_tasks.lifecycle.pipeline import Segment, Walk
from sslm_tasks.lifecycle.record import Phase
from sslm_tasks.lifecycle.steps import PRODUCTION_UPDATED
from sslm_tasks.lifecycle.verdict import Verdict
from sslm_tasks.lifecycle.workspace import RunOptions, Workspace, service_lock, utc_now
from sslm_tasks.locks import Locker
from sslm_tasks.locks.claims import WorkflowClaims
from sslm_tasks.locks.select import claims_for, locker_for
from sslm_tasks.logs import trace
from sslm_tasks.routing import TaskName
from sslm_tasks.store.atomic import ensure_dir
from sslm_tasks.store.layout import DIR_MODE_GROUP, ServiceRef
from sslm_tasks.store.versions import read_link
from sslm_tasks.workflows import send_service

log = logging.getLogger("sslm.tasks")

#: A workflow claim outlives its last refresh by this long: longer than any one step (the task
#: time limit), so a live chain never loses it between two steps.
CLAIM_TTL_S: Final = 600.0
#: A step's service lock outlives the step's time limit by this much (the pool kills a step
#: at its limit, so a lock of a live holder never expires under it; a dead holder's frees soon).
STEP_LOCK_MARGIN_S: Final = 10.0
#: How long a step waits for another step of the same service to finish, at most: never more
#: than half its soft time limit (see _lock_wait_s); a lock still held then means a retry.
STEP_LOCK_WAIT_S: Final = 60.0
#: Deploys wait this long after a change, so the changes of one run make one restart per server.
DEPLOY_DEBOUNCE_S: Final = 5.0

#: Options of every task that changes a service: idempotent, so it may run again after its
#: worker died (acks_late + reject_on_worker_lost). Retried only for transient errors (a lock
#: held by another step, Redis briefly away, a signing CA still being issued), with backoff.
SERVICE_TASK: Final[dict[str, Any]] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (TransientError,),
    # An expected failure (bad input, a refusing server) is one warning line of ours, not a
    # traceback: Celery logs what a task "throws" without one.
    "throws": (PermanentError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 8,
}
#: Deploy tasks: one server each; retried a few times, then reported by name.
DEPLOY_TASK: Final[dict[str, Any]] = {**SERVICE_TASK, "retry_backoff": 5, "max_retries": 3}


class WalkPlan(TypedDict):
    """Which stages a workflow walks for one service (``pipeline.service_stages``)."""

    renew: bool
    roll: bool
    acme: bool


class SegmentResult(TypedDict):
    """What a segment task returns, and passes on to the next segment of its chain."""

    service: str
    workflow: str
    walk: dict[str, list[str]]
    busy: bool
    #: ``curr`` or ``next`` changed during the workflow so far.
    changed: bool
    #: The production copy was rewritten (a change, or a repair).
    synced: bool
    curr: str | None
    next: str | None
    #: The deploy tasks the last segment's fan-out sent (none from an earlier segment).
    deploys: list[str]
    #: Why the fan-out failed, if it did. The walk is done and recorded by then: the failure
    #: is the workflow's (the CLI reports it), not a failed step of the service's record, and
    #: the services this one signs go ahead.
    fanout_error: str | None


class DeployResult(TypedDict):
    server: str
    site: str
    ok: bool
    detail: str


@cache
def _settings() -> RuntimeSettings:
    """The worker's environment is fixed when it starts: read it once per process."""
    return load_settings()


def _loaded(refs: list[str]) -> tuple[Config, list[ServiceRef]]:
    """``load_config`` for a task: every task works on the tree, so a load of the whole tree
    (beat's scans) is kept for the next ones."""
    config, ordered = load_config(refs)
    remember_config(config, ordered)
    return config, ordered


def _workspace(refs: list[str], options: dict[str, Any]) -> Workspace:
    config, _ = _loaded(refs)
    return Workspace(config=config, options=RunOptions.from_json(options), locker=_locker(config))


def _settings_workspace() -> Workspace:
    """A workspace with ``ssl-mgr.conf`` and ``ca-info.conf`` only, for the tasks that work on
    servers or zones: the services they meet are read on demand, not every service file."""
    config = load_settings_only()
    return Workspace(config=config, locker=_locker(config))


def _locker(config: Config) -> Locker:
    """Locks shared with every other worker (Redis), or file locks in the tree without it."""
    return locker_for(_settings(), ensure_dir(config.layout().certs_dir, mode=DIR_MODE_GROUP))


def _claims() -> WorkflowClaims | None:
    return claims_for(_settings(), ttl_s=CLAIM_TTL_S)


def _claim_name(ref: ServiceRef) -> str:
    # Renew and roll share one claim: one of them at a time per service.
    return f"workflow:{ref}"


def _owner(task: Task) -> str:
    return str(task.request.root_id or task.request.id)


def _lock_wait_s(settings: RuntimeSettings) -> float:
    """How long a step waits for a busy lock before it gives up and is retried later.

    A lock can outlive its holder by up to its TTL (a step cut off by a broker outage could not
    release it), and a wait that ran into the soft time limit would fail the workflow where a
    retry, with its backoff, outlasts the TTL.
    """
    return min(STEP_LOCK_WAIT_S, settings.task_soft_time_limit_s / 2)


@contextmanager
def _service_lock(ws: Workspace, ref: ServiceRef) -> Iterator[None]:
    settings = _settings()
    ttl_s = settings.task_time_limit_s + STEP_LOCK_MARGIN_S
    wait_s = _lock_wait_s(settings)
    with _locker(ws.config).acquire(service_lock(ref), ttl_s=ttl_s, blocking_s=wait_s):
        yield


class ServiceTask(Task):  # type: ignore[misc]  # Celery has no type hints
    """Base of the tasks of one service's workflow: the workflow's claim (taken by its first
    segment, refreshed by each, released by its last), and a failure recorded in the
    service's record, freeing the claim so the next trigger may try again."""

    def claim(self, ws: Workspace, ref: ServiceRef, *, first: bool) -> str | None:
        """Take (first segment) or refresh the workflow's claim; the other holder when busy.

        A claim held by a workflow whose build the service's record shows failed is taken
        over: that workflow is over (its failure was recorded, but the release of its claim
        may not have reached Redis, say in a broker outage), and waiting for the claim to
        expire would hold the service for minutes.
        """
        claims = _claims()
        if claims is None:
            return None
        name, owner = _claim_name(ref), _owner(self)
        if not first:
            claims.refresh(name, owner)
            return None
        holder = claims.claim(name, owner)
        if holder is None:
            return None
        record = ServiceContext(ws, ref, repair=False).record
        dead = record.phase == Phase.FAILED and record.build_workflow == holder
        if dead and claims.take_over(name, dead=holder, owner=owner):
            log.warning("%s: took over the claim of workflow %s, which failed", ref, holder)
            return None
        return holder

    def release(self, ref: ServiceRef) -> None:
        claims = _claims()
        if claims is not None:
            claims.release(_claim_name(ref), _owner(self))

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        group, service = kwargs.get("group"), kwargs.get("service")
        if group is None or service is None:
            return
        log.warning(
            "%s:%s: FAILED: %s", group, service, exc, extra={"service": f"{group}:{service}"}
        )
        try:
            ref = ServiceRef(group, service)
            ws = _workspace([str(ref)], {})
            failures.record_step_failure(ServiceContext(ws, ref), f"{self.name}: {exc}", error=exc)
            self.release(ref)
        except (SslmError, OSError) as err:
            log.warning("%s:%s: could not record the failure: %s", group, service, err)


# --------------------------------------------------------------------------- the walk


def _wait_for_signer(ws: Workspace, ref: ServiceRef, err: PermanentError) -> NoReturn:
    """A CA with no ``curr`` that is being issued right now is worth waiting for."""
    signer = signer_of(ws.config, ref)
    claims = _claims()
    if signer is not None and claims is not None and claims.holder(_claim_name(signer)):
        raise TransientError(
            f"{ref}: waiting for signing CA {signer}, which is being issued"
        ) from err
    raise err


def _not_yet(
    task: Task,
    ws: Workspace,
    ref: ServiceRef,
    step: pipeline.Step,
    verdict: Verdict,
    *,
    waited_s: float,
) -> NoReturn:
    """A wait (or a patient step) is not done: ask again after a countdown (or the CA's
    Retry-After, when later), until the pauses add up to the bound. The retry carries the
    pauses so far, since with the CA's they are no longer a function of the count of looks."""
    looks = int(task.request.retries or 0)
    wait_s = _settings().acme_wait_s
    if waited_s >= wait_s:
        raise PermanentError(f"{ref}: {step.name}: not done after {waited_s:g} s: {verdict.detail}")
    ctx = ServiceContext(ws, ref)
    own = pipeline.first_pause(
        step,
        looks,
        dns_check_delay=ws.config.main.globals.dns_check_delay,
        over_dns=acme_sign.validates_over_dns(ctx),
    )
    pause = pipeline.pause(own, verdict, left_s=wait_s - waited_s)
    log.info("%s: %s: not yet (%s); again in %g s", ref, step.name, verdict.detail, pause)
    raise task.retry(countdown=pause, kwargs={**task.request.kwargs, "waited_s": waited_s + pause})


#: A walk retries itself while a wait is not ready (within SSLM_ACME_WAIT_S, which it checks)
#: and while the chain it follows runs; the retry limit is only a backstop above that.
WALK_TASK: Final[dict[str, Any]] = {
    **SERVICE_TASK,
    "max_retries": pipeline.max_retries(load_settings().acme_wait_s),
}


@app.task(name=TaskName.WALK.value, base=ServiceTask, **WALK_TASK)  # type: ignore[untyped-decorator]
def walk(
    self: ServiceTask,
    prev: SegmentResult | None,
    *,
    group: str,
    service: str,
    options: dict[str, Any],
    plan: WalkPlan,
    index: int,
    after: str | None = None,
    waited_s: float = 0.0,
    walked: SegmentResult | None = None,
) -> SegmentResult:
    """Segment ``index`` of the service's walk (``pipeline.segments`` of the plan's stages).

    The first segment claims the service for this workflow (a second trigger meanwhile gets
    ``busy``), the last releases it and then fans out (:func:`_fan_out`). With ``after`` (the
    last walk of the signing CA's workflow in the same run), the first segment starts once that
    one succeeded, so the service is signed by the CA's new certificate; it fails if that one
    failed. A wait that is not ready retries this task with a countdown (``waited_s``: the
    pauses of its retries so far); the chain's next segment runs only once this one is through.
    ``walked``: a retry of the fan-out alone, with what the walk found.
    """
    ref = ServiceRef(group, service)
    if walked is not None:
        return _fan_out(self, _workspace([str(ref)], options), ref, walked)
    if prev is not None and prev["busy"]:
        return prev
    if after is not None:
        _follow(self, ref, after)
    ws = _workspace([str(ref)], options)
    chosen = pipeline.segments(
        pipeline.service_stages(
            renew_it=plan["renew"], roll_it=plan["roll"], wanted=ws.options.dev, acme=plan["acme"]
        )
    )
    segment: Segment = chosen[index]
    first, last = index == 0, index == len(chosen) - 1
    holder = self.claim(ws, ref, first=first)
    if holder is not None:
        busy = Walk(said=[f"already in progress (workflow {holder})"])
        return _segment_result(self, ws, ref, busy, busy=True, changed=False, synced=False)
    progress = Walk.from_json(None if prev is None else prev["walk"])
    before = (read_link(ws.layout, ref, "curr"), read_link(ws.layout, ref, "next"))
    try:
        with _service_lock(ws, ref):
            stuck = _walk_segment(ServiceContext(ws, ref, workflow=_owner(self)), segment, progress)
    except PermanentError as err:
        if first:
            self.release(ref)
            _wait_for_signer(ws, ref, err)
        raise
    if stuck is not None:
        _not_yet(self, ws, ref, *stuck, waited_s=waited_s)
    if last:
        self.release(ref)
    changed = (prev is not None and prev["changed"]) or before != (
        read_link(ws.layout, ref, "curr"),
        read_link(ws.layout, ref, "next"),
    )
    synced = (prev is not None and prev["synced"]) or PRODUCTION_UPDATED in progress.said
    result = _segment_result(self, ws, ref, progress, busy=False, changed=changed, synced=synced)
    return _fan_out(self, ws, ref, result) if last else result


def _follow(task: Task, ref: ServiceRef, after: str) -> None:
    """Start only once the workflow step ``after`` succeeded: ask again after a countdown while
    it has not ended; fail when it failed."""
    state = task.AsyncResult(after).state
    if state == "SUCCESS":
        return
    if state in ("FAILURE", "REVOKED"):
        raise PermanentError(f"{ref}: not started: the signing CA's workflow failed ({after})")
    raise task.retry(countdown=pipeline.countdown(int(task.request.retries or 0)))


def _walk_segment(
    ctx: ServiceContext, segment: Segment, progress: Walk
) -> tuple[pipeline.Step, Verdict] | None:
    """One pass of the segment: its wait looks once, then its steps run; what is not done."""
    waiting = pipeline.pending(segment, progress)
    if waiting is not None:
        verdict = pipeline.look(ctx, waiting[1])
        if not verdict.go:
            return waiting[1], verdict
        progress.note(ctx, waiting[1], verdict)
    stuck = pipeline.run_steps(ctx, segment, progress)
    return None if stuck is None else (segment.steps[stuck[0]][1], stuck[1])


def _segment_result(
    task: Task,
    ws: Workspace,
    ref: ServiceRef,
    progress: Walk,
    *,
    busy: bool,
    changed: bool,
    synced: bool,
) -> SegmentResult:
    return SegmentResult(
        service=str(ref),
        workflow=_owner(task),
        walk=progress.to_json(),
        busy=busy,
        changed=changed,
        synced=synced,
        curr=read_link(ws.layout, ref, "curr"),
        next=read_link(ws.layout, ref, "next"),
        deploys=[],
        fanout_error=None,
    )


# --------------------------------------------------------------------------- finish


def _fan_out(task: Task, ws: Workspace, ref: ServiceRef, walked: SegmentResult) -> SegmentResult:
    """The end of the last segment: :func:`_send_deploys` after the walk ``walked``, whose
    result it completes.

    Part of the walk's task rather than a task of its own: one message, one result and one
    configuration load fewer per workflow (docs/decisions.md). A transient failure retries the
    task for the fan-out alone, carrying ``walked``: a second walk would find nothing left to
    change and deploy nothing. Any other failure goes into the result's ``fanout_error``.
    """
    result = walked.copy()
    try:
        result["deploys"] = _send_deploys(ws, ref, walked)
    except TransientError as err:
        retries = int(task.request.retries or 0)
        if retries < task.max_retries:
            log.info("%s: fan-out: %s; again in a moment", ref, err)
            raise task.retry(
                countdown=pipeline.countdown(retries),
                kwargs={**task.request.kwargs, "walked": walked},
            ) from err
        result["fanout_error"] = str(err)
    except (SslmError, OSError) as err:
        result["fanout_error"] = str(err)
    if result["fanout_error"] is not None:
        log.warning(
            "%s: fan-out FAILED: %s", ref, result["fanout_error"], extra={"service": str(ref)}
        )
    return result


def _send_deploys(ws: Workspace, ref: ServiceRef, walked: SegmentResult) -> list[str]:
    """After a service changed: refresh its zone if a change is pending there, then send one
    deploy task per server, on its site's queue, and one per ``post_copy_cmd`` of a host that
    is no server; with no server to wait for, retire its old TLSA records at once. Returns the
    ids of the tasks sent.

    Servers already waiting for a deploy are not sent another: the changes of one run (several
    services, renew then roll) coalesce into one restart per server.
    """
    dev = ws.options.dev
    # A production copy that was repaired needs its servers' post_copy_cmd and restarts too.
    touched = walked["changed"] or walked["synced"]
    if not (touched or dev.certs_prod or dev.force_restarts):
        return []
    finish.refresh_dns(ws, [ref.group])
    changed = [ref] if touched else []
    chosen = finish.targets(ws, changed, force=dev.force_restarts, everyone=dev.certs_prod)
    sent = [task_id for target in chosen if (task_id := _send_deploy(target, changed))]
    claims = _claims()
    for host, command in unattached_post_copies(ws.config.main):
        job = f"post_copy:{host}:{command}"
        task_id = str(uuid.uuid4())
        if claims is None or claims.claim_or_note(job, task_id, []):
            deploy_post_copy.apply_async(
                (host, command),
                {"site": ws.config.main.site_of(host)},
                countdown=DEPLOY_DEBOUNCE_S,
                task_id=task_id,
                shadow=f"post_copy {host}",
            )
            sent.append(task_id)
    # A service no server uses has nothing to wait for: its old TLSA records go now (with
    # servers, their deploy tasks retire them once they all took the new certificate).
    if finish.retire(ws, [ref]):
        finish.refresh_dns(ws, [ref.group])
    return sent


#: Notes a change leaves for a server's waiting deploy: restart it, and which services changed.
_RESTART_NOTE = "restart"
_CHANGED_NOTE = "changed:"


def _send_deploy(target: DeployTarget, changed: list[ServiceRef]) -> str | None:
    """Send the deploy of ``target`` after the debounce, unless one is waiting already: that one
    then carries this change too, its restart included; returns the task id sent, or None."""
    claims = _claims()
    job = f"deploy:{target.server_class}:{target.host}"
    task_id = str(uuid.uuid4())
    notes = [_RESTART_NOTE] if target.restart else []
    notes += [f"{_CHANGED_NOTE}{ref}" for ref in changed]
    if claims is not None and not claims.claim_or_note(job, task_id, notes):
        return None
    deploy_server.apply_async(
        (target.to_json(), [str(ref) for ref in changed]),
        {"site": target.site},
        countdown=DEPLOY_DEBOUNCE_S,
        task_id=task_id,
        shadow=f"deploy {target.server_class}:{target.host}",
    )
    return task_id


def _job_started(job: str) -> set[str]:
    """Clear the job's pending marker (a change from now on needs a job of its own) and return
    the notes the changes since it was sent left for it."""
    claims = _claims()
    return set() if claims is None else claims.start_job(job)


@app.task(name=TaskName.DEPLOY_SERVER.value, **DEPLOY_TASK)  # type: ignore[untyped-decorator]
def deploy_server(
    self: Task, target: dict[str, object], changed: list[str], *, site: str
) -> DeployResult:
    """Bring one server up to date and verify what it serves, on its site's deploy queue; then
    retire the old TLSA records of the services it carried once all their servers have them.
    A failed deploy fails the task (transient failures are retried)."""
    deploy_target = DeployTarget.from_json(target, site=site)
    notes = _job_started(f"deploy:{deploy_target.server_class}:{deploy_target.host}")
    if _RESTART_NOTE in notes:
        deploy_target = replace(deploy_target, restart=True)
    noted = [note.removeprefix(_CHANGED_NOTE) for note in notes if note != _RESTART_NOTE]
    ws = _settings_workspace()
    refs = [ServiceRef(*name.split(":", 1)) for name in dict.fromkeys([*changed, *noted])]
    outcome = finish.deploy(ws, deploy_target, refs)
    if outcome.error is not None:
        if isinstance(outcome.error, TransientError):
            raise outcome.error
        raise PermanentError(outcome.detail)
    for zone in finish.retire(ws, refs):
        dns_refresh_pending.delay(zone)
    return DeployResult(
        server=f"{deploy_target.server_class}:{deploy_target.host}",
        site=site,
        ok=True,
        detail=outcome.detail,
    )


@app.task(name=TaskName.DEPLOY_POST_COPY.value, **DEPLOY_TASK)  # type: ignore[untyped-decorator]
def deploy_post_copy(self: Task, host: str, command: str, *, site: str) -> DeployResult:
    """``post_copy_cmd`` of a host that is no server: run ``command host``."""
    _job_started(f"post_copy:{host}:{command}")
    ran = post_copy(host, command, timeout_s=DEFAULT_TIMEOUT_S)
    return DeployResult(server=host, site=site, ok=True, detail=f"ran {' '.join(ran.argv)}")


# --------------------------------------------------------------------------- dns


@app.task(name=TaskName.DNS_REFRESH.value, **SERVICE_TASK)  # type: ignore[untyped-decorator]
def dns_refresh(self: Task, apexes: list[str]) -> list[str]:
    """``-dns``: refresh the zones ``apexes`` (``[dns] restart_cmd --serial_bump ...``)."""
    config = load_settings_only()
    settings = _settings()
    ttl_s = settings.task_time_limit_s + STEP_LOCK_MARGIN_S
    with _locker(config).acquire("dns:refresh", ttl_s=ttl_s, blocking_s=_lock_wait_s(settings)):
        ran = refresh_zones(config, apexes)
    return [" ".join(result.argv) for result in ran]


@app.task(name=TaskName.DNS_REFRESH_PENDING.value, **SERVICE_TASK)  # type: ignore[untyped-decorator]
def dns_refresh_pending(self: Task, group: str) -> list[str]:
    """Refresh the zone ``group`` if a change is pending there (one refresh for many)."""
    return finish.refresh_dns(_settings_workspace(), [group])


# --------------------------------------------------------------------------- beat


@app.task(name=TaskName.CLEAN_SERVICE.value, base=ServiceTask, **SERVICE_TASK)  # type: ignore[untyped-decorator]
def clean(self: Task, *, group: str, service: str) -> list[str]:
    """Delete old unlinked versions beyond ``clean_keep``."""
    ref = ServiceRef(group, service)
    ws = _workspace([str(ref)], {})
    with _service_lock(ws, ref):
        verdict = steps.clean(ServiceContext(ws, ref))
    trace("clean", str(ref), verdict.detail)
    return verdict.detail.removeprefix("cleaned ").split(", ") if verdict.detail else []


def _unclaimed(refs: Iterable[ServiceRef]) -> list[ServiceRef]:
    """The services no workflow holds now: a scan leaves a running one alone."""
    claims = _claims()
    wanted = list(refs)
    if claims is None:
        return wanted
    held = claims.held([_claim_name(ref) for ref in wanted])
    return [ref for ref in wanted if _claim_name(ref) not in held]


@app.task(name=TaskName.RENEW_SCAN.value)  # type: ignore[untyped-decorator]
def renew_scan() -> list[str]:
    """Beat's renew check of every configured service: decide first, read-only, and send a
    renew workflow only for a service that needs one (due, or a build to resume)."""
    config, refs = _loaded([])
    ws = Workspace(config=config, locker=_locker(config))
    ws.cert_book = CertBook.open(ws.layout.certs_dir)
    for line in config.strays:
        log.warning("%s", line)
    for broken, problem in config.broken.items():
        log.warning("%s: fails alone: %s", broken, problem)
    started: dict[ServiceRef, str] = {}
    for ref in _unclaimed(refs):  # in signing order: a CA before what it signs
        ctx = ServiceContext(ws, ref, repair=False)
        try:
            # A local CA's stale CRL is re-issued by its renew check, so it is due too.
            due = build.check_renew(ctx, record=False).build or bool(revoke.crl_due(ctx))
        except SslmError as err:
            log.warning("%s: renew check: %s", ref, err)
            continue
        if due:
            signer = signer_of(config, ref)
            after = None if signer is None else started.get(signer)
            started[ref] = send_service(
                config, ref, RunOptions(), renew=True, roll=False, after=after
            )
    ws.cert_book.save(now=utc_now())
    return [str(ref) for ref in started]


@app.task(name=TaskName.ROLL_SCAN.value)  # type: ignore[untyped-decorator]
def roll_scan() -> list[str]:
    """Beat's roll check: roll every service whose ``next`` is due; retire old TLSA records
    whose servers all took the new certificate (when a deploy's own retire could not)."""
    ws = _workspace([], {})
    now = utc_now()
    started = []
    retiring = []
    for ref in _unclaimed(ws.config.services):
        ctx = ServiceContext(ws, ref, repair=False)
        record = ctx.record
        due = due_time(ctx)
        # Any phase but a build under way: a tree migrated from ssl-mgr has a waiting next
        # and an idle record, and a failed later build leaves the next it did not replace.
        if record.phase != Phase.RENEWING and due is not None and due <= now:
            send_service(ws.config, ref, RunOptions(), renew=False, roll=True)
            started.append(str(ref))
        elif record.dane.retire_prev:
            retiring.append(ref)
    for zone in finish.retire(ws, retiring):
        dns_refresh_pending.delay(zone)
    # A server whose deploy failed is tried again when its time comes, change or not.
    ledger = deployment.read_ledger(ws)
    retry = deployment.due_retries(ws, ledger)
    for target in finish.targets(ws, [], retry=retry) if retry else []:
        _send_deploy(target, [])
    _announce(ws, ledger)
    return started


def _announce(ws: Workspace, ledger: dict[str, deployment.ServerOutcome]) -> None:
    """The notifications the services' health calls for, one scan at a time (a scan that
    finds another running leaves the announcing to it)."""
    try:
        with _locker(ws.config).acquire(
            "notify", ttl_s=_settings().task_time_limit_s, blocking_s=0
        ):
            notify.announce(ws, list(ws.config.services), ledger)
    except LockBusy:
        log.info("notifications: another scan is announcing")
    except SslmError as err:
        log.warning("notifications: %s", err)


@app.task(name=TaskName.CLEAN_ALL.value)  # type: ignore[untyped-decorator]
def clean_all() -> list[str]:
    """Beat's daily clean of every configured service."""
    _, refs = _loaded([])
    for ref in refs:
        clean.apply_async(kwargs={"group": ref.group, "service": ref.service})
    return [str(ref) for ref in refs]
