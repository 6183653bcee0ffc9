"""The beat schedule, derived from ``conf.d``: nobody edits a schedule by hand.

Beat only sends checks; each check reads the state and decides:

* one ``sslm.renew.trigger`` per configured service, twice a day by default, each at its own
  minute and hour offset (a stable hash of its name) so that a hundred services do not all
  fire at once;
* ``sslm.roll.due`` every minute: rolls whose recorded due time has come (a roll hours away is
  a due time in the service state, never a long countdown in Redis, which would be delivered
  again every visibility timeout);
* ``sslm.clean.all`` once a day.

Every entry expires before its next run, so a backlog after an outage sends each check once.
:class:`ConfScheduler` re-reads ``conf.d`` while beat runs, so a service added to (or removed
from) the configuration gets (or loses) its entry within ``SSLM_BEAT_RELOAD_S`` (30 s by default).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler  # type: ignore[import-untyped]
from celery.schedules import crontab, schedule  # type: ignore[import-untyped]

from sslm_tasks.config.load import find_conf_dir, load_config
from sslm_tasks.config.settings import RuntimeSettings, load_settings
from sslm_tasks.errors import SslmError
from sslm_tasks.store.layout import ServiceRef

#: Share of an interval after which an unsent check is dropped (a newer one follows).
EXPIRES_SHARE = 0.9


def _offset(ref: ServiceRef, modulo: int) -> int:
    """A stable pseudo-random offset for ``ref``: the same service fires at the same time."""
    digest = hashlib.sha256(str(ref).encode()).digest()
    return int.from_bytes(digest[:4], "big") % modulo


def renew_schedule(ref: ServiceRef, every_s: int) -> Any:
    """A crontab with a per-service minute (and hour) when ``every_s`` is whole hours that
    divide a day; a plain interval otherwise (short intervals, e.g. in tests)."""
    hours, rest = divmod(every_s, 3600)
    if rest == 0 and hours and 24 % hours == 0:
        start = _offset(ref, hours)
        return crontab(minute=_offset(ref, 60), hour=f"{start}-23/{hours}")
    return schedule(timedelta(seconds=every_s))


def beat_entries(
    refs: Iterable[ServiceRef], settings: RuntimeSettings
) -> dict[str, dict[str, Any]]:
    renew_every = settings.renew_check_every_s
    roll_every = settings.roll_check_every_s
    entries: dict[str, dict[str, Any]] = {
        f"renew-check {ref}": {
            "task": "sslm.renew.trigger",
            "schedule": renew_schedule(ref, renew_every),
            "args": (ref.group, ref.service),
            "options": {"expires": renew_every * EXPIRES_SHARE},
        }
        for ref in refs
    }
    entries["roll-due"] = {
        "task": "sslm.roll.due",
        "schedule": schedule(timedelta(seconds=roll_every)),
        "options": {"expires": roll_every * EXPIRES_SHARE},
    }
    entries["clean"] = {
        "task": "sslm.clean.all",
        "schedule": crontab(minute=17, hour=3),
        "options": {"expires": 3600},
    }
    return entries


def configured_entries(settings: RuntimeSettings) -> dict[str, dict[str, Any]]:
    _, refs = load_config([])
    return beat_entries(refs, settings)


def conf_signature(conf_dir: Path) -> tuple[tuple[str, int], ...]:
    """Names and mtimes of every file under ``conf.d``: changes when the config does."""
    return tuple(
        (str(path), path.stat().st_mtime_ns)
        for path in sorted(conf_dir.rglob("*"))
        if path.is_file()
    )


class ConfScheduler(PersistentScheduler):  # type: ignore[misc]  # Celery has no type hints
    """Celery's persistent scheduler, with its entries taken from ``conf.d`` and kept current."""

    def setup_schedule(self) -> None:
        self._settings = load_settings()
        self._conf_dir = find_conf_dir()
        self._signature = conf_signature(self._conf_dir)
        self._checked = time.monotonic()
        self.app.conf.beat_schedule = configured_entries(self._settings)
        super().setup_schedule()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        reload_s = self._settings.beat_reload_s
        if time.monotonic() - self._checked > reload_s:
            self._checked = time.monotonic()
            self._reload_if_changed()
        delay: float = super().tick(*args, **kwargs)
        return min(delay, reload_s)

    def _reload_if_changed(self) -> None:
        signature = conf_signature(self._conf_dir)
        if signature == self._signature:
            return
        try:
            entries = configured_entries(self._settings)
        except SslmError as err:
            # Keep the last good schedule; the error names the file, key and value.
            self.logger.error("conf.d changed but does not load, schedule unchanged: %s", err)
            return
        self._signature = signature
        self.merge_inplace(entries)
        self._heap = None  # rebuilt from the new entries on this tick
        self.sync()
        self.logger.info("conf.d changed: schedule now has %d entries", len(entries))
