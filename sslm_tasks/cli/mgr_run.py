"""The runs of ``sslm-mgr`` that act on the tree: sent to the workers, or walked here
(:mod:`.mgr_local`, imported only then); and ``sslm-mgr revoke``.

Apart from :mod:`sslm_tasks.cli.mgr_tree` (and :mod:`sslm_tasks.cli.mgr`, for ``revoke``),
which import this module only for such a run, so that ``-s`` and ``-h`` load none of it. A
run sent to the workers loads Celery and the broker's client but not the pipeline; one walked
here loads the pipeline but not Celery.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sslm_tasks.config.load import Config, load_config
from sslm_tasks.config.settings import load_settings
from sslm_tasks.dns.refresh import zone_apexes
from sslm_tasks.errors import ConfigError, SslmError, TransientError
from sslm_tasks.lifecycle.workspace import RunOptions, Workspace, utc_now
from sslm_tasks.store.atomic import ensure_dir
from sslm_tasks.store.layout import DIR_MODE_GROUP, ServiceRef

from . import report
from .run import EXIT_BUSY, EXIT_FAILED, EXIT_OK, EXIT_USAGE, RunRequest

log = logging.getLogger("sslm")


def act(
    ws: Workspace, refs: Sequence[ServiceRef], request: RunRequest, args: argparse.Namespace
) -> int:
    """A run that acts (``-d`` says what it would do): in-process under the run lock, or sent
    to the workers when a broker is configured."""
    if args.debug:
        from . import check, mgr_local

        code = mgr_local.dry_run(ws, refs, request)
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
    from . import mgr_local

    return mgr_local.locked_run(
        ws, refs, request, args, log_format=settings.log_format, log_level=settings.log_level
    )


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


def revoke(args_in: Sequence[str]) -> int:
    """``sslm-mgr revoke``: revoke here, then the follow-up run (:mod:`.revoke`)."""
    from . import mgr_local  # the revocation itself is walked here, with or without workers
    from . import revoke as revoking

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
        result = mgr_local.in_process(ws, follow, request)
        return EXIT_OK if result is not None and result.ok else EXIT_FAILED

    return mgr_local.under_run_lock(
        ws,
        args,
        work,
        log_format=settings.log_format,
        log_level=settings.log_level,
        through_workers=bool(settings.broker_url),
    )
