"""The pipelines, written once.

Renew: check → keygen → CSR → sign → store → (first certificate: roll at once) → production →
deploy to the servers that use it. Roll (when due): roll → production → deploy. Then clean.

:data:`RENEW_STEPS` is the single statement of the renew order. The in-process runner here
walks it directly (``sslm-mgr`` without a broker); the Celery canvases below are built from
the same list, one task per step, so both paths call the same domain functions in the same
order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Final

from sslm_tasks.acme.network import AcmeTransientError
from sslm_tasks.config.load import Config, signer_of
from sslm_tasks.config.settings import load_settings
from sslm_tasks.deploy.commands import DEFAULT_TIMEOUT_S
from sslm_tasks.deploy.server import deploy, post_copy
from sslm_tasks.deploy.targets import deploy_targets, unattached_post_copies
from sslm_tasks.errors import PermanentError, SslmError, StoreError, TransientError
from sslm_tasks.lifecycle import (
    acme_issue,
    build,
    dane,
    deploy_record,
    dry_run,
    production,
    served,
)
from sslm_tasks.lifecycle import roll as rolling
from sslm_tasks.lifecycle.workspace import RunOptions, Workspace
from sslm_tasks.store.clean import clean_service
from sslm_tasks.store.layout import PRIVKEY, ServiceRef
from sslm_tasks.store.versions import read_link

if TYPE_CHECKING:
    # Only the canvases below need Celery; the in-process run never imports it.
    from celery import Signature  # type: ignore[import-untyped]

log = logging.getLogger("sslm")

Step = Callable[[Workspace, ServiceRef], object]
#: A waiting step: one check (one DNS pass, one ACME poll); True when the workflow may go on,
#: with a line that says what it saw (the laggards, when not ready).
Ready = Callable[[Workspace, ServiceRef], tuple[bool, str]]


@dataclass(frozen=True)
class SignStep:
    """One step of an ACME sign: a one-shot action, or a ``ready`` predicate to ask again.

    Either kind is tried again while it fails for a reason that passes (a
    :class:`~sslm_tasks.errors.TransientError`), up to ``SSLM_ACME_WAIT_S``: in-process with
    short sleeps, on workers with countdowns.
    """

    name: str
    run: Step | None = None
    ready: Ready | None = None

    def attempt(self, ws: Workspace, ref: ServiceRef) -> tuple[bool, str]:
        """One try: the ``ready`` check, or the action (done once it returns).

        Raises:
          TransientError: not done yet, for a reason that passes; try again later.
          PermanentError: the CA's rate limit (caused by the ``rateLimited`` error, which holds
            its Retry-After): its wait is for the next build (``acme_timing``) to honour, while
            a retry within seconds would only be refused again and count against the limit.
        """
        try:
            if self.run is not None:
                self.run(ws, ref)
                return True, "done"
            assert self.ready is not None  # every entry of ACME_SIGN_STEPS sets one of the two
            return self.ready(ws, ref)
        except AcmeTransientError as err:
            if err.code == "rateLimited":
                raise PermanentError(f"{ref}: {self.name}: {err}") from err
            raise


#: The sign of a build whose CA speaks ACME, RFC 8555 in order: order → publish the TXT
#: records (dns-01) or token files (http-01) → wait until DNS or the web servers serve them →
#: answer → wait until validated → finalize and fetch the chain (then withdraw the records or
#: tokens). Replaces ``sign`` for ACME services.
ACME_SIGN_STEPS: Final[tuple[SignStep, ...]] = (
    SignStep("acme_order", run=acme_issue.order),
    SignStep("acme_publish", run=acme_issue.publish),
    SignStep("acme_propagated", ready=acme_issue.propagated),
    SignStep("acme_answer", run=acme_issue.answer),
    SignStep("acme_validated", ready=acme_issue.validated),
    SignStep("acme_finalize", ready=acme_issue.finalize),
)

#: ``-n``: the ACME steps up to valid authorizations; finalize, which asks for the certificate,
#: never runs (``lifecycle.dry_run``).
ACME_DRY_RUN_STEPS: Final = tuple(step for step in ACME_SIGN_STEPS if step.name != "acme_finalize")

#: In-process only: the pause between two tries of a step. Workers never sleep (see the ACME
#: tasks).
ACME_POLL_S: Final = 0.5


def run_acme_sign(
    ws: Workspace, ref: ServiceRef, steps: Sequence[SignStep] = ACME_SIGN_STEPS
) -> None:
    """Walk ``steps`` (:data:`ACME_SIGN_STEPS`) in this process, trying each until it is done.

    A transient error (the CA unreachable or answering badNonce, a primary that did not answer,
    the CA still issuing) is one more "not yet"; after ``SSLM_ACME_WAIT_S`` on one step the
    build fails with the last thing seen. A run step repeats safely: each reloads the recorded
    order and does only what is missing.

    Raises:
      PermanentError: a step was not done within ``SSLM_ACME_WAIT_S``, or failed for good.
      ConfigError: ``SSLM_ACME_WAIT_S`` (or another ``SSLM_*`` variable) is not valid.
    """
    wait_s = load_settings().acme_wait_s
    for step in steps:
        deadline = time.monotonic() + wait_s
        while True:
            cause: TransientError | None = None
            try:
                done, detail = step.attempt(ws, ref)
            except TransientError as err:
                done, detail, cause = False, str(err), err
            if done:
                log.info("%s: %s: %s", ref, step.name, detail)
                break
            if time.monotonic() >= deadline:
                raise PermanentError(
                    f"{ref}: {step.name}: not done after {wait_s:g} s: {detail}"
                ) from cause
            time.sleep(ACME_POLL_S)


def sign(ws: Workspace, ref: ServiceRef) -> None:
    """The signed certificate and its chain: the ACME steps for an ACME CA, else local."""
    if acme_issue.is_acme(ws, ref):
        run_acme_sign(ws, ref)
    else:
        build.sign(ws, ref)


#: Building a new version, after the check said one is needed: key, CSR, signed certificate,
#: then ``next``. Each works on the build in progress recorded in the service state.
BUILD_STEPS: Final[tuple[tuple[str, Step], ...]] = (
    ("keygen", build.make_key),
    ("csr", build.make_csr),
    ("sign", sign),
    ("store", build.store),
)


def publish(ws: Workspace, ref: ServiceRef) -> None:
    """A first certificate becomes ``curr`` at once; then production gets its copy."""
    rolling.roll_first(ws, ref)
    production.sync_service(ws, ref)


#: Renewing one service: the build, then publishing it: production, and the TLSA records of
#: its zone (``next``'s beside ``curr``'s, ahead of the roll).
RENEW_STEPS: Final[tuple[tuple[str, Step], ...]] = (
    *BUILD_STEPS,
    ("publish", publish),
    ("tlsa", dane.publish_for_service),
)


@dataclass
class ServiceOutcome:
    """What happened to one service in one run: one line of the report, one exit status."""

    ref: ServiceRef
    ok: bool = True
    actions: list[str] = field(default_factory=list)
    #: True when ``curr`` or ``next`` now names a different version than before the run.
    changed: bool = False
    #: True when the end-of-turn sync rewrote anything in production.
    synced: bool = False

    def note(self, text: str) -> None:
        self.actions.append(text)
        log.info("%s: %s", self.ref, text)

    def fail(self, text: str) -> None:
        self.ok = False
        self.note(f"FAILED: {text}")


@dataclass(frozen=True)
class DevSteps:
    """``sslm-mgr dev`` switches; each works on its own (upstream's only worked combined)."""

    keys: bool = False
    csr: bool = False
    cert: bool = False
    copy: bool = False
    ntoc: bool = False
    certs_prod: bool = False
    #: ``-fsr``: restart every server that has a restart command, and refresh DNS.
    force_restarts: bool = False

    def any_build_step(self) -> bool:
        return self.keys or self.csr or self.cert or self.copy

    def any(self) -> bool:
        return self.any_build_step() or self.ntoc or self.certs_prod or self.force_restarts

    def to_json(self) -> dict[str, bool]:
        return {name: bool(getattr(self, name)) for name in self.__dataclass_fields__}


def run_renew_steps(
    ws: Workspace, ref: ServiceRef, steps: Iterable[tuple[str, Step]] = RENEW_STEPS
) -> None:
    for _name, step in steps:
        step(ws, ref)


def renew_service(ws: Workspace, ref: ServiceRef, outcome: ServiceOutcome) -> None:
    """Check, then build and store a new ``next`` when due; a first certificate rolls at once."""
    check = build.check_renew(ws, ref)
    if not check.build:
        outcome.note(check.reason)
        return
    outcome.note(f"renewing: {check.reason}")
    if check.stamp is None:
        build.start_build(ws, ref)
    run_renew_steps(ws, ref)
    outcome.changed = True
    pending = read_link(ws.layout, ref, "next")
    outcome.note(
        f"next is {pending}" if pending else f"curr is {read_link(ws.layout, ref, 'curr')}"
    )


def roll_service(ws: Workspace, ref: ServiceRef, outcome: ServiceOutcome, *, force: bool) -> None:
    result = rolling.roll(ws, ref, force=force)
    if result.rolled:
        outcome.changed = True
        outcome.note(f"rolled {result.stamp} to curr ({result.reason})")
        dane.publish_for_service(ws, ref)
    else:
        outcome.note(result.reason)


def dev_service(ws: Workspace, ref: ServiceRef, outcome: ServiceOutcome, dev: DevSteps) -> None:
    """Run the requested dev steps on the build in progress, starting one when needed.

    A step whose input is missing makes it first, so every switch works alone and in any
    combination: ``-csr`` or ``-cert`` without a key in the build carry the key of ``next``
    (else ``curr``) over, and make a new one only when the service has none; ``-copy`` takes
    the key of ``curr``; ``-keys`` always makes a new key.
    """
    if dev.any_build_step():
        stamp = build.start_build(ws, ref) if dev.keys else _build_in_progress(ws, ref)
        has_key = (ws.layout.version_dir(ref, stamp) / PRIVKEY).is_file()
        if dev.keys:
            build.write_new_key(ws, ref, stamp)
            outcome.note(f"new key in build {stamp}")
        elif dev.copy:
            if not build.carry_key(ws, ref, stamp, ("curr",)):
                raise StoreError(f"{ref}: -copy needs a key in curr, and there is none")
            outcome.note(f"key of curr copied into build {stamp}")
        elif not has_key and build.carry_key(ws, ref, stamp, ("next", "curr")):
            outcome.note(f"key carried over into build {stamp}")
        build.make_key(ws, ref)
        if dev.csr or dev.cert:
            build.make_csr(ws, ref)
            outcome.note(f"CSR in build {stamp}")
        if dev.cert:
            sign(ws, ref)
            build.store(ws, ref)
            outcome.changed = True
            outcome.note(f"next is {stamp}")
    if dev.ntoc:
        roll_service(ws, ref, outcome, force=True)


def dry_run_service(ws: Workspace, ref: ServiceRef, outcome: ServiceOutcome) -> None:
    """``-n`` for one service: when it is due (or ``-f``) and signed by an ACME CA, a throwaway
    build whose order is taken up to valid authorizations, then discarded (``lifecycle.dry_run``).

    Raises:
      SslmError: the order failed; nothing of the throwaway build is left behind.
    """
    if not acme_issue.is_acme(ws, ref):
        outcome.note("dry run: not signed by an ACME CA, nothing to exercise")
        return
    check = build.check_renew(ws, ref)
    if check.stamp is not None:
        outcome.note(f"dry run: build {check.stamp} is in progress and is left alone")
        return
    if not check.build:
        outcome.note(f"dry run: {check.reason}")
        return
    with dry_run.throwaway_build(ws, ref) as stamp:
        build.make_key(ws, ref)
        build.make_csr(ws, ref)
        run_acme_sign(ws, ref, ACME_DRY_RUN_STEPS)
    outcome.note(
        f"dry run: every authorization is valid; no certificate was asked for, build {stamp} "
        "discarded"
    )


def _build_in_progress(ws: Workspace, ref: ServiceRef) -> str:
    check = build.check_renew(ws, ref)
    return check.stamp if check.stamp is not None else build.start_build(ws, ref)


def _record(
    ws: Workspace, ref: ServiceRef, outcome: ServiceOutcome, message: str, error: BaseException
) -> None:
    outcome.fail(message)
    build.record_failure(ws, ref, message, error=error)


@dataclass
class RunReport:
    outcomes: list[ServiceOutcome]
    prod_changed: list[ServiceRef] = field(default_factory=list)
    cleaned: dict[str, list[str]] = field(default_factory=dict)
    deploy_failures: list[str] = field(default_factory=list)
    dns_refreshed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes) and not self.deploy_failures


def deploy_in_process(
    ws: Workspace, changed: Sequence[ServiceRef], *, force_restarts: bool = False
) -> list[str]:
    """Deploy to every server: copy, its ``post_copy_cmd``, a restart where the change concerns
    it and its ``verify`` probes; then the ``post_copy_cmd`` entries of hosts that are no server.

    One pass per run, as upstream: each server restarts once however many services changed.
    Returns one line per failed server; the others are still deployed.
    """
    failures: list[str] = []
    main = ws.config.main
    tags = ["cert"] if changed else []
    for target in deploy_targets(main, changed, tags, force=force_restarts):
        try:
            ran = deploy(main, target, prod_dir=ws.layout.prod_dir, timeout_s=DEFAULT_TIMEOUT_S)
            commands = [" ".join(result.argv) for result in ran]
            for shown in commands:
                log.info("[%s] %s: ran %s", target.server_class, target.host, shown)
            problems = served.check_server(ws, target, changed, timeout_s=DEFAULT_TIMEOUT_S)
            detail = "; ".join(problems) or "deployed" + "".join(f"; ran {c}" for c in commands)
        except SslmError as err:
            problems, detail = [f"[{target.server_class}] {target.host}: {err}"], str(err)
        failures += problems
        deploy_record.record_outcome(ws, target, ok=not problems, detail=detail)
    for host, command in unattached_post_copies(main):
        try:
            post_copy(host, command, timeout_s=DEFAULT_TIMEOUT_S)
        except SslmError as err:
            failures.append(f"post_copy_cmd {host}: {err}")
    return failures


@dataclass(frozen=True)
class RunRequest:
    renew: bool = False
    roll: bool = False
    #: ``-dns``: refresh the zones of the selected groups at the end of the run.
    dns_refresh: bool = False
    #: ``-n``: only the ACME dry run of each service (``dry_run_service``); nothing else.
    dry_run: bool = False
    dev: DevSteps = field(default_factory=DevSteps)
    clean_refs: Sequence[ServiceRef] | None = None

    def refreshes_dns(self, config: Config) -> bool:
        """``-dns``, or ``dev -fsr`` where a DNS restart command exists."""
        dns = config.main.dns
        return self.dns_refresh or (
            self.dev.force_restarts and dns is not None and bool(dns.restart_cmd)
        )


def run_in_process(ws: Workspace, refs: Sequence[ServiceRef], request: RunRequest) -> RunReport:
    """Run the requested phases for every service, one at a time, in dependency order.

    A failure stays with its service and with what it signs: a CA that failed to renew leaves
    its leaves untouched (they are reported as failed too), every other service goes on.
    Each service's production copy is synced at the end of its turn, also when nothing was
    due: that repairs any drift, the integrity check upstream ran on every start.
    """
    if request.dry_run:
        return RunReport([_dry_run_turn(ws, ref) for ref in refs])
    outcomes: list[ServiceOutcome] = []
    failed: set[ServiceRef] = set()
    for ref in refs:
        outcome = ServiceOutcome(ref)
        outcomes.append(outcome)
        signer = signer_of(ws.config, ref)
        if signer is not None and signer in failed:
            outcome.fail(f"signing CA {signer} failed in this run")
            failed.add(ref)
            continue
        if not _isolated(ws, ref, outcome, partial(_service_turn, ws, ref, outcome, request)):
            failed.add(ref)
    report = RunReport(outcomes)
    report.prod_changed = [o.ref for o in outcomes if o.ok and (o.changed or o.synced)]
    changed = [o.ref for o in outcomes if o.ok and o.changed]
    groups = sorted({ref.group for ref in refs})
    # New TLSA records go out before the servers change, so a deploy's DANE check finds them.
    _refresh_dns(ws, report, groups, everything=request.refreshes_dns(ws.config))
    restart_all = request.dev.force_restarts
    if changed or request.dev.certs_prod or restart_all:
        report.deploy_failures += deploy_in_process(ws, changed, force_restarts=restart_all)
    if not report.deploy_failures:
        # The servers took the new certificates: the old TLSA records may go now. A forced
        # deploy (-certs-prod, -fsr) vouches for every selected service.
        forced = request.dev.certs_prod or restart_all
        deployed = [o.ref for o in outcomes if o.ok] if forced else changed
        try:
            for group in dane.deployed(ws, deployed):
                dane.publish_group(ws, group)
        except SslmError as err:
            report.deploy_failures.append(f"TLSA: {err}")
        _refresh_dns(ws, report, groups, everything=False)
    cleaning = request.clean_refs if request.clean_refs is not None else [o.ref for o in outcomes]
    for ref in cleaning:
        if ref in failed:
            continue  # its state may hold a build to resume; clean it once it succeeded
        cleaned = next((o for o in outcomes if o.ref == ref), None)
        if cleaned is None:  # --clean-all reaches services this run did not select
            cleaned = ServiceOutcome(ref)
            outcomes.append(cleaned)
        _isolated(ws, ref, cleaned, partial(_clean, ws, ref, report))
    return report


def _dry_run_turn(ws: Workspace, ref: ServiceRef) -> ServiceOutcome:
    """One service's dry run; a failure is reported but, unlike a real build's, not recorded in
    its state: the next real run must not wait for, or resume, a build that was thrown away."""
    outcome = ServiceOutcome(ref)
    try:
        dry_run_service(ws, ref, outcome)
    except SslmError as err:
        outcome.fail(f"dry run: {err}")
    return outcome


#: How long the in-process run waits for the primary to serve a refreshed zone.
DNS_PUBLISH_WAIT_S = 10.0


def _refresh_dns(
    ws: Workspace, report: RunReport, groups: Sequence[str], *, everything: bool
) -> None:
    try:
        report.dns_refreshed += dane.refresh_pending(
            ws, groups, everything=everything, wait_s=DNS_PUBLISH_WAIT_S
        )
    except SslmError as err:
        report.deploy_failures.append(f"DNS refresh: {err}")


def _clean(ws: Workspace, ref: ServiceRef, report: RunReport) -> None:
    removed = clean_service(ws.layout, ref, keep=ws.clean_keep)
    if removed:
        log.info("%s: cleaned %s", ref, ", ".join(removed))
        report.cleaned[str(ref)] = removed


def _service_turn(
    ws: Workspace, ref: ServiceRef, outcome: ServiceOutcome, request: RunRequest
) -> None:
    if request.dev.any_build_step() or request.dev.ntoc:
        dev_service(ws, ref, outcome, request.dev)
    if request.renew:
        renew_service(ws, ref, outcome)
    if request.roll:
        roll_service(ws, ref, outcome, force=ws.options.force)
    outcome.synced = production.sync_service(ws, ref)
    # Also when nothing was due: a dane_tls edit takes effect without waiting for a renewal.
    dane.publish_for_service(ws, ref)


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


# --------------------------------------------------------------------------- canvases
# The task objects are imported inside these functions: the task module imports this one for
# RENEW_STEPS, and the domain-only in-process path never needs Celery's registry.


def _args(ref: ServiceRef, options: RunOptions) -> tuple[str, str, dict[str, object]]:
    return ref.group, ref.service, options.to_json()


def renew_steps(
    ref: ServiceRef, options: RunOptions, *, deploy: bool = True, acme: bool = False
) -> list[Signature]:
    """check → one task per :data:`RENEW_STEPS` entry (for a service of an ACME CA, ``acme``,
    with :data:`ACME_SIGN_STEPS` before ``sign``) → deploy fan-out (unless a roll follows,
    whose fan-out then covers both)."""
    from sslm_tasks import tasks

    args = _args(ref, options)
    steps = [tasks.renew_check.si(*args)]
    for name, _ in RENEW_STEPS:
        if name == "sign" and acme:
            # An ACME CA (``acme``): its steps before ``sign``, which then only checks that
            # they issued (a worker never runs the in-process, sleeping, sign).
            steps += [tasks.ACME_STEP_TASKS[step.name].s(*args) for step in ACME_SIGN_STEPS]
        steps.append(tasks.RENEW_STEP_TASKS[name].s(*args))
    return [*steps, tasks.deploy_fanout.s(*args)] if deploy else steps


def roll_steps(ref: ServiceRef, options: RunOptions) -> list[Signature]:
    """roll (conditions checked when it runs) → deploy fan-out."""
    from sslm_tasks import tasks

    args = _args(ref, options)
    return [tasks.roll_service.si(*args), tasks.deploy_fanout.s(*args)]


def dev_steps(ref: ServiceRef, options: RunOptions, dev: DevSteps) -> list[Signature]:
    from sslm_tasks import tasks

    args = _args(ref, options)
    return [tasks.dev_service_task.si(*args, dev.to_json()), tasks.deploy_fanout.s(*args)]


def service_steps(
    ref: ServiceRef, options: RunOptions, request: RunRequest, *, acme: bool = False
) -> list[Signature]:
    """What ``sslm-mgr`` asks of one service, as one flat list of chained steps; ``acme``:
    the service's CA speaks ACME."""
    steps: list[Signature] = []
    if request.dev.any():
        steps += dev_steps(ref, options, request.dev)
    if request.renew:
        steps += renew_steps(ref, options, deploy=not request.roll, acme=acme)
    if request.roll:
        steps += roll_steps(ref, options)
    return steps


def renew_workflow(ref: ServiceRef, options: RunOptions, *, acme: bool = False) -> Signature:
    from celery import chain

    return chain(*renew_steps(ref, options, acme=acme))


def roll_workflow(ref: ServiceRef, options: RunOptions) -> Signature:
    from celery import chain

    return chain(*roll_steps(ref, options))
