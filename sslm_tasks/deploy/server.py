"""Deploying to one server: its copy of the production tree, then its restart commands.

A server on this host reads the production tree in place; any other gets it over ssh (see
:mod:`sslm_tasks.deploy.transport`). Verifying what each server then serves is not built yet.
"""

from __future__ import annotations

from pathlib import Path

from sslm_tasks.commands import CommandResult, run_command
from sslm_tasks.config.models import MainConfig
from sslm_tasks.config.settings import load_settings
from sslm_tasks.deploy.targets import DeployTarget
from sslm_tasks.deploy.transport import Transport, transport_for
from sslm_tasks.errors import ConfigError


def deploy(
    main: MainConfig,
    target: DeployTarget,
    *,
    prod_dir: Path,
    timeout_s: float,
    transport: Transport | None = None,
) -> list[CommandResult]:
    """Bring ``target`` up to date: copy ``prod_dir`` to it, run its ``post_copy_cmd``
    commands (on this machine, as ``command host``), then its restart commands.

    The copy is skipped when the server class has ``skip_prod_copy`` (its servers share the
    tree another way, e.g. NFS); the restart commands run only when ``target.restart`` says
    the change concerns this class. Idempotent: a second run copies nothing new and restarts
    again, which is what a retry after a failed restart needs.

    Parameters:
      prod_dir(Path): the production tree, absolute; a remote server gets it at the same path.
      timeout_s(float): limit for the copy and for each command.
      transport(Transport | None): how to reach the server; by default local for this host
        and ssh (configured by the ``SSLM_SSH_*`` environment) for any other.

    Returns:
      The commands that ran, in order.

    Raises:
      ConfigError: the server class has no section, or ssh/``prod_cert_dir`` is misconfigured.
      PermanentError: the copy or a command failed; later commands did not run.
      TransientError: the host was unreachable, or the copy or a command timed out.
    """
    section = getattr(main, target.server_class, None)
    if section is None:
        raise ConfigError("ssl-mgr.conf", target.server_class, None, "no such server section")
    via = transport if transport is not None else transport_for(target.host, load_settings())
    if not section.skip_prod_copy:
        via.copy_tree(prod_dir, timeout_s=timeout_s)
    ran = [post_copy(target.host, command, timeout_s=timeout_s) for command in target.post_copy]
    if target.restart:
        ran += [via.run(argv, timeout_s=timeout_s) for argv in section.restart_cmd]
    return ran


def post_copy(host: str, command: str, *, timeout_s: float) -> CommandResult:
    """``post_copy_cmd``: run ``command host`` on this machine after ``host`` got its copy."""
    return run_command([command, host], timeout_s=timeout_s)
