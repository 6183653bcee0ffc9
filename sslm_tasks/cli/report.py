"""Human output of ``sslm-mgr``: run reports and the ``-s`` status, in upstream's shape."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sslm_tasks.cli._common import DATE_FORMAT, relative
from sslm_tasks.cli.run import RunReport
from sslm_tasks.lifecycle.status import ServiceStatus, VersionStatus

_INDENT = " " * 12


def _version_lines(
    label: str, version: VersionStatus, now: datetime, *, verbose: bool
) -> list[str]:
    expires = version.expires.strftime(DATE_FORMAT)
    issued = version.issued.strftime(DATE_FORMAT)
    lines = [
        f"        {label:<12} : expires: {expires} ({relative(version.expires, now)})"
        + (" EXPIRED" if version.expires <= now else ""),
        f"        {'':<12} : issued : {issued} ({relative(version.issued, now)})"
        f" ({round(version.lifetime_days)} day cert)",
        f"{'issuer':>20} : {version.issuer}",
        f"{'subject':>20} : {version.subject}",
        f"{'pubkey':>20} : pubkey-{version.pubkey}",
        f"{'stamp':>20} : {version.stamp}",
    ]
    if verbose:
        lines.append(f"{'sans':>20} : {version.sans}")
        lines.append(f"{'sig_algo':>20} : {version.sig_algo}")
    return lines


def status_text(statuses: Iterable[ServiceStatus], now: datetime, *, verbose: bool) -> str:
    lines: list[str] = []
    group = None
    for status in statuses:
        if status.group != group:
            group = status.group
            lines.append(group)
        lines.append(f"  {status.service}")
        if status.curr is None and status.next is None:
            lines.append(f"        {'(none)':<12} : no certificate yet")
        for label, version in (("curr", status.curr), ("next", status.next)):
            if version is not None:
                lines.extend(_version_lines(label, version, now, verbose=verbose))
        lines.append(f"{'phase':>20} : {status.phase}")
        when = status.renew_in.strip()
        lines.append(f"{'renew in':>20} : {when if when == 'now' else when + ' days'}")
        if status.ari:
            lines.append(f"{'ARI':>20} : {status.ari}")
        if status.next_attempt:
            lines.append(f"{'next attempt':>20} : {status.next_attempt}")
        if status.roll_due:
            lines.append(f"{'roll due':>20} : {status.roll_due}")
        if status.tlsa_next_seen:
            lines.append(f"{'next TLSA':>20} : served by every NS since {status.tlsa_next_seen}")
        if status.tlsa_next_ns:
            lines.append(f"{'next TLSA on NS':>20} : {status.tlsa_next_ns}")
        if status.tlsa_retiring_prev:
            lines.append(f"{'prev TLSA':>20} : still published until the deploy succeeds")
        for server in status.servers:
            if server["at"] is None:
                lines.append(f"{'deploy':>20} : {server['server']}: not deployed yet")
            else:
                verdict = "ok" if server["ok"] else "FAILED"
                lines.append(
                    f"{'deploy':>20} : {server['server']}: {verdict} at {server['at']}"
                    f" ({server['detail']})"
                )
        if status.last_error:
            lines.append(f"{'last error':>20} : {status.last_error}")
        if status.notice:
            lines.append(f"{'notice':>20} : {status.notice}")
    return "\n".join(lines)


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
