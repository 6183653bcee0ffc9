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

from sslm_tasks.lifecycle import acme_issue, build
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import ServiceRef
from sslm_tasks.store.state import load_state, save_state


@contextmanager
def throwaway_build(ws: Workspace, ref: ServiceRef) -> Iterator[str]:
    """A new build for ``ref`` that is withdrawn and discarded when the block ends, whatever
    way it ends; yields its stamp.

    Raises:
      PermanentError: the service cannot be built (see ``build.start_build``).
    """
    before = load_state(ws.layout, ref)
    stamp = build.start_build(ws, ref)
    try:
        yield stamp
    finally:
        try:
            acme_issue.withdraw(ws, ref)
        finally:
            shutil.rmtree(ws.layout.version_dir(ref, stamp), ignore_errors=True)
            state = load_state(ws.layout, ref)
            state.phase, state.stamp, state.last_error = (
                before.phase,
                before.stamp,
                before.last_error,
            )
            save_state(ws.layout, ref, state, now=ws.clock())
