"""Test-only: make a walk's fan-out fail, so a test can see what a failed fan-out leaves.

Loaded into a worker with ``--include=fanout_faults``. ``FANOUT_FAULT`` says how: ``transient``
fails the first fan-out as a Redis outage would (a ``TransientError``; the marker file
``FANOUT_MARKER`` is written then, and later fan-outs go through), ``permanent`` fails every
fan-out (a ``PermanentError``). Without ``FANOUT_FAULT`` it changes nothing. The fault is the
fan-out's choice of servers (``finish.targets``), which it calls after the zone refresh.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sslm_tasks.errors import PermanentError, TransientError
from sslm_tasks.lifecycle import finish

_fault = os.environ.get("FANOUT_FAULT")
_targets = finish.targets


def _failing_targets(*args: Any, **kwargs: Any) -> Any:
    if _fault == "permanent":
        raise PermanentError("choosing servers: the test says no")
    marker = Path(os.environ["FANOUT_MARKER"])
    if not marker.exists():
        marker.write_text(f"{os.getpid()}\n")
        raise TransientError("choosing servers: redis unreachable (the test's outage)")
    return _targets(*args, **kwargs)


if _fault:
    finish.targets = _failing_targets
