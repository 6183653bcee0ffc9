"""Test-only: make one step of a worker slow, so a test can act in the middle of it.

Loaded into a worker with ``--include=slow_steps``. ``SLOW_STEP`` names the step (``keygen``,
``sign``, ``acme_order``, ``roll``, ...), ``SLOW_S`` how long it sleeps, and ``SLOW_MARKER`` a file
touched when the sleep starts. The sleep comes before the step's work, or with ``SLOW_AFTER=1``
after it: a worker killed then has done the work (an ACME order created and recorded) but not
acknowledged the message. Without ``SLOW_STEP`` it changes nothing. Kept out of the package:
production code has no test hooks; this replaces the step in the pipeline's statement, which
every walk reads when it runs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from sslm_tasks.lifecycle import pipeline
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.pipeline import Stage, Step
from sslm_tasks.lifecycle.verdict import Verdict


def _slow(step: Step, marker: Path, seconds: float, *, after: bool) -> Step:
    def pause() -> None:
        marker.write_text(f"{os.getpid()}\n")
        time.sleep(seconds)

    def slow_run(ctx: ServiceContext) -> Verdict:
        if not after:
            pause()
        verdict = step.run(ctx)
        if after:
            pause()
        return verdict

    return dataclasses.replace(step, run=slow_run)


def _replaced(value: Any, name: str, slow: Step) -> Any:
    if isinstance(value, Step):
        return slow if value.name == name else value
    if isinstance(value, Stage):
        return Stage(value.name, tuple(_replaced(step, name, slow) for step in value.steps))
    if isinstance(value, tuple) and all(isinstance(item, Step) for item in value):
        return tuple(_replaced(step, name, slow) for step in value)
    return value


_name = os.environ.get("SLOW_STEP")
if _name:
    found = [
        step
        for value in vars(pipeline).values()
        for step in (
            value.steps
            if isinstance(value, Stage)
            else value
            if isinstance(value, tuple)
            else (value,)
        )
        if isinstance(step, Step) and step.name == _name
    ]
    if not found:
        raise SystemExit(f"slow_steps: no step {_name!r} in the pipeline")
    _slow_step = _slow(
        found[0],
        Path(os.environ["SLOW_MARKER"]),
        float(os.environ.get("SLOW_S", "30")),
        after=os.environ.get("SLOW_AFTER") == "1",
    )
    for attribute, value in list(vars(pipeline).items()):
        setattr(pipeline, attribute, _replaced(value, _name, _slow_step))
