"""The renew decision: upstream's 7.7 table (behaviour §4.a), its bugs fixed, one draw per run."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from sslm_tasks.renewal import (
    DEFAULT_TABLE,
    RenewDecision,
    RenewTable,
    decide,
    format_renew_in,
    interpolate,
)

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)


def decide_at(
    lifetime_days: float,
    days_left: float,
    *,
    table: RenewTable = DEFAULT_TABLE,
    seed: int = 1,
    fixed_target_days: float | None = None,
    fixed_spread_days: float | None = None,
) -> RenewDecision:
    """Decide for a certificate of that lifetime, at the moment it has ``days_left`` left."""
    not_after = ISSUED + timedelta(days=lifetime_days)
    return decide(
        not_before=ISSUED,
        not_after=not_after,
        now=not_after - timedelta(days=days_left),
        table=table,
        rng=random.Random(seed),
        fixed_target_days=fixed_target_days,
        fixed_spread_days=fixed_spread_days,
    )


@pytest.mark.parametrize(
    ("lifetime", "target"),
    [(90, 30), (45, 10), (6, 2.6), (6 + 2 / 3, 3.0), (1, 0.5)],
)
@pytest.mark.parametrize("offset", [0.05, 0.5, 5.0])
def test_default_targets_from_the_behaviour_table(
    lifetime: float, target: float, offset: float
) -> None:
    # Given a certificate of a known class, seen a little before and after its target
    before = decide_at(lifetime, min(target + offset, lifetime))
    after = decide_at(lifetime, max(target - offset, 0.001))
    # Then it is not due before the target and due after it
    assert before.target_days == pytest.approx(target, abs=0.01)
    assert (before.due, after.due) == (False, True)
    assert before.reason.startswith("renew in ") and after.reason.startswith("due: ")


def test_first_interval_is_interpolated() -> None:
    # Given a 12-hour certificate (upstream's table lookup gave -1 below one day)
    # Then the target lies between the (0, 0.25) and (1, 0.5) points
    assert interpolate(DEFAULT_TABLE.targets, 0.5) == pytest.approx(0.375)
    assert interpolate(DEFAULT_TABLE.spreads, 0.5) == 0
    # And it renews with 0.375 days left, not only after expiry
    assert not decide_at(0.5, 0.4).due
    assert decide_at(0.5, 0.3).due


@pytest.mark.parametrize(("lifetime", "target"), [(0, 0.25), (44.5, 9.93), (75, 25), (200, 51.67)])
def test_interpolation_between_points(lifetime: float, target: float) -> None:
    assert interpolate(DEFAULT_TABLE.targets, lifetime) == pytest.approx(target, abs=0.01)


@pytest.mark.parametrize(("lifetime", "target"), [(300, 60), (365, 73), (1825, 365), (3650, 730)])
def test_beyond_the_last_point_the_target_is_20_percent(lifetime: float, target: float) -> None:
    assert interpolate(DEFAULT_TABLE.targets, lifetime) == pytest.approx(target)


def drawn_adjustment(decision: RenewDecision, not_after: datetime) -> float:
    """The random offset a decision used, recovered from renew_at = notAfter - target - adj."""
    assert decision.renew_at is not None and decision.target_days is not None
    return round((not_after - decision.renew_at) / timedelta(days=1) - decision.target_days, 6)


def test_spread_draw_is_one_bounded_rounded_uniform() -> None:
    # Given 120-day certificates (spread 5 days) 0.05 days before their target, many seeds
    seeds = range(300)
    decisions = [decide_at(120, 45.05, seed=seed) for seed in seeds]
    adjs = [drawn_adjustment(d, ISSUED + timedelta(days=120)) for d in decisions]
    # Then each decision used exactly one draw, round(uniform(-5, 5), 1), from its rng
    assert adjs == pytest.approx([round(random.Random(s).uniform(-5, 5), 1) for s in seeds])
    # And the draws stay within the spread and cover it
    assert max(abs(a) for a in adjs) <= 5.0
    assert min(adjs) < -4 and max(adjs) > 4
    # And a draw that moves the target past "now" makes it due, any other does not
    assert [d.due for d in decisions] == [a >= 0.05 for a in adjs]
    assert {d.due for d in decisions} == {True, False}


def test_same_seed_same_decision() -> None:
    assert decide_at(120, 46, seed=42) == decide_at(120, 46, seed=42)


def test_renew_at_is_when_the_same_draw_turns_due() -> None:
    # Given a decision with a spread
    first = decide_at(120, 60, seed=7)
    assert first.renew_at is not None and not first.due
    not_after = ISSUED + timedelta(days=120)
    # When decided again with the same draw just before and just after renew_at
    days_left_at = (not_after - first.renew_at).total_seconds() / 86400
    # Then it flips from not due to due there
    assert not decide_at(120, days_left_at + 0.001, seed=7).due
    assert decide_at(120, days_left_at - 0.001, seed=7).due


def test_overrides_replace_near_points_and_add_others() -> None:
    # Given config points: one within 0.1 of 90, one not near any point, and a spread
    table = DEFAULT_TABLE.with_overrides({90.05: 40, 89.85: 39, 6: 4}, {90: 3})
    # Then the near point replaced (90, 30), the far ones were added, all sorted
    xs = [x for x, _ in table.targets]
    assert xs == sorted(xs)
    assert 90 not in xs and 90.05 in xs and 89.85 in xs
    assert interpolate(table.targets, 90.05) == 40
    assert interpolate(table.targets, 6) == 4 and interpolate(table.targets, 5) == 2
    assert interpolate(table.spreads, 90) == 3
    # And the default table itself is unchanged
    assert interpolate(DEFAULT_TABLE.targets, 90) == 30


def test_fixed_target_is_capped_at_half_the_lifetime() -> None:
    # Given renew_expire_days = 30
    # Then a 90-day cert uses 30, while a 6-day cert uses 3 and is not due on every run
    assert decide_at(90, 31, fixed_target_days=30).target_days == 30
    six_day = decide_at(6, 5, fixed_target_days=30)
    assert six_day.target_days == 3 and not six_day.due


def test_fixed_spread_replaces_the_table() -> None:
    assert decide_at(90, 40, fixed_spread_days=2).spread_days == 2


def test_expired_is_always_due() -> None:
    # Given an expired cert and a spread so wide that some draws land past its target
    decisions = [decide_at(90, -0.5, fixed_spread_days=60, seed=seed) for seed in range(5)]
    adjs = [drawn_adjustment(d, ISSUED + timedelta(days=90)) for d in decisions]
    assert any(a < (d.days_to_renew or 0) for a, d in zip(adjs, decisions, strict=True))
    # Then it is due whatever the draw
    assert all(d.due and "expired" in d.reason for d in decisions)


def test_no_certificate_is_due() -> None:
    decision = decide(
        not_before=None, not_after=None, now=ISSUED, table=DEFAULT_TABLE, rng=random.Random(0)
    )
    assert decision.due and decision.reason == "no current certificate"
    assert decision.renew_at is None


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="now"):
        decide(
            not_before=None,
            not_after=None,
            now=datetime(2026, 1, 1),
            table=DEFAULT_TABLE,
            rng=random.Random(0),
        )


def test_table_must_be_usable() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RenewTable(targets=(), spreads=((0, 0), (1, 0)))
    with pytest.raises(ValueError, match="last lifetime"):
        RenewTable(targets=((0, 1),), spreads=((0, 0), (1, 0)))


@pytest.mark.parametrize(
    ("days", "spread", "text"),
    [
        (12.34, 0.0, "      12.3"),
        (-1.0, 0.0, "      -1.0"),
        (12.34, 5.0, "      12.3 ± 5.0"),
        (-0.5, 5.0, "         0 ± 5.0"),
        (None, 0.0, "       now"),
    ],
)
def test_format_renew_in_matches_upstream(days: float | None, spread: float, text: str) -> None:
    decision = RenewDecision(
        due=False,
        reason="",
        days_left=None,
        target_days=None,
        spread_days=spread,
        days_to_renew=days,
        renew_at=None,
    )
    assert format_renew_in(decision) == text
