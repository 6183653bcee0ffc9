"""``sslm-mgr -s --check``: the status as a monitoring plugin (the Nagios plugin convention,
which Icinga, Naemon, Checkmk and Zabbix run too).

Each selected service is judged on its own, the worst verdict wins (CRITICAL, then UNKNOWN,
then WARNING, then OK), and one line says it all, followed by one line per service that is not
OK (shown here on two lines)::

    SSLM CRITICAL - 5 services: 1 critical, 4 ok; example.com:mail-ec: deploy on smtp:mx1 ...
      | 'ca:my-root'=3649.9d;730:;7: 'example.com:mail-ec'=89.9d;30:;7: ...

A service is

- CRITICAL when it is ``failing`` (any step, deploy or verify, or a revoked ``curr`` that
  nothing replaces), or its ``curr`` has expired or
  expires within the critical days: ``--crit-days``, by default 7 days but never more than half
  the certificate's renew target (a 6-day certificate renews 3 days before it expires: it turns
  critical with 1.5 days left);
- WARNING when its ``curr`` was revoked and a ``next`` waits to replace it at its roll, when
  it is ``expiring`` (past its renew point with no new certificate), its ``curr``
  expires within ``--warn-days`` (not set by default: the renew point, which follows the
  certificate's lifetime, decides), or it has been ``pending`` for longer than
  ``--pending-hours`` (24): a ``next`` that should have rolled, a server that has not taken
  ``curr``, a service without any certificate that sslm has never worked on;
- UNKNOWN when its files cannot be read; the whole check is UNKNOWN when the configuration or
  the command line cannot be read.

The perfdata gives each certificate's days left, with the warning threshold (the renew target,
or ``--warn-days``) and the critical one, in the plugins' range syntax (``30:``: alert below 30).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sslm_tasks.lifecycle.status import ServiceStatus
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import ServiceRef

from . import status
from .check_options import CRITICAL, DEFAULT_CRIT_DAYS, DEFAULT_PENDING_HOURS, OK, UNKNOWN, WARNING
from .status import Unreadable, read_statuses

STATE_NAMES: Final = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
#: Worst first: an unreadable service could hide a critical one, but not outweigh one found.
_SEVERITY: Final = (CRITICAL, UNKNOWN, WARNING, OK)
#: Services named in the summary line; the rest are counted (every one has its own line).
_NAMED: Final = 3


@dataclass(frozen=True)
class Thresholds:
    """The limits of the check (see the module's documentation).

    Attributes:
      crit_days(float | None): None: 7 days, capped at half the renew target.
      warn_days(float | None): None: the renew point decides.
      pending_hours(float): how long a service may stay pending.
    """

    crit_days: float | None = None
    warn_days: float | None = None
    pending_hours: float = DEFAULT_PENDING_HOURS


@dataclass(frozen=True)
class Verdict:
    state: int
    #: Why, for a state other than OK.
    why: str = ""


def crit_days(status: ServiceStatus, limits: Thresholds) -> float:
    """Days left below which ``curr`` is critical."""
    if limits.crit_days is not None:
        return limits.crit_days
    target = status.renew.target_days
    return DEFAULT_CRIT_DAYS if target is None else min(DEFAULT_CRIT_DAYS, target / 2)


def warn_days(status: ServiceStatus, limits: Thresholds) -> float | None:
    """Days left below which ``curr`` warns: ``--warn-days``, else the renew target."""
    return limits.warn_days if limits.warn_days is not None else status.renew.target_days


def _days_left(status: ServiceStatus) -> float | None:
    curr = status.curr
    if curr is None:
        return None
    return (curr.not_after - status.read_at).total_seconds() / 86400


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _pending_why(status: ServiceStatus) -> str:
    if status.curr is None and status.next is None:
        return "no certificate yet"
    reasons = []
    if status.next is not None and status.roll_due is not None:
        reasons.append(f"next waits for its roll, due {_time(status.roll_due)}")
    if status.health.pending_servers:
        reasons.append(f"{', '.join(status.health.pending_servers)} lack curr")
    return "; ".join(reasons) or "work under way"


def judge(status: ServiceStatus, limits: Thresholds) -> Verdict:
    """The verdict on one service."""
    word = status.health.word
    left = _days_left(status)
    if word == "failing":
        first = status.health.problems[0]
        where = "" if first.where == str(status.ref) else f" on {first.where}"
        more = len(status.health.problems) - 1
        also = f" (and {more} more)" if more else ""
        # A revoked curr is not a step that failed: its reason says it all.
        what = "" if first.what == "revoked" else f"{first.what}{where} failing: "
        return Verdict(CRITICAL, f"{what}{first.reason}{also}")
    if left is not None and left <= 0:
        return Verdict(CRITICAL, f"curr expired {-left:.1f} days ago")
    if left is not None and left < crit_days(status, limits):
        return Verdict(CRITICAL, f"curr expires in {left:.1f} days")
    revoked = status.health.curr_revoked
    if revoked is not None:
        # Not failing: a next that was not revoked waits to replace it. Still served until
        # that roll, so it warns at once rather than after --pending-hours.
        roll = "" if status.roll_due is None else f", due {_time(status.roll_due)}"
        return Verdict(
            WARNING,
            f"curr was revoked for {revoked.reason}; next replaces it at its roll{roll}",
        )
    if word == "expiring":
        due = status.renew_at
        when = "" if due is None else f" (renew at {_time(due)})"
        return Verdict(WARNING, f"past its renew point{when} with no new certificate")
    if left is not None and limits.warn_days is not None and left < limits.warn_days:
        return Verdict(WARNING, f"curr expires in {left:.1f} days")
    if word == "pending":
        since = status.pending_since
        limit = timedelta(hours=limits.pending_hours)
        if since is None or status.read_at - since > limit:
            started = "" if since is None else f" since {_time(since)}"
            return Verdict(WARNING, f"pending{started}: {_pending_why(status)}")
    return Verdict(OK)


def _number(value: float) -> str:
    return f"{round(value, 1):g}"


def perfdata(status: ServiceStatus, limits: Thresholds) -> str | None:
    """``'group:service'=41.2d;30:;7:``: days left, warning and critical below; None without
    ``curr``."""
    left = _days_left(status)
    if left is None:
        return None
    label = str(status.ref).replace("'", "''")
    warn = warn_days(status, limits)
    warning = "" if warn is None else f"{_number(warn)}:"
    return f"'{label}'={left:.1f}d;{warning};{_number(crit_days(status, limits))}:"


def worst(states: Sequence[int]) -> int:
    return min(states, key=_SEVERITY.index, default=OK)


def check(ws: Workspace, refs: Sequence[ServiceRef], limits: Thresholds) -> tuple[int, list[str]]:
    """The plugin's exit status and its lines of output."""
    verdicts: list[tuple[str, Verdict]] = []
    performance: list[str] = []
    for found in read_statuses(ws, refs, details=False):
        if isinstance(found, Unreadable):
            verdicts.append((found.where, Verdict(UNKNOWN, f"unreadable: {found.message}")))
            continue
        verdicts.append((str(found.ref), judge(found, limits)))
        perf = perfdata(found, limits)
        if perf is not None:
            performance.append(perf)
    state = worst([verdict.state for _, verdict in verdicts])
    counts = Counter(verdict.state for _, verdict in verdicts)
    tally = ", ".join(
        f"{counts[each]} {STATE_NAMES[each].lower()}" for each in _SEVERITY if counts[each]
    )
    bad = sorted(
        ((name, v) for name, v in verdicts if v.state != OK),
        key=lambda item: _SEVERITY.index(item[1].state),
    )
    named = "; ".join(f"{name}: {verdict.why}" for name, verdict in bad[:_NAMED])
    if len(bad) > _NAMED:
        named += f"; and {len(bad) - _NAMED} more"
    text = f"{len(verdicts)} services" + (f": {tally}" if tally else "")
    summary = f"SSLM {STATE_NAMES[state]} - {text}" + (f"; {named}" if named else "")
    head = summary.replace("|", "/") + (" | " + " ".join(performance) if performance else "")
    details = [f"{STATE_NAMES[v.state]}: {name}: {v.why}".replace("|", "/") for name, v in bad]
    return state, [head, *details]


def run(ws: Workspace, refs: Sequence[ServiceRef], limits: Thresholds) -> int:
    state, lines = check(ws, refs, limits)
    print("\n".join(lines))
    return state


def thresholds(args: argparse.Namespace) -> Thresholds:
    return Thresholds(args.crit_days, args.warn_days, args.pending_hours)


def show(ws: Workspace, refs: Sequence[ServiceRef], args: argparse.Namespace) -> int:
    """``-s``: the status, or with ``--check`` the monitoring plugin's verdict."""
    if args.check:
        return run(ws, refs, thresholds(args))
    return status.show(ws, refs, as_json=args.json, verbose=args.verb)
