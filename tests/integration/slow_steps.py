"""Test-only: make one renew or ACME step of a worker slow, so a test can act in the middle of it.

Loaded into a worker with ``--include=slow_steps``. ``SLOW_STEP`` names the step (``keygen``,
``sign``, ``acme_order``, ...), ``SLOW_S`` how long it sleeps, and ``SLOW_MARKER`` a file touched
when the sleep starts. The sleep comes before the step's work, or with ``SLOW_AFTER=1`` after it:
a worker killed then has done the work (an ACME order created and recorded) but not acknowledged
the message. Without ``SLOW_STEP`` it changes nothing. Kept out of the package: production code
has no test hooks.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sslm_tasks import tasks
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import ServiceRef

R = TypeVar("R")


def _slow(
    step: Callable[[Workspace, ServiceRef], R], marker: Path, seconds: float, *, after: bool
) -> Callable[[Workspace, ServiceRef], R]:
    def pause() -> None:
        marker.write_text(f"{os.getpid()}\n")
        time.sleep(seconds)

    def slow_step(ws: Workspace, ref: ServiceRef) -> R:
        if not after:
            pause()
        result = step(ws, ref)
        if after:
            pause()
        return result

    return slow_step


_name = os.environ.get("SLOW_STEP")
if _name:
    _marker = Path(os.environ["SLOW_MARKER"])
    _seconds = float(os.environ.get("SLOW_S", "30"))
    _after = os.environ.get("SLOW_AFTER") == "1"
    # The names the step tasks look their functions up by, when they run.
    tasks.RENEW_STEPS = tuple(
        (name, _slow(fn, _marker, _seconds, after=_after) if name == _name else fn)
        for name, fn in tasks.RENEW_STEPS
    )
    tasks.ACME_SIGN_STEPS = tuple(
        dataclasses.replace(
            step,
            run=step.run and _slow(step.run, _marker, _seconds, after=_after),
            ready=step.ready and _slow(step.ready, _marker, _seconds, after=_after),
        )
        if step.name == _name
        else step
        for step in tasks.ACME_SIGN_STEPS
    )
