"""The DNS refresh: the operator's ``[dns] restart_cmd`` with ``--serial_bump <apex ...>``.

That command (dns_tools' resign script, or any script with the same contract) bumps the SOA
serial of the named zones, re-signs them and reloads the primary. The flag really is spelled
with an underscore: that is what upstream passes, whatever its docs say.
"""

from __future__ import annotations

from collections.abc import Iterable

from sslm_tasks.config.load import MAIN_FILE, Config
from sslm_tasks.config.models import CA_GROUP
from sslm_tasks.deploy.commands import DEFAULT_TIMEOUT_S, CommandResult, run_command
from sslm_tasks.errors import ConfigError

SERIAL_BUMP = "--serial_bump"


def zone_apexes(groups: Iterable[str]) -> list[str]:
    """The apex domains among ``groups``: every group but the local CAs, once each, sorted."""
    return sorted({group for group in groups if group != CA_GROUP})


def refresh_zones(
    config: Config, apexes: Iterable[str], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[CommandResult]:
    """Run every ``[dns] restart_cmd`` for ``apexes``; returns what ran.

    Raises:
      ConfigError: there is no ``[dns] restart_cmd`` to run.
      PermanentError / TransientError: a command failed or timed out (see run_command).
    """
    dns = config.main.dns
    if dns is None or not dns.restart_cmd:
        where = config.conf_dir / MAIN_FILE
        raise ConfigError(where, "dns.restart_cmd", None, "a DNS refresh needs a restart command")
    zones = list(apexes)
    return [
        run_command([*argv, SERIAL_BUMP, *zones], timeout_s=timeout_s) for argv in dns.restart_cmd
    ]
