"""The validated configuration of a whole tree, remembered between runs: a run over thousands
of services need not parse and validate every service file again while none of them changed.

What a remembered configuration vouches for is only what a load reads inside the configuration
tree: the bytes of each file it read and the names in each directory it listed (their identity,
:func:`~sslm_tasks.store.identity.files_identity`, links followed), and the code that validated
them (this package's files, the interpreter, pydantic, cryptography). What a load checks outside
it (the trees sslm writes into, the secret files, the notification URLs) is checked again at
every load, remembered or not: those change without any configuration file changing.

Pickle, because the point is to skip pydantic's validation, and only pickle restores the
validated models as they were without it. Unpickling runs whatever code the file names, so the
file is used only when it is the running user's own, writable by no one else, and not a link:
the code in it then runs as the one user who could have written it, with no right that user
did not have already. A digest of the content refuses a torn file. Anything amiss makes it a
miss: the configuration is then loaded from its files, as without this module.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import sys
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Final

import cryptography
import pydantic

import sslm_tasks
from sslm_tasks.errors import StoreError
from sslm_tasks.store.atomic import is_temp_name, write_atomic
from sslm_tasks.store.identity import files_identity
from sslm_tasks.store.layout import KEY_MODE
from sslm_tasks.store.read import read_own_file

log = logging.getLogger("sslm")

#: Hidden, like the run lock beside it: no group or service is ever named so.
FILE_NAME: Final = ".config-remembered"
#: Changed whenever what is pickled changes shape.
_FORMAT: Final = 1
_DIGEST_SIZE: Final = 32
#: A temp file of this file older than this was left by a killed write (a write takes well
#: under a second, even at 10,000 services).
_STALE_S: Final = 600.0

#: Directories and the names in them, as :func:`files_identity` takes them.
Places = Sequence[tuple[str, Sequence[str]]]


@cache
def _code_places() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every directory of this package and its source files: a release or an edit of any of
    them may validate differently."""
    root = Path(sslm_tasks.__file__).parent
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        found.append((directory, tuple(sorted(n for n in names if n.endswith(".py")))))
    return tuple(found)


def code_identity() -> str | None:
    """The code that validates and summarises: every source file of sslm (by identity), the
    interpreter's, pydantic's and cryptography's versions; None while a file is too recent."""
    code = files_identity(_code_places(), follow_links=True)
    if code is None:
        return None
    versions = f"{sys.version}|pydantic {pydantic.VERSION}|cryptography {cryptography.__version__}"
    return f"{versions}|{code}"


def recall(certs_dir: Path, conf_dir: Path) -> object | None:
    """What :func:`keep` kept for ``conf_dir`` in ``certs_dir``, when none of its inputs and
    none of the code changed since; None otherwise (no file, another user's, unreadable,
    torn, from other code, an input changed or changed too recently to tell)."""
    data = read_own_file(certs_dir / FILE_NAME)
    if data is None:
        return None
    digest, body = data[:_DIGEST_SIZE], data[_DIGEST_SIZE:]
    if hashlib.blake2b(body, digest_size=_DIGEST_SIZE).digest() != digest:
        return None
    # Two pickles: what the configuration was loaded from, then the configuration, which is
    # unpickled (most of the cost) only once the first says it is still what the files say.
    unpickler = pickle.Unpickler(io.BytesIO(body))
    try:
        form, conf, code, inputs, identity = unpickler.load()
    except Exception:  # any failure to unpickle is a miss, never an error
        return None
    if form != _FORMAT or conf != str(conf_dir) or code != code_identity():
        return None
    if identity is None or files_identity(inputs, follow_links=True) != identity:
        return None
    try:
        value: object = unpickler.load()
    except Exception:  # as above
        return None
    return value


def keep(
    certs_dir: Path, conf_dir: Path, inputs: Places, value: object, *, read_since_ns: int
) -> None:
    """Remember ``value``, loaded from ``inputs`` (read from ``read_since_ns`` on), for
    :func:`recall`. Nothing is kept when an input changed since then (its bytes may be newer
    than what was read), or the store does not exist yet or is another user's (root running
    sslm on a tree its own user runs would leave a file that user may not read, and replaces);
    a failure to write is logged, never raised: the next load reads the files again."""
    try:
        owner = certs_dir.stat().st_uid
    except OSError:
        return
    code = code_identity()
    identity = files_identity(inputs, follow_links=True, read_since_ns=read_since_ns)
    if owner != os.geteuid() or code is None or identity is None:
        return
    places = [(directory, list(names)) for directory, names in inputs]
    stream = io.BytesIO()
    pickler = pickle.Pickler(stream, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dump((_FORMAT, str(conf_dir), code, places, identity))
    pickler.dump(value)
    body = stream.getvalue()
    digest = hashlib.blake2b(body, digest_size=_DIGEST_SIZE).digest()
    try:
        write_atomic(certs_dir / FILE_NAME, digest + body, mode=KEY_MODE, sync_dir=False)
    except StoreError as err:
        log.debug("the configuration is not remembered: %s", err)
    _remove_stale_temps(certs_dir)


def _remove_stale_temps(certs_dir: Path) -> None:
    """Remove the temp files of writes of this file that were killed before their rename (a
    few MB each at 10,000 services; the store's clean works per service, so nothing else
    would). One younger than :data:`_STALE_S` may be another run's write under way."""
    oldest_live = time.time() - _STALE_S
    try:
        with os.scandir(certs_dir) as found:
            stale = [
                entry.path
                for entry in found
                if entry.name.startswith(f"{FILE_NAME}.")
                and is_temp_name(entry.name)
                and entry.stat(follow_symlinks=False).st_mtime < oldest_live
            ]
        for path in stale:
            os.unlink(path)
    except OSError as err:
        log.debug("the remembered configuration's old temp files stay: %s", err)
