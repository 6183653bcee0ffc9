"""``-n``: an ACME dry run, a throwaway build that proves an order would succeed.

Upstream passed ``--dry-run`` to certbot: a real order against the CA's test server whose
certificate was never saved. Here the build is real up to the last step: a key, a CSR, an
order, its challenges published and refreshed in DNS (or on the web servers), and every
authorization validated by the CA. Finalize, which would ask for the certificate, never runs.
Then the challenge records are withdrawn, the version directory is removed and the service's
state is put back, so nothing in ``curr``, ``next``, production, TLSA or a later run's
resume changes. Let's Encrypt's production directory is swapped for staging, as certbot does
(``RunOptions.acme_test_server``); a failed validation there costs no production limit.

A service with a build in progress is left alone: discarding its key and order would undo real
work, and resuming it would not be a dry run.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from sslm_tasks.lifecycle import acme_sign, build
from sslm_tasks.lifecycle.context import ServiceContext


@contextmanager
def throwaway_build(ctx: ServiceContext) -> Iterator[str]:
    """A new build for the service that is withdrawn and discarded when the block ends,
    whatever way it ends; yields its stamp.

    Raises:
      PermanentError: the service cannot be built (see ``build.start_build``).
    """
    record = ctx.record
    before = (record.phase, record.stamp, record.build_signer, record.last_error)
    stamp = build.start_build(ctx)
    try:
        yield stamp
    finally:
        try:
            acme_sign.withdraw(ctx)
        finally:
            shutil.rmtree(ctx.layout.version_dir(ctx.ref, stamp), ignore_errors=True)
            record = ctx.reload()
            record.phase, record.stamp, record.build_signer, record.last_error = before
            ctx.save()
