"""The beat schedule: three scans, whatever the number of services.

Beat only sends checks; each check reads the configuration and the state records when it runs
and decides:

* ``sslm.renew.scan`` every ``SSLM_RENEW_CHECK_EVERY_S`` (12 h by default): a renew workflow for
  every service that is due (or has a build to resume), nothing for the others;
* ``sslm.roll.scan`` every ``SSLM_ROLL_CHECK_EVERY_S`` (1 min): a roll for every ``next`` whose
  recorded due time has come (a roll hours away is a due time in the state record, never a long
  countdown in Redis, which would be delivered again every visibility timeout), and the old
  TLSA records of services whose servers all took their new certificate;
* ``sslm.clean.all`` once a day.

A scan loads ``conf.d`` afresh, so a service added to (or removed from) the configuration is
covered by the next scan, with no schedule to rebuild. Every entry expires before its next run,
so a backlog after an outage sends each scan once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from celery.schedules import crontab, schedule  # type: ignore[import-untyped]

from sslm_tasks.config.settings import RuntimeSettings
from sslm_tasks.routing import TaskName

#: Share of an interval after which an unsent check is dropped (a newer one follows).
EXPIRES_SHARE: Final = 0.9


def beat_entries(settings: RuntimeSettings) -> dict[str, dict[str, Any]]:
    renew_every = settings.renew_check_every_s
    roll_every = settings.roll_check_every_s
    return {
        "renew-scan": {
            "task": TaskName.RENEW_SCAN.value,
            "schedule": schedule(timedelta(seconds=renew_every)),
            "options": {"expires": renew_every * EXPIRES_SHARE},
        },
        "roll-scan": {
            "task": TaskName.ROLL_SCAN.value,
            "schedule": schedule(timedelta(seconds=roll_every)),
            "options": {"expires": roll_every * EXPIRES_SHARE},
        },
        "clean": {
            "task": TaskName.CLEAN_ALL.value,
            "schedule": crontab(minute=17, hour=3),
            "options": {"expires": 3600},
        },
    }
