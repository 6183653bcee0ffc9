"""Test-only: make one renew step of a worker slow, so a test can act in the middle of it.

Loaded into a worker with ``--include=slow_steps``. ``SLOW_STEP`` names the step
(``keygen``, ``sign``, ...), ``SLOW_S`` how long it sleeps before doing its work, and
``SLOW_MARKER`` a file touched when the step starts. Without ``SLOW_STEP`` it changes nothing.
Kept out of the package: production code has no test hooks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from sslm_tasks import tasks
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import ServiceRef

Step = Callable[[Workspace, ServiceRef], object]


def _slow(step: Step, marker: Path, seconds: float) -> Step:
    def slow_step(ws: Workspace, ref: ServiceRef) -> object:
        marker.write_text(f"{os.getpid()}\n")
        time.sleep(seconds)
        return step(ws, ref)

    return slow_step


_name = os.environ.get("SLOW_STEP")
if _name:
    _marker = Path(os.environ["SLOW_MARKER"])
    _seconds = float(os.environ.get("SLOW_S", "30"))
    tasks.RENEW_STEPS = tuple(  # the name the step tasks look their function up by
        (name, _slow(fn, _marker, _seconds) if name == _name else fn)
        for name, fn in tasks.RENEW_STEPS
    )
