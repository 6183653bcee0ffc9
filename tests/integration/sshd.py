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

Stopping it stops everything it started. sshd puts each connection in a session of its own
(``setsid``), and each command run without a terminal in yet another, so its process group
holds only the listener: a connection's process outlived a kill of the group, and with it the
connection and the client's ssh master behind it, for ``ControlPersist`` (60 s), and whatever
a restart command left running for good. So sshd also runs in a PID namespace of its own, as
its init: when it dies the kernel kills every process in the namespace, whatever session it
is in. On the client side, the masters that deploys started are daemons (ssh forks them off
and ``setsid``s them): ending the test's services ends the masters of its connections too (see
:func:`end_ssh_masters`), and this process's own are closed (``connections.close_all``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services import START_TIMEOUT_S, Service, Services, free_port, unavailable, wait_for

from sslm_tasks.deploy import connections

SSHD = Path("/usr/sbin/sshd")
#: sshd's namespaces: its own mounts, and its own PIDs with sshd as init (``--fork``), so that
#: its death ends every process it started; ``--kill-child``: so does unshare's.
_UNSHARE = ("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child")
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
    #: Every host name the client configuration knows (reachable or not).
    aliases: tuple[str, ...]

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
        services.at_stop(_namespace_ender(self.service))

    def control_socket_names(self) -> frozenset[str]:
        """The names sslm gives the control sockets of connections to these servers, in
        whatever directory (see ``connections.control_path``): they tell their masters."""
        return frozenset(
            connections.control_path(Path("/"), self.ssh_command, alias).name
            for alias in self.aliases
        )

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
        unavailable("the ssh deploy tests run sshd in private namespaces: needs root")
    probe = subprocess.run([*_UNSHARE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        unavailable(f"cannot create mount and PID namespaces (CAP_SYS_ADMIN): {probe.stderr}")


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
        *_UNSHARE,
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
    server = SshServer(
        port,
        client_config,
        service,
        argv,
        (*aliases, *unreachable_aliases, "stranger.test"),
    )
    services.at_stop(_namespace_ender(service))
    # Run last-registered first: the masters are dead before this process's own directory
    # goes (close_all), so its ``ssh -O exit`` never waits (5 s) on one that answers nothing.
    services.at_stop(connections.close_all)
    names = server.control_socket_names()
    services.at_stop(lambda: end_ssh_masters(names))
    return server


def _wait_listening(port: int, service: Service) -> None:
    wait_for(
        "sshd accepts connections",
        lambda: _listening(port),
        timeout_s=START_TIMEOUT_S,
        log=service.log,
        alive=lambda: service.alive,
    )


# --- stopping what sshd and the deploys left ------------------------------------------------


def _processes() -> Iterator[tuple[int, Path]]:
    """Every process's pid and /proc directory, but ours."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            yield int(entry.name), entry


def _living(proc: Path) -> bool:
    """Whether the process still runs: a zombie (state ``Z``, only waiting for its parent to
    read its status) runs nothing."""
    try:
        # pid (comm) state ...: comm may hold spaces and parentheses, so split after its ')'
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill_until_gone(what: str, find: Callable[[], list[int]]) -> None:
    """SIGKILL what ``find`` lists until it lists nothing (a process may start another
    meanwhile); fails the test after :data:`START_TIMEOUT_S`."""

    def gone() -> bool:
        found = find()
        for pid in found:
            with contextlib.suppress(ProcessLookupError):  # it has ended meanwhile
                os.kill(pid, signal.SIGKILL)
        return not found

    wait_for(what, gone, timeout_s=START_TIMEOUT_S)


def _namespace_ender(service: Service) -> Callable[[], None]:
    """What waits, once ``service`` (unshare, then sshd as init) is killed, until no process
    is left in sshd's PID namespace: the kernel kills them as init dies, without waiting."""
    # unshare's pid_for_children is the namespace it made (sshd is listening: it exists).
    # Held open until the end: a namespace that is gone may give its number to a new one,
    # another test's.
    held = os.open(f"/proc/{service.process.pid}/ns/pid_for_children", os.O_RDONLY)
    namespace = os.fstat(held)
    ours = os.stat("/proc/self/ns/pid")
    if (ours.st_dev, ours.st_ino) == (namespace.st_dev, namespace.st_ino):
        os.close(held)
        # Its members would be every process of this machine.
        raise AssertionError(f"sshd runs in our own PID namespace: {service.process.args}")

    def members() -> list[int]:
        found = []
        for pid, proc in _processes():
            with contextlib.suppress(OSError):  # it has ended meanwhile
                member = (proc / "ns/pid").stat()
                same = (member.st_dev, member.st_ino) == (namespace.st_dev, namespace.st_ino)
                if same and _living(proc):
                    found.append(pid)
        return found

    def end() -> None:
        try:
            assert not service.alive, "stop the service before its namespace"
            _kill_until_gone(f"sshd's PID namespace {namespace.st_ino} empties", members)
        finally:
            os.close(held)

    return end


def ssh_masters(socket_names: Iterable[str]) -> list[int]:
    """The processes whose command line names a control socket called one of
    ``socket_names``: a master (``ssh: <directory>/<name> [mux]``, the title it gives itself)
    or a client with ``-o ControlPath=<directory>/<name>``."""
    alternatives = "|".join(map(re.escape, socket_names))
    named = re.compile(rf"/(?:{alternatives})\b")
    found = []
    for pid, proc in _processes():
        with contextlib.suppress(OSError):  # it has ended meanwhile
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            ssh = Path(argv[0].split(":")[0]).name == "ssh"
            if ssh and named.search(" ".join(argv)) and _living(proc):
                found.append(pid)
    return found


def end_ssh_masters(socket_names: Iterable[str]) -> None:
    """Kill every ssh master (and client) of the control sockets called ``socket_names``,
    wherever they are and whichever process started them (this one, a worker, sslm-mgr), and
    wait until they are gone. A master left alone outlives the test: it is a daemon, and it
    waits ``ControlPersist`` seconds after its last command, or forever when it is stopped."""
    names = frozenset(socket_names)
    _kill_until_gone("the test's ssh masters end", lambda: ssh_masters(names))
