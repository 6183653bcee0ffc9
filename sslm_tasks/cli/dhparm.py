"""``sslm-dhparm``: keep DH parameter files fresh in production certificate directories.

Typical cron use: ``sslm-dhparm -s <prod_cert_dir>``. Unlike upstream, the default keys are
not generated twice, and ``dhparam.pem`` is linked to the first key even when it is a named
group (upstream crashed there and made no link).

Exit status: 0 all done, 1 no usable directory or a directory failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sslm_tasks.cli._common import error
from sslm_tasks.cli.console import console_script
from sslm_tasks.cli.version import add_version_flag
from sslm_tasks.crypto.dhparam import DH_SUBDIR, dh_file_name, refresh_dir
from sslm_tasks.errors import CryptoError, SslmError

DEFAULT_KEYS = "ffdhe8192,ffdhe6144,ffdhe4096,ffdhe3072,ffdhe2048"
DEFAULT_AGE_DAYS = 120.0
#: The CA group never serves TLS, so it needs no DH parameters.
_SKIPPED_SUBDIR = "ca"


def _usable_dirs(dirs: Sequence[Path], *, subdirs: bool) -> list[Path]:
    """The directories to work on; warns about and drops the missing ones."""
    usable: list[Path] = []
    for directory in dirs:
        if not directory.is_dir():
            error(f"Warning : no such directory: {directory} - ignoring")
            continue
        if subdirs:
            usable.extend(
                sub
                for sub in sorted(directory.iterdir())
                if sub.is_dir() and sub.name.lower() != _SKIPPED_SUBDIR
            )
        else:
            usable.append(directory)
    return usable


@console_script
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sslm-dhparm``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="sslm-dhparm", description="Generate DH parameter files under <dir>/dh/."
    )
    add_version_flag(parser)
    parser.add_argument(
        "-k",
        "--keys",
        default=DEFAULT_KEYS,
        help="comma-separated RFC 7919 groups and/or bit sizes; the first is linked as "
        f"dhparam.pem (default {DEFAULT_KEYS})",
    )
    parser.add_argument("-f", "--force", action="store_true", help="regenerate every file")
    parser.add_argument(
        "-a",
        "--age-days",
        type=float,
        default=DEFAULT_AGE_DAYS,
        help=f"regenerate sized files older than this (default {DEFAULT_AGE_DAYS:g})",
    )
    parser.add_argument(
        "-s",
        "--subdirs",
        action="store_true",
        help="work on each subdirectory (except 'ca') of the given directories",
    )
    parser.add_argument("dirs", nargs="*", type=Path, help="directories to work on")
    args = parser.parse_args(argv)

    keys = [key.strip() for key in args.keys.split(",") if key.strip()]
    if not keys:
        error("Error: no DH keys given")
        return 2
    try:
        for key in keys:
            dh_file_name(key)
    except CryptoError as err:
        error(f"Error: {err}")
        return 2
    directories = _usable_dirs(args.dirs, subdirs=args.subdirs)
    if not directories:
        error("No usable directories")
        return 1
    now = datetime.now(UTC)
    failed = False
    for directory in directories:
        print(f" dhparam : {directory}")
        print(f"         : {directory / DH_SUBDIR}")
        try:
            written = refresh_dir(
                directory, keys, max_age_days=args.age_days, force=args.force, now=now
            )
        except SslmError as err:
            error(f"Error: {directory}: {err}")
            failed = True
            continue
        for name in written:
            print(f"           - {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
