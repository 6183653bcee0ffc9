"""The production tree: ``<prod_cert_dir>/<group>/<svc>/{curr,next}/`` as real directories, and
``<prod_cert_dir>/<group>/tlsa.<group>``, the group's TLSA file (operators push it from there to
a DNS host of their own, as with upstream).

It mirrors what the servers should use, in upstream's layout, with three differences:

- the private keys of local CAs never leave ``certs/`` (upstream copied the root's key to every
  server), and a local CA's CRL is copied beside its versions (``ca/<ca>/crl.pem``);
- an unchanged version is left alone, so an unchanged tree causes no churn and the sync doubles
  as the integrity check upstream ran on every start;
- a changed version is prepared whole in a hidden directory and switched in with one atomic
  exchange, so a server never reads a key from one version and a certificate from another,
  even when sslm is killed half-way (upstream renamed file by file).

Nothing under the production root is reached through a link (see
:mod:`sslm_tasks.store.confined`), and sslm deletes only what it writes: a version directory
that holds anything else (a link, a subdirectory, a file of another name) is moved aside as
``<which>.kept-<stamp>`` with a warning, never emptied.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from sslm_tasks.config.models import CA_GROUP
from sslm_tasks.errors import StoreError
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import Workspace, utc_now
from sslm_tasks.store import confined
from sslm_tasks.store import layout as files
from sslm_tasks.store.confined import Dir
from sslm_tasks.store.identity import files_identity
from sslm_tasks.store.layout import ProdLinkName, ServiceRef
from sslm_tasks.store.read import read_bytes
from sslm_tasks.store.versions import STAMP_FORMAT, is_complete

log = logging.getLogger("sslm")

#: Files that carry a private key; never copied for the ``ca`` group.
_SECRET_FILES: Final = frozenset({files.PRIVKEY, files.BUNDLE})
#: What a production version holds (upstream's file set), and all sslm ever deletes there.
SHIPPED_FILES: Final = frozenset({*files.COMPLETE_FILES, files.TLSA_RR, files.INFO})
_SHIPPED_ORDER: Final = tuple(sorted(SHIPPED_FILES))
#: Files of a local CA's service directory copied beside its versions (its CRL), and all
#: sslm ever replaces or deletes there besides the versions.
CA_SERVICE_FILES: Final = frozenset({files.CRL})
#: Mode of the production directories: deploy tooling in the group may read them.
PROD_DIR_MODE: Final = 0o750
_VERSIONS: Final[tuple[ProdLinkName, ...]] = ("curr", "next")
#: Hidden names of a version being prepared, and of one just replaced.
_NEW, _OLD = "new", "old"

Wanted = dict[str, tuple[bytes, int]]


def _wanted(ws: Workspace, ref: ServiceRef, stamp: str | None) -> Wanted | None:
    """The files production should hold for a link to ``stamp``; None when it should not
    exist."""
    layout = ws.layout
    if stamp is None or not is_complete(layout, ref, stamp):
        return None
    names = SHIPPED_FILES - _SECRET_FILES if ref.group == CA_GROUP else SHIPPED_FILES
    source = layout.version_dir(ref, stamp)
    wanted: Wanted = {}
    for name in sorted(names):
        path = source / name
        if path.is_file():
            mode = files.KEY_MODE if name in _SECRET_FILES else files.PUBLIC_MODE
            wanted[name] = (read_bytes(path), mode)
    return wanted


def _matches(service: Dir, which: ProdLinkName, wanted: Wanted) -> bool:
    """Whether ``which`` is a real directory holding exactly ``wanted``, byte for byte."""
    status = confined.lstat(service, which)
    if status is None or not stat.S_ISDIR(status.st_mode):
        return False
    with confined.open_subdir(service, which, mode=None) as version:
        if confined.entries(version) != sorted(wanted):
            return False
        return all(confined.read_file(version, name) == data for name, (data, _) in wanted.items())


def _retire(service: Dir, name: str, which: ProdLinkName) -> None:
    """Delete a replaced version if it holds only what sslm writes; else keep it, renamed.

    The deletion is not synced: a hidden version a power cut brings back is a leftover the
    next sync retires (:func:`_clear_leftovers`).
    """
    if confined.remove_if_only(service, name, SHIPPED_FILES, sync_dir=False):
        return
    kept = f"{which}.kept-{utc_now().strftime(STAMP_FORMAT)}-{secrets.token_hex(3)}"
    confined.rename(service, name, kept)
    confined.sync(service)
    log.warning(
        "%s: %s held something sslm did not write (a link, a directory or another file): "
        "kept as %s, not deleted",
        service.path,
        which,
        service.path / kept,
    )


def _clear_leftovers(service: Dir) -> None:
    """Hidden versions of a run killed between preparing and retiring: retire them now."""
    for name in confined.entries(service):
        for which in _VERSIONS:
            if name.startswith((f".{which}.{_NEW}-", f".{which}.{_OLD}-")):
                _retire(service, name, which)


def _switch(service: Dir, which: ProdLinkName, wanted: Wanted | None) -> bool:
    """Make ``which`` hold ``wanted`` (or be gone) in one step; True when anything changed."""
    present = confined.lstat(service, which) is not None
    if wanted is None:
        if not present:
            return False
        replaced = confined.temp_name(which, _OLD)
        confined.rename(service, which, replaced)
        confined.sync(service)
        _retire(service, replaced, which)
        return True
    if _matches(service, which, wanted):
        return False
    prepared = confined.temp_name(which, _NEW)
    # Its name needs no fsync of its own: ``service`` is synced once it is renamed in.
    with confined.open_subdir(service, prepared, mode=PROD_DIR_MODE, sync_parent=False) as version:
        confined.write_new_files(version, wanted)
    if not present:
        confined.rename(service, prepared, which)
        confined.sync(service)
        return True
    if confined.exchange(service, prepared, which):
        replaced = prepared
    else:  # no RENAME_EXCHANGE here: a moment without ``which``, never a mixed one
        replaced = confined.temp_name(which, _OLD)
        confined.rename(service, which, replaced)
        confined.rename(service, prepared, which)
    confined.sync(service)
    _retire(service, replaced, which)
    return True


def _mirror_file(directory: Dir, source: Path) -> bool:
    """Make ``source``'s name in ``directory`` a copy of it, in one step, or remove the copy
    when ``source`` is gone; True when anything changed. A link there is an error, never
    followed nor removed (:func:`confined.replace_file`, :func:`confined.remove_file`)."""
    wanted = read_bytes(source) if source.is_file() else None
    if wanted is None:
        return confined.remove_file(directory, source.name)
    if confined.read_file(directory, source.name) == wanted:
        return False
    confined.replace_file(directory, source.name, wanted, mode=files.PUBLIC_MODE)
    return True


def _refuse_overlap(ws: Workspace) -> None:
    """Stop before mirroring anything when production could reach the store's keys.

    Raises:
      StoreError: the production tree and the store lie one inside the other.
    """
    if ws.production_overlaps_store:
        layout = ws.layout
        raise StoreError(
            f"production tree {layout.prod_dir} overlaps the store {layout.certs_dir}: "
            "refusing to mirror"
        )


def sync_service(ctx: ServiceContext) -> bool:
    """Copy ``curr`` and ``next`` of one service to production, and a local CA's CRL; True
    when anything changed.

    A link that is absent (no ``next`` after a roll) removes its production copy. Idempotent;
    a run killed at any point leaves each version whole, and the next call finishes the job.
    When ``curr`` changed (a roll, or a repair), the record notes since when production holds
    it (``prod_since``): servers hold it only after a deploy that began later.

    The copies are compared byte for byte, unless every file of them and of the store versions
    they mirror is exactly what it was when a sync last found them whole (the record's
    ``prod_seen``, :mod:`sslm_tasks.store.identity`): then nothing is read.

    Raises:
      StoreError: the production tree overlaps the store, a directory on the way is a link or
        a file, or a write failed.
    """
    ws, ref, layout = ctx.ws, ctx.ref, ctx.layout
    _refuse_overlap(ws)
    stamps = {which: ctx.link(which) for which in _VERSIONS}
    record = ctx.record
    seen = _identity(layout, ref, stamps)
    changed = False
    if seen is None or seen != record.prod_seen:
        record.prod_seen = None  # whatever it held is no longer what is on disk
        changed = _sync_versions(ctx, stamps)
        # Found whole without a write: the identity taken before the comparison is the one to
        # remember (a change since would only make the next look compare again). After a
        # write there is none to remember: the new files are inside the racy window.
        if seen is not None and not changed:  # saved with the segment's next save, or at its end
            record.prod_seen = seen
            ctx.save(hold=True)
    if ref.group == CA_GROUP:
        with _service_dir(layout.prod_dir, ref) as service:
            for name in sorted(CA_SERVICE_FILES):
                changed |= _mirror_file(service, layout.service_dir(ref) / name)
    return changed


def _identity(
    layout: files.Layout, ref: ServiceRef, stamps: dict[ProdLinkName, str | None]
) -> str | None:
    """What the service's production copy and the store versions it mirrors are on disk now
    (:func:`files_identity`); the sync found them as they should be when the record's
    ``prod_seen`` is this, and nothing of them changed since."""
    service = os.fspath(layout.prod_dir / ref.group / ref.service)
    places: list[tuple[str, Sequence[str]]] = [(service, _VERSIONS)]
    for which, stamp in stamps.items():
        places.append((os.path.join(service, which), _SHIPPED_ORDER))
        if stamp is not None:
            places.append((os.fspath(layout.version_dir(ref, stamp)), _SHIPPED_ORDER))
    return files_identity(places)


@contextmanager
def _service_dir(prod_dir: Path, ref: ServiceRef) -> Iterator[Dir]:
    """The service's production directory, reached through no link, made when missing."""
    with (
        confined.open_root(prod_dir, mode=PROD_DIR_MODE) as root,
        confined.open_subdir(root, files.check_name("group", ref.group), mode=PROD_DIR_MODE) as grp,
        confined.open_subdir(
            grp, files.check_name("service", ref.service), mode=PROD_DIR_MODE
        ) as service,
    ):
        yield service


def _sync_versions(ctx: ServiceContext, stamps: dict[ProdLinkName, str | None]) -> bool:
    """Make production's ``curr`` and ``next`` hold what the links lead to (byte for byte);
    True when anything changed."""
    wanted = {which: _wanted(ctx.ws, ctx.ref, stamp) for which, stamp in stamps.items()}
    changed = False
    with _service_dir(ctx.layout.prod_dir, ctx.ref) as service:
        _clear_leftovers(service)
        for which in _VERSIONS:
            switched = _switch(service, which, wanted[which])
            if switched and which == "curr":
                ctx.record.prod_since = ctx.now()
                ctx.save()
            changed |= switched
    return changed


def sync_group_tlsa(ws: Workspace, group: str) -> bool:
    """Copy the group's TLSA file (``certs/<group>/tlsa.<group>``) to production when it
    differs there, or remove the production copy when the group has no such file; True when
    anything changed. Idempotent; written whole in one step and through no link, like the
    versions. A group that has the file in neither place costs two ``stat`` calls and no lock.

    Holds the apex's TLSA lock (``tlsa:<group>``), which the file's writer holds too, so two
    services of one zone never leave an older copy behind.

    Raises:
      StoreError: the production tree overlaps the store, something on the way (or the copy
        itself) is a link or not what sslm writes there, or a write failed.
    """
    layout = ws.layout
    source = layout.group_tlsa(group)
    copy = layout.prod_dir / group / source.name
    if not source.exists() and not copy.exists() and not copy.is_symlink():
        return False
    _refuse_overlap(ws)
    with (
        ws.lock(f"tlsa:{group}"),
        confined.open_root(layout.prod_dir, mode=PROD_DIR_MODE) as root,
        confined.open_subdir(root, files.check_name("group", group), mode=PROD_DIR_MODE) as grp,
    ):
        return _mirror_file(grp, source)
