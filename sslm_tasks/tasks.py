"""Celery tasks: thin adapters from a message of names to one lifecycle step.

Each task takes a group, a service and the run options (JSON scalars), loads the configuration
and the service's state fresh from disk, takes the service's lock, calls one domain function
and returns a small dict of names. No key, certificate or config model ever enters a message
or a result.

The renew steps are generated from :data:`sslm_tasks.workflows.RENEW_STEPS`, the same list the
in-process runner walks, so there is one statement of the order. Every service task is
idempotent and runs with ``acks_late``: a worker killed mid-step gets its message redelivered,
and the step then does only what its files show is missing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import Any, NoReturn

from celery import Signature, Task, chord  # type: ignore[import-untyped]

from sslm_tasks.app import app
from sslm_tasks.config.load import Config, acme_ca_of, load_config, signer_of
from sslm_tasks.config.settings import RuntimeSettings, load_settings
from sslm_tasks.deploy.commands import DEFAULT_TIMEOUT_S
from sslm_tasks.deploy.server import deploy, post_copy
from sslm_tasks.deploy.targets import DeployTarget, deploy_targets, unattached_post_copies
from sslm_tasks.dns.refresh import refresh_zones
from sslm_tasks.errors import PermanentError, SslmError, TransientError
from sslm_tasks.lifecycle import acme_issue, build, dane, deploy_record, production, served
from sslm_tasks.lifecycle import roll as rolling
from sslm_tasks.lifecycle.workspace import RunOptions, Workspace, utc_now
from sslm_tasks.locks import Locker
from sslm_tasks.locks.claims import WorkflowClaims
from sslm_tasks.locks.select import claims_for, locker_for
from sslm_tasks.store.atomic import ensure_dir
from sslm_tasks.store.clean import clean_service
from sslm_tasks.store.layout import DIR_MODE_GROUP, ServiceRef
from sslm_tasks.store.state import Phase, load_state
from sslm_tasks.store.versions import read_link
from sslm_tasks.workflows import (
    ACME_SIGN_STEPS,
    BUILD_STEPS,
    RENEW_STEPS,
    DevSteps,
    ServiceOutcome,
    dev_service,
)

log = logging.getLogger("sslm.tasks")

Result = dict[str, Any]

#: A workflow claim outlives its last refresh by this long: longer than any one step (the task
#: time limit), so a live chain never loses it between two steps.
CLAIM_TTL_S = 600.0
#: A step's service lock outlives the step's time limit by this much (the pool kills a step
#: at its limit, so a lock of a live holder never expires under it; a dead holder's frees soon).
STEP_LOCK_MARGIN_S = 10.0
#: How long a step waits for another step of the same service to finish.
STEP_LOCK_WAIT_S = 60.0
#: Deploys wait this long after a change, so the changes of one run make one restart per server.
DEPLOY_DEBOUNCE_S = 5.0

#: Options of every task that changes a service: idempotent, so it may run again after its
#: worker died (acks_late + reject_on_worker_lost). Retried only for transient errors (a lock
#: held by another step, Redis briefly away, a signing CA still being issued), with backoff.
SERVICE_TASK: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (TransientError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 8,
}
#: Deploy tasks: one server each; retried a few times, then reported by name.
DEPLOY_TASK: dict[str, Any] = {**SERVICE_TASK, "retry_backoff": 5, "max_retries": 3}


@cache
def _settings() -> RuntimeSettings:
    """The worker's environment is fixed when it starts: read it once per process."""
    return load_settings()


def _workspace(group: str, service: str, options: Result) -> tuple[Workspace, ServiceRef]:
    """Fresh config and state for one service: the world may have changed since the message."""
    ref = ServiceRef(group, service)
    config, _ = load_config([str(ref)])
    ws = Workspace(config=config, options=RunOptions.from_json(options), locker=_locker(config))
    return ws, ref


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


@contextmanager
def _service_lock(ws: Workspace, ref: ServiceRef) -> Iterator[None]:
    ttl_s = _settings().task_time_limit_s + STEP_LOCK_MARGIN_S
    with _locker(ws.config).acquire(f"svc:{ref}", ttl_s=ttl_s, blocking_s=STEP_LOCK_WAIT_S):
        yield


def _claim(task: Task, ref: ServiceRef) -> str | None:
    """Claim the service for this workflow; returns the other holder when busy."""
    claims = _claims()
    return None if claims is None else claims.claim(_claim_name(ref), _owner(task))


def _release(task: Task, ref: ServiceRef) -> None:
    claims = _claims()
    if claims is not None:
        claims.release(_claim_name(ref), _owner(task))


def _names(args: Any, kwargs: Any) -> tuple[str | None, str | None]:
    """Group and service of a task call, whether or not a previous result came first."""
    strings = [a for a in args if isinstance(a, str)]
    group = kwargs.get("group", strings[0] if strings else None)
    service = kwargs.get("service", strings[1] if len(strings) > 1 else None)
    return group, service


class ServiceTask(Task):  # type: ignore[misc]  # Celery has no type hints
    """Base of the service tasks: a failure is recorded in the service state and frees the
    service's workflow claim, so the status says why and the next trigger may try again."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        group, service = _names(args, kwargs)
        if group is None or service is None:
            return
        try:
            ws, ref = _workspace(group, service, {})
            build.record_failure(ws, ref, f"{self.name}: {exc}", error=exc)
            _release(self, ref)
        except SslmError as err:
            log.warning("%s:%s: could not record the failure: %s", group, service, err)


# --------------------------------------------------------------------------- renew


def _wait_for_signer(ws: Workspace, ref: ServiceRef, err: PermanentError) -> NoReturn:
    """A CA with no ``curr`` that is being issued right now is worth waiting for."""
    signer = signer_of(ws.config, ref)
    claims = _claims()
    if signer is not None and claims is not None and claims.holder(_claim_name(signer)):
        raise TransientError(
            f"{ref}: waiting for signing CA {signer}, which is being issued"
        ) from err
    raise err


@app.task(name="sslm.renew.check", base=ServiceTask, **SERVICE_TASK)  # type: ignore[untyped-decorator]
def renew_check(self: Task, group: str, service: str, options: Result) -> Result:
    """Decide whether the service needs a new version and, if so, start (or resume) the build.

    Claims the service for this workflow first: a second trigger while a renew or roll of the
    same service is running returns ``busy`` and does nothing.
    """
    ws, ref = _workspace(group, service, options)
    result: Result = {"service": str(ref), "workflow": _owner(self), "build": False}
    holder = _claim(self, ref)
    if holder is not None:
        return {**result, "busy": True, "reason": f"already in progress (workflow {holder})"}
    try:
        with _service_lock(ws, ref):
            check = build.check_renew(ws, ref)
            stamp = check.stamp
            if check.build and stamp is None:
                stamp = build.start_build(ws, ref)
    except PermanentError as err:
        _release(self, ref)
        _wait_for_signer(ws, ref, err)
    if not check.build:
        _release(self, ref)
    return {**result, "build": check.build, "reason": check.reason, "stamp": stamp}


def _renew_step(
    task: Task, step_name: str, prev: Result, group: str, service: str, options: Result
) -> Result:
    building = bool(prev.get("build"))
    if not building and (prev.get("busy") or step_name in dict(BUILD_STEPS)):
        return prev
    # publish and tlsa run on every check: they repair production and follow dane_tls edits
    ws, ref = _workspace(group, service, options)
    claims = _claims()
    if claims is not None and building:
        claims.refresh(_claim_name(ref), _owner(task))
    step = dict(RENEW_STEPS)[step_name]
    with _service_lock(ws, ref):
        # A message delivered again after its chain finished finds its build done: no-op.
        stale = (
            building
            and step_name in dict(BUILD_STEPS)
            and not build.is_building(ws, ref, prev["stamp"])
        )
        # An ACME service was signed by the ACME tasks before this one: its in-process sign
        # (which polls with sleeps) never runs in a worker.
        acme_signed = step_name == "sign" and acme_issue.is_acme(ws, ref)
        if not stale and acme_signed:
            acme_issue.require_issued(ws, ref)
        elif not stale:
            step(ws, ref)
    result = {**prev, "step": step_name}
    if step_name == RENEW_STEPS[-1][0] and building:
        _release(task, ref)
        result.update(
            changed=True,
            curr=read_link(ws.layout, ref, "curr"),
            next=read_link(ws.layout, ref, "next"),
        )
    return result


def _make_renew_step_task(step_name: str) -> Task:
    def run(self: Task, prev: Result, group: str, service: str, options: Result) -> Result:
        return _renew_step(self, step_name, prev, group, service, options)

    run.__name__ = run.__qualname__ = step_name.replace("-", "_")
    run.__doc__ = f"Renew step {step_name!r} (see sslm_tasks.workflows.RENEW_STEPS)."
    name = f"sslm.issue.{run.__name__}"
    task: Task = app.task(name=name, base=ServiceTask, **SERVICE_TASK)(run)
    return task


#: One task per renew step, in the order of :data:`~sslm_tasks.workflows.RENEW_STEPS`.
RENEW_STEP_TASKS: dict[str, Task] = {name: _make_renew_step_task(name) for name, _ in RENEW_STEPS}


# --------------------------------------------------------------------------- ACME sign

#: An ACME step that is not done asks again every 0.25 s for its first second, then after 0.5,
#: 1, 2, ... seconds, at most ``ACME_COUNTDOWN_MAX_S`` apart, and gives up once its countdowns
#: add up to ``SSLM_ACME_WAIT_S``, naming what lags. The first ones are short because most waits
#: are: a secondary takes a fraction of a second to transfer a refreshed zone, and a CA answers
#: a finalize with "processing" for about as long; a first countdown of 2 s doubled the time of
#: a whole order (bench/bench_acme.py).
ACME_FIRST_COUNTDOWN_S = 0.25
#: How many checks come ``ACME_FIRST_COUNTDOWN_S`` apart before the countdowns grow.
ACME_QUICK_CHECKS = 4
ACME_COUNTDOWN_MAX_S = 60.0
#: Retries an ACME task may spend on other transient errors (a busy service lock, Redis briefly
#: away), which share the retry count, on top of the checks its bound takes.
ACME_SPARE_RETRIES = 26


def acme_countdown(retries: int) -> float:
    """The countdown before check number ``retries + 1``: front-weighted, capped."""
    growth = 2.0 ** max(0, retries - ACME_QUICK_CHECKS + 1)
    return min(ACME_FIRST_COUNTDOWN_S * growth, ACME_COUNTDOWN_MAX_S)


def acme_next_countdown(
    step_name: str, retries: int, *, dns_check_delay: float, over_dns: bool
) -> float:
    """The countdown before check number ``retries + 1`` of ``step_name``: :func:`acme_countdown`,
    except that the first wait of a dns-01 propagation check is ``dns_check_delay`` when set
    (capped like the others). http-01 tokens are on the web servers once written; the delay is
    for DNS."""
    if step_name == "acme_propagated" and retries == 0 and over_dns and dns_check_delay > 0:
        return min(dns_check_delay, ACME_COUNTDOWN_MAX_S)
    return acme_countdown(retries)


def acme_waited(retries: int) -> float:
    """Seconds of countdowns behind a check that was retried ``retries`` times."""
    return sum(acme_countdown(n) for n in range(retries))


def acme_max_retries(wait_s: float) -> int:
    """The retry limit of an ACME task: a backstop above the checks ``wait_s`` takes (20 for
    the default 600 s, so 46); the bound itself is checked by the task."""
    checks, waited = 0, 0.0
    while waited < wait_s:
        waited += acme_countdown(checks)
        checks += 1
    return checks + ACME_SPARE_RETRIES


def _acme_step(
    task: Task, step_name: str, prev: Result, group: str, service: str, options: Result
) -> Result:
    """One try of one ACME step for one service; a step that is not done retries itself."""
    if not prev.get("build"):
        return prev
    ws, ref = _workspace(group, service, options)
    if not acme_issue.is_acme(ws, ref):
        return prev  # a local CA signs in the ``sign`` step
    claims = _claims()
    if claims is not None:
        claims.refresh(_claim_name(ref), _owner(task))
    step = {s.name: s for s in ACME_SIGN_STEPS}[step_name]
    done, detail, cause = True, "", None
    with _service_lock(ws, ref):
        if build.is_building(ws, ref, prev["stamp"]):
            try:
                done, detail = step.attempt(ws, ref)
            except TransientError as err:
                # One more "not yet" (the CA unreachable or answering badNonce, a primary that
                # did not answer, the CA still issuing), under the step's own bound rather than
                # the autoretry's: every ACME step then gives up after the same time.
                done, detail, cause = False, str(err), err
    if not done:
        retries = int(task.request.retries or 0)
        waited = acme_waited(retries)
        if waited >= _settings().acme_wait_s:
            raise PermanentError(
                f"{ref}: {step.name}: not done after {waited:g} s: {detail}"
            ) from cause
        countdown = acme_next_countdown(
            step.name,
            retries,
            dns_check_delay=ws.config.main.globals.dns_check_delay,
            over_dns=acme_issue.validates_over_dns(ws, ref),
        )
        log.info("%s: %s: not yet (%s); again in %g s", ref, step.name, detail, countdown)
        raise task.retry(countdown=countdown)
    return {**prev, "step": step.name}


def _make_acme_step_task(step_name: str) -> Task:
    def run(self: Task, prev: Result, group: str, service: str, options: Result) -> Result:
        return _acme_step(self, step_name, prev, group, service, options)

    run.__name__ = run.__qualname__ = step_name
    run.__doc__ = f"ACME sign step {step_name!r} (see sslm_tasks.workflows.ACME_SIGN_STEPS)."
    # The steps retry with their own countdowns and stop at SSLM_ACME_WAIT_S; the retry limit
    # is only a backstop above that.
    options = {**SERVICE_TASK, "max_retries": acme_max_retries(_settings().acme_wait_s)}
    task: Task = app.task(name=f"sslm.issue.{step_name}", base=ServiceTask, **options)(run)
    return task


#: One task per ACME sign step, in the order of :data:`~sslm_tasks.workflows.ACME_SIGN_STEPS`.
ACME_STEP_TASKS: dict[str, Task] = {
    step.name: _make_acme_step_task(step.name) for step in ACME_SIGN_STEPS
}


# --------------------------------------------------------------------------- roll


@app.task(name="sslm.roll.service", base=ServiceTask, **SERVICE_TASK)  # type: ignore[untyped-decorator]
def roll_service(self: Task, group: str, service: str, options: Result) -> Result:
    """Roll ``next`` into ``curr`` if its conditions hold now, then update production.

    The conditions are checked when the task runs, not when it was sent: a roll delivered late
    or twice rolls at most once.
    """
    ws, ref = _workspace(group, service, options)
    result: Result = {"service": str(ref), "workflow": _owner(self), "rolled": False}
    holder = _claim(self, ref)
    if holder is not None:
        return {**result, "busy": True, "reason": f"already in progress (workflow {holder})"}
    try:
        with _service_lock(ws, ref):
            outcome = rolling.roll(ws, ref, force=ws.options.force)
            production.sync_service(ws, ref)
            if outcome.rolled:
                dane.publish_for_service(ws, ref)
    finally:
        _release(self, ref)
    curr = read_link(ws.layout, ref, "curr")
    return {
        **result,
        "rolled": outcome.rolled,
        "changed": outcome.rolled,
        "reason": outcome.reason,
        "curr": curr,
    }


@app.task(name="sslm.issue.dev", base=ServiceTask, **SERVICE_TASK)  # type: ignore[untyped-decorator]
def dev_service_task(
    self: Task, group: str, service: str, options: Result, dev: dict[str, bool]
) -> Result:
    """``sslm-mgr dev`` steps for one service, as in-process (same function)."""
    ws, ref = _workspace(group, service, options)
    holder = _claim(self, ref)
    if holder is not None:
        return {
            "service": str(ref),
            "busy": True,
            "reason": f"already in progress (workflow {holder})",
        }
    outcome = ServiceOutcome(ref)
    try:
        if dev.get("cert") and acme_issue.is_acme(ws, ref):
            # Its sign polls DNS and the CA with sleeps: fine in-process, never in a worker.
            raise PermanentError(
                f"{ref}: dev -cert of a service signed by an ACME CA runs in-process only "
                "(sslm-mgr without a broker); -renew issues it through the workers"
            )
        with _service_lock(ws, ref):
            dev_service(ws, ref, outcome, DevSteps(**dev))
            production.sync_service(ws, ref)
    finally:
        _release(self, ref)
    return {
        "service": str(ref),
        "force_restarts": dev.get("force_restarts", False),
        "changed": outcome.changed or dev.get("certs_prod", False),
        "actions": outcome.actions,
    }


# --------------------------------------------------------------------------- deploy


@app.task(name="sslm.issue.deploy_fanout", **SERVICE_TASK)  # type: ignore[untyped-decorator]
def deploy_fanout(self: Task, prev: Result, group: str, service: str, options: Result) -> Result:
    """After a service changed, send one deploy task per server that uses it, on its site's queue.

    Servers already waiting for a deploy are not sent another: the changes of one run (several
    services, renew then roll) coalesce into one restart per server.
    """
    result: Result = {**prev, "deploys": []}
    force = bool(prev.get("force_restarts"))
    if not prev.get("changed") and not force:
        return result
    ws, ref = _workspace(group, service, options)
    claims = _claims()
    deploys: list[Signature] = []
    for target in deploy_targets(ws.config.main, [ref], ["cert"], force=force):
        job = f"deploy:{target.server_class}:{target.host}"
        if claims is None or claims.claim(job, self.request.id) is None:
            deploys.append(deploy_server.si(target.to_json(), [str(ref)], site=target.site))
    for host, command in unattached_post_copies(ws.config.main):
        job = f"post_copy:{host}:{command}"
        if claims is None or claims.claim(job, self.request.id) is None:
            deploys.append(deploy_post_copy.si(host, command, site=ws.config.main.site_of(host)))
    for deploy_sig in deploys:
        deploy_sig.set(countdown=DEPLOY_DEBOUNCE_S, task_id=str(uuid.uuid4()))
    sent = [str(deploy_sig.id) for deploy_sig in deploys]
    if prev.get("rolled") and ws.service(ref).dane_tls:
        # The old TLSA records go only once every server took the new certificate: the chord's
        # callback runs only if all of its deploys succeed.
        retire = dns_retire.si(group, service, options)
        (chord(deploys, retire) if deploys else retire).apply_async()
    else:
        for deploy_sig in deploys:
            deploy_sig.apply_async()
    if dane.pending_refreshes(ws):
        _send_dns_refresh(group)
    return {**result, "deploys": sent}


def _send_dns_refresh(group: str) -> None:
    """One refresh for the changes of many services of a zone: later changes find it pending."""
    claims = _claims()
    job = f"dns-refresh:{group}"
    if claims is None or claims.claim(job, job) is None:
        dns_refresh_pending.apply_async((group,), countdown=DEPLOY_DEBOUNCE_S)


def _job_started(job: str) -> None:
    """Clear the job's pending marker: a change from now on needs a deploy of its own."""
    claims = _claims()
    if claims is not None:
        claims.drop(job)


@app.task(name="sslm.deploy.server", **DEPLOY_TASK)  # type: ignore[untyped-decorator]
def deploy_server(self: Task, target: Result, changed: list[str], *, site: str) -> Result:
    """Bring one server up to date: its copy of production, its restart commands when due,
    then its ``verify`` probes; a probe that fails fails the task (and so the chord that
    would retire the old TLSA records).

    Runs on the deploy queue of the server's ``site``.
    """
    deploy_target = DeployTarget.from_json(target, site=site)
    _job_started(f"deploy:{deploy_target.server_class}:{deploy_target.host}")
    config, _ = load_config([])
    ws = Workspace(config=config, locker=_locker(config))
    refs = [ServiceRef(*name.split(":", 1)) for name in changed]
    try:
        ran = deploy(
            config.main, deploy_target, prod_dir=ws.layout.prod_dir, timeout_s=DEFAULT_TIMEOUT_S
        )
        problems = served.check_server(ws, deploy_target, refs, timeout_s=DEFAULT_TIMEOUT_S)
    except SslmError as err:
        deploy_record.record_outcome(ws, deploy_target, ok=False, detail=str(err))
        raise
    commands = [" ".join(r.argv) for r in ran]
    detail = "; ".join(problems) or "deployed" + "".join(f"; ran {c}" for c in commands)
    deploy_record.record_outcome(ws, deploy_target, ok=not problems, detail=detail)
    if problems:
        raise PermanentError("; ".join(problems))
    return {**deploy_target.to_json(), "ran": commands}


@app.task(name="sslm.deploy.post_copy", **DEPLOY_TASK)  # type: ignore[untyped-decorator]
def deploy_post_copy(self: Task, host: str, command: str, *, site: str) -> Result:
    """``post_copy_cmd``: run ``command host`` after ``host`` got its copy."""
    _job_started(f"post_copy:{host}:{command}")
    ran = post_copy(host, command, timeout_s=DEFAULT_TIMEOUT_S)
    return {"host": host, "site": site, "ran": " ".join(ran.argv)}


# --------------------------------------------------------------------------- dns


@app.task(name="sslm.dns.refresh", **SERVICE_TASK)  # type: ignore[untyped-decorator]
def dns_refresh(self: Task, apexes: list[str]) -> Result:
    """Refresh the zones ``apexes`` (``[dns] restart_cmd --serial_bump ...``), one at a time."""
    config, _ = load_config([])
    certs = ensure_dir(config.layout().certs_dir, mode=DIR_MODE_GROUP)
    settings = _settings()
    ttl_s = settings.task_time_limit_s + STEP_LOCK_MARGIN_S
    with locker_for(settings, certs).acquire(
        "dns:refresh", ttl_s=ttl_s, blocking_s=STEP_LOCK_WAIT_S
    ):
        ran = refresh_zones(config, apexes)
    return {"apexes": apexes, "ran": [" ".join(r.argv) for r in ran]}


@app.task(name="sslm.dns.refresh_pending", **SERVICE_TASK)  # type: ignore[untyped-decorator]
def dns_refresh_pending(self: Task, group: str) -> Result:
    """Refresh the zone ``group`` if its TLSA file changed since its last refresh."""
    _job_started(f"dns-refresh:{group}")
    config, _ = load_config([])
    ws = Workspace(config=config, locker=_locker(config))
    return {"group": group, "refreshed": dane.refresh_pending(ws, [group])}


@app.task(name="sslm.dns.retire", base=ServiceTask, **SERVICE_TASK)  # type: ignore[untyped-decorator]
def dns_retire(self: Task, group: str, service: str, options: Result) -> Result:
    """The servers took the service's new certificate: drop its old TLSA records, refresh DNS."""
    ws, ref = _workspace(group, service, options)
    dane.deployed(ws, [ref])
    dane.publish_group(ws, group)
    return {"service": str(ref), "refreshed": dane.refresh_pending(ws, [group])}


# --------------------------------------------------------------------------- clean


@app.task(name="sslm.clean.service", base=ServiceTask, **SERVICE_TASK)  # type: ignore[untyped-decorator]
def clean(self: Task, group: str, service: str, options: Result) -> Result:
    """Delete old unlinked versions beyond ``clean_keep``."""
    ws, ref = _workspace(group, service, options)
    with _service_lock(ws, ref):
        removed = clean_service(ws.layout, ref, keep=ws.clean_keep)
    return {"service": str(ref), "removed": removed}


# --------------------------------------------------------------------------- beat


@app.task(name="sslm.renew.trigger")  # type: ignore[untyped-decorator]
def renew_trigger(group: str, service: str) -> str:
    """Beat's per-service check: start the renew workflow; it decides whether anything is due."""
    from sslm_tasks.workflows import renew_workflow

    ref = ServiceRef(group, service)
    config, _ = load_config([str(ref)])
    acme = acme_ca_of(config, ref) is not None
    return str(renew_workflow(ref, RunOptions(), acme=acme).apply_async().id)


@app.task(name="sslm.roll.due")  # type: ignore[untyped-decorator]
def roll_due() -> list[str]:
    """Beat's roll check: start the roll of every service whose ``next`` is due to roll."""
    from sslm_tasks.workflows import roll_workflow

    config, refs = load_config([])
    layout = config.layout()
    now = utc_now()
    started = []
    for ref in refs:
        state = load_state(layout, ref)
        if (
            state.phase == Phase.ISSUED
            and state.roll_due
            and datetime.fromisoformat(state.roll_due) <= now
        ):
            roll_workflow(ref, RunOptions()).apply_async()
            started.append(str(ref))
    return started


@app.task(name="sslm.clean.all")  # type: ignore[untyped-decorator]
def clean_all() -> list[str]:
    """Beat's daily clean of every configured service."""
    _, refs = load_config([])
    for ref in refs:
        clean.delay(ref.group, ref.service, {})
    return [str(ref) for ref in refs]
