"""The monitoring check's verdict on one service, at the edges of each threshold."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sslm_tasks.cli.check import (
    CRITICAL,
    OK,
    UNKNOWN,
    WARNING,
    Thresholds,
    judge,
    perfdata,
    worst,
)
from sslm_tasks.lifecycle.health import Health, Problem, Word
from sslm_tasks.lifecycle.record import DaneRoll, Phase
from sslm_tasks.lifecycle.status import ServiceStatus, VersionStatus
from sslm_tasks.renewal import RenewDecision
from sslm_tasks.store.layout import ServiceRef

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REF = ServiceRef("example.com", "mail-ec")
DEFAULTS = Thresholds()


def status(
    word: Word = "ok",
    *,
    days_left: float | None = 60.0,
    lifetime: float = 90.0,
    target: float = 30.0,
    problems: tuple[Problem, ...] = (),
    pending_since: datetime | None = None,
) -> ServiceStatus:
    """A service whose ``curr`` (a ``lifetime``-day certificate, renewed ``target`` days before
    it expires) has ``days_left`` at NOW."""
    curr = None
    if days_left is not None:
        not_after = NOW + timedelta(days=days_left)
        curr = VersionStatus(
            "20261001-00:00:00", not_after - timedelta(days=lifetime), not_after, None
        )
    renew_at = None if curr is None else curr.not_after - timedelta(days=target)
    decision = RenewDecision(
        due=days_left is not None and days_left <= target,
        reason="",
        days_left=days_left,
        target_days=None if curr is None else target,
        spread_days=0.0,
        days_to_renew=None if days_left is None else days_left - target,
        renew_at=renew_at,
    )
    return ServiceStatus(
        ref=REF,
        read_at=NOW,
        health=Health(word, list(problems)),
        phase=Phase.ROLLED,
        curr=curr,
        next=None,
        renew=decision,
        ari=None,
        backoff=None,
        roll_due=None,
        dane=DaneRoll(),
        tlsa_next_ns=None,
        servers=[],
        pending_since=pending_since,
        build_started=None,
        last_error=None,
        notice=None,
    )


def deploy_problem(host: str) -> Problem:
    return Problem("deploy", f"smtp:{host}", NOW, 2, f"[smtp] {host}: refused", NOW)


def test_a_service_that_is_ok_is_ok_with_its_days_and_thresholds() -> None:
    assert judge(status(), DEFAULTS).state == OK
    assert perfdata(status(days_left=41.23), DEFAULTS) == "'example.com:mail-ec'=41.2d;30:;7:"


def test_without_a_certificate_there_is_no_perfdata() -> None:
    assert perfdata(status("pending", days_left=None), DEFAULTS) is None


def test_failing_is_critical_naming_the_first_problem_and_counting_the_others() -> None:
    verdict = judge(
        status("failing", problems=(deploy_problem("a"), deploy_problem("b"))), DEFAULTS
    )
    assert verdict.state == CRITICAL
    assert verdict.why == "deploy on smtp:a failing: [smtp] a: refused (and 1 more)"


def test_a_failure_of_the_service_itself_names_no_place() -> None:
    build = Problem("build", str(REF), NOW, 1, "CA said no", None)
    assert judge(status("failing", problems=(build,)), DEFAULTS).why == "build failing: CA said no"


@pytest.mark.parametrize(
    ("days_left", "state"), [(7.01, WARNING), (6.99, CRITICAL), (0.0, CRITICAL), (-1.0, CRITICAL)]
)
def test_a_90_day_certificate_turns_critical_within_7_days(days_left: float, state: int) -> None:
    # past its renew point (30 days) it is expiring anyway: a warning until the last 7 days
    assert judge(status("expiring", days_left=days_left), DEFAULTS).state == state


@pytest.mark.parametrize(("days_left", "state"), [(1.51, WARNING), (1.49, CRITICAL)])
def test_a_short_lived_certificate_turns_critical_within_half_its_renew_target(
    days_left: float, state: int
) -> None:
    six_day = status("expiring", days_left=days_left, lifetime=6, target=3)
    assert judge(six_day, DEFAULTS).state == state
    assert perfdata(six_day, DEFAULTS) == f"'example.com:mail-ec'={days_left:.1f}d;3:;1.5:"


def test_given_critical_days_apply_as_they_are() -> None:
    six_day = status("pending", days_left=2.9, lifetime=6, target=3, pending_since=NOW)
    assert judge(six_day, Thresholds(crit_days=3)).state == CRITICAL
    assert judge(six_day, DEFAULTS).state == OK


def test_an_expired_certificate_says_so() -> None:
    assert judge(status("expiring", days_left=-2), DEFAULTS).why == "curr expired 2.0 days ago"


def test_expiring_is_a_warning_naming_the_renew_point() -> None:
    verdict = judge(status("expiring", days_left=20), DEFAULTS)
    assert verdict.state == WARNING
    assert (
        verdict.why
        == "past its renew point (renew at 2026-11-21 12:00 UTC) with no new certificate"
    )


def test_given_warning_days_warn_before_the_renew_point() -> None:
    limits = Thresholds(warn_days=70)
    assert judge(status(days_left=69.9), limits).state == WARNING
    assert judge(status(days_left=70.1), limits).state == OK
    assert perfdata(status(days_left=69.9), limits) == "'example.com:mail-ec'=69.9d;70:;7:"


@pytest.mark.parametrize(
    ("hours", "state"),
    [(23.9, OK), (24.1, WARNING)],
)
def test_pending_warns_once_it_lasts_longer_than_the_limit(hours: float, state: int) -> None:
    since = NOW - timedelta(hours=hours)
    assert judge(status("pending", pending_since=since), DEFAULTS).state == state
    assert judge(status("pending", pending_since=since), Thresholds(pending_hours=48)).state == OK


def test_pending_since_no_known_time_warns_at_once() -> None:
    verdict = judge(status("pending", days_left=None), DEFAULTS)
    assert (verdict.state, verdict.why) == (WARNING, "pending: no certificate yet")


def test_the_worst_verdict_wins_and_unknown_does_not_outweigh_critical() -> None:
    assert worst([]) == OK
    assert worst([OK, WARNING]) == WARNING
    assert worst([WARNING, UNKNOWN, OK]) == UNKNOWN
    assert worst([UNKNOWN, CRITICAL, WARNING]) == CRITICAL


def test_a_quote_in_a_label_is_doubled() -> None:
    odd = replace(status(), ref=ServiceRef("ex", "it's"))
    assert perfdata(odd, DEFAULTS) == "'ex:it''s'=60.0d;30:;7:"
