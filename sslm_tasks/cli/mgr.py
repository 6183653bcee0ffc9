"""``sslm-mgr``: ssl-mgr's command line, unchanged, with honest exit codes; and sslm's
``sslm-mgr revoke group:svc`` (:mod:`sslm_tasks.cli.revoke`).

This module only parses the command line: ``-h`` and a command line argparse refuses load
nothing else. What follows is :mod:`sslm_tasks.cli.mgr_tree`'s (the configuration, ``-s``),
and a run that acts :mod:`sslm_tasks.cli.mgr_run`'s, each imported only then.

Exit status: 0 when every selected service succeeded, 1 when any failed, 2 for bad input
(command line or configuration: nothing was written), 3 when another run holds the lock.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sslm_tasks.config.bounds import MAX_ROLL_MINS

from . import check_options
from .console import console_script
from .run import EXIT_USAGE, REVOKE_COMMAND, add_follow_arguments
from .version import add_version_flag


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


def _health_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--health``, ``--queue`` and ``--no-store`` to ``sslm-mgr``'s parser."""
    group = parser.add_argument_group("health check")
    group.add_argument(
        "--health",
        action="store_true",
        help="Check the broker, the store and (--queue) the workers; exit 0 when healthy",
    )
    group.add_argument(
        "--queue",
        dest="health_queues",
        action="append",
        default=[],
        metavar="NAME",
        help="With --health: a worker on this host must consume this queue (repeatable)",
    )
    group.add_argument(
        "--no-store",
        dest="health_no_store",
        action="store_true",
        help="With --health: skip the store check (beat has no store)",
    )


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
    add_follow_arguments(parser, what="the workflows", no_wait="print the task ids and return")
    _health_arguments(parser)
    check_options.add_arguments(parser)
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


@console_script
def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == [REVOKE_COMMAND]:
        # Imported here, as in mgr_tree._run: revoking loads the whole pipeline.
        from . import mgr_run

        return mgr_run.revoke(args_in[1:])
    dev = bool(args_in) and args_in[0] == "dev"
    try:
        args = build_parser(dev=dev).parse_args(args_in[1:] if dev else args_in)
    except SystemExit as stop:
        # A monitoring plugin says UNKNOWN for a command line it cannot read (2 is CRITICAL).
        if stop.code == EXIT_USAGE and "--check" in args_in:
            return check_options.unknown("bad command line (see stderr)")
        raise
    if args.health:
        # Imported here, not at the top: the checks read the settings (pydantic-settings, ~40 ms)
        # and may reach the broker, which -s and -h never do.
        from . import health

        return health.main(args)
    # Imported here, not at the top: the configuration layer (pydantic, the models,
    # cryptography) and the tree's readers, which -h and a refused command line never use.
    from . import mgr_tree

    return mgr_tree.main(args)


if __name__ == "__main__":
    raise SystemExit(main())
