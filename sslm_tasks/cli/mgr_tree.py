"""``sslm-mgr`` once its command line is read: the configuration loaded, then ``-s`` (with
``--check``, the monitoring plugin) shown here, or a run that acts handed to
:mod:`sslm_tasks.cli.mgr_run` (imported only then: it loads the whole pipeline).

Apart from :mod:`sslm_tasks.cli.mgr`, the parser, which imports it only once the command line
is read, so that ``-h`` loads no configuration layer (pydantic, the models, cryptography).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sslm_tasks.config.load import Config, load_config
from sslm_tasks.errors import ConfigError
from sslm_tasks.lifecycle.workspace import DevSteps, RunOptions, Workspace, utc_now
from sslm_tasks.store.layout import ServiceRef

from . import check, check_options
from .collector import kept_for_the_run, paused
from .run import EXIT_FAILED, EXIT_OK, EXIT_USAGE, RunRequest


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


def main(args: argparse.Namespace) -> int:
    """Load the configuration of the selected services, then show or act on them."""
    try:
        with kept_for_the_run():
            config, refs = load_config(args.grps_svcs)
    except (ConfigError, OSError) as err:
        # OSError: looking for the files failed (a topdir path too long, say): still bad input.
        problem = f"{err}" if isinstance(err, ConfigError) else f"reading the configuration: {err}"
        if args.check:
            return check_options.unknown(problem)
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
    if args.status and not request.acts(options.dev):
        with paused():  # it reads, prints and ends (cli.collector)
            return check.show(ws, refs, args)
    # Imported here, not at the top: a run that acts needs the whole pipeline (the acme
    # library, dnspython's resolver, the log file's redis-importing lock), which -s must not load.
    from . import mgr_run

    return mgr_run.act(ws, refs, request, args)
