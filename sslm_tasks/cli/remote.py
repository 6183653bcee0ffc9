"""``sslm-mgr`` with a broker: enqueue the same workflows, then (by default) wait and show progress.

Each selected service gets its own chain (see :func:`sslm_tasks.workflows.service_steps`), so a
failure stays with its service. Every step's task id is chosen here before sending, which lets
this process follow each chain step by step with plain result look-ups: no task waits on
another, and nothing but task states crosses the broker.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from celery import Signature, chain  # type: ignore[import-untyped]
from celery.result import AsyncResult  # type: ignore[import-untyped]

from sslm_tasks.lifecycle.workspace import RunOptions
from sslm_tasks.store.layout import ServiceRef
from sslm_tasks.workflows import RunRequest, service_steps

EXIT_OK, EXIT_FAILED, EXIT_BUSY = 0, 1, 3
#: Seconds between two looks at the task states while waiting.
POLL_S = 0.2
_BAR = 20


@dataclass
class ServiceRun:
    """One service's chain: the ids of its steps, in order, and what became of them."""

    ref: ServiceRef
    names: list[str]
    ids: list[str]
    deploys: list[str] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    error: str | None = None
    done: bool = False

    def progress(self, app: Any) -> tuple[int, str]:
        """Steps finished, and the name of the one running (or the final word)."""
        finished = 0
        for name, task_id in zip(self.names, self.ids, strict=True):
            result = AsyncResult(task_id, app=app)
            if result.state == "SUCCESS":
                finished += 1
                continue
            if result.state in ("FAILURE", "REVOKED"):
                self.error = f"{name}: {result.result}"
                self.done = True
            return finished, name
        return finished, "done"


def _assign_ids(steps: list[Signature]) -> list[str]:
    ids = []
    for step in steps:
        task_id = str(uuid.uuid4())
        step.set(task_id=task_id)
        ids.append(task_id)
    return ids


def enqueue(
    refs: Sequence[ServiceRef], options: RunOptions, request: RunRequest
) -> list[ServiceRun]:
    runs = []
    for ref in refs:
        steps = service_steps(ref, options, request)
        ids = _assign_ids(steps)
        chain(*steps).apply_async()
        runs.append(ServiceRun(ref, [step.task.rsplit(".", 1)[-1] for step in steps], ids))
    return runs


def _line(run: ServiceRun, finished: int, current: str) -> str:
    total = len(run.ids)
    filled = _BAR * finished // total
    word = "FAILED" if run.error else current
    return f"  {run.ref!s:<40} [{'#' * filled}{'-' * (_BAR - filled)}] {finished}/{total} {word}"


def wait(app: Any, runs: list[ServiceRun], *, timeout_s: float, out: TextIO = sys.stdout) -> bool:
    """Follow every chain (and the deploys it sent) to its end; False on timeout.

    On a terminal each service has a progress bar that is redrawn in place.
    """
    live = out.isatty()
    deadline = time.monotonic() + timeout_s
    drawn = 0
    while True:
        lines = []
        for run in runs:
            finished, current = run.progress(app)
            if finished == len(run.ids) and not run.done:
                run.results = [AsyncResult(i, app=app).result for i in run.ids]
                run.deploys = [
                    d for r in run.results if isinstance(r, dict) for d in r.get("deploys", [])
                ]
                run.done = all(AsyncResult(d, app=app).ready() for d in run.deploys)
            lines.append(_line(run, finished, current))
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


def summary(app: Any, runs: list[ServiceRun]) -> tuple[str, int]:
    """The report and the exit status: 1 if any service or deploy failed, 3 if one was busy."""
    lines: list[str] = []
    failed = busy = False
    for run in runs:
        lines.append(f"{run.ref}")
        if run.error:
            failed = True
            lines.append(f"            ↪ FAILED: {run.error}")
        for result in run.results:
            if isinstance(result, dict) and result.get("reason"):
                busy |= bool(result.get("busy"))
                lines.append(f"            ↪ {result['reason']}")
        for deploy_id in run.deploys:
            result = AsyncResult(deploy_id, app=app)
            if result.state == "SUCCESS":
                value = result.result
                ran = value.get("ran") or "nothing to run"
                lines.append(f"            ↪ deployed {value.get('host')}: {ran}")
            else:
                failed = True
                lines.append(f"            ↪ deploy FAILED: {result.result}")
        if not run.done and not run.error:
            failed = True
            lines.append("            ↪ still running: gave up waiting")
    code = EXIT_FAILED if failed else EXIT_BUSY if busy else EXIT_OK
    return "\n".join(lines), code
