"""The deploy ledger: each server's last outcome, and which servers still lack a service's
``curr``. Deploying to one server is :mod:`sslm_tasks.lifecycle.deploying`'s: apart, so that
what only reads the ledger (``sslm-mgr -s``) imports no ssh transport, TLS probe or settings.

A deploy brings one server up to date: its copy of the production tree, its ``post_copy_cmd``
commands, its restart commands when the change concerns its class, then its ``verify`` probes
(:mod:`sslm_tasks.deploy.verify`): does it serve the ``curr`` of a service it uses, and does that
match the TLSA records the zone's primary serves now?

The ledger, ``certs/.deploys.json``, holds the last outcome of every server, keyed
``<class>:<host>``, with the time its copy began. It is one entry per server, not per service,
because one copy carries every service of the tree: with 50 servers and 10,000 services a deploy
round writes 50 entries, not 500,000. A service's view is derived: a server that uses it holds
its ``curr`` once a deploy that began after production got that ``curr``
(``ServiceRecord.prod_since``) succeeded. That is what the old TLSA records wait for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sslm_tasks.acme.timing import retry_time_after_failure
from sslm_tasks.config.models import MainConfig
from sslm_tasks.deploy.targets import depends_on
from sslm_tasks.errors import SslmError, StoreError
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.atomic import write_atomic
from sslm_tasks.store.layout import PUBLIC_MODE, ServiceRef

#: Longest detail kept per server: enough for the reason, short enough for a status line.
DETAIL_KEPT: Final = 300
_LEDGER: Final = ".deploys.json"


@dataclass(frozen=True)
class ServerOutcome:
    """How the last deploy of one server ended.

    Attributes:
      started(datetime | None): when its copy began (None in an entry of the first release,
        which did not say: such a deploy carries nothing newer).
      at(datetime): when it ended.
      ok(bool): copy, commands and every probe succeeded.
      detail(str): what ran, or what failed.
      failures(int): failed deploys in a row (0 after a success).
      retry_at(datetime | None): after a failure, when it is tried again (1 min, 10 min,
        100 min, then daily), whether or not anything changes meanwhile.
      failed_step(str | None): after a failure, ``deploy`` (the copy or a command) or
        ``verify`` (a probe); None after a success, and in entries of releases that did not
        say.
    """

    started: datetime | None
    at: datetime
    ok: bool
    detail: str
    failures: int = 0
    retry_at: datetime | None = None
    failed_step: str | None = None
    #: The error that failed it, for the caller to raise; never stored.
    error: SslmError | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        started = None if self.started is None else self.started.astimezone(UTC).isoformat()
        return {
            "started": started,
            "at": self.at.astimezone(UTC).isoformat(),
            "ok": self.ok,
            "detail": self.detail,
            "failures": self.failures,
            "retry_at": None
            if self.retry_at is None
            else self.retry_at.astimezone(UTC).isoformat(),
            "failed_step": self.failed_step,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ServerOutcome:
        started, retry_at = raw.get("started"), raw.get("retry_at")
        return cls(
            started=None if started is None else datetime.fromisoformat(str(started)),
            at=datetime.fromisoformat(str(raw["at"])),
            ok=bool(raw["ok"]),
            detail=str(raw.get("detail", "")),
            failures=int(raw.get("failures", 0 if raw["ok"] else 1)),
            retry_at=None if retry_at is None else datetime.fromisoformat(str(retry_at)),
            failed_step=None if raw.get("failed_step") is None else str(raw["failed_step"]),
        )


def server_key(server_class: str, host: str) -> str:
    return f"{server_class}:{host}"


def _ledger_path(ws: Workspace) -> Path:
    return ws.layout.certs_dir / _LEDGER


def read_ledger(ws: Workspace) -> dict[str, ServerOutcome]:
    """``<class>:<host>`` → last outcome; empty when nothing was deployed yet.

    Raises:
      StoreError: the ledger is unreadable.
    """
    path = _ledger_path(ws)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {str(key): ServerOutcome.from_json(value) for key, value in raw.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise StoreError(f"{path}: unreadable deploy record: {err}") from err


def record_outcome(ws: Workspace, key: str, outcome: ServerOutcome) -> ServerOutcome:
    """Remember ``outcome`` for server ``key`` and return it; a failure counts onto the
    failures in a row the ledger holds, and gets its retry time from that count.

    Under a lock, reading included: deploy workers, and the threads of each, write at once,
    and two deploys of one server (a change noted while the first ran) must not both count
    from the same entry.
    """
    with ws.lock("deploy-record"):
        ledger = read_ledger(ws)
        if not outcome.ok:
            before = ledger.get(key)
            failures = (before.failures if before is not None else 0) + 1
            retry_at = retry_time_after_failure(failures, now=outcome.at)
            outcome = replace(outcome, failures=failures, retry_at=retry_at)
        ledger[key] = outcome
        text = json.dumps({k: v.to_json() for k, v in sorted(ledger.items())}, indent=1)
        write_atomic(_ledger_path(ws), text.encode(), mode=PUBLIC_MODE)
    return outcome


# --------------------------------------------------------------------------- a service's view


def servers_using(main: MainConfig, ref: ServiceRef) -> list[str]:
    """``<class>:<host>`` of every server whose class uses ``ref``'s certificate."""
    return [
        server_key(name, host)
        for name, section in main.server_sections()
        if depends_on(section, [ref], ["cert"])
        for host in section.servers
    ]


def due_retries(ws: Workspace, ledger: dict[str, ServerOutcome] | None = None) -> list[str]:
    """The servers whose last deploy failed and whose retry time has come."""
    ledger = read_ledger(ws) if ledger is None else ledger
    now = ws.clock()
    return sorted(
        key
        for key, outcome in ledger.items()
        if not outcome.ok and (outcome.retry_at is None or outcome.retry_at <= now)
    )


def lacking(
    ctx: ServiceContext,
    ledger: dict[str, ServerOutcome] | None = None,
    servers: list[str] | None = None,
) -> list[str]:
    """The servers that use the service but have not taken its ``curr`` yet: no successful
    deploy that began after production got it. ``servers``: :func:`servers_using`'s answer,
    when the caller has it already."""
    since = ctx.record.prod_since
    ledger = read_ledger(ctx.ws) if ledger is None else ledger
    missing = []
    for key in servers_using(ctx.ws.config.main, ctx.ref) if servers is None else servers:
        outcome = ledger.get(key)
        carried = (
            outcome is not None
            and outcome.ok
            and outcome.started is not None
            and (since is None or outcome.started >= since)
        )
        if not carried:
            missing.append(key)
    return missing
