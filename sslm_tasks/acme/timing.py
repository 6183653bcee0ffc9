"""The times of ACME renewal as plain data and arithmetic, no request: the CA's renewal window
(ARI, RFC 9773) and the wait after failed orders. Apart from :mod:`sslm_tasks.acme.renewal_info`,
which asks the CA, so that the service record and the deploy ledger (read by ``sslm-mgr -s``)
import neither the acme library nor requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

#: Waits after the 1st, 2nd and 3rd failed order in a row; daily from the 4th on. Let's Encrypt's
#: suggested schedule. It keeps failures at 3 in the first hour, under the CA's limit of 5
#: failed authorizations per identifier per hour, and far under its 1,152-failure pause.
FAILURE_BACKOFF: Final = (timedelta(minutes=1), timedelta(minutes=10), timedelta(minutes=100))
DAILY: Final = timedelta(days=1)


@dataclass(frozen=True)
class RenewalWindow:
    """The CA's suggested window: renew at some time from ``start`` to ``end`` (aware UTC)."""

    start: datetime
    end: datetime


def retry_time_after_failure(
    failures: int, *, now: datetime, retry_after: datetime | None = None
) -> datetime:
    """When to try a new order after ``failures`` failed ones in a row (1 for the first).

    The CA's ``Retry-After`` (``network.suggested_retry`` of the error) wins when it was
    given; otherwise 1 minute, 10 minutes, 100 minutes, then daily.

    Raises:
      ValueError: ``failures`` is below 1.
    """
    if failures < 1:
        raise ValueError(f"failures counts failed orders and starts at 1, got {failures}")
    if retry_after is not None:
        return max(retry_after, now)
    step = FAILURE_BACKOFF[failures - 1] if failures <= len(FAILURE_BACKOFF) else DAILY
    return now + step
