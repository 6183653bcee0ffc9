"""The bounds of the configuration's numbers (see :mod:`sslm_tasks.config.models`).

Apart from the models so that a command line can hold an option to the same bound as its
setting without importing pydantic: ``sslm-mgr -h`` builds its parser from here.
"""

from __future__ import annotations

from typing import Final

#: The longest span of days a setting may name: 100 years. A root CA lives 10 to 30 years;
#: more is a typo, and far more (``1e300``) overflows the date arithmetic of a renewal.
MAX_DAYS: Final = 36_500
#: The shortest certificate lifetime: 0.001 days (86 s). Less rounds to no validity at all.
MIN_SIGN_DAYS: Final = 0.001
#: ``min_roll_mins`` and ``-roll-mins``: at most a year. The wait is for DNS caches to drop
#: old TLSA records; a longer one would outlast the certificates it is meant to roll.
MAX_ROLL_MINS: Final = 525_600
#: ``dns_check_delay``: at most a day either way (ssl-mgr read ``<= 0`` as "no delay").
MAX_CHECK_DELAY_S: Final = 86_400
#: The largest TTL (RFC 2181 §8): BIND refuses a whole zone with a TTL of 2^32 or more.
MAX_TTL: Final = 2**31 - 1
