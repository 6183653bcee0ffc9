"""A real sshd on 127.0.0.1 standing in for other hosts, for the ssh deploy tests.

rsync copies ``<prod>/`` to ``<host>:<prod>/``, the same absolute path, as upstream. On loopback
that is the very directory it copies from, where a copy that never happened looks like one that
did. So sshd runs in a private mount namespace (``unshare --mount``) in which another, empty
directory is bind-mounted over each production directory the test names: whatever runs through
ssh (rsync's receiving side, restart commands) sees that "remote" directory at the production
path, exactly as a second machine would, while the test and sslm see the local tree. A file
shows up in the remote directory only if it travelled over ssh.

Nothing touches ``~/.ssh`` or the system's sshd: sshd has its own config, host key and
authorized key in the test's directory, and clients get an ssh_config (``ssh -F``) that names
the servers by alias (``smtp1.test`` is ``127.0.0.1`` on sshd's port), pins the host key in
its own known_hosts with ``StrictHostKeyChecking yes``, and uses only the test's client key.
The namespace needs root (CAP_SYS_ADMIN); without it, or without sshd, ssh or rsync, the test
fails under CI and is skipped elsewhere.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services import START_TIMEOUT_S, Service, Services, free_port, unavailable, wait_for

SSHD = Path("/usr/sbin/sshd")
#: ConnectTimeout the tests give ssh: short, so a test of an unreachable host stays short.
CONNECT_TIMEOUT_S = 5

#: Runs in the new mount namespace: a private /run (sshd, as root, insists on its privilege
#: separation directory /run/sshd, which a container may lack; this way the host's /run is
#: left alone), the remote directories mounted over the local ones, then sshd in the
#: foreground. Arguments: sshd, its config, then pairs of remote and local directory.
_NAMESPACE_SCRIPT = """set -e
sshd=$1 config=$2
shift 2
mount -t tmpfs -o mode=0755 sslm-test-run /run
mkdir -m 0755 /run/sshd
while [ $# -gt 0 ]; do
  mount --bind "$1" "$2"
  shift 2
done
exec "$sshd" -D -e -f "$config"
"""


@dataclass
class SshServer:
    """A running sshd and the client configuration that reaches it."""

    port: int
    #: The clients' ssh_config: every alias, the pinned host key, the client key.
    client_config: Path
    service: Service
    #: The command that started it, to start it again.
    argv: list[str]

    @property
    def ssh_command(self) -> tuple[str, ...]:
        """What ``SSLM_SSH_COMMAND`` holds, as an argv."""
        return ("ssh", "-F", str(self.client_config))

    def env(self) -> dict[str, str]:
        """The deploy worker's environment for these servers."""
        return {
            "SSLM_SSH_COMMAND": shlex.join(self.ssh_command),
            "SSLM_SSH_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
        }

    def start_again(self, services: Services) -> None:
        """Start sshd again on its port, after ``service.terminate()``: a server that was
        down (connections refused) comes back."""
        assert not self.service.alive
        self.service = services.spawn("sshd-again", self.argv)
        _wait_listening(self.port, self.service)

    def sessions(self) -> int:
        """How many sessions sshd has started so far (its log says so for each one)."""
        return self.service.log_text().count("Starting session:")

    def logins(self) -> int:
        """How many connections have logged in so far: one per ssh connection, however many
        sessions (commands) it then carries."""
        return self.service.log_text().count("Accepted publickey")


def _keygen(path: Path) -> str:
    """Create an ed25519 key pair at ``path``; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sslm-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


def _require_tools() -> None:
    for name, package in (
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("rsync", "rsync"),
        ("unshare", "util-linux"),
    ):
        if shutil.which(name) is None:
            unavailable(f"{name} is not installed (Debian: apt-get install {package})")
    if not SSHD.is_file():
        unavailable(f"{SSHD} is not installed (Debian: apt-get install openssh-server)")
    if os.geteuid() != 0:
        unavailable("the ssh deploy tests run sshd in a private mount namespace: needs root")
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        unavailable(f"cannot create a mount namespace (needs CAP_SYS_ADMIN): {probe.stderr}")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_sshd(
    services: Services,
    *,
    remote_roots: Mapping[Path, Path],
    aliases: Sequence[str] = ("smtp1.test",),
    unreachable_aliases: Sequence[str] = ("down.test",),
) -> SshServer:
    """Start sshd on a free loopback port and wait until it accepts connections.

    Parameters:
      remote_roots: local directory → the directory sessions see in its place (both must
        exist). Typically the production tree → an empty "remote" directory.
      aliases: host names that reach this sshd.
      unreachable_aliases: host names that point at a loopback port nobody listens on.

    ``stranger.test`` also reaches this sshd, under a host key alias known_hosts lacks: a
    host whose key ssh cannot check.
    """
    _require_tools()
    home = services.workdir / "sshd"
    home.mkdir()
    host_key = _keygen(home / "host_key")
    client_key = home / "client_key"
    (home / "authorized_keys").write_text(_keygen(client_key) + "\n")
    port, closed_port = free_port(), free_port()
    user = pwd.getpwuid(os.geteuid()).pw_name

    server_config = home / "sshd_config"
    server_config.write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {home / "host_key"}
PidFile {home / "sshd.pid"}
AuthorizedKeysFile {home / "authorized_keys"}
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# the test's temp directories are not owned and moded as sshd's strict checks want
StrictModes no
PrintMotd no
LogLevel VERBOSE
""")
    # ssh looks a non-standard port up in known_hosts as [host]:port.
    (home / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    # A space in its path: SSLM_SSH_COMMAND and rsync's -e must keep it one argument.
    client_config = home / "client config" / "ssh_config"
    client_config.parent.mkdir()
    client_config.write_text(f"""\
Host {" ".join(aliases)}
    HostName 127.0.0.1
    Port {port}
Host {" ".join(unreachable_aliases)}
    HostName 127.0.0.1
    Port {closed_port}
Host stranger.test
    HostName 127.0.0.1
    Port {port}
    HostKeyAlias stranger.test
Host *
    User {user}
    IdentityFile {client_key}
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile {home / "known_hosts"}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
""")

    mounts = [str(path) for pair in remote_roots.items() for path in reversed(pair)]
    argv = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        _NAMESPACE_SCRIPT,
        "sh",
        str(SSHD),
        str(server_config),
        *mounts,
    ]
    service = services.spawn("sshd", argv)
    _wait_listening(port, service)
    return SshServer(port, client_config, service, argv)


def _wait_listening(port: int, service: Service) -> None:
    wait_for(
        "sshd accepts connections",
        lambda: _listening(port),
        timeout_s=START_TIMEOUT_S,
        log=service.log,
        alive=lambda: service.alive,
    )
