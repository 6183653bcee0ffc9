"""The lifecycle of a service, stated once::

    renew    check → keygen → csr → sign → store
             sign: a local CA (or the service itself) signs, or an ACME CA does:
                   acme_order → acme_publish → acme_propagated? → acme_answer
                   → acme_validated? → acme_finalize?
    roll     roll_gate → roll              (without -roll: a first certificate only)
    upkeep   production → tlsa → clean     (every run: repairs drift, follows dane_tls edits)
    finish   dns_refresh → deploy → verify (each server) → retire_tlsa → dns_refresh

A step marked ``?`` waits: it looks once and is asked again until ready or the wait bound
(``SSLM_ACME_WAIT_S``). A ``check``/``roll_gate`` decides: "no" ends its stage (nothing is due,
too soon to roll) and the walk goes on with the next stage.

This module holds the statement and the two things every walker shares: running the steps of a
:class:`Segment` and the countdowns between looks. The in-process runner (``sslm-mgr`` without a
broker, :mod:`sslm_tasks.cli.local`) walks every segment in one process, sleeping between looks;
the Celery canvases (:mod:`sslm_tasks.workflows`) make one task of each segment, retried with a
countdown while its wait says "not yet". A segment ends before each wait, so a private-CA service
renews and rolls in one task, and an ACME service in four. The ``finish`` runs once for what
changed (:mod:`sslm_tasks.lifecycle.finish`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from sslm_tasks.errors import SslmError, TransientError
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.verdict import Verdict
from sslm_tasks.lifecycle.workspace import DevSteps
from sslm_tasks.logs import trace

log = logging.getLogger("sslm")


class Kind(StrEnum):
    #: Does its part and goes on.
    ACT = "act"
    #: Decides whether the rest of its stage runs now.
    DECIDE = "decide"
    #: Looks once; the walk goes on only when it is ready.
    WAIT = "wait"


@dataclass(frozen=True)
class Step:
    """One step: its name (the same in the log, the report and the task names), its kind, the
    function that does it, whether a transient error (the CA or a name server briefly
    away) is one more "not yet" under the wait bound rather than a failure, and whether it is
    routine: runs every time and mostly finds nothing to do, so it logs at DEBUG unless it
    says what it did (a run over thousands of services must not rotate the log away)."""

    name: str
    kind: Kind
    run: Callable[[ServiceContext], Verdict]
    patient: bool = False
    routine: bool = False


@dataclass(frozen=True)
class Stage:
    name: str
    steps: tuple[Step, ...]


def _in_steps(function: str) -> Callable[[ServiceContext], Verdict]:
    """The function of :mod:`sslm_tasks.lifecycle.steps` named ``function``, looked up when it
    runs. The statement is also read where no step runs: the broker CLI cuts its chains from it
    (:mod:`sslm_tasks.workflows`), and the steps import the ACME client, the DNS and the deploy
    code, which would be most of that CLI's own start while the workers wait for its first
    message (docs/decisions.md)."""

    def run(ctx: ServiceContext) -> Verdict:
        from sslm_tasks.lifecycle import steps

        act: Callable[[ServiceContext], Verdict] = getattr(steps, function)
        return act(ctx)

    run.__name__ = run.__qualname__ = function
    return run


def _act(name: str, *, does: str = "", patient: bool = False, routine: bool = False) -> Step:
    """An ``ACT`` step, done by the steps' function of its own name unless ``does`` names one."""
    return Step(name, Kind.ACT, _in_steps(does or name), patient, routine)


# --------------------------------------------------------------------------- the statement

CHECK: Final = Step("check", Kind.DECIDE, _in_steps("check"))
KEYGEN: Final = _act("keygen")
CSR: Final = _act("csr")
LOCAL_SIGN: Final = (_act("sign"),)
#: RFC 8555 in order; every step is patient (a CA answering badNonce, a primary not answering).
ACME_SIGN: Final = (
    _act("acme_order", patient=True),
    _act("acme_publish", patient=True),
    Step("acme_propagated", Kind.WAIT, _in_steps("acme_propagated"), patient=True),
    _act("acme_answer", patient=True),
    Step("acme_validated", Kind.WAIT, _in_steps("acme_validated"), patient=True),
    Step("acme_finalize", Kind.WAIT, _in_steps("acme_finalize"), patient=True),
)
#: ``-n``: the ACME steps up to valid authorizations; the finalize that would ask for the
#: certificate never runs (``lifecycle.dry_run``).
ACME_DRY_RUN: Final = ACME_SIGN[:-1]
STORE: Final = _act("store")
ROLL: Final = Stage("roll", (Step("roll_gate", Kind.DECIDE, _in_steps("roll_gate")), _act("roll")))
FIRST_ROLL: Final = Stage(
    "roll", (Step("roll_gate", Kind.DECIDE, _in_steps("first_roll_gate")), _act("roll"))
)
UPKEEP: Final = Stage(
    "upkeep",
    (
        _act("production", does="to_production", routine=True),
        _act("tlsa", routine=True),
        _act("clean", routine=True),
    ),
)
#: The names of the finish, in order (each server gets ``deploy`` and ``verify``).
FINISH: Final = ("dns_refresh", "deploy", "verify", "retire_tlsa", "dns_refresh")


def sign(*, acme: bool) -> tuple[Step, ...]:
    return ACME_SIGN if acme else LOCAL_SIGN


def renew(*, acme: bool) -> Stage:
    return Stage("renew", (CHECK, KEYGEN, CSR, *sign(acme=acme), STORE))


def dev(wanted: DevSteps, *, acme: bool) -> Stage:
    """``sslm-mgr dev``: the key, the CSR and the certificate steps that were asked for."""
    chosen = [_act("dev_key")]
    if wanted.csr or wanted.cert:
        chosen.append(CSR)
    if wanted.cert:
        chosen += [*sign(acme=acme), STORE]
    return Stage("dev", tuple(chosen))


def service_stages(
    *, renew_it: bool, roll_it: bool, wanted: DevSteps, acme: bool
) -> tuple[Stage, ...]:
    """What one run does to one service: ``dev`` steps, renew, roll, then upkeep."""
    stages: list[Stage] = []
    if wanted.any_build_step():
        stages.append(dev(wanted, acme=acme))
    if renew_it:
        stages.append(renew(acme=acme))
    if roll_it or wanted.ntoc:
        stages.append(ROLL)
    elif renew_it or wanted.cert:
        stages.append(FIRST_ROLL)
    return (*stages, UPKEEP)


# --------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class Segment:
    """The steps one task runs: a wait (if the segment starts with one), then every step up to
    the next wait. Each step is paired with the name of its stage."""

    wait: tuple[str, Step] | None
    steps: tuple[tuple[str, Step], ...]

    @property
    def name(self) -> str:
        first = self.wait or (self.steps[0] if self.steps else None)
        return "empty" if first is None else first[1].name


def segments(stages: Sequence[Stage]) -> list[Segment]:
    """Cut ``stages`` before every wait."""
    cut: list[Segment] = []
    wait: tuple[str, Step] | None = None
    run: list[tuple[str, Step]] = []
    for stage in stages:
        for step in stage.steps:
            if step.kind is Kind.WAIT:
                if wait is not None or run:
                    cut.append(Segment(wait, tuple(run)))
                wait, run = (stage.name, step), []
            else:
                run.append((stage.name, step))
    cut.append(Segment(wait, tuple(run)))
    return cut


@dataclass
class Walk:
    """What a walk of one service did so far; JSON-safe, so it travels between tasks.

    Attributes:
      skipped: stages a decision ended early (their later steps do not run).
      said: what the steps said, in order (the report's lines).
      ran: the names of the steps that ran, in order (the trace).
    """

    skipped: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, list[str]]:
        return {"skipped": list(self.skipped), "said": list(self.said), "ran": list(self.ran)}

    @classmethod
    def from_json(cls, data: object) -> Walk:
        raw = data if isinstance(data, dict) else {}
        return cls(*(list(map(str, raw.get(key) or [])) for key in ("skipped", "said", "ran")))

    def note(self, ctx: ServiceContext, step: Step, verdict: Verdict) -> None:
        self.ran.append(step.name)
        # A decision that said no without a reason, or routine upkeep that found nothing.
        quiet = not verdict.detail and (step.routine or step.kind is Kind.DECIDE)
        trace(
            step.name, str(ctx.ref), verdict.detail, level=logging.DEBUG if quiet else logging.INFO
        )
        if verdict.detail:
            self.said.append(verdict.detail)


def pending(segment: Segment, walk: Walk) -> tuple[str, Step] | None:
    """The segment's wait, unless a decision already ended its stage."""
    if segment.wait is None or segment.wait[0] in walk.skipped:
        return None
    return segment.wait


def look(ctx: ServiceContext, step: Step) -> Verdict:
    """One try of ``step``. For a patient step, a transient error is one more "not yet", with
    the CA's Retry-After when it sent one.

    Raises:
      SslmError: anything else the step raised (a transient one when the step is not patient;
        the CA's rate limit is permanent, ``acme.network.classify``: its Retry-After is for the
        next build to honour, ``acme_timing``).
    """
    try:
        return step.run(ctx)
    except TransientError as err:
        if not step.patient:
            err.step = err.step or step.name
            raise
        return Verdict(False, str(err), err.retry_after)
    except SslmError as err:
        err.step = err.step or step.name
        raise


def run_steps(
    ctx: ServiceContext, segment: Segment, walk: Walk, *, start: int = 0
) -> tuple[int, Verdict] | None:
    """Run the segment's steps after its wait (which the caller saw ready), in order, from
    number ``start``.

    A decision that says no ends its stage. A patient step that is not done yet (a transient
    error) stops the segment: its number and verdict are returned, for the caller to try it
    again later (every step is idempotent). Returns None once every step ran. The saves its
    steps make without a directory fsync are held for the segment (``held_saves``).
    """
    with ctx.held_saves():
        for index, (stage, step) in enumerate(segment.steps[start:], start):
            if stage in walk.skipped:
                continue
            verdict = look(ctx, step)
            if step.patient and not verdict.go:
                return index, verdict
            walk.note(ctx, step, verdict)
            if step.kind is Kind.DECIDE and not verdict.go:
                walk.skipped.append(stage)
        return None


# --------------------------------------------------------------------------- waiting

#: A wait that is not ready looks again after 0.25 s for its first second, then after 0.5, 1,
#: 2, ... seconds, at most ``COUNTDOWN_MAX_S`` apart. The first ones are short because most
#: waits are: a secondary takes a fraction of a second to transfer a refreshed zone, and a CA
#: answers a finalize with "processing" for about as long (bench/bench_acme.py).
FIRST_COUNTDOWN_S: Final = 0.25
#: How many looks come ``FIRST_COUNTDOWN_S`` apart before the countdowns grow.
QUICK_LOOKS: Final = 4
COUNTDOWN_MAX_S: Final = 60.0
#: Retries a worker's segment may spend on other transient errors (a busy service lock, Redis
#: briefly away), which share the retry count, on top of the looks its bound takes.
SPARE_RETRIES: Final = 26


def countdown(looks: int) -> float:
    """The pause before look number ``looks + 1``: front-weighted, capped."""
    growth = 2.0 ** max(0, looks - QUICK_LOOKS + 1)
    return min(FIRST_COUNTDOWN_S * growth, COUNTDOWN_MAX_S)


def first_pause(step: Step, looks: int, *, dns_check_delay: float, over_dns: bool) -> float:
    """The pause before look ``looks + 1`` of ``step`` on a worker: :func:`countdown`, except
    that the first wait of a dns-01 propagation check is ``dns_check_delay`` when set (capped
    like the others). http-01 tokens are on the web servers once written; the delay is for DNS.
    """
    if step.name == "acme_propagated" and looks == 0 and over_dns and dns_check_delay > 0:
        return min(dns_check_delay, COUNTDOWN_MAX_S)
    return countdown(looks)


def pause(own_s: float, verdict: Verdict, *, left_s: float) -> float:
    """The pause before the next look of a wait that said ``verdict``: the walker's own
    (``own_s``: its countdown, or the in-process poll), or until the CA's Retry-After when that
    is later, the CA's wait cut at the wait bound (``left_s`` of it remain): both walkers honour
    what the CA asked, and neither asks more often than it would on its own."""
    if verdict.retry_after is None:
        return own_s
    asked = (verdict.retry_after - datetime.now(UTC)).total_seconds()
    return max(own_s, min(asked, left_s))


def max_retries(wait_s: float) -> int:
    """A backstop above the looks ``wait_s`` takes (20 for the default 600 s, so 46); the bound
    itself is checked by the walker, on the clock (a CA's Retry-After makes the looks fewer)."""
    looks, total = 0, 0.0
    while total < wait_s:
        total += countdown(looks)
        looks += 1
    return looks + SPARE_RETRIES
