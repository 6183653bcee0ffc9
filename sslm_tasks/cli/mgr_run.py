"""The runs of ``sslm-mgr`` that act on the tree: in-process under the run lock, or sent to the
workers; the dry run (``-d``); and ``sslm-mgr revoke``.

Apart from :mod:`sslm_tasks.cli.mgr`, which imports this module only for such a run: it loads the
whole pipeline (the acme library, dnspython's resolver, the log file, whose lock imports redis),
which ``-s`` and ``-h`` do not need.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from sslm_tasks.config.load import Config, load_config
from sslm_tasks.config.settings import load_settings
from sslm_tasks.dns.refresh import zone_apexes
from sslm_tasks.errors import ConfigError, LockBusy, SslmError, StoreError, TransientError
from sslm_tasks.lifecycle import build
from sslm_tasks.lifecycle import roll as rolling
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import RunOptions, Workspace, utc_now
from sslm_tasks.locks.file import FileLocker
from sslm_tasks.log_file import RunLog, open_log_file
from sslm_tasks.logs import LogFormat, LogLevel, send_to
from sslm_tasks.store.atomic import ensure_dir
from sslm_tasks.store.layout import DIR_MODE_GROUP, RUN_LOCK, ServiceRef
from sslm_tasks.store.versions import read_link

from . import check, report
from . import revoke as revoking
from .local import run_in_process
from .run import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    RunReport,
    RunRequest,
)

log = logging.getLogger("sslm")


def act(
    ws: Workspace, refs: Sequence[ServiceRef], request: RunRequest, args: argparse.Namespace
) -> int:
    """A run that acts (``-d`` says what it would do): in-process under the run lock, or sent
    to the workers when a broker is configured."""
    if args.debug:
        code = _dry_run(ws, refs, request)
        return check.show(ws, refs, args) if args.status else code
    try:
        settings = load_settings()
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if request.dry_run and settings.broker_url:
        # The dry run's throwaway build never goes to the workers (nothing of it may reach a
        # deploy), so it runs here, under the workers' locks for the files it shares with them.
        from sslm_tasks.locks.select import locker_for

        ws.locker = locker_for(settings, ensure_dir(ws.layout.certs_dir, mode=DIR_MODE_GROUP))
    elif settings.broker_url:
        return _enqueue(settings.broker_url, ws.config, refs, ws.options, request, args)
    return _locked_run(
        ws, refs, request, args, log_format=settings.log_format, log_level=settings.log_level
    )


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


def _dry_run(ws: Workspace, refs: Sequence[ServiceRef], request: RunRequest) -> int:
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


def _enqueue(
    broker_url: str,
    config: Config,
    refs: Sequence[ServiceRef],
    options: RunOptions,
    request: RunRequest,
    args: argparse.Namespace,
) -> int:
    """Send the workflows to the workers; wait for them unless ``--no-wait``."""
    refused = _broker_refused(broker_url)
    if refused is not None:
        return refused
    # Celery, kombu and the broker clients are imported only here: an in-process run (cron, the
    # main job, every kill point of the crash tests) starts in half the time without them.
    from sslm_tasks.app import app
    from sslm_tasks.cli import remote

    runs = remote.enqueue(config, refs, options, request)
    apexes = zone_apexes(ref.group for ref in refs)
    refresh = request.refreshes_dns(config, options.dev)
    if args.no_wait:
        for run in runs:
            print(f"{run.ref} {' '.join(run.ids)}")
        if refresh:
            print(f"dns-refresh {remote.send_dns_refresh(apexes)}")
        return EXIT_OK
    remote.wait(app, runs, timeout_s=args.wait_timeout)
    result = remote.report(app, runs)
    if refresh:
        remote.dns_refresh(app, apexes, result, timeout_s=args.wait_timeout)
    print(report.run_text(result, remote=True))
    return EXIT_FAILED if not result.ok else EXIT_BUSY if result.busy else EXIT_OK


def _broker_refused(broker_url: str) -> int | None:
    """One look at the broker: None when it takes our login, else the exit status after the
    reason is printed (it refused the credentials: usage; it cannot be reached: failed)."""
    from sslm_tasks.broker import check_broker

    try:
        check_broker(broker_url)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TransientError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_FAILED
    return None


def _under_run_lock(
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
    if through_workers:
        return work()
    try:
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


def _in_process(ws: Workspace, refs: Sequence[ServiceRef], request: RunRequest) -> RunReport | None:
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


def _locked_run(
    ws: Workspace,
    refs: Sequence[ServiceRef],
    request: RunRequest,
    args: argparse.Namespace,
    *,
    log_format: LogFormat,
    log_level: LogLevel,
) -> int:
    def work() -> int:
        result = _in_process(ws, refs, request)
        if result is None:
            return EXIT_FAILED
        if args.status:
            check.show(ws, refs, args)
        return EXIT_OK if result.ok else EXIT_FAILED

    return _under_run_lock(ws, args, work, log_format=log_format, log_level=log_level)


def revoke(args_in: Sequence[str]) -> int:
    """``sslm-mgr revoke``: revoke here, then the follow-up run (:mod:`.revoke`)."""
    args = revoking.build_parser().parse_args(args_in)
    try:
        config, refs = load_config(args.grps_svcs)
        settings = load_settings()
    except (ConfigError, OSError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_USAGE
    ref = revoking.one_service(refs, args.grps_svcs[0])
    if isinstance(ref, str):
        print(f"Error: {ref}", file=sys.stderr)
        return EXIT_USAGE
    options = RunOptions(test=args.test)
    ws = Workspace(config=config, options=options, clock=utc_now)
    if settings.broker_url:
        # A revocation cannot be taken back: a broker that cannot take the follow-up (the CA's
        # new CRL to production, keyCompromise's renew) must stop it before it happens. With
        # Redis its locks would stop it too; with RabbitMQ and file locks only this does.
        refused = _broker_refused(settings.broker_url)
        if refused is not None:
            return refused
        # The CRL is shared with the workers' renew checks: their locks guard it.
        from sslm_tasks.locks.select import locker_for

        ws.locker = locker_for(settings, ensure_dir(ws.layout.certs_dir, mode=DIR_MODE_GROUP))

    def work() -> int:
        try:
            print(revoking.revoke_one(ws, ref, args))
        except SslmError as err:
            log.error("%s: revoke: %s", ref, err)
            print(f"Error: {err}", file=sys.stderr)
            return EXIT_FAILED
        follow, request = revoking.follow_up(config, ref, args.reason)
        if not follow:
            return EXIT_OK
        if settings.broker_url:
            return _enqueue(settings.broker_url, config, follow, options, request, args)
        result = _in_process(ws, follow, request)
        return EXIT_OK if result is not None and result.ok else EXIT_FAILED

    return _under_run_lock(
        ws,
        args,
        work,
        log_format=settings.log_format,
        log_level=settings.log_level,
        through_workers=bool(settings.broker_url),
    )
