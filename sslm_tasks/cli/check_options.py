"""``sslm-mgr -s --check``'s options and exit statuses, and the UNKNOWN line of a check that
could not even start (see :mod:`sslm_tasks.cli.check`).

Apart from :mod:`.check`, which reads and judges the services, so that ``sslm-mgr``'s parser
(all ``-h`` and a refused command line need) imports none of the status readers.
"""

from __future__ import annotations

import argparse
from typing import Final

from .arg_types import non_negative

#: The plugin's exit statuses.
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
DEFAULT_CRIT_DAYS: Final = 7.0
DEFAULT_PENDING_HOURS: Final = 24.0


def unknown(reason: str) -> int:
    """Print the UNKNOWN line for a check that could not even start; return its status."""
    print(f"SSLM UNKNOWN - {reason}".replace("|", "/"))
    return UNKNOWN


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--check`` and its thresholds to ``sslm-mgr``'s parser."""
    group = parser.add_argument_group("monitoring check (with -s)")
    group.add_argument(
        "--check",
        action="store_true",
        help="With -s: one line for a Nagios/Icinga check; exit 0 OK, 1 WARNING, 2 CRITICAL, "
        "3 UNKNOWN",
    )
    group.add_argument(
        "--crit-days",
        type=non_negative("days"),
        metavar="DAYS",
        help=f"CRITICAL when curr expires within DAYS (default {DEFAULT_CRIT_DAYS:g}, at most "
        "half the renew target)",
    )
    group.add_argument(
        "--warn-days",
        type=non_negative("days"),
        metavar="DAYS",
        help="WARNING when curr expires within DAYS (default: past the renew point)",
    )
    group.add_argument(
        "--pending-hours",
        type=non_negative("hours"),
        default=DEFAULT_PENDING_HOURS,
        metavar="HOURS",
        help="WARNING when a service stays pending longer (default %(default)g)",
    )
