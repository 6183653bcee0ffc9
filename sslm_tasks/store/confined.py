"""Directories walked without following links: every step opened relative to its parent.

The production tree is shared with deploy tooling and, through ``post_copy_cmd``, with the
servers, so sslm cannot assume that nothing else ever wrote under it. A path-based walk would
follow a planted ``prod-certs/<group>/<svc>/curr -> /some/dir`` and write private keys into
``/some/dir``; it would also follow ``curr`` into the store when ``prod_cert_dir`` names the
store, and delete what it found there (the CA keys, issue 10). So below a root that the
operator configured, every directory here is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative
to the descriptor of its parent, and every file is created with ``O_EXCL | O_NOFOLLOW`` in that
directory: a link in the way is an error, never a detour. The root itself is opened as
configured (it may well be a link the operator made, to another disk).

A version is switched in one step: its files are written into a fresh hidden directory, which
then trades places with the old one (``renameat2(RENAME_EXCHANGE)``), so a reader sees the old
version or the new one, never a key from one and a certificate from the other.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sslm_tasks.errors import StoreError
from sslm_tasks.store.atomic import ensure_dir

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS: Final = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
#: ``renameat2`` flag (linux/fs.h): swap two names atomically.
_RENAME_EXCHANGE: Final = 2


def _error(what: str, path: Path, err: OSError) -> StoreError:
    if err.errno in (errno.ELOOP, errno.ENOTDIR):
        return StoreError(
            f"{what} {path}: it is a link or not a directory; sslm follows no link it did "
            "not make there (move it away)"
        )
    return StoreError(f"{what} {path}: {err.strerror or err}")


@dataclass(frozen=True)
class Dir:
    """An open directory and the path it was reached by (for messages only, never reopened)."""

    fd: int
    path: Path


@contextmanager
def open_root(path: Path, *, mode: int) -> Iterator[Dir]:
    """Open (creating with ``mode`` when missing) the configured top of a confined tree.

    Raises:
      StoreError: it could not be created or opened.
    """
    ensure_dir(path, mode=mode)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise _error("opening", path, err) from err
    try:
        yield Dir(fd, path)
    finally:
        os.close(fd)


@contextmanager
def open_subdir(
    parent: Dir, name: str, *, mode: int | None, sync_parent: bool = True
) -> Iterator[Dir]:
    """Open ``name`` in ``parent`` without following a link; create it with ``mode`` when
    missing and ``mode`` is given, and then fsync ``parent`` unless ``sync_parent`` is False
    (a hidden directory that is renamed, and its parent synced, before anything uses it).

    Raises:
      StoreError: ``name`` is a link or a file, or is missing and ``mode`` is None.
    """
    path = parent.path / name
    if mode is not None:
        try:
            os.mkdir(name, mode, dir_fd=parent.fd)
        except FileExistsError:
            pass
        except OSError as err:
            raise _error("creating", path, err) from err
        else:
            os.chmod(name, mode, dir_fd=parent.fd)  # exact: the umask narrowed mkdir's mode
            if sync_parent:
                sync(parent)
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent.fd)
    except OSError as err:
        raise _error("opening", path, err) from err
    try:
        yield Dir(fd, path)
    finally:
        os.close(fd)


def lstat(parent: Dir, name: str) -> os.stat_result | None:
    """``name``'s own status (a link is not followed), or None when absent."""
    try:
        return os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _error("reading", parent.path / name, err) from err


def entries(directory: Dir) -> list[str]:
    """Names in ``directory`` (no ``.``/``..``), sorted."""
    try:
        return sorted(os.listdir(directory.fd))
    except OSError as err:
        raise _error("listing", directory.path, err) from err


def read_file(parent: Dir, name: str) -> bytes | None:
    """The bytes of regular file ``name``; None when it is absent, a link or not a file."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent.fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            return None
        raise _error("reading", parent.path / name, err) from err
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_new_files(directory: Dir, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Create each file in ``directory`` (which must not hold it yet) with its exact mode and
    content; then fsync them all in one pass (on a journalling file system the first fsync
    commits the others' data with it) and sync the directory.

    Raises:
      StoreError: a name exists already (or is a link), or a write failed.
    """
    written: dict[str, int] = {}
    try:
        for name, (data, mode) in files.items():
            try:
                fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=directory.fd)
            except OSError as err:
                raise _error("writing", directory.path / name, err) from err
            written[name] = fd
            try:
                os.fchmod(fd, mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as err:
                raise _error("writing", directory.path / name, err) from err
        for name, fd in written.items():
            try:
                os.fsync(fd)
            except OSError as err:
                raise _error("writing", directory.path / name, err) from err
    finally:
        for fd in written.values():
            os.close(fd)
    sync(directory)


def replace_file(directory: Dir, name: str, data: bytes, *, mode: int) -> None:
    """Make ``name`` in ``directory`` a regular file holding ``data`` (exact ``mode``), in one
    step: a hidden new file is written whole and renamed over it, so a reader sees the old
    content or the new, never a part. A link or a directory in its place is left alone.

    Raises:
      StoreError: ``name`` is a link or not a regular file, or a write failed.
    """
    _regular_or_absent(directory, name)
    prepared = temp_name(name, "new")
    try:
        write_new_files(directory, {prepared: (data, mode)})
        rename(directory, prepared, name)
    except StoreError:
        with suppress(OSError):
            os.unlink(prepared, dir_fd=directory.fd)
        raise
    sync(directory)


def remove_file(directory: Dir, name: str) -> bool:
    """Remove regular file ``name`` from ``directory``; True when it was there.

    Raises:
      StoreError: ``name`` is a link or not a regular file (sslm removes only what it wrote),
        or the removal failed.
    """
    if not _regular_or_absent(directory, name):
        return False
    try:
        os.unlink(name, dir_fd=directory.fd)
    except OSError as err:
        raise _error("removing", directory.path / name, err) from err
    sync(directory)
    return True


def _regular_or_absent(directory: Dir, name: str) -> bool:
    """Whether ``name`` is a regular file (False: absent).

    Raises:
      StoreError: it is something else, such as a link.
    """
    status = lstat(directory, name)
    if status is None:
        return False
    if not stat.S_ISREG(status.st_mode):
        raise StoreError(
            f"{directory.path / name} is a link or not a regular file; sslm replaces or removes "
            "only the files it writes there (move it away)"
        )
    return True


def sync(directory: Dir) -> None:
    try:
        os.fsync(directory.fd)
    except OSError as err:
        raise _error("syncing", directory.path, err) from err


def temp_name(base: str, kind: str) -> str:
    """A fresh hidden name beside ``base`` (``.<base>.<kind>-<hex>``)."""
    return f".{base}.{kind}-{secrets.token_hex(6)}"


def rename(directory: Dir, old: str, new: str) -> None:
    """Rename within ``directory``; ``new`` is replaced if it is a file or an empty directory."""
    try:
        os.replace(old, new, src_dir_fd=directory.fd, dst_dir_fd=directory.fd)
    except OSError as err:
        raise _error("renaming", directory.path / old, err) from err


def _libc_renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # a libc older than glibc 2.28
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_RENAMEAT2: Final = _libc_renameat2()


def exchange(directory: Dir, first: str, second: str) -> bool:
    """Swap two existing names in ``directory`` in one atomic step.

    Returns False when the system cannot (no ``renameat2``, or a file system without
    ``RENAME_EXCHANGE``); the caller then falls back to two renames.

    Raises:
      StoreError: the swap failed for another reason.
    """
    if _RENAMEAT2 is None:
        return False
    done = _RENAMEAT2(
        directory.fd, os.fsencode(first), directory.fd, os.fsencode(second), _RENAME_EXCHANGE
    )
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise _error("exchanging", directory.path / first, OSError(code, os.strerror(code)))


def remove_if_only(
    directory: Dir, name: str, allowed: frozenset[str], *, sync_dir: bool = True
) -> bool:
    """Remove directory ``name`` if it is a real directory holding only regular files named in
    ``allowed``; True when it was removed (or was not there). With ``sync_dir`` False the
    removal is not made durable (the caller copes with a power cut bringing it back).

    Anything else (a link, a file, a subdirectory, a name sslm does not write) means someone
    else put it there: nothing is deleted and False is returned.

    Raises:
      StoreError: a removal failed.
    """
    status = lstat(directory, name)
    if status is None:
        return True
    if not stat.S_ISDIR(status.st_mode):
        return False
    with open_subdir(directory, name, mode=None) as inner:
        names = entries(inner)
        for entry in names:
            found = lstat(inner, entry)
            if entry not in allowed or found is None or not stat.S_ISREG(found.st_mode):
                return False
        for entry in names:
            try:
                os.unlink(entry, dir_fd=inner.fd)
            except OSError as err:
                raise _error("removing", inner.path / entry, err) from err
    try:
        os.rmdir(name, dir_fd=directory.fd)
    except OSError as err:
        raise _error("removing", directory.path / name, err) from err
    if sync_dir:
        sync(directory)
    return True


def overlaps(first: Path, second: Path) -> bool:
    """Whether one of two trees lies inside the other (or both are one), links resolved.

    The store and a tree sslm mirrors or writes into must be apart: a production tree inside
    the store would have its clean-up reach the store's keys, and one around the store would
    ship them.
    """
    one, two = Path(os.path.realpath(first)), Path(os.path.realpath(second))
    return one == two or one in two.parents or two in one.parents
