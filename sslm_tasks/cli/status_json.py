"""``sslm-mgr -s --json``: the status as one JSON document, written service by service.

The document's shape is ``docs/status-json.md`` and ``docs/status.schema.json`` (schema
version :data:`SCHEMA_VERSION`). Times are ISO 8601 in UTC (``2026-12-03T19:43:57Z``), durations
numbers of days, and nothing is padded for display. Each service is written as soon as it is
read, so memory does not grow with the number of services; the document is valid JSON once
:meth:`StatusJsonWriter.finish` has run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from sslm_tasks.lifecycle.deployment import ServerOutcome
from sslm_tasks.lifecycle.health import ORDER, Problem, Word, worst
from sslm_tasks.lifecycle.record import Revocation
from sslm_tasks.lifecycle.status import KeyStatus, ServerStatus, ServiceStatus, VersionStatus

#: Raised when a field changes meaning or goes; a new field does not raise it.
SCHEMA_VERSION: Final = 1
_DAY_S: Final = 86400


def time_value(moment: datetime | None) -> str | None:
    """``2026-12-03T19:43:57Z``: ISO 8601, UTC, whole seconds."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _days(later: datetime | None, earlier: datetime) -> float | None:
    return None if later is None else round((later - earlier).total_seconds() / _DAY_S, 4)


def _version(
    version: VersionStatus | None, now: datetime, revocations: list[Revocation]
) -> dict[str, Any] | None:
    if version is None:
        return None
    revoked = next((done.reason for done in revocations if done.stamp == version.stamp), None)
    encoded: dict[str, Any] = {
        "stamp": version.stamp,
        "revoked": revoked,
        "not_before": time_value(version.not_before),
        "not_after": time_value(version.not_after),
        "days_left": _days(version.not_after, now),
        "lifetime_days": round(version.lifetime_days, 4),
    }
    details = version.details
    if details is not None:
        encoded |= {
            "issuer": details.issuer,
            "subject": details.subject,
            "pubkey": details.pubkey,
            "sans": details.sans,
            "sig_algo": details.sig_algo,
        }
    return encoded


def _problem(problem: Problem) -> dict[str, Any]:
    return {
        "what": problem.what,
        "where": problem.where,
        "since": time_value(problem.since),
        "attempts": problem.attempts,
        "reason": problem.reason,
        "retry_at": time_value(problem.retry_at),
    }


def _deploy(outcome: ServerOutcome | None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    return {
        "started": time_value(outcome.started),
        "ended": time_value(outcome.at),
        "ok": outcome.ok,
        "failed_step": outcome.failed_step,
        "detail": outcome.detail,
        "failures": outcome.failures,
        "retry_at": time_value(outcome.retry_at),
    }


def _server(server: ServerStatus) -> dict[str, Any]:
    last = _deploy(server.last)
    return {"server": server.server, "has_curr": server.has_curr, "last_deploy": last}


def service_json(status: ServiceStatus) -> dict[str, Any]:
    """One service's entry of ``services``."""
    now = status.read_at
    renew, ari, backoff, dane = status.renew, status.ari, status.backoff, status.dane
    window = None if ari is None else ari.window
    return {
        "group": status.ref.group,
        "service": status.ref.service,
        "health": status.health.word,
        "problems": [_problem(problem) for problem in status.health.problems],
        "pending_servers": status.health.pending_servers,
        "pending_since": time_value(status.pending_since),
        "phase": str(status.phase),
        "curr": _version(status.curr, now, status.revocations),
        "next": _version(status.next, now, status.revocations),
        "renew": {
            "due": renew.due,
            "at": time_value(status.renew_at),
            "in_days": _days(status.renew_at, now),
            "target_days": renew.target_days,
            "spread_days": renew.spread_days,
        },
        "ari": None
        if ari is None or window is None
        else {
            "renew_at": time_value(ari.renew_at),
            "window_start": time_value(window.start),
            "window_end": time_value(window.end),
            "next_check": time_value(ari.next_check),
            "explanation_url": ari.explanation_url,
        },
        "backoff": None
        if backoff is None
        else {
            "failures": backoff.failures,
            "retry_at": time_value(backoff.retry_at),
            "ca_asked": backoff.ca_asked,
        },
        "roll_due": time_value(status.roll_due),
        "build_started": time_value(status.build_started),
        "dane": {
            "next_seen": time_value(dane.next_seen),
            "next_ns_serving": None if status.tlsa_next_ns is None else status.tlsa_next_ns.serving,
            "next_ns_asked": None if status.tlsa_next_ns is None else status.tlsa_next_ns.asked,
            "retiring_prev": dane.retire_prev,
        },
        "servers": [_server(server) for server in status.servers],
        "last_error": status.last_error,
        "notice": status.notice,
        "keys": None if status.keys is None else _keys(status.keys),
        "revocations": [
            {
                "stamp": done.stamp,
                "serial": done.serial,
                "reason": done.reason,
                "at": time_value(done.at),
                "by": done.by,
            }
            for done in status.revocations
        ],
    }


def _keys(keys: KeyStatus) -> dict[str, Any]:
    return {
        "curr_key": keys.curr_key,
        "curr_key_since": time_value(keys.curr_key_since),
        "rollover_days": keys.rollover_days,
        "standby_key": keys.standby_key,
        "standby_created": time_value(keys.standby_created),
        "standby_seen": time_value(keys.standby_seen),
        "standby_ns_serving": None if keys.standby_ns is None else keys.standby_ns.serving,
        "standby_ns_asked": None if keys.standby_ns is None else keys.standby_ns.asked,
        "standby_ready_at": time_value(keys.standby_ready_at),
    }


def _one_line(value: object) -> str:
    """``value`` as JSON on one line, indented to sit in ``services``. Not indented JSON: the
    json module encodes that in Python, compact JSON in C (a second of ``-s --json`` at 10,000
    services); and a service per line suits ``grep`` as well as ``jq``."""
    return "    " + json.dumps(value, ensure_ascii=False)


class StatusJsonWriter:
    """Writes the document to ``out``: the head at once, each service as it comes, the errors
    and the summary at :meth:`finish`."""

    def __init__(self, out: TextIO, *, generated_at: datetime) -> None:
        self._out = out
        self._count = 0
        self._words: Counter[Word] = Counter()
        head = json.dumps(SCHEMA_VERSION), json.dumps(time_value(generated_at))
        out.write(f'{{\n  "schema_version": {head[0]},\n  "generated_at": {head[1]},\n')
        out.write('  "services": [')

    def service(self, status: ServiceStatus) -> None:
        self._out.write(("," if self._count else "") + "\n" + _one_line(service_json(status)))
        self._count += 1
        self._words[status.health.word] += 1

    def finish(self, errors: Iterable[tuple[str, str]]) -> None:
        """Close the document; ``errors`` are (where, message) of what could not be read."""
        found = [{"where": where, "message": message} for where, message in errors]
        summary: dict[str, Any] = {
            "health": worst(list(self._words)),
            "services": self._count,
            **{word: self._words[word] for word in ORDER},
            "unreadable": len(found),
        }
        closing = "\n  ]" if self._count else "]"
        self._out.write(f'{closing},\n  "errors": {json.dumps(found)},\n')
        self._out.write(f'  "summary": {json.dumps(summary)}\n}}\n')
