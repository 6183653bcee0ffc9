"""How a deploy reaches one server: give it the production tree, run its commands there.

Two transports. :class:`LocalTransport` is for a server on this host: the production tree is
already where it reads it, and its commands run here. :class:`SshTransport` is for every other
host, as upstream: ``rsync`` of the whole production tree to the same absolute path over ssh,
and commands as ``ssh <host> -- <argv>``. Unlike upstream, ssh never prompts (``BatchMode``),
gives up on a silent host (``ConnectTimeout``), each step has a time limit, the copy lands
atomically file by file, and the private keys of local CAs can never travel.

What ssh runs with (``ssh -F <config>``, identity, known_hosts, port) comes from the deploy
worker's environment (``SSLM_SSH_COMMAND``), not from ``conf.d``: it is the worker's own
credentials, and per-host details are best said in an ssh_config file. sslm adds one thing of
its own: the commands that reach one server share a connection (``ControlMaster``, see
:mod:`sslm_tasks.deploy.connections`), kept open ``SSLM_SSH_CONTROL_PERSIST_S`` seconds.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from sslm_tasks.commands import CommandResult, execute, run_command
from sslm_tasks.config.files import MAIN_FILE
from sslm_tasks.config.models import CA_GROUP, server_host_problem
from sslm_tasks.config.settings import ENV_SOURCE, RuntimeSettings
from sslm_tasks.deploy.connections import control_directory, control_path
from sslm_tasks.deploy.targets import is_local_host
from sslm_tasks.errors import ConfigError, PermanentError, SslmError, TransientError
from sslm_tasks.store.layout import BUNDLE, PRIVKEY

#: Characters of stderr kept in an error message: enough for ssh's or rsync's last lines.
_STDERR_KEPT = 400

#: Unanswered keepalive probes after which ssh gives a connection up (``ServerAliveCountMax``,
#: ssh's default): with ``SSLM_SSH_SERVER_ALIVE_S`` of 15, a silent server is given up in 45 s.
SERVER_ALIVE_COUNT_MAX = 3

#: ssh's own exit status for its failures (connection, authentication, host key); a remote
#: command that exits 255 itself looks the same, and is classified by ssh's message as well.
_SSH_FAILED = 255

#: rsync exit codes worth retrying without any change of configuration: 30 and 35 are rsync's
#: own timeouts; 24 means files vanished while being copied (a production sync was rewriting
#: them), so the next copy finds a settled tree.
_RSYNC_TRANSIENT = frozenset({24, 30, 35})

#: What ssh (through rsync, too) prints when the host could not be reached or dropped the
#: connection: a network or a server that may be back soon. Everything else that ssh reports
#: (host key mismatch or unknown host, "Permission denied", an unknown host name) needs the
#: operator, so it is permanent: retrying it three times would only delay the report.
_UNREACHABLE = (
    "connection refused",
    "connection timed out",
    "operation timed out",
    "no route to host",
    "network is unreachable",
    "host is unreachable",
    "temporary failure in name resolution",
    "connection reset by peer",
    "connection closed by",
    "kex_exchange_identification",
)

#: rsync filters keeping local CA private keys out of every copy: production never holds them
#: (lifecycle/production.py), and this makes the promise hold at the boundary too. With
#: ``--delete-excluded`` they also clear the copies upstream ssl-mgr left on servers.
_CA_SECRET_FILTERS = tuple(
    f"--exclude=/{CA_GROUP}/*/*/{name}" for name in sorted({PRIVKEY, BUNDLE})
)


class Transport(Protocol):
    """One server as a deploy sees it.

    Contract:

    * :meth:`copy_tree` makes the server's copy of the production tree equal to ours (files
      that left production leave the server too). It is idempotent, and atomic per file: a
      server reading during the copy sees each file either whole and old or whole and new.
    * :meth:`run` runs one command as an argv list: no shell splits or expands it on the way.
    * Both are bounded by ``timeout_s``; on expiry the local process is killed and
      :class:`TransientError` raised.
    * Errors end with what the failing program said; a remote transport's errors also name
      the host (a local one's callers prefix the server they were deploying).
    * Instances keep no state between calls.
    """

    def copy_tree(self, prod_dir: Path, *, timeout_s: float) -> None:
        """Bring the server's copy of ``prod_dir`` up to date.

        Raises:
          ConfigError: the tree cannot be copied as configured (permanent).
          PermanentError: the copy failed in a way that needs the operator.
          TransientError: the host was unreachable, or the copy timed out.
        """
        ...

    def run(self, argv: Sequence[str], *, timeout_s: float) -> CommandResult:
        """Run ``argv`` on the server and return its result (exit status 0).

        Raises:
          PermanentError: the command is missing or exited non-zero.
          TransientError: the host was unreachable, or the command timed out and was killed.
        """
        ...


class LocalTransport:
    """A server on this host: it reads the production tree in place."""

    def copy_tree(self, prod_dir: Path, *, timeout_s: float) -> None:
        """Nothing to copy: this host's servers read ``prod_dir`` itself."""

    def run(self, argv: Sequence[str], *, timeout_s: float) -> CommandResult:
        return run_command(argv, timeout_s=timeout_s)


class SshTransport:
    """Another host, reached with ssh; rsync copies the production tree over it.

    Parameters:
      host(str): the name ssh connects to (an ssh_config ``Host`` alias works).
      ssh_command(Sequence[str]): the ssh program and its options, e.g.
        ``("ssh", "-F", "/etc/sslm/ssh_config")``.
      connect_timeout_s(int): ssh's ``ConnectTimeout``.
      control_dir(Path | None): where the control socket of the connection the commands share
        lives (a directory of this process alone); None: each command connects anew.
      control_persist_s(int): how long that connection outlives its last command, above 0.
      rsync(str): the rsync program (on this host; the server needs rsync on its PATH too).

    Raises:
      ConfigError: ``host`` would be read by ssh as an option, or ``ssh_command`` is empty.
    """

    def __init__(
        self,
        host: str,
        *,
        ssh_command: Sequence[str] = ("ssh",),
        connect_timeout_s: int = 10,
        control_dir: Path | None = None,
        control_persist_s: int = 60,
        server_alive_s: int = 15,
        rsync: str = "rsync",
    ) -> None:
        problem = server_host_problem(host)
        if problem is not None:
            raise ConfigError(MAIN_FILE, "servers", host, problem)
        if not ssh_command:
            raise ConfigError(ENV_SOURCE, "SSLM_SSH_COMMAND", "", "must name the ssh program")
        self._host = host
        self._rsync = rsync
        # sslm's options go first: ssh keeps the first value it sees for an option, so no
        # string in SSLM_SSH_COMMAND can turn prompting back on and hang a worker, nor put the
        # control socket where others may reach it.
        shared: tuple[str, ...] = ()
        if control_dir is not None:
            socket = control_path(control_dir, ssh_command, host)
            shared = (
                "-o", "ControlMaster=auto",
                "-o", f"ControlPersist={control_persist_s}",
                "-o", f"ControlPath={socket}",
            )  # fmt: skip
        self._ssh = (
            ssh_command[0],
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout_s}",
            # A server gone silent is given up after SERVER_ALIVE_COUNT_MAX probes; without
            # them a shared master on a dead connection held every command sent through it.
            "-o", f"ServerAliveInterval={server_alive_s}",
            "-o", f"ServerAliveCountMax={SERVER_ALIVE_COUNT_MAX}",
            *shared,
            *ssh_command[1:],
        )  # fmt: skip

    @classmethod
    def from_settings(cls, host: str, settings: RuntimeSettings) -> SshTransport:
        """The transport the deploy worker's environment describes (``SSLM_SSH_*``), sharing
        this process's connections unless ``SSLM_SSH_CONTROL_PERSIST_S`` is 0.

        Raises:
          TransientError: the directory of the control sockets cannot be made (``/tmp``
            full, say).
        """
        persist_s = settings.ssh_control_persist_s
        try:
            control_dir = control_directory(settings.ssh_command[0]) if persist_s else None
        except OSError as err:
            raise TransientError(
                f"deploy to {host}: no directory for ssh's sockets: {err}"
            ) from err
        return cls(
            host,
            ssh_command=settings.ssh_command,
            connect_timeout_s=settings.ssh_connect_timeout_s,
            control_dir=control_dir,
            control_persist_s=persist_s,
            server_alive_s=settings.ssh_server_alive_s,
        )

    def copy_argv(self, prod_dir: Path) -> list[str]:
        """The rsync command :meth:`copy_tree` runs, exactly (for reports and comparisons).

        ``--delay-updates`` puts every changed file in a ``.~tmp~`` directory and renames them
        all into place at the end, so the server never reads a half-written file, and a copy
        that breaks off leaves the old files in use; ``--delete-delay`` likewise waits to
        delete until the new files are in. rsync's ``-e`` takes one string that it splits
        itself, honouring quotes, so the ssh argv is passed shell-quoted.
        """
        if not prod_dir.is_absolute():
            raise ConfigError(
                MAIN_FILE,
                "globals.prod_cert_dir",
                str(prod_dir),
                f"must be an absolute path to copy it to {self._host}: rsync writes the same "
                "path there",
            )
        tree = f"{str(prod_dir).rstrip('/')}/"
        return [
            self._rsync, "-a", "--mkpath", "--delete-delay", "--delay-updates",
            *_CA_SECRET_FILTERS, "--delete-excluded",
            "-e", shlex.join(self._ssh),
            tree, f"{self._host}:{tree}",
        ]  # fmt: skip

    def copy_tree(self, prod_dir: Path, *, timeout_s: float) -> None:
        argv = self.copy_argv(prod_dir)
        done = execute(argv, what=f"copy of {prod_dir} to {self._host}", timeout_s=timeout_s)
        if done.returncode == 0:
            return
        raise _classify(
            f"copy of {prod_dir} to {self._host}: rsync exited {done.returncode}",
            done,
            retryable=done.returncode in _RSYNC_TRANSIENT,
        )

    def _run_argv(self, argv: Sequence[str]) -> list[str]:
        """The ssh command :meth:`run` runs for ``argv``.

        ssh joins its arguments with spaces into one string for the remote login shell, so
        each is quoted for a POSIX shell: the server sees ``argv`` unchanged, with nothing
        expanded.
        """
        return [*self._ssh, self._host, "--", *(shlex.quote(arg) for arg in argv)]

    def run(self, argv: Sequence[str], *, timeout_s: float) -> CommandResult:
        shown = shlex.join(argv)
        what = f"command {shown!r} on {self._host}"
        # On a timeout only the local ssh is killed: sshd does not stop a command that has no
        # terminal when its client goes away, so a hung remote command keeps running.
        done = execute(self._run_argv(argv), what=what, timeout_s=timeout_s)
        output = (done.stdout + done.stderr).strip()
        if done.returncode == _SSH_FAILED:
            raise _classify(f"{what}: ssh exited {_SSH_FAILED}", done, retryable=False)
        if done.returncode != 0:
            raise PermanentError(f"{what} exited {done.returncode}: {output[-_STDERR_KEPT:]}")
        return CommandResult(tuple(argv), done.returncode, output[-_STDERR_KEPT:])


def _classify(
    message: str, done: subprocess.CompletedProcess[str], *, retryable: bool
) -> SslmError:
    """The error for a failed ssh or rsync: transient when the host was out of reach or the
    exit status is ``retryable``, permanent otherwise; it ends with the tail of stderr."""
    stderr = done.stderr.strip()
    tail = stderr[-_STDERR_KEPT:] or "(no output)"
    if any(sign in stderr.lower() for sign in _UNREACHABLE):
        return TransientError(f"{message}, host unreachable: {tail}")
    if retryable:
        return TransientError(f"{message}: {tail}")
    return PermanentError(f"{message}: {tail}")


def transport_for(host: str, settings: RuntimeSettings) -> Transport:
    """The transport for ``host``: local when it names this machine, ssh otherwise."""
    if is_local_host(host):
        return LocalTransport()
    return SshTransport.from_settings(host, settings)
