"""Reading a service's versions: the certificate a link points at, and whether ``curr`` is due
by its lifetime. Apart from :mod:`sslm_tasks.lifecycle.build`, which also asks an ACME CA for
its renewal window, so that what only reads (``sslm-mgr -s``, the roll gate, the health word)
imports neither the acme library nor requests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from sslm_tasks.crypto.inspect import load_certs
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.renewal import RenewDecision, decide
from sslm_tasks.store import layout as files
from sslm_tasks.store.versions import read_link


def version_file(ctx: ServiceContext, stamp: str, name: str) -> Path:
    return ctx.layout.version_dir(ctx.ref, stamp) / name


def load_version_cert(ctx: ServiceContext, which: files.LinkName) -> x509.Certificate | None:
    """The leaf certificate a link points at, or None when the link or file is missing."""
    stamp = read_link(ctx.layout, ctx.ref, which)
    if stamp is None:
        return None
    path = version_file(ctx, stamp, files.CERT)
    if not path.is_file():
        return None
    return load_certs(path.read_bytes())[0]


#: Reads the certificate a link points at (:func:`load_version_cert`, or for a reader that may
#: not enter the store's version directories, the production copy).
CertLoader = Callable[[ServiceContext, files.LinkName], x509.Certificate | None]


def renew_decision(
    ctx: ServiceContext, *, load: CertLoader = load_version_cert, rng: random.Random | None = None
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
        table=ctx.ws.renew_table(),
        rng=ctx.ws.rng if rng is None else rng,
        fixed_target_days=fixed_target,
        fixed_spread_days=svc.renew_expire_days_spread,
    )
