"""What some files are on disk, as one digest: a later look that finds the same digest knows
from a ``stat`` of each file that none was written, replaced, added or removed in between, and
need not read them again.

A file's identity is its device, inode, type and mode, size, and modification and change times
(in nanoseconds). The kernel moves a file's change time forward on every write, rename onto its
name, chmod or chown, and no call can set it back; a name added to or removed from a directory
moves the directory's times. The one blind spot is a clock coarser than the gap between two
changes: a file changed again within the same tick, at the same size, would look the same. So
an identity taken within :data:`RACY_S` of any of its files' last change is not given at all
(git's "racily clean" rule), and the caller compares the bytes, as it would without one.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Sequence
from typing import Final

#: A file changed less than this long before its identity is taken is too recent to trust
#: (filesystems with one- or two-second timestamps exist).
RACY_S: Final = 2.0


def files_identity(
    places: Iterable[tuple[str, Sequence[str]]],
    *,
    follow_links: bool = False,
    read_since_ns: int | None = None,
) -> str | None:
    """A digest of each directory of ``places`` and of the named files in it (an absent one
    counts as absent); None when any of them changed less than :data:`RACY_S` before now (by
    the wall clock, which the kernel's times follow), or before ``read_since_ns`` when given:
    the moment a caller began reading the files, so that one changed while it read them (after
    it read the old bytes, maybe) never vouches for what it read.

    A link is looked at itself, unless ``follow_links``: then the file it leads to stands for
    it (a configuration file may be a link to a shared one, whose edits must count).
    The directory's own times stand for the names it holds: a file added beside the named ones
    changes the digest too.
    """
    since = time.time_ns() if read_since_ns is None else read_since_ns
    newest_trusted = since - int(RACY_S * 1e9)
    look = os.stat if follow_links else os.lstat
    seen: list[object] = []
    for directory, names in places:
        # os.path.join's result, built by hand (it is a third of a no-op run's identity time):
        # the paths are part of the digest, which must not change between releases.
        inside = directory if directory.endswith("/") else f"{directory}/"
        paths = [directory]
        paths += (os.path.join(directory, n) if n.startswith("/") else inside + n for n in names)
        for path in paths:
            try:
                found = look(path)
            except FileNotFoundError:
                if path is directory:  # so are its names: no need to ask for each
                    seen += [(absent, None) for absent in paths]
                    break
                seen.append((path, None))
                continue
            except OSError:  # unreadable, or not a directory: the byte comparison says why
                return None
            if found.st_ctime_ns > newest_trusted or found.st_mtime_ns > newest_trusted:
                return None
            seen.append(
                (
                    path,
                    found.st_dev,
                    found.st_ino,
                    found.st_mode,
                    found.st_size,
                    found.st_mtime_ns,
                    found.st_ctime_ns,
                )
            )
    return hashlib.blake2b(repr(seen).encode(), digest_size=16).hexdigest()
