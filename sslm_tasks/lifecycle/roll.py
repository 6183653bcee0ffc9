"""Making ``next`` the new ``curr``.

The roll waits ``min_roll_mins`` (as set when the roll is tried, or the ``-roll-mins`` given to the
renew or to the roll) after the new certificate's notBefore so that DNS can publish the new TLSA
records beside the old ones first. A service that has no ``curr`` yet rolls at
once: nothing is served, so no cache can hold an old record.

Re-running a roll is safe at any point: the link flip itself is crash-safe
(:func:`~sslm_tasks.store.versions.roll_links`) and the ``info`` file is written into the
version before it becomes ``curr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sslm_tasks.errors import StoreError
from sslm_tasks.lifecycle import dane
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.current import load_version_cert, roll_wait_mins
from sslm_tasks.lifecycle.record import Phase
from sslm_tasks.store import layout as files
from sslm_tasks.store.atomic import write_atomic
from sslm_tasks.store.versions import STAMP_FORMAT, is_complete, roll_links


@dataclass(frozen=True)
class RollResult:
    rolled: bool
    reason: str
    stamp: str | None = None


def check_roll(ctx: ServiceContext, *, force: bool) -> RollResult:
    """Whether ``next`` may become ``curr`` now; writes nothing but the DANE gate's sighting."""
    layout, ref = ctx.layout, ctx.ref
    pending = ctx.link("next")
    if pending is None:
        return RollResult(False, "nothing to roll: no next")
    if not is_complete(layout, ref, pending):
        raise StoreError(f"{ref}: next {pending} is incomplete; build a new one with -f -renew")
    curr = ctx.link("curr")
    if curr == pending:
        return RollResult(True, "finishing an interrupted roll", pending)
    if curr is None or force:
        return RollResult(True, "forced" if force else "no current certificate", pending)
    cert = load_version_cert(ctx, "next")
    if cert is None:
        raise StoreError(f"{ref}: next {pending} has no cert.pem")
    age_mins = (ctx.now() - cert.not_valid_before_utc).total_seconds() / 60
    wait_mins = roll_wait_mins(ctx, cert.not_valid_before_utc)
    if age_mins < wait_mins:
        age, wait = age_and_wait(age_mins, wait_mins)
        return RollResult(False, f"too soon to roll: cert is {age} old < {wait}")
    gate = dane.roll_gate(ctx)
    if not gate.open:
        return RollResult(False, f"not rolling yet: {gate.reason}")
    age, _ = age_and_wait(age_mins, wait_mins)
    return RollResult(True, f"okay to roll: cert is {age} old; {gate.reason}", pending)


def age_and_wait(age_mins: float, wait_mins: float) -> tuple[str, str]:
    """The age of ``next`` and the wait it must reach, in words: in seconds when the wait is
    under a minute, else in minutes; the age rounded down and the wait up, so the words never
    say "1 min < 1 min" (upstream printed "cert is 1 mins old < 0.1 mins")."""
    if wait_mins < 1:
        return f"{math.floor(age_mins * 60)} s", f"{math.ceil(wait_mins * 60)} s"
    age, wait = math.floor(age_mins), math.ceil(wait_mins)
    return _minutes(age), _minutes(wait)


def _minutes(count: int) -> str:
    return f"{count} min" if count == 1 else f"{count} mins"


def roll(ctx: ServiceContext, *, force: bool = False) -> RollResult:
    """Roll ``next`` into ``curr`` when :func:`check_roll` allows it."""
    result = check_roll(ctx, force=force)
    if result.rolled and result.stamp is not None:
        flip(ctx)
    return result


def flip(ctx: ServiceContext) -> str:
    """Make ``next`` the new ``curr``, once :func:`check_roll` allowed it; returns its stamp.

    Idempotent, and safe at any point of a crash: the ``info`` file is written into the
    version before it becomes ``curr``, and the link steps are ordered (``roll_links``).

    Raises:
      StoreError: there is no ``next`` to roll, or it is incomplete.
    """
    layout, ref = ctx.layout, ctx.ref
    pending = ctx.link("next")
    if pending is None:
        raise StoreError(f"{ref}: nothing to roll: no next")
    info = f"# {ref.service} rolled to curr : {ctx.now().strftime(STAMP_FORMAT)}\n"
    # Its directory is synced by roll_links, before the version becomes curr.
    write_atomic(
        layout.version_dir(ref, pending) / files.INFO,
        info.encode(),
        mode=files.PUBLIC_MODE,
        sync_dir=False,
    )
    roll_links(layout, ref)
    record = ctx.record
    dane.rolled(ctx)
    record.phase = Phase.ROLLED
    record.stamp = pending
    record.roll_due = None
    record.last_error = None
    ctx.save()
    return pending
