"""Making ``next`` the new ``curr``.

The roll waits ``min_roll_mins`` after the new certificate's notBefore so that DNS can publish
the new TLSA records beside the old ones first. A service that has no ``curr`` yet rolls at
once: nothing is served, so no cache can hold an old record.

Re-running a roll is safe at any point: the link flip itself is crash-safe
(:func:`~sslm_tasks.store.versions.roll_links`) and the ``info`` file is written into the
version before it becomes ``curr``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sslm_tasks.errors import StoreError
from sslm_tasks.lifecycle.build import load_version_cert
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store import layout as files
from sslm_tasks.store.atomic import write_atomic
from sslm_tasks.store.layout import ServiceRef
from sslm_tasks.store.state import Phase, load_state, save_state
from sslm_tasks.store.versions import STAMP_FORMAT, is_complete, read_link, roll_links


@dataclass(frozen=True)
class RollResult:
    rolled: bool
    reason: str
    stamp: str | None = None


def check_roll(ws: Workspace, ref: ServiceRef, *, force: bool) -> RollResult:
    """Whether ``next`` may become ``curr`` now; writes nothing."""
    layout = ws.layout
    pending = read_link(layout, ref, "next")
    if pending is None:
        return RollResult(False, "nothing to roll: no next")
    if not is_complete(layout, ref, pending):
        raise StoreError(f"{ref}: next {pending} is incomplete; run -renew to finish it")
    if read_link(layout, ref, "curr") in (None, pending) or force:
        return RollResult(True, "forced" if force else "no current certificate", pending)
    cert = load_version_cert(ws, ref, "next")
    if cert is None:
        raise StoreError(f"{ref}: next {pending} has no cert.pem")
    age_mins = (ws.clock() - cert.not_valid_before_utc).total_seconds() / 60
    if age_mins < ws.min_roll_mins:
        shown = max(1, int(age_mins))
        wanted = f"{ws.min_roll_mins:g}"
        return RollResult(False, f"too soon to roll: cert is {shown} mins old < {wanted} mins")
    return RollResult(True, f"okay to roll: cert is {int(age_mins)} mins old", pending)


def roll(ws: Workspace, ref: ServiceRef, *, force: bool = False) -> RollResult:
    """Roll ``next`` into ``curr`` when :func:`check_roll` allows it."""
    result = check_roll(ws, ref, force=force)
    if not result.rolled or result.stamp is None:
        return result
    layout = ws.layout
    info = f"# {ref.service} rolled to curr : {ws.clock().strftime(STAMP_FORMAT)}\n"
    write_atomic(
        layout.version_dir(ref, result.stamp) / files.INFO, info.encode(), mode=files.PUBLIC_MODE
    )
    roll_links(layout, ref)
    state = load_state(layout, ref)
    state.phase = Phase.ROLLED
    state.stamp = result.stamp
    state.roll_due = None
    state.last_error = None
    save_state(layout, ref, state, now=ws.clock())
    return result


def roll_first(ws: Workspace, ref: ServiceRef) -> RollResult:
    """Roll a service's first certificate at once; any other ``next`` waits for its roll."""
    if read_link(ws.layout, ref, "curr") is not None:
        return RollResult(False, "curr exists: next waits for the roll")
    return roll(ws, ref)
