"""Deploying to one server: its copy of the production tree, then its restart commands.

Only servers on this host are handled so far: the production tree is already where they read
it, so deploying means running the class's ``restart_cmd``. Copying to other hosts (rsync over
ssh) and verifying what each server then serves are not built yet; a remote server fails with
a message that says so, rather than being skipped in silence.
"""

from __future__ import annotations

from sslm_tasks.config.models import MainConfig
from sslm_tasks.deploy.commands import CommandResult, run_command
from sslm_tasks.deploy.targets import DeployTarget, is_local_host
from sslm_tasks.errors import ConfigError, PermanentError


def deploy(main: MainConfig, target: DeployTarget, *, timeout_s: float) -> list[CommandResult]:
    """Bring ``target`` up to date; returns the restart commands that ran.

    Raises:
      PermanentError: the server is remote (not supported yet) or a command failed.
      TransientError: a command timed out.
    """
    section = getattr(main, target.server_class, None)
    if section is None:
        raise ConfigError("ssl-mgr.conf", target.server_class, None, "no such server section")
    if not is_local_host(target.host):
        raise PermanentError(
            f"[{target.server_class}] server {target.host!r}: deploying to another host over ssh "
            "is not supported by this version yet"
        )
    if not target.restart:
        return []
    return [run_command(argv, timeout_s=timeout_s) for argv in section.restart_cmd]


def post_copy(host: str, command: str, *, timeout_s: float) -> CommandResult:
    """``post_copy_cmd``: run ``command host`` on this machine after ``host`` got its copy."""
    return run_command([command, host], timeout_s=timeout_s)
