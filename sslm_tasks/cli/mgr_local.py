"""The in-process side of ``sslm-mgr``'s runs that act: the run's log, the tree's run lock,
the pipeline walked here, and the dry run (``-d``).

Apart from :mod:`.mgr_run`, which imports it only for a run that does not go to the workers: it
loads the whole pipeline (the acme library, dnspython's resolver, the log file), which a run
sent to the workers does not need, and every run through them would pay for at start.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

from sslm_tasks.config.load import Config, remember_config
from sslm_tasks.dns.refresh import zone_apexes
from sslm_tasks.errors import ConfigError, LockBusy, SslmError, StoreError
from sslm_tasks.lifecycle import build
from sslm_tasks.lifecycle import roll as rolling
from sslm_tasks.lifecycle.cert_book import CertBook
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.locks.file import FileLocker
from sslm_tasks.log_file import RunLog, open_log_file
from sslm_tasks.logs import LogFormat, LogLevel, send_to
from sslm_tasks.store.atomic import ensure_dir
from sslm_tasks.store.layout import DIR_MODE_GROUP, RUN_LOCK, ServiceRef
from sslm_tasks.store.versions import read_link

from . import check, report
from .local import run_in_process
from .run import EXIT_BUSY, EXIT_FAILED, EXIT_OK, EXIT_USAGE, RunReport, RunRequest

log = logging.getLogger("sslm")


def _setup_logging(
    config: Config, *, verbose: bool, kind: LogFormat, level: LogLevel
) -> logging.Handler:
    """``<logdir>/sslm``, the log workers write too, its lines held for the run
    (:class:`RunLog`: the caller flushes it when the run ends); stderr as well with ``-v``.

    Raises:
      ConfigError: ``logdir`` is not set and the default does not exist (see
        :meth:`Config.log_dir`).
      StoreError: the log directory or file cannot be created or opened for writing (a
        read-only or full file system); nothing else has been written yet.
    """
    logdir = ensure_dir(config.log_dir(), mode=DIR_MODE_GROUP)
    run_log = RunLog(open_log_file(logdir))
    send_to([run_log], level, kind)
    if verbose:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger().addHandler(console)
    return run_log


def dry_run(ws: Workspace, refs: Sequence[ServiceRef], request: RunRequest) -> int:
    """``-d``: say what each service would do; nothing is written, not even a log line. A
    service whose files cannot be read is named with the reason; the others are still shown."""
    code = EXIT_OK
    for ref in refs:
        print(f"{ref}")
        try:
            lines = _would(ServiceContext(ws, ref, repair=False), request)
        except SslmError as err:
            lines, code = [f"Error: {err}"], EXIT_FAILED
        print("\n".join(f"            ↪ {line}" for line in lines))
    if request.dns_refresh:
        print(f"would refresh DNS: {' '.join(zone_apexes(ref.group for ref in refs))}")
    return code


def _would(ctx: ServiceContext, request: RunRequest) -> list[str]:
    dev = ctx.ws.options.dev
    lines: list[str] = []
    first = read_link(ctx.layout, ctx.ref, "curr") is None
    if request.renew or dev.any_build_step():
        check = build.check_renew(ctx, record=False)
        building = check.build or dev.any_build_step()
        lines.append(("would renew: " if building else "") + check.reason)
        if building and first:
            lines.append("would make the first certificate curr at once")
    if (request.roll or dev.ntoc) and not first:
        result = rolling.check_roll(ctx, force=ctx.ws.options.force or dev.ntoc)
        lines.append(("would roll: " if result.rolled else "") + result.reason)
    return lines


def under_run_lock(
    ws: Workspace,
    args: argparse.Namespace,
    work: Callable[[], int],
    *,
    log_format: LogFormat,
    log_level: LogLevel,
    through_workers: bool = False,
) -> int:
    """The log set up, then ``work`` under the tree's run lock; its exit status.

    ``through_workers``: ``work`` hands its writes to the workers, which hold the run lock
    shared as long as they serve the tree (``locks.tree``), and guards its own with their
    locks: it takes no run lock (it would never get it)."""
    try:
        # The log first: a log that cannot be written stops the run before it writes anything.
        run_log = _setup_logging(ws.config, verbose=args.verb, kind=log_format, level=log_level)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_FAILED
    lease: AbstractContextManager[object] = nullcontext()
    try:
        if not through_workers:
            certs = ensure_dir(ws.layout.certs_dir, mode=DIR_MODE_GROUP)
            lease = FileLocker(certs).acquire(RUN_LOCK, ttl_s=3600, blocking_s=args.lock_wait)
    except LockBusy as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_BUSY
    except SslmError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_FAILED
    with lease:
        try:
            return work()
        finally:
            # The run's lines go in before the lock does: the next run's follow them.
            run_log.flush()


def in_process(ws: Workspace, refs: Sequence[ServiceRef], request: RunRequest) -> RunReport | None:
    """Walk ``refs`` here and print the report; None when the run stopped."""
    try:
        result = run_in_process(ws, refs, request)
    except SslmError as err:
        # Each service's errors stay with it; one that escapes (the disk filled up while the
        # finish wrote the deploy ledger) ends the run with one line, its traceback in the log.
        log.exception("run stopped")
        print(f"Error: run stopped: {err}", file=sys.stderr)
        return None
    print(report.run_text(result, remote=False))
    return result


def locked_run(
    ws: Workspace,
    refs: Sequence[ServiceRef],
    request: RunRequest,
    args: argparse.Namespace,
    *,
    log_format: LogFormat,
    log_level: LogLevel,
) -> int:
    def work() -> int:
        if request.acts(ws.options.dev) and not request.dry_run:
            # Kept only now, the log open and the lock held: a run that stops before it
            # writes leaves nothing behind, not even this.
            remember_config(ws.config, refs)
            ws.cert_book = CertBook.open(ws.layout.certs_dir)
        result = in_process(ws, refs, request)
        if ws.cert_book is not None:
            ws.cert_book.save(now=ws.clock())
        if result is None:
            return EXIT_FAILED
        if args.status:
            check.show(ws, refs, args)
        return EXIT_OK if result.ok else EXIT_FAILED

    return under_run_lock(ws, args, work, log_format=log_format, log_level=log_level)
