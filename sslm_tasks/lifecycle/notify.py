"""Notifications: a message when a service starts failing, when it recovers, while it stays
failing (a reminder every ``remind_hours``), and when it is expiring; through apprise (mail,
webhooks, Matrix, Slack, ntfy, ...), configured in ``[notify]``.

What to say follows from the service's health (:mod:`sslm_tasks.lifecycle.health`) and the
health last announced, which the service's record keeps (``notified``): one message per
change, whoever looks. The in-process run looks at the end of each run, under the run lock;
on workers beat's roll scan looks every minute, one scan at a time. A message that cannot be
sent (the target down or refusing) is logged and leaves the record as it was, so the next look
sends it again; it never fails or holds up certificate work (apprise's own timeouts bound
each attempt).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from sslm_tasks.config.models import NotifySection
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.deployment import ServerOutcome
from sslm_tasks.lifecycle.health import Health, Word, health
from sslm_tasks.lifecycle.record import Notified
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import ServiceRef

log = logging.getLogger("sslm")

#: Healths worth a message; the others are quiet (a recovery is announced when one of these
#: ends).
_LOUD: frozenset[Word] = frozenset({"failing", "expiring"})


@dataclass(frozen=True)
class Message:
    """One notification: its kind (``failure``, ``recovery``, ``expiring``), title and body."""

    kind: str
    title: str
    body: str


#: Sends one message to every URL; True when every target took it.
Sender = Callable[[list[str], Message], bool]


def send_with_apprise(urls: list[str], message: Message) -> bool:
    # apprise takes half a second to import: only runs that have something to say pay for it.
    import apprise

    targets = apprise.Apprise()
    for url in urls:
        targets.add(url)
    kind = {
        "failure": apprise.NotifyType.FAILURE,
        "recovery": apprise.NotifyType.SUCCESS,
        "expiring": apprise.NotifyType.WARNING,
    }[message.kind]
    return bool(targets.notify(title=message.title, body=message.body, notify_type=kind))


def _describe(ref: ServiceRef, now: Health) -> str:
    lines = [f"{ref} is {now.word}."]
    for problem in now.problems:
        where = "" if problem.where == str(ref) else f" on {problem.where}"
        since = "" if problem.since is None else f" since {problem.since:%Y-%m-%d %H:%M} UTC"
        retry = "" if problem.retry_at is None else f"; next try {problem.retry_at:%H:%M} UTC"
        if problem.what == "revoked":
            # A state, not a step that failed: no attempts to count.
            lines.append(f"- revoked{since}: {problem.reason}")
            continue
        lines.append(
            f"- {problem.what}{where} failing{since} ({problem.attempts} attempts): "
            f"{problem.reason}{retry}"
        )
    if now.expires is not None:
        lines.append(f"curr expires {now.expires:%Y-%m-%d %H:%M} UTC ({now.days_left:.1f} days).")
    return "\n".join(lines)


def announce(
    ws: Workspace,
    refs: Iterable[ServiceRef],
    ledger: dict[str, ServerOutcome],
    *,
    send: Sender = send_with_apprise,
) -> list[Message]:
    """Send what the health of each of ``refs`` calls for; returns the messages sent.

    Never raises for a target that is down or refuses: that is logged, and the message goes
    again with the next look.
    """
    section: NotifySection | None = ws.config.main.notify
    if section is None or not section.urls:
        return []
    remind = timedelta(hours=section.remind_hours) if section.remind_hours else None
    sent = []
    for ref in refs:
        ctx = ServiceContext(ws, ref)
        now_health = health(ctx, ledger)
        message = _due(ref, now_health, ctx.record.notified, ctx, remind)
        if message is None:
            continue
        if message.kind in section.on:
            if not send(list(section.urls), message):
                log.warning(
                    "%s: the %s notification could not be sent; the next look tries again",
                    ref,
                    message.kind,
                )
                continue
            log.info("%s: %s notification sent", ref, message.kind)
            sent.append(message)
        # Also when this kind is not wanted: the change is known, and the next one counts.
        ctx.record.notified = Notified(now_health.word, ctx.now())
        ctx.save()
    return sent


def _due(
    ref: ServiceRef,
    now_health: Health,
    before: Notified | None,
    ctx: ServiceContext,
    remind: timedelta | None,
) -> Message | None:
    word, was = now_health.word, None if before is None else before.health
    if word in _LOUD:
        kind = "failure" if word == "failing" else "expiring"
        if was != word:
            return Message(kind, f"sslm: {ref} is {word}", _describe(ref, now_health))
        if before is not None and remind is not None and ctx.now() - before.at >= remind:
            return Message(kind, f"sslm: {ref} is still {word}", _describe(ref, now_health))
        return None
    if was in _LOUD:
        return Message("recovery", f"sslm: {ref} recovered", _describe(ref, now_health))
    return None
