"""``sslm-mgr``: ssl-mgr's command line, unchanged, with honest exit codes; and sslm's
``sslm-mgr revoke group:svc`` (:mod:`sslm_tasks.cli.revoke`).

Exit status: 0 when every selected service succeeded, 1 when any failed, 2 for bad input
(command line or configuration: nothing was written), 3 when another run holds the lock.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from sslm_tasks.config.load import Config, load_config
from sslm_tasks.config.models import MAX_ROLL_MINS
from sslm_tasks.config.settings import load_settings
from sslm_tasks.dns.refresh import zone_apexes
from sslm_tasks.errors import ConfigError, LockBusy, SslmError, StoreError, TransientError
from sslm_tasks.lifecycle import build
from sslm_tasks.lifecycle import roll as rolling
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import DevSteps, RunOptions, Workspace, utc_now
from sslm_tasks.locks.file import FileLocker
from sslm_tasks.logs import LogFormat, LogLevel, send_to
from sslm_tasks.store.atomic import ensure_dir
from sslm_tasks.store.layout import DIR_MODE_GROUP, RUN_LOCK, ServiceRef
from sslm_tasks.store.versions import read_link

from . import check, health, report, status
from . import revoke as revoking
from .console import console_script
from .local import run_in_process
from .run import RunReport, RunRequest
from .version import add_version_flag

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 3
#: How long a run waits for another run on the same tree before giving up.
DEFAULT_LOCK_WAIT_S = 120.0
#: How long the CLI follows the workflows it enqueued before giving up waiting.
DEFAULT_WAIT_S = 1800.0

log = logging.getLogger("sslm")


def _flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, short: str, long: str, help: str
) -> None:
    parser.add_argument(
        short, f"-{long}", dest=long.lstrip("-").replace("-", "_"), action="store_true", help=help
    )


def _roll_minutes(text: str) -> float:
    """``-roll-mins``: minutes within the bounds of the ``min_roll_mins`` setting (``nan``
    would compare false with every age and so roll at once)."""
    minutes = float(text)
    if not 0 <= minutes <= MAX_ROLL_MINS:
        raise argparse.ArgumentTypeError(f"{text!r}: minutes from 0 to {MAX_ROLL_MINS}")
    return minutes


def build_parser(*, dev: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslm-mgr" + (" dev" if dev else ""),
        description="SSL Manager" + (" Dev Mode" if dev else ""),
        allow_abbrev=False,
        epilog=None if dev else 'For dev options add "dev" as 1st argument',
    )
    add_version_flag(parser)
    parser.add_argument("-v", "--verb", action="store_true", help="More verbose output")
    parser.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="Forces on for renew / roll regardless if too soon",
    )
    parser.add_argument(
        "-r", "--reuse", action="store_true", help="Reuse curr key with renew (TLSA unchanged)"
    )
    parser.add_argument(
        "-d",
        "--debug",
        action="store_true",
        help="Dry run: print what would be done, change nothing",
    )
    parser.add_argument(
        "-t",
        "--test",
        action="store_true",
        help="Use the CA's test server; production dir gets .test",
    )
    parser.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        dest="dry_run",
        help="ACME dry run: validate an order for each due ACME service (staging for Let's "
        "Encrypt), ask for no certificate, change nothing else",
    )
    parser.add_argument(
        "-s",
        "--status",
        action="store_true",
        help="Display cert status. With --verb shows more info",
    )
    parser.add_argument(
        "--json", action="store_true", help="With -s: machine-readable status on stdout"
    )
    parser.add_argument(
        "-renew", "--renew", action="store_true", help="Renew keys/csr/cert into next when due"
    )
    parser.add_argument(
        "-roll", "--roll", action="store_true", help="Make next the new curr and copy to production"
    )
    parser.add_argument(
        "-roll-mins",
        "--min-roll-mins",
        dest="min_roll_mins",
        type=_roll_minutes,
        help="Only roll if next is older than this (config min_roll_mins)",
    )
    parser.add_argument(
        "-dns",
        "--dns-refresh",
        dest="dns_refresh",
        action="store_true",
        help="Refresh DNS (config dns.restart_cmd)",
    )
    parser.add_argument(
        "-clean-keep",
        "--clean-keep",
        dest="clean_keep",
        type=int,
        help="Clean database dirs keeping newest N",
    )
    parser.add_argument(
        "-clean-all",
        "--clean-all",
        dest="clean_all",
        action="store_true",
        help="Clean up all grps/svcs not just active domains",
    )
    parser.add_argument(
        "--lock-wait",
        type=float,
        default=DEFAULT_LOCK_WAIT_S,
        help="Seconds to wait for another run (default %(default)s)",
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="With a broker: print the task ids and return"
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=DEFAULT_WAIT_S,
        help="With a broker: seconds to follow the workflows (default %(default)s)",
    )
    health.add_arguments(parser)
    check.add_arguments(parser)
    if dev:
        group = parser.add_argument_group("dev")
        _flag(group, "-keys", "-new-keys", "Make next new keys")
        _flag(group, "-csr", "-new-csr", "Make next CSR")
        _flag(group, "-cert", "-new-cert", "Make new next/cert")
        _flag(group, "-copy", "-copy-csr", "Copy curr key to next (used by --reuse)")
        _flag(group, "-ntoc", "-next-to-curr", "Move next to curr")
        _flag(group, "-certs-prod", "-certs-to-prod", "Copy keys/certs to production")
        _flag(group, "-fsr", "-force-server-restarts", "Restart every server and DNS")
    parser.add_argument(
        "grps_svcs", nargs="*", help="grp1:svc1,svc2 grp2:ALL ... (default: from config)"
    )
    return parser


def _dev_steps(args: argparse.Namespace) -> DevSteps:
    return DevSteps(
        keys=getattr(args, "new_keys", False),
        csr=getattr(args, "new_csr", False),
        cert=getattr(args, "new_cert", False),
        copy=getattr(args, "copy_csr", False),
        ntoc=getattr(args, "next_to_curr", False),
        certs_prod=getattr(args, "certs_to_prod", False),
        force_restarts=getattr(args, "force_server_restarts", False),
    )


def _setup_logging(config: Config, *, verbose: bool, kind: LogFormat, level: LogLevel) -> None:
    """``<logdir>/sslm``, the log workers write too; stderr as well with ``-v``.

    Raises:
      ConfigError: ``logdir`` is not set and the default does not exist (see
        :meth:`Config.log_dir`).
      StoreError: the log directory or file cannot be created or opened for writing (a
        read-only or full file system); nothing else has been written yet.
    """
    # Imported here, not at the top: the log file's handler imports redis (through portalocker),
    # ~0.1 s that -s and -h, which write no log, must not pay.
    from sslm_tasks.log_file import open_log_file

    logdir = ensure_dir(config.log_dir(), mode=DIR_MODE_GROUP)
    send_to([open_log_file(logdir)], level, kind)
    if verbose:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger().addHandler(console)


def _clean_refs(
    config: Config, refs: Sequence[ServiceRef], *, clean_all: bool
) -> list[ServiceRef] | None:
    """With ``--clean-all``: every service directory under ``certs/`` whose group is configured."""
    if not clean_all:
        return None
    found: list[ServiceRef] = []
    certs = config.layout().certs_dir
    for group_dir in sorted(certs.iterdir()) if certs.is_dir() else []:
        if group_dir.is_dir() and (config.conf_dir / group_dir.name).is_dir():
            found.extend(
                ServiceRef(group_dir.name, svc.name)
                for svc in sorted(group_dir.iterdir())
                if (svc / "db").is_dir()
            )
    return found or list(refs)


def _status(ws: Workspace, refs: Sequence[ServiceRef], args: argparse.Namespace) -> int:
    """``-s``: the status, or with ``--check`` the monitoring plugin's verdict."""
    if args.check:
        return check.run(ws, refs, check.thresholds(args))
    return status.show(ws, refs, as_json=args.json, verbose=args.verb)


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


@console_script
def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == [revoking.COMMAND]:
        return _revoke(args_in[1:])
    dev = bool(args_in) and args_in[0] == "dev"
    try:
        args = build_parser(dev=dev).parse_args(args_in[1:] if dev else args_in)
    except SystemExit as stop:
        # A monitoring plugin says UNKNOWN for a command line it cannot read (2 is CRITICAL).
        if stop.code == EXIT_USAGE and "--check" in args_in:
            return check.unknown("bad command line (see stderr)")
        raise
    if args.health:
        return health.main(args)
    try:
        config, refs = load_config(args.grps_svcs)
    except (ConfigError, OSError) as err:
        # OSError: looking for the files failed (a topdir path too long, say): still bad input.
        problem = f"{err}" if isinstance(err, ConfigError) else f"reading the configuration: {err}"
        if args.check:
            return check.unknown(problem)
        print(f"Error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    for line in config.strays:
        print(f"Warning: {line}", file=sys.stderr)
    for ref, broken in config.broken.items():
        print(f"Error: {ref} fails alone: {broken}", file=sys.stderr)
    code = _run(config, refs, args)
    # A service a wildcard found but whose file does not load failed; the others ran.
    return EXIT_FAILED if config.broken and code == EXIT_OK else code


def _run(config: Config, refs: Sequence[ServiceRef], args: argparse.Namespace) -> int:
    options = RunOptions(
        force=args.force,
        reuse=args.reuse,
        test=args.test,
        min_roll_mins=args.min_roll_mins,
        clean_keep=args.clean_keep,
        dry_run=args.dry_run,
        dev=_dev_steps(args),
    )
    ws = Workspace(config=config, options=options, clock=utc_now)
    request = RunRequest(
        dns_refresh=args.dns_refresh,
        renew=args.renew,
        roll=args.roll,
        dry_run=args.dry_run,
        clean_refs=_clean_refs(config, refs, clean_all=args.clean_all),
    )
    acts = request.renew or request.roll or options.dev.any() or request.dns_refresh
    if args.status and not acts:
        return _status(ws, refs, args)
    if args.debug:
        code = _dry_run(ws, refs, request)
        return _status(ws, refs, args) if args.status else code
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
        return _enqueue(settings.broker_url, config, refs, options, request, args)
    return _locked_run(
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
    # Celery, kombu and the broker clients are imported only here: an in-process run (cron, the
    # main job, every kill point of the crash tests) starts in half the time without them.
    from sslm_tasks.broker import check_broker
    from sslm_tasks.cli import remote

    try:
        check_broker(broker_url)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TransientError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_FAILED
    from sslm_tasks.app import app

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


def _under_run_lock(
    ws: Workspace,
    args: argparse.Namespace,
    work: Callable[[], int],
    *,
    log_format: LogFormat,
    log_level: LogLevel,
) -> int:
    """The log set up, then ``work`` under the tree's run lock; its exit status."""
    try:
        # The log first: a log that cannot be written stops the run before it writes anything.
        _setup_logging(ws.config, verbose=args.verb, kind=log_format, level=log_level)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_FAILED
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
        return work()


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
            _status(ws, refs, args)
        return EXIT_OK if result.ok else EXIT_FAILED

    return _under_run_lock(ws, args, work, log_format=log_format, log_level=log_level)


def _revoke(args_in: Sequence[str]) -> int:
    """``sslm-mgr revoke``: revoke here, then the follow-up run (:mod:`.revoke`)."""
    args = revoking.build_parser(lock_wait_s=DEFAULT_LOCK_WAIT_S, wait_s=DEFAULT_WAIT_S).parse_args(
        args_in
    )
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
        ws, args, work, log_format=settings.log_format, log_level=settings.log_level
    )


if __name__ == "__main__":
    raise SystemExit(main())
