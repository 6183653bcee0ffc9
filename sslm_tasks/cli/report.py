"""Human output of ``sslm-mgr``: run reports and the ``-s`` status, in upstream's shape."""

from __future__ import annotations

from datetime import datetime

from sslm_tasks.cli._common import DATE_FORMAT, relative
from sslm_tasks.cli.run import RunReport
from sslm_tasks.lifecycle import acme_plan
from sslm_tasks.lifecycle.health import Problem
from sslm_tasks.lifecycle.status import KeyStatus, ServiceStatus, VersionStatus
from sslm_tasks.renewal import format_renew_in
from sslm_tasks.store.layout import ServiceRef

_INDENT = " " * 12


def _version_lines(
    label: str, version: VersionStatus, now: datetime, *, verbose: bool
) -> list[str]:
    expires = version.not_after.strftime(DATE_FORMAT)
    issued = version.not_before.strftime(DATE_FORMAT)
    lines = [
        f"        {label:<12} : expires: {expires} ({relative(version.not_after, now)})"
        + (" EXPIRED" if version.not_after <= now else ""),
        f"        {'':<12} : issued : {issued} ({relative(version.not_before, now)})"
        f" ({round(version.lifetime_days)} day cert)",
    ]
    details = version.details
    if details is not None:
        lines += [
            f"{'issuer':>20} : {details.issuer}",
            f"{'subject':>20} : {details.subject}",
            f"{'pubkey':>20} : pubkey-{details.pubkey}",
        ]
    lines.append(f"{'stamp':>20} : {version.stamp}")
    if verbose and details is not None:
        lines.append(f"{'sans':>20} : {details.sans}")
        lines.append(f"{'sig_algo':>20} : {details.sig_algo}")
    return lines


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime(DATE_FORMAT)


def _key_lines(keys: KeyStatus, now: datetime) -> list[str]:
    """The key plan of a ``key_standby`` service: the key's age, the standby and its DNS."""
    lines = []
    if keys.curr_key_since is not None:
        age = (now - keys.curr_key_since).total_seconds() / 86400
        lines.append(
            f"{'key age':>20} : {age:.1f} days (key {(keys.curr_key or '')[:16]}, "
            f"since {_when(keys.curr_key_since)}; the standby takes over at "
            f"{keys.rollover_days:g} days)"
        )
    if keys.standby_key is None:
        lines.append(f"{'standby key':>20} : none yet")
        return lines
    lines.append(
        f"{'standby key':>20} : {keys.standby_key[:16]} (made {_when(keys.standby_created)})"
    )
    if keys.standby_seen is not None:
        lines.append(
            f"{'standby TLSA':>20} : served by every NS since {_when(keys.standby_seen)}; "
            f"ready from {_when(keys.standby_ready_at)}"
        )
    elif keys.standby_ns is not None:
        lines.append(
            f"{'standby TLSA on NS':>20} : {keys.standby_ns.serving} of {keys.standby_ns.asked}"
        )
    else:
        lines.append(f"{'standby TLSA':>20} : not seen on the name servers yet")
    return lines


def _problem_line(problem: Problem, ref: ServiceRef) -> str:
    """``deploy on smtp:mx1 since <time>, 3 attempts, next try <time>: <reason>`` (where, when
    it is not the service itself)."""
    where = "" if problem.where == str(ref) else f" on {problem.where}"
    # 0 attempts: a state rather than a step that failed (a revoked curr).
    count = problem.attempts
    tries = f", {count} attempt{'s' if count != 1 else ''}" if count else ""
    retry = "" if problem.retry_at is None else f", next try {_when(problem.retry_at)}"
    return f"{problem.what}{where} since {_when(problem.since)}{tries}{retry}: {problem.reason}"


def service_lines(status: ServiceStatus, *, verbose: bool) -> list[str]:
    """The ``-s`` block of one service (without its group's heading)."""
    now = status.read_at
    lines = [f"  {status.ref.service}"]
    if status.curr is None and status.next is None:
        lines.append(f"        {'(none)':<12} : no certificate yet")
    for label, version in (("curr", status.curr), ("next", status.next)):
        if version is not None:
            lines.extend(_version_lines(label, version, now, verbose=verbose))
    lines.append(f"{'health':>20} : {status.health.word}")
    problems = status.health.problems
    lines.extend(f"{'failing':>20} : {_problem_line(p, status.ref)}" for p in problems)
    lines.extend(
        f"{'pending':>20} : {server} has not taken curr yet"
        for server in status.health.pending_servers
    )
    lines.append(f"{'phase':>20} : {status.phase}")
    when = format_renew_in(status.renew).strip()
    lines.append(f"{'renew in':>20} : {when if when == 'now' else when + ' days'}")
    plan = None if status.ari is None else acme_plan.plan_text(status.ari)
    if plan:
        lines.append(f"{'ARI':>20} : {plan}")
    backoff = status.backoff
    if backoff is not None and acme_plan.backoff_waiting(backoff, now=now):
        lines.append(f"{'next attempt':>20} : {acme_plan.describe(backoff)}")
    if status.roll_due:
        lines.append(f"{'roll due':>20} : {status.roll_due.isoformat()}")
    dane = status.dane
    if dane.next_seen:
        lines.append(f"{'next TLSA':>20} : served by every NS since {dane.next_seen.isoformat()}")
    if dane.next_ns:
        lines.append(f"{'next TLSA on NS':>20} : {dane.next_ns}")
    if dane.retire_prev:
        lines.append(f"{'prev TLSA':>20} : still published until the deploy succeeds")
    if status.keys is not None:
        lines.extend(_key_lines(status.keys, now))
    for server in status.servers:
        outcome = server.last
        if outcome is None:
            lines.append(f"{'deploy':>20} : {server.server}: not deployed yet")
        else:
            verdict = "ok" if outcome.ok else "FAILED"
            lines.append(
                f"{'deploy':>20} : {server.server}: {verdict} at {_when(outcome.at)}"
                f" ({outcome.detail})"
            )
    lines.extend(
        f"{'revoked':>20} : {done.stamp} serial {done.serial}: {done.reason} at "
        f"{_when(done.at)} ({done.by})"
        for done in status.revocations
    )
    if status.last_error:
        lines.append(f"{'last error':>20} : {status.last_error}")
    if status.notice:
        lines.append(f"{'notice':>20} : {status.notice}")
    return lines


def run_text(report: RunReport, *, remote: bool) -> str:
    """The run's report; through workers the production copies and cleaning happen on the
    workers and are not summed up here."""
    lines: list[str] = []
    group = None
    for outcome in report.outcomes:
        if outcome.ref.group != group:
            group = outcome.ref.group
            lines.append(group)
        lines.append(f"  {outcome.ref.service}")
        lines.extend(f"{_INDENT}↪ {action}" for action in outcome.actions)
    if remote:
        pass
    elif report.prod_changed:
        lines.append("Certs to production: " + ", ".join(str(ref) for ref in report.prod_changed))
    else:
        lines.append("Certs to production: no changes")
    if report.dns_refreshed:
        lines.append(f"DNS refresh: {' '.join(report.dns_refreshed)}")
    lines.extend(report.deployed)
    lines.extend(f"Deploy failed: {failure}" for failure in report.deploy_failures)
    for ref, stamps in report.cleaned.items():
        lines.append(f"Cleaned {ref}: {', '.join(stamps)}")
    if not report.ok:
        failed = [str(o.ref) for o in report.outcomes if not o.ok] or ["deploy"]
        lines.append(f"Failed to perform required task(s): {', '.join(failed)}")
    return "\n".join(lines)
