"""The DNS refresh: the operator's ``[dns] restart_cmd`` with ``--serial_bump <apex ...>``, run
once for many changes.

That command (dns_tools' resign script, or any script with the same contract) bumps the SOA
serial of the named zones, re-signs them and reloads the primary. The flag really is spelled
with an underscore: that is what upstream passes, whatever its docs say.

Why a ledger: many writers change the files a zone includes at once (twenty ACME orders
publishing their challenge records, the TLSA file of every service of the apex), and each
needs the zone refreshed *after* its own change. One refresh per change would re-sign the zone
twenty times in a row; a plain "pending" marker removed after the refresh loses a change made
while the command ran. So each zone keeps two counters in ``certs/<apex>/.dns-changes.json``:

* ``noted``: a writer counts its change after the file is in place
  (:meth:`ZoneRefresher.note_change`);
* ``refreshed``: a refresh reads ``noted`` *before* it runs the command and records that value
  once the command succeeded.

A change counted before the read was on disk when the command ran, so it is covered; one
counted later stays above ``refreshed`` and keeps the zone pending; a failed command records
nothing, so the next caller retries. Callers wanting the same zone served queue on the lock
``dns-refresh:<apex>``; whoever gets it after someone else's refresh usually finds nothing left
to do. The count a writer's change got is its ticket: once ``refreshed`` reaches it, that
change is covered, whatever was counted after it (:meth:`ZoneRefresher.uncovered`), so a writer
need not refresh again for the changes of others. N concurrent orders of one zone thus cost
one or two refreshes instead of N.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Final

from sslm_tasks.commands import DEFAULT_TIMEOUT_S, CommandResult, run_command
from sslm_tasks.config.files import MAIN_FILE
from sslm_tasks.config.load import Config
from sslm_tasks.config.models import CA_GROUP
from sslm_tasks.errors import ConfigError, StoreError
from sslm_tasks.locks import Lease, Locker
from sslm_tasks.store.atomic import ensure_dir, write_atomic
from sslm_tasks.store.layout import DIR_MODE_GROUP, PUBLIC_MODE, Layout

SERIAL_BUMP = "--serial_bump"
#: The counters of one zone, beside its TLSA and challenge files.
LEDGER_FILE: Final = ".dns-changes.json"
#: Lock over one zone's counters (held for a read-modify-write: milliseconds).
CHANGES_LOCK_PREFIX: Final = "dns-changes:"
#: Lock over one zone's refresh (held while the command runs).
REFRESH_LOCK_PREFIX: Final = "dns-refresh:"
_COUNTER_LOCK_S: Final = 30.0
#: A refresh lock outlives its command's timeout by this much before a dead holder loses it.
_REFRESH_LOCK_MARGIN_S: Final = 30.0


def zone_apexes(groups: Iterable[str]) -> list[str]:
    """The apex domains among ``groups``: every group but the local CAs, once each, sorted."""
    return sorted({group for group in groups if group != CA_GROUP})


def refresh_zones(
    config: Config, apexes: Iterable[str], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[CommandResult]:
    """Run every ``[dns] restart_cmd`` for ``apexes`` now, unconditionally; returns what ran.

    Raises:
      ConfigError: there is no ``[dns] restart_cmd`` to run.
      PermanentError / TransientError: a command failed or timed out (see run_command).
    """
    dns = config.main.dns
    if dns is None or not dns.restart_cmd:
        where = config.conf_dir / MAIN_FILE
        raise ConfigError(where, "dns.restart_cmd", None, "a DNS refresh needs a restart command")
    zones = list(apexes)
    return [
        run_command([*argv, SERIAL_BUMP, *zones], timeout_s=timeout_s) for argv in dns.restart_cmd
    ]


class ZoneRefresher:
    """Refreshes a zone only when something it includes changed since its last refresh.

    Parameters:
      config(Config): where the restart command comes from.
      layout(Layout): the store; each zone's counters live in ``certs/<apex>/``.
      locker(Locker): shared with every other writer of the same store.
      timeout_s(float): the restart command's timeout; a caller waits for another's refresh
        of the same zone up to that long (plus a margin).
    """

    def __init__(
        self,
        config: Config,
        layout: Layout,
        locker: Locker,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._config = config
        self._layout = layout
        self._locker = locker
        self._timeout_s = timeout_s

    def note_change(self, apex: str) -> int:
        """Count a change of a file the zone ``apex`` includes. Call it after the file is in
        place: a refresh that read the count before this call must not be taken to cover it.

        Returns the count with this change: a ticket for :meth:`uncovered`.

        Raises:
          LockBusy: another writer held the counters for long (transient).
          StoreError: the counters could not be read or written.
        """
        with self._counter_lock(apex):
            noted, refreshed = self._read(apex)
            self._write(apex, noted + 1, refreshed)
        return noted + 1

    def uncovered(self, tickets: Mapping[str, int | None]) -> list[str]:
        """The zones among ``tickets`` that no successful refresh has covered up to the ticket
        (from :meth:`note_change`; changes counted after it do not matter), sorted; a zone
        whose ticket is None counts with every change noted so far."""
        found = []
        for apex, ticket in sorted(tickets.items()):
            noted, refreshed = self._read(apex)
            if refreshed < (noted if ticket is None else ticket):
                found.append(apex)
        return found

    def pending(self, apexes: Iterable[str] | None = None) -> list[str]:
        """The zones among ``apexes`` (None: every zone with a ledger in the store) with a
        change no successful refresh has covered yet."""
        if apexes is None:
            apexes = [path.parent.name for path in self._layout.certs_dir.glob(f"*/{LEDGER_FILE}")]
        return self.uncovered(dict.fromkeys(apexes))

    def refresh(
        self, apexes: Iterable[str], *, everything: bool = False, wait: bool = True
    ) -> list[str]:
        """One restart command for the zones among ``apexes`` that are pending (``everything``:
        all of them, as ``-dns`` asks); returns the zones it refreshed, none when another
        caller's refresh covered them while this one waited.

        ``wait=False`` does not queue behind a refresh that is running: a worker with other
        tasks to do leaves the zones pending and asks again later, when that refresh (or the
        next) has covered them; meanwhile more changes gather for one refresh.

        Raises:
          ConfigError: a refresh is due and there is no ``[dns] restart_cmd``.
          LockBusy: another refresh of one of the zones is running and ``wait`` is False, or
            outlasted its timeout (transient).
          PermanentError / TransientError: the command failed; the zones stay pending.
        """
        zones = sorted(set(apexes))
        if not zones or not (everything or self.pending(zones)):
            return []
        ttl_s = self._timeout_s + _REFRESH_LOCK_MARGIN_S
        with ExitStack() as held:
            # Sorted, so two callers wanting overlapping zones never wait for each other.
            for zone in zones:
                held.enter_context(
                    self._locker.acquire(
                        f"{REFRESH_LOCK_PREFIX}{zone}", ttl_s=ttl_s, blocking_s=ttl_s if wait else 0
                    )
                )
            counts = {zone: self._read(zone) for zone in zones}
            due = [zone for zone in zones if everything or counts[zone][0] > counts[zone][1]]
            if not due:
                return []
            refresh_zones(self._config, due, timeout_s=self._timeout_s)
            for zone in due:
                self._covered(zone, counts[zone][0])
        return due

    # ------------------------------------------------------------------ the counters

    def _path(self, apex: str) -> Path:
        return self._layout.group_dir(apex) / LEDGER_FILE

    def _counter_lock(self, apex: str) -> Lease:
        return self._locker.acquire(
            f"{CHANGES_LOCK_PREFIX}{apex}", ttl_s=_COUNTER_LOCK_S, blocking_s=_COUNTER_LOCK_S
        )

    def _covered(self, apex: str, noted_before: int) -> None:
        with self._counter_lock(apex):
            noted, refreshed = self._read(apex)
            self._write(apex, noted, max(refreshed, noted_before))

    def _read(self, apex: str) -> tuple[int, int]:
        path = self._path(apex)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return int(data["noted"]), int(data["refreshed"])
        except FileNotFoundError:
            return 0, 0
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StoreError(f"reading {path}: {err}") from err

    def _write(self, apex: str, noted: int, refreshed: int) -> None:
        path = self._path(apex)
        ensure_dir(path.parent, mode=DIR_MODE_GROUP)
        text = json.dumps({"noted": noted, "refreshed": refreshed}) + "\n"
        write_atomic(path, text.encode(), mode=PUBLIC_MODE)
