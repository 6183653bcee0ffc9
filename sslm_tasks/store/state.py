"""The file of the per-service state record, ``certs/<group>/<svc>/state.json``.

This module only reads and writes the JSON; what it means is
:mod:`sslm_tasks.lifecycle.record`'s. The file is written atomically at 0640, and
:func:`write_state` refuses anything that looks like a private key, whatever a caller put in
it. A file that cannot be parsed is not deleted: :func:`set_aside` renames it beside itself, so
it can be inspected while the service goes on with a rebuilt record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from sslm_tasks.errors import StoreError
from sslm_tasks.store.atomic import ensure_dir, write_atomic
from sslm_tasks.store.layout import DIR_MODE_GROUP, RECORD_MODE, Layout, ServiceRef
from sslm_tasks.store.read import read_bytes

# A private key in PEM always carries this, whatever the algorithm or encoding.
_KEY_MARKER: Final = "PRIVATE KEY-----"
#: Suffix of a record that could not be read, kept for inspection.
CORRUPT_SUFFIX: Final = ".corrupt-"


class CorruptState(StoreError):
    """The state file exists but is not JSON (truncated, overwritten, not UTF-8)."""


def read_state(layout: Layout, ref: ServiceRef) -> object | None:
    """The parsed JSON of the service's record; None when there is no file.

    Raises:
      CorruptState: the file is not valid UTF-8 JSON.
      StoreError: it could not be read (permissions, I/O); the message names the file.
    """
    path = layout.state_file(ref)
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreError(f"reading {path}: {err.strerror or err}") from err
    try:
        parsed: object = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CorruptState(f"{path}: corrupt JSON: {err}") from None
    return parsed


def set_aside(layout: Layout, ref: ServiceRef, *, now: datetime) -> Path:
    """Rename the service's record to ``state.json.corrupt-<UTC time>``; returns the new path.

    Raises:
      StoreError: the rename failed.
    """
    path = layout.state_file(ref)
    kept = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{now.strftime('%Y%m%dT%H%M%S.%fZ')}")
    try:
        path.rename(kept)
    except OSError as err:
        raise StoreError(f"moving {path} aside: {err.strerror or err}") from err
    return kept


def write_state(
    layout: Layout, ref: ServiceRef, data: Mapping[str, Any], *, sync_dir: bool = True
) -> None:
    """Write the record atomically at 0640; creates the service directory (0750) if needed.

    With ``sync_dir`` False the service directory is not fsynced after the rename (see
    ``ServiceContext.save``); the file's data always is, before it.

    Raises:
      StoreError: ``data`` is not JSON-serialisable, seems to contain a private key, or could
        not be written (the old file is then unchanged).
    """
    path = layout.state_file(ref)
    try:
        text = json.dumps(data, indent=2, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise StoreError(f"{path}: state is not JSON-serialisable: {err}") from err
    if _KEY_MARKER in text:
        raise StoreError(f"{path}: refusing to store private key material in the state record")
    ensure_dir(layout.service_dir(ref), mode=DIR_MODE_GROUP)
    write_atomic(path, (text + "\n").encode(), mode=RECORD_MODE, sync_dir=sync_dir)
