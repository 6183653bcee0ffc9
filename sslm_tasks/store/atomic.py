"""The only code that writes files, links and directories in the store.

Every write is "temp file in the target directory, fsync, rename, fsync the directory", so a
reader (or a crash) sees the old content or the new one, never a mix. A caller that makes
several files in a directory no link points at yet (a version being built) may leave out the
directory fsync (``sync_dir=False``) and sync the directory once, before a link points at it
(:func:`sync_directory`, as ``versions.point`` does): each file is still fsynced before its
rename, so after a power cut a name is either absent (and made again) or holds complete data.

The temp file is created with ``O_EXCL`` and its final mode, so a private key is 0600 from
its first byte: upstream wrote keys at the umask mode and chmodded them after the rename,
leaving a readable window (behaviour §3.8). Modes given here are exact: the umask can neither
widen nor narrow them.

A crash between creating a temp and renaming it leaves a ``<name>.tmp-<hex>`` file beside the
target, with the target's mode. It is never read; it goes away when its version dir is cleaned.

Errors: every ``OSError`` is raised as :class:`~sslm_tasks.errors.StoreError` naming the path,
with the cause chained; only :func:`create_dir` lets ``FileExistsError`` through on purpose.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from sslm_tasks.errors import StoreError

_TEMP_INFIX: Final = ".tmp-"
_TEMP_NAME: Final = re.compile(r".+\.tmp-[0-9a-f]{16}")


def _temp_sibling(path: Path) -> Path:
    """A fresh name beside ``path``; random, so concurrent writers never share a temp."""
    return path.with_name(f"{path.name}{_TEMP_INFIX}{secrets.token_hex(8)}")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of this module's temp names (``<target>.tmp-<16 hex>``)."""
    return _TEMP_NAME.fullmatch(name) is not None


def _fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a rename, a new name) survive a power loss."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_directory(directory: Path) -> None:
    """Fsync ``directory``, for callers that wrote into it with ``sync_dir=False``.

    Raises:
      StoreError: the directory could not be opened or synced.
    """
    try:
        _fsync_dir(directory)
    except OSError as err:
        raise _as_store_error("syncing", directory, err) from err


def _write_temp(path: Path, data: bytes, mode: int) -> tuple[Path, int]:
    """Write ``data`` to a new temp file beside ``path`` with ``mode``, not yet synced (the
    caller fsyncs every temp of a batch in one pass, through the descriptor it gets back
    rather than by opening each file again); return the temp path and its open descriptor,
    which the caller closes.

    On failure the temp file is closed and removed before the error propagates.
    """
    tmp = _temp_sibling(path)
    # O_EXCL: never open a file someone planted; O_NOFOLLOW: nor follow a planted link.
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        # The umask may have narrowed the mode at creation; set it exactly. Never wider than
        # ``mode`` at any time, since creation already applied ``mode``.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return tmp, fd


def _as_store_error(what: str, path: Path, err: OSError) -> StoreError:
    return StoreError(f"{what} {path}: {err.strerror or err}")


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically; the file has exactly ``mode`` from creation.

    Idempotent. The parent directory must exist (see :func:`ensure_dir`). With ``sync_dir``
    False the directory is not fsynced: the caller does it before anything relies on the name.

    Raises:
      StoreError: the file could not be written (``path`` is then unchanged) or its directory
        not synced; no temp file remains either way.
    """
    write_files_atomic({path: (data, mode)}, sync_dir=sync_dir)


def write_files_atomic(files: Mapping[Path, tuple[bytes, int]], *, sync_dir: bool = True) -> None:
    """Write several files, all or nothing as far as POSIX allows.

    Every temp file is written, then all are fsynced in one pass (on a journalling file
    system the first fsync commits the others' data with it, so the rest cost little); only
    then are they renamed into place, one by one, in the mapping's order. A failure while
    writing leaves every target untouched and removes all temps. A failure among the renames
    (rare: the data is already on disk) leaves the earlier files replaced and the later ones
    not. That is why a new version is published by a single link flip after its files are
    complete, never by these renames alone.

    Parameters:
      files(Mapping[Path, tuple[bytes, int]]): target path → (content, exact mode).
      sync_dir(bool): fsync the directories after the renames; False when the caller does it
        before anything relies on the new names.

    Raises:
      StoreError: a file could not be written; no temp file remains.
    """
    temps: dict[Path, Path] = {}
    descriptors: list[int] = []
    try:
        for path, (data, mode) in files.items():
            try:
                temps[path], fd = _write_temp(path, data, mode)
            except OSError as err:
                raise _as_store_error("writing", path, err) from err
            descriptors.append(fd)
        for path, fd in zip(temps, descriptors, strict=True):
            try:
                os.fsync(fd)
            except OSError as err:
                raise _as_store_error("writing", path, err) from err
        for fd in descriptors:
            os.close(fd)
        descriptors.clear()
        for path, tmp in list(temps.items()):
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise _as_store_error("installing", path, err) from err
            del temps[path]
    finally:
        for fd in descriptors:
            os.close(fd)
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    if sync_dir:
        for directory in {path.parent for path in files}:
            sync_directory(directory)


def symlink_atomic(link: Path, target: str, *, sync_dir: bool = True) -> None:
    """Point ``link`` at ``target`` in one step: readers see the old target or the new one.

    A temp link ``<link>.tmp-<hex>`` is created and renamed over ``link`` (rename replaces a
    symlink atomically; unlink-then-symlink would leave a moment with no link at all).

    Parameters:
      link(Path): the link to create or replace; its directory must exist.
      target(str): a *relative* target, so the tree stays valid when moved or restored.
      sync_dir(bool): fsync the link's directory; False when a later fsync of it follows.

    Raises:
      ValueError: ``target`` is absolute.
      StoreError: the link could not be made (for example ``link`` is a real directory).
    """
    if os.path.isabs(target):
        raise ValueError(f"symlink target must be relative, got {target!r}")
    tmp = _temp_sibling(link)
    try:
        os.symlink(target, tmp)
        try:
            os.replace(tmp, link)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if sync_dir:
            _fsync_dir(link.parent)
    except OSError as err:
        raise _as_store_error("linking", link, err) from err


def remove_file(path: Path, *, sync_dir: bool = True) -> bool:
    """Remove a file or symlink (never a directory) durably (with ``sync_dir``; else the caller
    copes with a removal a power cut undoes); return whether one was there.

    Raises:
      StoreError: it exists but could not be removed.
    """
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as err:
        raise _as_store_error("removing", path, err) from err
    if sync_dir:
        sync_directory(path.parent)
    return True


def create_dir(path: Path, *, mode: int, sync_parent: bool = True) -> None:
    """Create one directory with exactly ``mode`` (the umask is overridden), durably (with
    ``sync_parent``; else the caller fsyncs the parent before anything relies on the name).

    Exclusive: it is how a caller claims a fresh name (see ``versions.new_version``).

    Raises:
      FileExistsError: ``path`` already exists; nothing was changed.
      StoreError: any other failure (missing parent, permissions, ...).
    """
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        raise
    except OSError as err:
        raise _as_store_error("creating", path, err) from err
    try:
        os.chmod(path, mode)
        if sync_parent:
            _fsync_dir(path.parent)
    except OSError as err:
        raise _as_store_error("creating", path, err) from err


def ensure_dir(path: Path, *, mode: int) -> Path:
    """``mkdir -p`` where every directory it creates gets exactly ``mode``; return ``path``.

    Existing directories keep their mode: trees made by upstream (0755 service dirs, 0750 db
    dirs) stay usable, and we never chmod what we did not create. So a private mode here
    protects only what this call creates. Key privacy therefore rests on each version directory
    being created fresh at 0700 by ``versions.new_version`` (which fails rather than reuse
    one) and on key files being 0600, not on the modes of older parents.

    Safe against a concurrent creator: a directory that appears meanwhile is accepted.

    Raises:
      StoreError: a component exists and is not a directory, or creation failed.
    """
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        if probe.exists() or probe.is_symlink():
            if probe.is_dir():  # another process made it between our two looks
                break
            raise StoreError(f"creating {path}: {probe} exists and is not a directory")
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            create_dir(directory, mode=mode)
    if not path.is_dir():
        raise StoreError(f"creating {path}: not a directory after creation")
    return path
