"""Delete old version directories of a service, keeping the newest few, and the temp files
that killed writes left behind."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import get_args

from sslm_tasks.errors import StoreError
from sslm_tasks.store.atomic import is_temp_name, remove_file
from sslm_tasks.store.layout import STAMP_RE, Layout, LinkName, ServiceRef
from sslm_tasks.store.versions import read_link

log = logging.getLogger(__name__)


def clean_service(
    layout: Layout, ref: ServiceRef, *, keep: int, in_flight: str | None
) -> list[str]:
    """Delete unused versions beyond the newest ``keep``; return the deleted stamps, oldest first.

    Candidates are the directories in ``db/`` named like a stamp that no link (``curr``,
    ``next``, ``prev``) targets and that is not ``in_flight`` (the version the state record
    names as being built or waiting: a build has no link yet). The newest ``keep``
    candidates (at least 1) survive, so in all up to ``keep`` + 3 (+1 in flight) versions
    remain, as upstream. Age is the stamp's name
    order, not the mtime upstream used: sslm stamps are UTC and unique, so name order is
    creation order, while mtimes change with any touch. Other names are logged and left alone.

    Temp files of writes killed before their rename (``state.json.tmp-<hex>``,
    ``prev.tmp-<hex>``, ``cert.pem.tmp-<hex>`` in a version) are removed too: they are never
    read, and only the atomic writer makes names of that shape.

    The caller holds the service lock: without it a renew could create a version that this call
    sees as unused before its state record is saved.

    Raises:
      StoreError: a directory could not be deleted (earlier deletions stand), or the links are
        unreadable (nothing is deleted then).
    """
    db = layout.db_dir(ref)
    if not db.is_dir():
        return []
    protected = {read_link(layout, ref, which) for which in get_args(LinkName)}
    protected.add(in_flight)
    _remove_temps(layout.service_dir(ref))
    candidates: list[str] = []
    with os.scandir(db) as found:
        for entry in found:
            if not (STAMP_RE.match(entry.name) and entry.is_dir(follow_symlinks=False)):
                log.info("%s: clean: leaving unexpected entry %s", ref, entry.path)
            elif entry.name not in protected:
                candidates.append(entry.name)
            else:
                _remove_temps(entry.path)
    doomed = sorted(candidates, reverse=True)[max(1, keep) :]
    deleted: list[str] = []
    for stamp in sorted(doomed):
        try:
            shutil.rmtree(layout.version_dir(ref, stamp))
        except OSError as err:
            raise StoreError(f"{ref}: deleting version {stamp}: {err}") from err
        log.info("%s: clean: deleted version %s", ref, stamp)
        deleted.append(stamp)
    return deleted


def _remove_temps(directory: str | Path) -> None:
    # The names come with their types (scandir): a directory of thousands of services costs
    # one listing each, not a stat per entry.
    with os.scandir(directory) as found:
        for entry in found:
            if is_temp_name(entry.name) and not entry.is_dir(follow_symlinks=False):
                remove_file(Path(entry.path))
                log.info("clean: removed %s, left by a write that was killed", entry.path)
