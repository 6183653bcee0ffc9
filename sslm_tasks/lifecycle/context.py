"""One service as a step sees it: the workspace, the service's name, and its state record,
read once per step and written when the step says so.

Every lifecycle step takes a :class:`ServiceContext`. The in-process runner and a Celery task
each make one per step (a task's world may have changed since its message was sent), so a step
reads the record once, however many helpers look at it, and writes it at its durability points
only: after the change that must survive a crash (an order recorded before its
authorizations are read; token paths recorded before the tokens are written), and at its end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sslm_tasks.config.models import ServiceConfig
from sslm_tasks.lifecycle.record import BadRecord, Phase, ServiceRecord
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import Layout, LinkName, ServiceRef
from sslm_tasks.store.state import CorruptState, read_state, set_aside, write_state
from sslm_tasks.store.versions import is_complete, link_moves, read_link

log = logging.getLogger("sslm")


@dataclass
class ServiceContext:
    """The service ``ref`` in workspace ``ws``; :attr:`record` is loaded on first use.

    Parameters:
      repair(bool): a record that cannot be read is set aside and the rebuilt one saved; with
        False (``-s``, ``-d``: they write nothing) it is only rebuilt in memory.
      workflow(str): the id of the workflow the step belongs to (a worker chain's root task,
        an in-process run); empty outside one.
    """

    ws: Workspace
    ref: ServiceRef
    repair: bool = True
    workflow: str = ""
    _record: ServiceRecord | None = field(default=None, repr=False)
    #: Inside :meth:`held_saves`: a save with ``hold`` is held.
    _holding: bool = field(default=False, repr=False)
    #: A save was held and is not on disk yet.
    _held: bool = field(default=False, repr=False)
    #: The links read (:meth:`link`), each with the count of link moves when it was read.
    _links: dict[LinkName, tuple[int, str | None]] = field(default_factory=dict, repr=False)

    @property
    def layout(self) -> Layout:
        return self.ws.layout

    @property
    def service(self) -> ServiceConfig:
        return self.ws.service(self.ref)

    def now(self) -> datetime:
        return self.ws.clock()

    @property
    def record(self) -> ServiceRecord:
        if self._record is None:
            self._record = load_record(self.ws, self.ref, repair=self.repair)
        return self._record

    def link(self, which: LinkName) -> str | None:
        """The stamp ``which`` points at (:func:`~sslm_tasks.store.versions.read_link`).

        Each link is read once: a look at a service (its health, its status, the renew check)
        asks for ``curr`` and ``next`` a dozen times, and each read is two system calls, which
        at thousands of services is most of a run that has nothing to do. A context that
        only reads (``repair=False``) keeps its first answer, one consistent view. A context
        that works reads again after any link moved (``link_moves``), since its steps move
        them; between moves nobody else can: the service's lock keeps other steps out.
        """
        moves = link_moves()
        known = self._links.get(which)
        if known is not None and (known[0] == moves or not self.repair):
            return known[1]
        stamp = read_link(self.layout, self.ref, which)
        self._links[which] = (moves, stamp)
        return stamp

    def save(self, *, sync_dir: bool = True, hold: bool = False) -> None:
        """Write the record (stamped ``updated``); atomic and 0640 (no secret in it).

        ``sync_dir=False`` leaves out the fsync of the service directory after the rename, for
        a save that a power cut may undo: one whose loss is the same as a crash just before it
        (which a rerun handles), with nothing outside the store acting on it before the
        directory is synced again (the next link flip there, or the next full save).

        ``hold`` is for such a save that a kill may undo too (it implies ``sync_dir=False``):
        inside :meth:`held_saves` it is held, and written with the next full save, before a
        :meth:`reload` or at the block's end. Not the build's start: a step delivered again
        after its worker was killed must find the build to resume it, not start another.

        Raises:
          StoreError: it could not be written, or holds something like a private key.
        """
        if hold and self._holding:
            self._held = True
            return
        self._write(sync_dir=sync_dir and not hold)

    def _write(self, *, sync_dir: bool) -> None:
        self._held = False
        record = self.record
        record.updated = self.now()
        write_state(self.layout, self.ref, record.to_json(), sync_dir=sync_dir)

    @contextmanager
    def held_saves(self) -> Iterator[None]:
        """Hold the saves made with ``hold`` inside the block: each is written by the next full
        save, before a :meth:`reload`, or when the block ends (however it ends). A segment's
        steps run inside one (``pipeline.run_steps``): a local CA's ``next`` is then written
        with its roll, one state write fewer per private-CA service. A kill inside the block
        undoes a held save as a power cut would: the rerun sees the record as before it.

        Raises:
          StoreError: the held save could not be written at the end.
        """
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            if self._held:
                self._write(sync_dir=False)

    def started_here(self) -> bool:
        """Whether the record's build was started by this very workflow (a step delivered
        again after a crash must not start another)."""
        return bool(self.workflow) and self.record.build_workflow == self.workflow

    def reload(self) -> ServiceRecord:
        """Read the record again: another writer (a deploy worker) may have changed it. A
        held save is written first, so what this context changed is not lost."""
        if self._held:
            self._write(sync_dir=False)
        self._record = None
        return self.record

    def of(self, other: ServiceRef) -> ServiceContext:
        """Another service of the same workspace (a zone's other services, a signing CA)."""
        return ServiceContext(self.ws, other, repair=self.repair, workflow=self.workflow)


def load_record(ws: Workspace, ref: ServiceRef, *, repair: bool = True) -> ServiceRecord:
    """The service's record; the default (idle) record when it has none.

    A record that cannot be read (corrupt JSON, wrong types) is rebuilt from the links and
    certificates, with a notice saying so; with ``repair`` the unreadable file is first moved
    aside (kept for inspection) and the rebuilt record saved.

    Raises:
      StoreError: the file is unreadable (permissions), or is from a newer sslm.
    """
    layout = ws.layout
    try:
        raw = read_state(layout, ref)
        return ServiceRecord() if raw is None else ServiceRecord.from_json(raw)
    except (CorruptState, BadRecord) as err:
        problem = err
    record = rebuilt(ws, ref)
    where = layout.state_file(ref)
    if repair:
        kept = set_aside(layout, ref, now=ws.clock())
        record.notice = f"state record was unreadable ({problem}); kept as {kept.name}, rebuilt"
        record.updated = ws.clock()
        write_state(layout, ref, record.to_json())
    else:
        record.notice = f"state record {where} is unreadable ({problem}); the next run rebuilds it"
    log.warning("%s: %s", ref, record.notice)
    return record


def rebuilt(ws: Workspace, ref: ServiceRef) -> ServiceRecord:
    """What the files show: a complete ``next`` waits for its roll (by ``min_roll_mins``), else
    ``curr`` was rolled, else nothing was issued. Anything only the lost record knew (an ACME
    order, a DANE sighting, a ``-roll-mins`` given to the renew, a backoff) starts afresh."""
    layout = ws.layout
    curr = read_link(layout, ref, "curr")
    pending = read_link(layout, ref, "next")
    if pending is not None and pending != curr and is_complete(layout, ref, pending):
        return ServiceRecord(phase=Phase.ISSUED, stamp=pending)
    if curr is not None:
        return ServiceRecord(phase=Phase.ROLLED, stamp=curr)
    return ServiceRecord()
