"""The per-service step record, ``certs/<group>/<svc>/state.json``.

It holds what the files cannot tell: which step a service is at, the version being built, when
its roll is due. Everything else (which version is ``curr``, when it expires) is read from the
links and certificates, so the two can never disagree. The record is small JSON, written
atomically at 0600; it never holds key material, and :func:`save_state` refuses anything that
looks like a private key. Callers hold the service lock around load, change and save.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sslm_tasks.errors import StoreError
from sslm_tasks.store.atomic import ensure_dir, write_atomic
from sslm_tasks.store.layout import DIR_MODE_GROUP, KEY_MODE, Layout, ServiceRef


class Phase(StrEnum):
    """Where a service is in its renew → roll cycle."""

    IDLE = "idle"
    #: Building version ``stamp``: key, CSR, order. The version dir is not complete yet.
    RENEWING = "renewing"
    #: Version ``stamp`` is complete and ``next`` points at it; the roll is due at ``roll_due``.
    ISSUED = "issued"
    #: Links are being flipped and deploys run for ``stamp``.
    ROLLING = "rolling"
    ROLLED = "rolled"
    #: The last step failed; ``last_error`` says why.
    FAILED = "failed"


#: Phases whose ``stamp`` names a version still in use by an unfinished step.
IN_FLIGHT: frozenset[Phase] = frozenset({Phase.RENEWING, Phase.ISSUED, Phase.ROLLING, Phase.FAILED})

# A private key in PEM always carries this, whatever the algorithm or encoding.
_KEY_MARKER = "PRIVATE KEY-----"


@dataclass
class ServiceState:
    """One service's step record. Times are ISO 8601 strings in UTC, so the record is JSON.

    ``extra`` is for step-specific scalars (an order URL, a DNS serial); it must be
    JSON-serialisable and must never hold secrets.
    """

    phase: Phase = Phase.IDLE
    stamp: str | None = None
    roll_due: str | None = None
    last_error: str | None = None
    updated: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_OPTIONAL_STR = ("stamp", "roll_due", "last_error", "updated")
_FIELDS = frozenset(f.name for f in fields(ServiceState))


def _from_json(raw: object, where: str) -> ServiceState:
    if not isinstance(raw, dict):
        raise StoreError(f"{where}: expected a JSON object")
    unknown = set(raw) - _FIELDS
    if unknown:
        # Dropping them on the next save would lose data a newer sslm wrote: stop instead.
        raise StoreError(f"{where}: unknown keys {sorted(unknown)}")
    for key in _OPTIONAL_STR:
        if not isinstance(raw.get(key), str | None):
            raise StoreError(f"{where}: {key} = {raw[key]!r}: expected a string or null")
    extra = raw.get("extra", {})
    if not isinstance(extra, dict):
        raise StoreError(f"{where}: extra = {extra!r}: expected an object")
    try:
        phase = Phase(raw.get("phase", Phase.IDLE))
    except ValueError as err:
        raise StoreError(f"{where}: phase = {raw['phase']!r}: unknown phase") from err
    return ServiceState(phase=phase, extra=extra, **{k: raw.get(k) for k in _OPTIONAL_STR})


def load_state(layout: Layout, ref: ServiceRef) -> ServiceState:
    """Read the service's record; a missing file gives the default (idle) record.

    Raises:
      StoreError: the file is unreadable, not valid JSON, or not a state record; the message
        names the file.
    """
    path = layout.state_file(ref)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ServiceState()
    except OSError as err:
        raise StoreError(f"reading {path}: {err.strerror or err}") from err
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise StoreError(f"{path}: corrupt JSON: {err}") from err
    return _from_json(raw, str(path))


def save_state(
    layout: Layout, ref: ServiceRef, state: ServiceState, *, now: datetime | None = None
) -> None:
    """Set ``state.updated`` to ``now`` (default: the current time, UTC) and write the record.

    Atomic and 0600; creates the service directory (0750) if needed.

    Raises:
      StoreError: the record is not JSON-serialisable, seems to contain a private key, or
        could not be written.
    """
    path = layout.state_file(ref)
    state.updated = (now or datetime.now(UTC)).astimezone(UTC).isoformat()
    try:
        text = json.dumps(asdict(state), indent=2, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise StoreError(f"{path}: state is not JSON-serialisable: {err}") from err
    if _KEY_MARKER in text:
        raise StoreError(f"{path}: refusing to store private key material in the state record")
    ensure_dir(layout.service_dir(ref), mode=DIR_MODE_GROUP)
    write_atomic(path, (text + "\n").encode(), mode=KEY_MODE)
