"""A service's health in one word, and why: what ``-s``, the monitoring check, the metrics and
the notifications all say, read from the same records.

- ``failing``: something is failing now: a build, a roll, the production copy, a DNS
  publication (the service's record), or the deploy or verify of a server that uses it (the
  deploy ledger); or ``curr`` was revoked (``sslm-mgr revoke``, any reason) and no ``next``
  that was not revoked waits to replace it: clients that check revocation refuse what the
  servers still present (problem ``revoked``);
- ``expiring``: ``curr`` is past its renew point and no new version is waiting;
- ``pending``: work is under way: no certificate yet, a ``next`` waiting for its roll (also
  one that replaces a revoked ``curr``: :attr:`Health.curr_revoked` says so), a server that
  has not taken ``curr`` yet;
- ``ok``: none of these.

Reading only: nothing here changes a file or asks the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.current import DatesLoader, load_version_cert, renew_decision
from sslm_tasks.lifecycle.deployment import ServerOutcome, lacking, servers_using
from sslm_tasks.lifecycle.record import Revocation
from sslm_tasks.renewal import MiddleOfSpread, RenewDecision

Word = Literal["ok", "pending", "failing", "expiring"]
#: The words from best to worst; a set of services is as healthy as its worst.
ORDER: Final[tuple[Word, ...]] = ("ok", "pending", "expiring", "failing")
#: The renew rule's draw at the renew target, shared by every look: a new ``random.Random``
#: seeds itself from the OS (tens of µs), and every status, metric and notice looks at it.
AT_TARGET: Final = MiddleOfSpread()


@dataclass(frozen=True)
class Problem:
    """One current failure: what (``build``, ``roll``, ``deploy``, ...), where (the service, or
    a server ``<class>:<host>``), since when, how many attempts, why, and the next try."""

    what: str
    where: str
    since: datetime | None
    attempts: int
    reason: str
    retry_at: datetime | None


@dataclass(frozen=True)
class Health:
    word: Word
    problems: list[Problem] = field(default_factory=list)
    #: Servers that use the service and have not taken its ``curr`` yet.
    pending_servers: list[str] = field(default_factory=list)
    #: When ``curr`` expires; None without one.
    expires: datetime | None = None
    #: Days until then (negative once expired).
    days_left: float | None = None
    #: ``curr``'s revocation, when it was revoked and is still ``curr``.
    curr_revoked: Revocation | None = None


def worst(words: list[Word]) -> Word:
    return max(words, key=ORDER.index, default="ok")


def health(
    ctx: ServiceContext,
    ledger: dict[str, ServerOutcome],
    *,
    load: DatesLoader = load_version_cert,
    servers: list[str] | None = None,
    renew: RenewDecision | None = None,
) -> Health:
    """The service's health now (by ``ctx``'s clock), from its record and the deploy ledger;
    ``load`` reads ``curr``'s certificate (from the store unless told otherwise).

    A status that has them already passes ``servers`` (:func:`servers_using`) and ``renew``
    (the renew rule judged at the renew target, as here): at thousands of services, working
    them out twice is a visible part of ``-s``.
    """
    record = ctx.record
    problems = [
        Problem(kind, str(ctx.ref), f.since, f.attempts, f.reason, f.retry_at)
        for kind, f in sorted(record.failures.items())
    ]
    if servers is None:
        servers = servers_using(ctx.ws.config.main, ctx.ref)
    for key in servers:
        outcome = ledger.get(key)
        if outcome is not None and not outcome.ok:
            since = outcome.started or outcome.at
            what = outcome.failed_step or "deploy"
            problems.append(
                Problem(what, key, since, outcome.failures, outcome.detail, outcome.retry_at)
            )
    curr_stamp = ctx.link("curr")
    pending = lacking(ctx, ledger, servers) if curr_stamp else []
    curr = load(ctx, "curr")
    expires = None if curr is None else curr.not_valid_after_utc
    now = ctx.now()
    days_left = None if expires is None else (expires - now).total_seconds() / 86400
    next_stamp = ctx.link("next")
    waiting = next_stamp is not None
    revoked = record.revoked(curr_stamp)
    if revoked is not None and (next_stamp is None or record.revoked(next_stamp) is not None):
        # Still served, refused by every client that checks the CRL or OCSP, and nothing
        # queued to replace it: as bad as a failed deploy (see docs/decisions.md).
        problems.append(
            Problem("revoked", str(ctx.ref), revoked.at, 0, _revoked_reason(ctx, revoked), None)
        )
    # Judged at the renew target: a run's own draw would flip the verdict between looks.
    if renew is None and curr is not None:
        renew = renew_decision(ctx, load=load, rng=AT_TARGET)
    overdue = curr is not None and renew is not None and renew.due
    word: Word
    if problems:
        word = "failing"
    elif overdue and not waiting:
        word = "expiring"
    elif curr is None or waiting or pending:
        word = "pending"
    else:
        word = "ok"
    return Health(word, problems, pending, expires, days_left, revoked)


def _revoked_reason(ctx: ServiceContext, revoked: Revocation) -> str:
    """Why a revoked ``curr`` is a problem, and what replaces it (or how to replace it)."""
    said = (
        f"curr {revoked.stamp} (serial {revoked.serial}) was revoked for {revoked.reason} "
        f"({revoked.by}) and is still in use: clients that check revocation refuse it"
    )
    if revoked.reason == "keyCompromise":
        # The renew check builds a new key for it by itself (build.compromised).
        return f"{said}; the next renew check builds a new key"
    return f"{said}; renew it (sslm-mgr -renew -f {ctx.ref}) or remove the service"
