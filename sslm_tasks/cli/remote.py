"""``sslm-mgr`` with a broker: enqueue the same workflows, then (by default) wait and show progress.

Each selected service gets its own chain (:func:`sslm_tasks.workflows.service_steps`), so a
failure stays with its service. A service signed by a local CA that is in the same run is
linked behind that CA's chain, so it is signed by the CA's new certificate, and only once the
CA's chain succeeded. Every step's task id is chosen here before sending, which lets this
process follow each chain step by step with plain result look-ups: no task waits on another,
and nothing but task states and their small typed results cross the broker.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from celery import Signature, chain  # type: ignore[import-untyped]
from celery.backends.base import BaseKeyValueStoreBackend  # type: ignore[import-untyped]
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sslm_tasks.cli.run import RunReport, RunRequest, ServiceOutcome
from sslm_tasks.config.load import Config, signer_of
from sslm_tasks.lifecycle.workspace import RunOptions
from sslm_tasks.store.layout import ServiceRef
from sslm_tasks.workflows import dns_refresh as dns_refresh_signature
from sslm_tasks.workflows import service_steps

#: Seconds between two looks at the task states while waiting. Each look is one read of the
#: result backend for every chain at once (Redis: one MGET), so looking often costs little.
POLL_S = 0.05
_BAR = 20
#: What a broker or result backend that went away raises while the CLI follows its workflows.
BROKER_LOST = (RedisConnectionError, RedisTimeoutError, OperationalError, ConnectionError)
_FAILED = frozenset({"FAILURE", "REVOKED"})
_FINAL = _FAILED | {"SUCCESS"}


@dataclass
class ServiceRun:
    """One service's chain: the ids of its steps, in order, and what became of them."""

    ref: ServiceRef
    names: list[str]
    ids: list[str]
    #: The run of the signing CA this chain is linked behind, if that CA is in the run too.
    after: ServiceRun | None = None
    deploys: list[str] = field(default_factory=list)
    #: The chain's last walk result (a ``tasks.SegmentResult``), once the chain finished.
    #: Taken when the look that saw it succeed read it, so no second read is needed.
    walked: dict[str, Any] | None = None
    error: str | None = None
    done: bool = False
    #: Steps seen finished: steps finish in order, so only the next one needs a look.
    finished: int = 0

    @property
    def walk_failed(self) -> bool:
        """A step of the chain failed (not its fan-out, which comes once the walk is done)."""
        return self.error is not None and self.finished < len(self.ids)

    @property
    def current(self) -> str:
        """The name of the step running (or the final word)."""
        if self.after is not None and self.after.walk_failed and not self.finished:
            return "skipped"
        return self.names[self.finished] if self.finished < len(self.ids) else "done"


def task_states(app: Any, task_ids: Sequence[str]) -> list[tuple[str, Any]]:
    """State and result of each task, read straight from the result backend: one round trip
    for all of them on a key-value backend (Redis), one read each on another (``rpc://``).

    (AsyncResult objects would subscribe to result channels that are torn down noisily when the
    CLI exits; plain reads are all that following a chain needs.)
    """
    backend = app.backend
    if not task_ids:
        return []
    if isinstance(backend, BaseKeyValueStoreBackend):
        values = backend.mget([backend.get_key_for_task(task_id) for task_id in task_ids])
        metas = [
            backend.decode_result(value) if value else {"status": "PENDING", "result": None}
            for value in values
        ]
    else:
        metas = [backend.get_task_meta(task_id) for task_id in task_ids]
    return [(str(meta["status"]), meta.get("result")) for meta in metas]


def task_state(app: Any, task_id: str) -> tuple[str, Any]:
    """State and result of one task (see :func:`task_states`)."""
    return task_states(app, [task_id])[0]


def _advance(app: Any, runs: Sequence[ServiceRun]) -> None:
    """Move every run past the steps that finished since the last look, and note failures;
    a run whose signing CA failed is skipped. One backend read per round of steps."""
    for run in runs:
        if not run.done and run.after is not None and run.after.walk_failed and not run.finished:
            run.error = f"not started: signing CA {run.after.ref} failed"
            run.done = True
    looking = [run for run in runs if not run.done and run.finished < len(run.ids)]
    while looking:
        moved = []
        for run, (state, value) in zip(
            looking, task_states(app, [run.ids[run.finished] for run in looking]), strict=True
        ):
            if state == "SUCCESS":
                run.finished += 1
                if run.finished < len(run.ids):
                    moved.append(run)
                else:
                    _walked(run, value)
            elif state in _FAILED:
                run.error = f"{run.names[run.finished]}: {value}"
                run.done = True
        looking = moved


def _walked(run: ServiceRun, value: Any) -> None:
    """Take the last walk's result (a ``tasks.SegmentResult``, its fan-out's part included);
    a failed fan-out ends the run."""
    run.walked = value if isinstance(value, dict) else {}
    run.deploys = list(run.walked.get("deploys", []))
    if run.walked.get("fanout_error"):
        run.error = f"fan-out: {run.walked['fanout_error']}"
        run.done = True


def _finish(app: Any, runs: Sequence[ServiceRun]) -> None:
    """A run whose steps all succeeded is done once the deploys it sent are final."""
    complete = [run for run in runs if not run.done and run.finished == len(run.ids)]
    deploys = [d for run in complete for d in run.deploys]
    states = task_states(app, deploys)
    final = {d for d, (state, _) in zip(deploys, states, strict=True) if state in _FINAL}
    for run in complete:
        run.done = all(d in final for d in run.deploys)


def _assign_ids(steps: list[Signature]) -> list[str]:
    ids = []
    for step in steps:
        task_id = str(uuid.uuid4())
        step.set(task_id=task_id)
        ids.append(task_id)
    return ids


def enqueue(
    config: Config, refs: Sequence[ServiceRef], options: RunOptions, request: RunRequest
) -> list[ServiceRun]:
    """Send one chain per service (``refs`` in signing order), each its own small message; a
    service whose local CA is in the run starts once the CA's workflow walked (its first task
    waits for the CA's last walk, ``tasks.walk(after=...)``). Returns what to follow."""
    runs: dict[ServiceRef, ServiceRun] = {}
    for ref in refs:
        signer = signer_of(config, ref)
        parent = runs.get(signer) if signer is not None else None
        after = None if parent is None else parent.ids[-1]
        steps = service_steps(
            config, ref, options, renew=request.renew, roll=request.roll, after=after
        )
        names = [str(step.options["shadow"]).split(" ", 1)[0] for step in steps]
        run = ServiceRun(ref, names, _assign_ids(steps), after=parent)
        chain(*steps).apply_async()
        runs[ref] = run
    return list(runs.values())


def _line(run: ServiceRun) -> str:
    total = len(run.ids)
    filled = _BAR * run.finished // total
    word = "FAILED" if run.error else run.current
    return (
        f"  {run.ref!s:<40} [{'#' * filled}{'-' * (_BAR - filled)}] {run.finished}/{total} {word}"
    )


def wait(
    app: Any,
    runs: list[ServiceRun],
    *,
    timeout_s: float,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> bool:
    """Follow every chain (and the deploys it sent) to its end; False on timeout.

    On a terminal each service has a progress bar that is redrawn in place. A broker (or
    result backend) that goes away is said once, on ``err``, and followed again when it is
    back: the workers keep their work meanwhile.
    """
    live = out.isatty()
    deadline = time.monotonic() + timeout_s
    drawn = 0
    lost = False
    while True:
        try:
            _advance(app, runs)
            _finish(app, runs)
        except BROKER_LOST as problem:
            if not lost:
                print(f"lost the broker ({problem}); following again when it is back", file=err)
                lost = True
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
            continue
        if lost:
            print("the broker is back; following", file=err)
            lost = False
        lines = [_line(run) for run in runs]
        if live:
            if drawn:
                out.write(f"\x1b[{drawn}A")
            out.write("".join(f"\x1b[2K{line}\n" for line in lines))
            out.flush()
            drawn = len(lines)
        if all(run.done for run in runs):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)


def report(app: Any, runs: list[ServiceRun]) -> RunReport:
    """What the chains did, read from their typed results, as the in-process run reports it."""
    result = RunReport([])
    for run in runs:
        outcome = ServiceOutcome(run.ref)
        result.outcomes.append(outcome)
        if run.walked is not None:
            for line in run.walked.get("walk", {}).get("said", []):
                outcome.note(line)
            outcome.busy = bool(run.walked.get("busy"))
            outcome.changed = bool(run.walked.get("changed"))
        if run.error:
            outcome.fail(run.error)
        elif not run.done:
            outcome.fail("still running: gave up waiting")
        for deploy_id in run.deploys:
            state, value = task_state(app, deploy_id)
            if state == "SUCCESS" and isinstance(value, dict):
                result.deployed.append(f"Deployed {value.get('server')}: {value.get('detail')}")
            elif state in _FINAL:
                result.deploy_failures.append(str(value))
            else:
                result.deploy_failures.append(f"deploy {deploy_id}: gave up waiting")
    return result


def send_dns_refresh(apexes: list[str]) -> str:
    """Enqueue the DNS refresh of ``apexes``; returns its task id."""
    return str(dns_refresh_signature(apexes).apply_async().id)


def dns_refresh(app: Any, apexes: list[str], result: RunReport, *, timeout_s: float) -> None:
    """Refresh the zones through a worker and wait; the outcome goes into ``result``."""
    task_id = send_dns_refresh(apexes)
    deadline = time.monotonic() + timeout_s
    while (state := task_state(app, task_id))[0] not in _FINAL and time.monotonic() < deadline:
        time.sleep(POLL_S)
    status, value = state
    if status == "SUCCESS":
        result.dns_refreshed += apexes
    else:
        failed = value if status == "FAILURE" else "gave up waiting"
        result.deploy_failures.append(f"DNS refresh: {failed}")
