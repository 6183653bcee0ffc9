"""``sslm-mgr -s`` (text or ``--json``): the status of the selected services, printed service by
service as each is read, and an exit status an operator's script can act on.

Exit status: 0 when every selected service is ``ok`` or ``pending``; 1 when any is ``failing``
or ``expiring``, or its files could not be read (it is named; the others are still shown).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from sslm_tasks.errors import SslmError
from sslm_tasks.lifecycle.cert_book import CertBook
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.deployment import ServerOutcome, read_ledger
from sslm_tasks.lifecycle.status import ReadingWorkspace, ServiceStatus, service_status
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import ServiceRef

from . import report
from .status_json import StatusJsonWriter

EXIT_OK, EXIT_ATTENTION = 0, 1
#: The health words that make ``-s`` exit 1.
NEEDS_ATTENTION: Final = frozenset({"failing", "expiring"})
#: Where an unreadable deploy ledger is reported.
LEDGER: Final = "deploy ledger"


@dataclass(frozen=True)
class Unreadable:
    """What could not be read: a service (``group:service``) or the deploy ledger."""

    where: str
    message: str


def read_statuses(
    ws: Workspace, refs: Sequence[ServiceRef], *, details: bool
) -> Iterator[ServiceStatus | Unreadable]:
    """Each service's status in turn, read when asked for (nothing is held for the others);
    first the ledger's problem, if it cannot be read (every service is then judged without
    it). The statuses judge by the renew target (:class:`MiddleOfSpread`)."""
    # A run that just worked hands its book on; a plain -s reads it when it shows details.
    book = ws.cert_book or (CertBook.open(ws.layout.certs_dir) if details else None)
    reading = ReadingWorkspace(config=ws.config, options=ws.options, clock=ws.clock, cert_book=book)
    ledger: dict[str, ServerOutcome] = {}
    try:
        ledger = read_ledger(reading)
    except SslmError as err:
        yield Unreadable(LEDGER, str(err))
    for ref in refs:
        try:
            ctx = ServiceContext(reading, ref, repair=False)
            yield service_status(ctx, ledger, details=details)
        except SslmError as err:
            yield Unreadable(str(ref), str(err))


def show(ws: Workspace, refs: Sequence[ServiceRef], *, as_json: bool, verbose: bool) -> int:
    """Print the status (text, or JSON with ``as_json``); return the exit status."""
    code = EXIT_OK
    errors: list[Unreadable] = []
    writer = StatusJsonWriter(sys.stdout, generated_at=ws.clock()) if as_json else None
    group = None
    for found in read_statuses(ws, refs, details=True):
        if isinstance(found, Unreadable):
            errors.append(found)
            code = EXIT_ATTENTION
            continue
        if found.health.word in NEEDS_ATTENTION:
            code = EXIT_ATTENTION
        if writer is not None:
            writer.service(found)
            continue
        if found.ref.group != group:
            group = found.ref.group
            print(group)
        print("\n".join(report.service_lines(found, verbose=verbose)))
    if writer is not None:
        writer.finish((error.where, error.message) for error in errors)
    for error in [] if as_json else errors:
        print(f"{error.where}: Error: {error.message}")
    return code
