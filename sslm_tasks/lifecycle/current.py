"""Reading a service's versions: the certificate a link points at, whether ``curr`` is due by its
lifetime, and when ``next`` may roll by its age. Apart from :mod:`sslm_tasks.lifecycle.build`,
which also asks an ACME CA for its renewal window, and from :mod:`sslm_tasks.lifecycle.roll`,
whose DANE gate asks DNS, so that what only reads (``sslm-mgr -s``, the health word) imports
neither the acme library nor dnspython's query machinery.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, TypeVar

from cryptography import x509

from sslm_tasks.crypto.inspect import load_certs
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.renewal import RenewDecision, decide
from sslm_tasks.store import layout as files
from sslm_tasks.store.read import ABSENT_ERRNOS, read_bytes
from sslm_tasks.store.versions import is_complete


def version_file(ctx: ServiceContext, stamp: str, name: str) -> Path:
    return ctx.layout.version_dir(ctx.ref, stamp) / name


def read_version_cert(ctx: ServiceContext, which: files.LinkName) -> bytes | None:
    """The bytes of the ``cert.pem`` a link points at, or None when the link or file is
    missing."""
    stamp = ctx.link(which)
    if stamp is None:
        return None
    try:
        return read_bytes(version_file(ctx, stamp, files.CERT))
    except OSError as err:
        if err.errno in ABSENT_ERRNOS:
            return None
        raise


def load_version_cert(ctx: ServiceContext, which: files.LinkName) -> x509.Certificate | None:
    """The leaf certificate a link points at, or None when the link or file is missing."""
    pem = read_version_cert(ctx, which)
    return None if pem is None else load_certs(pem)[0]


class Dated(Protocol):
    """What the renew rule, the roll's age and the health word read of a certificate: its
    validity. A parsed certificate is one; so is one a status took from the book of details
    (``cert_book.BookedCert``), which it did not parse."""

    @property
    def not_valid_before_utc(self) -> datetime: ...

    @property
    def not_valid_after_utc(self) -> datetime: ...


_Read = TypeVar("_Read", bound=Dated | None)
#: Reads the certificate a link points at (:func:`load_version_cert`, or for a reader that may
#: not enter the store's version directories, the production copy).
CertLoader = Callable[[ServiceContext, files.LinkName], x509.Certificate | None]
#: Reads what is needed of it for its dates (a :data:`CertLoader` is one).
DatesLoader = Callable[[ServiceContext, files.LinkName], Dated | None]


def once_each(
    load: Callable[[ServiceContext, files.LinkName], _Read],
) -> Callable[[ServiceContext, files.LinkName], _Read]:
    """``load``, reading each link's certificate once: for one look at one service (health,
    the renew rule and the status all want ``curr``'s), not across a step that moves links."""
    seen: dict[files.LinkName, _Read] = {}

    def loaded(ctx: ServiceContext, which: files.LinkName) -> _Read:
        if which not in seen:
            seen[which] = load(ctx, which)
        return seen[which]

    return loaded


def renew_decision(
    ctx: ServiceContext, *, load: DatesLoader = load_version_cert, rng: random.Random | None = None
) -> RenewDecision:
    """Whether ``curr`` is due, by lifetime (and ``renew_expire_days`` when set); the draw
    within the spread comes from ``rng``, else the workspace's."""
    svc = ctx.service
    curr = load(ctx, "curr")
    fixed_target = svc.renew_expire_days or ctx.ws.config.main.globals.renew_expire_days
    return decide(
        not_before=None if curr is None else curr.not_valid_before_utc,
        not_after=None if curr is None else curr.not_valid_after_utc,
        now=ctx.now(),
        table=ctx.ws.renew_table,
        rng=ctx.ws.rng if rng is None else rng,
        fixed_target_days=fixed_target,
        fixed_spread_days=svc.renew_expire_days_spread,
    )


def roll_wait_mins(ctx: ServiceContext, not_before: datetime) -> float:
    """Minutes ``next`` must age: ``-roll-mins`` given now wins; else the one given to the
    renew that built it (recorded as the due time); else ``min_roll_mins`` as set now, so a
    changed setting moves a ``next`` that is already waiting."""
    if ctx.ws.options.min_roll_mins is not None:
        return ctx.ws.options.min_roll_mins
    due = ctx.record.roll_due
    if due is not None:
        return max(0.0, (due - not_before).total_seconds() / 60)
    return ctx.ws.min_roll_mins


def due_time(ctx: ServiceContext, *, load: DatesLoader | None = None) -> datetime | None:
    """When the waiting ``next`` may roll, by its age alone (DANE may hold it longer); None
    without a complete ``next``. ``load`` reads its certificate elsewhere than in the store
    (the metrics exporter reads the production copy, which holds complete versions only)."""
    layout, ref = ctx.layout, ctx.ref
    pending = ctx.link("next")
    if pending is None or pending == ctx.link("curr"):
        return None
    cert: Dated | None
    if load is None:
        cert = load_version_cert(ctx, "next") if is_complete(layout, ref, pending) else None
    else:
        cert = load(ctx, "next")
    if cert is None:
        return None
    not_before = cert.not_valid_before_utc
    return not_before + timedelta(minutes=roll_wait_mins(ctx, not_before))
