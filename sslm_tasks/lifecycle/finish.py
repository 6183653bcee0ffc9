"""The end of the lifecycle, for whatever changed: DNS refresh → deploy to each server → verify
→ retire the old TLSA records → DNS refresh.

In-process it runs once per run, for every service that changed; on workers each deploy is a
task on its server's site queue, and the retirement follows each server's deploy. Both call
these functions, in this order.

The old TLSA records of a service that rolled go once every server that uses it has taken the
new ``curr`` (:func:`sslm_tasks.lifecycle.deployment.lacking`), not when "the deploys" of one
run or one task ended: a server that failed keeps the old records of the services it uses
published, and only those.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from typing import Final

from sslm_tasks.commands import DEFAULT_TIMEOUT_S
from sslm_tasks.deploy.server import post_copy
from sslm_tasks.deploy.targets import DeployTarget, deploy_targets, unattached_post_copies
from sslm_tasks.errors import SslmError
from sslm_tasks.lifecycle import dane, production
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.deploying import deploy_to
from sslm_tasks.lifecycle.deployment import ServerOutcome, lacking, read_ledger, server_key
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.logs import trace
from sslm_tasks.store.layout import ServiceRef

log = logging.getLogger("sslm")

#: How long the in-process run waits for the primary to serve a refreshed zone, so that the
#: deploys' DANE checks that follow see the new records.
DNS_PUBLISH_WAIT_S: Final = 10.0


def refresh_dns(
    ws: Workspace, groups: Iterable[str], *, everything: bool = False, wait_s: float = 0.0
) -> list[str]:
    """One DNS refresh for every zone with a change since its last refresh (and with
    ``everything``, every zone among ``groups``: ``-dns``); returns the zones refreshed.

    Raises:
      SslmError: the refresh failed; its zones stay pending for the next one.
    """
    zones = dane.refresh_pending(ws, groups, everything=everything, wait_s=wait_s)
    for zone in zones:
        trace("dns_refresh", zone, field="zone")
    return zones


def targets(
    ws: Workspace,
    changed: Sequence[ServiceRef],
    *,
    force: bool = False,
    everyone: bool = False,
    retry: Collection[str] = (),
) -> list[DeployTarget]:
    """The servers to deploy to: with a change, ``force`` (``dev -fsr``) or ``everyone``
    (``dev -certs-prod``), every server, restarting those whose class the change concerns (all
    with ``force``); and the servers of ``retry`` (``<class>:<host>`` whose last deploy failed
    and is due again), restarting them as their failed deploy should have.
    """
    every = deploy_targets(ws.config.main, changed, ["cert"] if changed else [], force=force)
    if changed or force or everyone:
        chosen = every
    else:
        chosen = [t for t in every if server_key(t.server_class, t.host) in retry]
    return [
        replace(target, restart=target.restart or _restarts(ws, target))
        if server_key(target.server_class, target.host) in retry
        else target
        for target in chosen
    ]


def _restarts(ws: Workspace, target: DeployTarget) -> bool:
    section = getattr(ws.config.main, target.server_class, None)
    return section is not None and bool(section.restart_cmd)


def deploy(
    ws: Workspace,
    target: DeployTarget,
    changed: Sequence[ServiceRef],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ServerOutcome:
    """Deploy to one server and verify what it serves (see ``deploying.deploy_to``)."""
    outcome = deploy_to(ws, target, changed, timeout_s=timeout_s)
    if outcome.ok:
        log.info("[%s] %s: %s", target.server_class, target.host, outcome.detail)
    else:
        log.warning("[%s] %s: deploy FAILED: %s", target.server_class, target.host, outcome.detail)
    return outcome


def post_copies(ws: Workspace, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """The ``post_copy_cmd`` entries of hosts that are no server; one line per failure."""
    failures = []
    for host, command in unattached_post_copies(ws.config.main):
        try:
            post_copy(host, command, timeout_s=timeout_s)
        except SslmError as err:
            failures.append(f"post_copy_cmd {host}: {err}")
    return failures


def retire(ws: Workspace, refs: Iterable[ServiceRef]) -> list[str]:
    """Drop the old TLSA records of each of ``refs`` whose servers all hold its new ``curr``
    and whose DNS gate lets them go (``dane.retire_gate``: no cache may still hold an RRset
    without the new key); returns the zones whose TLSA file changed (a refresh is then pending
    for them).

    Idempotent: a service with nothing to retire, with a server still lacking its ``curr``, or
    whose gate is closed (or could not ask DNS: it is tried again later) is left as it is.
    """
    ledger = read_ledger(ws)
    groups: set[str] = set()
    for ref in refs:
        ctx = ServiceContext(ws, ref)
        if not ctx.record.dane.retire_prev:
            continue
        missing = lacking(ctx, ledger)
        if missing:
            log.info("%s: old TLSA records stay until %s take the new certificate", ref, missing)
            continue
        try:
            gate = dane.retire_gate(ctx)
        except SslmError as err:
            log.warning("%s: old TLSA records stay: %s", ref, err)
            continue
        if not gate.open:
            log.info("%s: old TLSA records stay: %s", ref, gate.reason)
            continue
        retired = ctx.record.dane
        retired.retire_prev, retired.retire_after, retired.retire_ttl = False, None, None
        ctx.save()
        trace("retire_tlsa", str(ref))
        groups.add(ref.group)
    changed = sorted(group for group in groups if dane.publish_group(ws, group))
    for group in changed:
        production.sync_group_tlsa(ws, group)
    return changed
