"""Tasks that exist for the integration tests only, kept out of the package.

A worker loads them with ``-I probe_tasks`` (``tests/integration`` on ``PYTHONPATH``); the
tests send them by name, so the test process never registers them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sslm_tasks.app import app


@app.task(  # type: ignore[untyped-decorator]
    name="sslm.test.hold", bind=True, acks_late=True, reject_on_worker_lost=True
)
def hold(self: Any, marker_dir: str, hold_s: float) -> str:
    """Record ``<worker>.started`` in ``marker_dir``, then run until ``release`` appears there
    (at most ``hold_s`` seconds): a task a test can kill its worker in the middle of.
    Idempotent, so ``acks_late`` is allowed: a second run only records a second start.
    """
    directory = Path(marker_dir)
    worker = str(self.request.hostname)
    (directory / f"{worker}.started").write_text(f"{time.time()}\n")
    deadline = time.monotonic() + hold_s
    while not (directory / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return worker


@app.task(name="sslm.deploy.test_probe", bind=True)  # type: ignore[untyped-decorator]
def deploy_probe(self: Any, *, site: str) -> str:
    """A deploy-shaped task (routed by its ``site``): answers with the worker's node name."""
    return str(self.request.hostname)
