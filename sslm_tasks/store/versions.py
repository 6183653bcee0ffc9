"""Dated version directories of a service and the ``curr``/``next``/``prev`` links to them.

A renew builds a new version under ``db/<stamp>`` and points ``next`` at it once it is complete;
a roll makes it ``curr``. Each link change is one atomic rename, and :func:`roll_links` is
ordered so that a crash between any two steps leaves ``curr`` on a complete version and a rerun
finishes the job.

A version's files are written without syncing its directory (``sync_dir=False``), and the
version directory itself is created without syncing ``db/``: :func:`point` fsyncs both before a
link may lead there. A power cut before that loses at most names no link reaches (a build that
is then resumed makes them again, or starts afresh when its directory is gone).

Callers hold the service's lock: these functions are atomic per step, not against a concurrent
writer of the same service.
"""

from __future__ import annotations

import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from typing import Final

from sslm_tasks.errors import StoreError
from sslm_tasks.store.atomic import (
    create_dir,
    ensure_dir,
    remove_file,
    symlink_atomic,
    sync_directory,
)
from sslm_tasks.store.layout import (
    COMPLETE_FILES,
    DIR_MODE_GROUP,
    DIR_MODE_PRIVATE,
    Layout,
    LinkName,
    ServiceRef,
)
from sslm_tasks.store.read import ABSENT_ERRNOS

#: Upstream's stamp shape, so existing trees keep working; sslm fills it in UTC.
STAMP_FORMAT: Final = "%Y%m%d-%H:%M:%S"

_moves = 0
_moves_lock = threading.Lock()


def link_moves() -> int:
    """How many times this process began to move a link. A reader that remembers the links it
    read (``ServiceContext.link``) trusts them while this number stays the same: every move goes
    through this module, and the service's lock keeps other processes' moves out of a step."""
    return _moves


def _moving() -> None:
    """Counted before the move, so a link read before it is never trusted after it."""
    global _moves
    with _moves_lock:
        _moves += 1


def new_version(layout: Layout, ref: ServiceRef, *, now: datetime) -> str:
    """Create a new, empty version directory (mode 0700) and return its stamp.

    The stamp is ``now`` in UTC (upstream used local time, and a DST change could make a newer
    version sort before an older one). If that name is taken, the next second is tried, and so
    on: the stamp is an identifier, not a precise time, and two versions must never share a
    directory (upstream's one-second collision mixed files of two renews, §7 bug 12). The loop
    ends because each taken name is an existing directory and there are finitely many.

    Missing parents are created: the service dir at 0750, ``db/`` at 0700. The new name in
    ``db/`` is made durable by :func:`point`, before a link leads to it.

    Parameters:
      now(datetime): timezone-aware current time.

    Raises:
      ValueError: ``now`` is naive.
      StoreError: the directory could not be created.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    ensure_dir(layout.service_dir(ref), mode=DIR_MODE_GROUP)
    ensure_dir(layout.db_dir(ref), mode=DIR_MODE_PRIVATE)
    moment = now.astimezone(UTC)
    while True:
        stamp = moment.strftime(STAMP_FORMAT)
        try:
            create_dir(layout.version_dir(ref, stamp), mode=DIR_MODE_PRIVATE, sync_parent=False)
        except FileExistsError:
            moment += timedelta(seconds=1)
            continue
        return stamp


def read_link(layout: Layout, ref: ServiceRef, which: LinkName) -> str | None:
    """The stamp the link points at, or None when the link is absent or dangling.

    Raises:
      StoreError: the link exists but is not a symlink, or points somewhere other than
        ``db/<stamp>`` (a tree edited by hand; better to stop than to guess).
    """
    link = layout.link(ref, which)
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreError(f"reading link {link}: {err.strerror or err}") from err
    stamp = layout.stamp_of_target(target)
    if stamp is None:
        raise StoreError(f"link {link} points at {target!r}, expected db/<YYYYmmdd-HH:MM:SS>")
    try:
        # Followed: the link's target is db/<stamp>, the version itself.
        present = stat.S_ISDIR(os.stat(link).st_mode)
    except PermissionError:
        # A reader outside the owner (the metrics exporter) may not look into db/ (0700): it
        # takes the link as it stands.
        present = True
    except OSError as err:
        if err.errno not in ABSENT_ERRNOS:  # the link leads to no version
            raise StoreError(f"reading link {link}: {err.strerror or err}") from err
        present = False
    return stamp if present else None


def point(layout: Layout, ref: ServiceRef, which: LinkName, stamp: str) -> None:
    """Point ``which`` at version ``stamp``, atomically. Idempotent.

    The version directory and ``db/`` are fsynced first: the version's files were written
    without a directory fsync each, so this is where their names (and the version's own)
    become durable, before the link can lead to them.

    Raises:
      StoreError: the version directory does not exist (a dangling link would read as
        "absent" and hide the mistake), or the link could not be written.
    """
    version = layout.version_dir(ref, stamp)
    if not version.is_dir():
        raise StoreError(f"{ref}: cannot point {which} at missing version {stamp}")
    sync_directory(version)
    sync_directory(layout.db_dir(ref))
    _moving()
    symlink_atomic(layout.link(ref, which), layout.link_target(stamp))


def unlink(layout: Layout, ref: ServiceRef, which: LinkName) -> None:
    """Remove the link if present (the version directory stays). Idempotent."""
    _moving()
    remove_file(layout.link(ref, which))


def is_complete(layout: Layout, ref: ServiceRef, stamp: str) -> bool:
    """Whether every file of :data:`~sslm_tasks.store.layout.COMPLETE_FILES` exists, non-empty."""
    version = os.fspath(layout.version_dir(ref, stamp))
    return all(_nonempty_file(os.path.join(version, name)) for name in COMPLETE_FILES)


def _nonempty_file(path: str) -> bool:
    """Whether ``path`` is a regular file (links followed, as ``Path.is_file``) with data; one
    ``stat``, since every step asks this of several versions."""
    try:
        status = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(status.st_mode) and status.st_size > 0


def roll_links(layout: Layout, ref: ServiceRef) -> None:
    """Make ``next`` the new ``curr``; the old ``curr`` becomes ``prev``. Idempotent.

    Steps, each one atomic: ``prev`` ← ``curr``; ``curr`` ← ``next``; remove ``next``.
    After a crash between any two of them ``curr`` is the old or the new complete version, and
    a rerun finishes: if ``curr`` already equals ``next`` only ``next`` is dropped (redoing the
    first step then would lose the real ``prev``). With no ``curr`` yet, ``prev`` is untouched.
    With no ``next`` there is nothing to roll, and the call returns having changed nothing.

    One directory fsync serves the three steps, the one of ``curr``: ``prev`` needs none of
    its own (its version is durable since it became ``curr``; were its flip lost to a power
    cut, ``curr`` would still be complete), nor does the removal of ``next`` (were it lost,
    ``next`` would equal ``curr`` and the next roll drops it, as after a crash).

    Raises:
      StoreError: ``next`` is not complete (rolling it would break every deploy), or a link
        could not be written.
    """
    nxt = read_link(layout, ref, "next")
    if nxt is None:
        return
    curr = read_link(layout, ref, "curr")
    _moving()
    if curr != nxt:
        if not is_complete(layout, ref, nxt):
            raise StoreError(f"{ref}: next version {nxt} is incomplete, refusing to roll")
        if curr is not None:
            symlink_atomic(layout.link(ref, "prev"), layout.link_target(curr), sync_dir=False)
        point(layout, ref, "curr", nxt)
    else:  # an interrupted roll: what the caller wrote into the version (info) is made durable
        sync_directory(layout.version_dir(ref, nxt))
    remove_file(layout.link(ref, "next"), sync_dir=False)
