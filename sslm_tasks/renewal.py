"""When to renew: upstream's 7.7 lifetime-aware rule, decided once per service per run.

The renew point is a number of days before expiry that grows with the certificate's
lifetime, read off a piece-wise linear table (behaviour §4.a): a 90-day certificate renews with
30 days left, a 45-day one with 10, a 6-day one with 2.6 (Let's Encrypt's 6.67-day ones with 3).
An optional spread table adds a random offset so a fleet of same-age certificates does not
renew in one burst.

Pure: the caller passes the clock and the random generator. Upstream drew the random offset
twice per service (once per check) and could act on contradicting answers; here one
:func:`decide` call is the one answer for the run.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

#: (lifetime in days, days) points of a piece-wise linear function.
Points = tuple[tuple[float, float], ...]

# Points closer than this on the lifetime axis are the same point (upstream's rule for
# ``[renew_info]`` keys such as ``target_6`` vs an existing 6.0).
_SAME_X: Final = 0.1
_DAY_S: Final = 86400.0


class MiddleOfSpread(random.Random):
    """A random source whose every draw is the middle of its range: the renew point it gives
    is the renew target itself, the same on every look. What judges a service's health (a
    status, the metrics, a notification) uses it, so the verdict does not flip between looks
    while a run's draw spreads the renewals."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def _sorted_points(points: Sequence[tuple[float, float]], what: str) -> Points:
    ordered = tuple(sorted((float(x), float(y)) for x, y in points))
    if not ordered:
        raise ValueError(f"{what}: at least one point is needed")
    if any(x < 0 or y < 0 for x, y in ordered):
        raise ValueError(f"{what}: lifetimes and days must be >= 0: {ordered}")
    if ordered[-1][0] <= 0:
        raise ValueError(f"{what}: the last lifetime must be > 0 (it scales longer lifetimes)")
    return ordered


def _merge(points: Points, overrides: Mapping[float, float]) -> list[tuple[float, float]]:
    merged = list(points)
    for x, y in overrides.items():
        merged = [(px, py) for px, py in merged if abs(px - x) > _SAME_X]
        merged.append((x, y))
    return merged


@dataclass(frozen=True)
class RenewTable:
    """The target and spread tables, each sorted by lifetime.

    Raises:
      ValueError: a table is empty, has negative values, or its last lifetime is 0.
    """

    targets: Points
    spreads: Points

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", _sorted_points(self.targets, "renew targets"))
        object.__setattr__(self, "spreads", _sorted_points(self.spreads, "renew spreads"))

    def with_overrides(
        self, targets: Mapping[float, float], spreads: Mapping[float, float]
    ) -> RenewTable:
        """A copy with config points merged in (``[renew_info]`` ``target_X`` / ``rand_adj_X``).

        A point within ±0.1 days of an existing lifetime replaces it; any other is added.
        """
        return RenewTable(
            targets=tuple(_merge(self.targets, targets)),
            spreads=tuple(_merge(self.spreads, spreads)),
        )


DEFAULT_TABLE: Final = RenewTable(
    targets=(
        (0, 0.25), (1, 0.5), (2, 1), (5, 2), (10, 5),
        (45, 10), (60, 20), (90, 30), (120, 45), (300, 60),
    ),
    spreads=(
        (0, 0), (1, 0), (2, 0), (5, 0), (10, 0),
        (45, 0), (60, 0), (90, 0), (120, 5), (300, 0),
    ),
)  # fmt: skip


def interpolate(points: Points, lifetime: float) -> float:
    """The table's value at ``lifetime`` (days); ``points`` sorted by lifetime, as in a table.

    Up to the first lifetime: the first value. From the last lifetime on: proportional to the
    lifetime, at the last point's ratio (20 % with the defaults). Between: linear between the
    bracketing points, the first interval included (upstream skipped it and returned -1 for
    lifetimes under a day).
    """
    x0, y0 = points[0]
    if lifetime <= x0:
        return y0
    x_last, y_last = points[-1]
    if lifetime >= x_last:
        return y_last / x_last * lifetime
    # x0 < lifetime < x_last, so 1 <= i < len(points) and xa < lifetime <= xb.
    i = bisect.bisect_left(points, lifetime, key=lambda point: point[0])
    (xa, ya), (xb, yb) = points[i - 1], points[i]
    return ya + (yb - ya) * (lifetime - xa) / (xb - xa)


@dataclass(frozen=True)
class RenewDecision:
    """The answer for one service in one run.

    ``days_left``, ``target_days``, ``days_to_renew`` and ``renew_at`` are None when there is
    no current certificate. ``renew_at`` is when this same draw turns due, for a scheduler.
    """

    due: bool
    reason: str
    days_left: float | None
    target_days: float | None
    spread_days: float
    days_to_renew: float | None
    renew_at: datetime | None


def _check_aware(**moments: datetime) -> None:
    for name, moment in moments.items():
        if moment.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware")


def decide(
    *,
    not_before: datetime | None,
    not_after: datetime | None,
    now: datetime,
    table: RenewTable,
    rng: random.Random,
    fixed_target_days: float | None = None,
    fixed_spread_days: float | None = None,
) -> RenewDecision:
    """Decide whether the current certificate (``notBefore``/``notAfter``) is due for renewal.

    With lifetime L and days left D: the target is the table's value at L, the spread size S
    likewise, and one draw ``adj = round(uniform(-S, S), 1)`` (0 when S is 0) shifts it. The
    certificate is due when ``D - target <= adj``, and always when it has expired.

    Parameters:
      not_before, not_after(datetime | None): the current certificate's validity; None when
        there is none, which is always due.
      now(datetime): the clock, timezone-aware.
      table(RenewTable): targets and spreads, usually ``DEFAULT_TABLE.with_overrides(...)``.
      rng(random.Random): source of the one draw; seed it for repeatable decisions.
      fixed_target_days(float | None): the config's ``renew_expire_days``. Used as
        ``min(fixed_target_days, L / 2)``, so a setting meant for 90-day certificates (say 30)
        cannot make a 6-day certificate due on every run.
      fixed_spread_days(float | None): replaces the spread table's value.

    Raises:
      ValueError: a datetime is naive.
    """
    _check_aware(now=now)
    if not_before is None or not_after is None:
        return RenewDecision(
            due=True,
            reason="no current certificate",
            days_left=None,
            target_days=None,
            spread_days=0.0,
            days_to_renew=None,
            renew_at=None,
        )
    _check_aware(not_before=not_before, not_after=not_after)
    lifetime = (not_after - not_before).total_seconds() / _DAY_S
    days_left = (not_after - now).total_seconds() / _DAY_S
    if fixed_target_days is None:
        target = interpolate(table.targets, lifetime)
    else:
        target = min(fixed_target_days, lifetime / 2)
    size = interpolate(table.spreads, lifetime) if fixed_spread_days is None else fixed_spread_days
    adj = round(rng.uniform(-size, size), 1) if size > 0 else 0.0
    days_to_renew = days_left - target
    renew_at = not_after - timedelta(days=target + adj)
    if days_left <= 0:
        due, reason = True, f"due: expired {-days_left:.1f} days ago"
    elif days_to_renew <= adj:
        due, reason = True, f"due: {days_left:.1f} days left, target {target:.1f}"
    else:
        due, reason = False, f"renew in {days_to_renew - adj:.1f} days"
    return RenewDecision(
        due=due,
        reason=reason,
        days_left=days_left,
        target_days=target,
        spread_days=size,
        days_to_renew=days_to_renew,
        renew_at=renew_at,
    )


def format_renew_in(decision: RenewDecision) -> str:
    """Upstream's "Renew in" text: days to the target, and ``± spread`` when there is one.

    ``"      12.3"``; with a spread ``"      12.3 ± 5.0"``, or ``"         0 ± 5.0"`` once
    the target has passed; ``"       now"`` when there is no current certificate.
    """
    days = decision.days_to_renew
    if days is None:
        return f"{'now':>10}"
    if decision.spread_days <= 0:
        return f"{days:10.1f}"
    shown = f"{days:10.1f}" if days > 0 else f"{0:10d}"
    return f"{shown} ± {decision.spread_days:.1f}"
