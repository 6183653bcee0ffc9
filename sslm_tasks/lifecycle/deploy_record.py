"""The last deploy and verify result of every server, for ``sslm-mgr -s``.

One small JSON file in the tree, ``certs/.deploys.json``, keyed ``<class>:<host>``: written
after each server's deploy (in-process or by a deploy worker, under a lock so two workers do not
lose each other's entries), read by the status. It holds outcomes only, never key material.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sslm_tasks.deploy.targets import DeployTarget
from sslm_tasks.errors import StoreError
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.atomic import write_atomic
from sslm_tasks.store.layout import PUBLIC_MODE

#: Longest detail kept per server: enough for the reason, short enough for a status line.
_DETAIL_KEPT = 300


@dataclass(frozen=True)
class DeployOutcome:
    at: str
    ok: bool
    detail: str


def _path(ws: Workspace) -> Path:
    return ws.layout.certs_dir / ".deploys.json"


def read_outcomes(ws: Workspace) -> dict[str, DeployOutcome]:
    """``<class>:<host>`` → last outcome; empty when nothing was deployed yet."""
    path = _path(ws)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {key: DeployOutcome(**value) for key, value in raw.items()}
    except (ValueError, TypeError) as err:
        raise StoreError(f"{path}: unreadable deploy record: {err}") from err


def record_outcome(ws: Workspace, target: DeployTarget, *, ok: bool, detail: str) -> None:
    """Remember how the deploy of ``target`` ended (now, by ``ws.clock``)."""
    with ws.lock("deploy-record"):
        outcomes = read_outcomes(ws)
        outcome = DeployOutcome(ws.clock().isoformat(), ok, detail[-_DETAIL_KEPT:])
        outcomes[f"{target.server_class}:{target.host}"] = outcome
        text = json.dumps({key: asdict(value) for key, value in sorted(outcomes.items())}, indent=1)
        write_atomic(_path(ws), text.encode(), mode=PUBLIC_MODE)
