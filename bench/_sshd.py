"""One real sshd on 127.0.0.1 standing in for many servers, for ``bench_deploy.py``.

The setup follows ``tests/integration/sshd.py`` (whose key and port helpers it imports; the
bench puts ``tests/integration`` on ``sys.path``): sshd with its own config, host key and
authorized client key in the bench's directory, run in a private mount namespace with its own
``/run`` (sshd, as root, wants ``/run/sshd``); clients get an ssh_config (``ssh -F``) in which
every alias reaches that sshd, the host key is pinned in its own known_hosts, and only the
bench's client key is used. Nothing touches ``~/.ssh`` or the system's sshd.

What differs from the tests: one sshd is N servers here, and each must get its own copy.
rsync writes to the production path itself, so if all aliases shared one remote directory,
every copy after the first would find the files there already and transfer nothing. So each
alias's ssh_config block sends ``SetEnv SSLM_BENCH_HOST=<alias>`` (sshd ``AcceptEnv``), and
sshd runs every session through a ``ForceCommand`` that enters a mount namespace of its own,
bind-mounts ``<remote>/<alias>`` over the production directory and then runs the original
command with ``sh -c``, as sshd would have. rsync's receiving side and the restart command see
that alias's directory at the production path, as a second machine would. That costs each
session an ``unshare`` and a ``mount`` (a few ms), on both sides of the benchmark alike.

The ssh user gets a plain non-interactive shell, ``/bin/sh``, as a deploy account on a server
would: sshd's namespace sees a copy of ``/etc/passwd`` with that shell for the user. Otherwise
every session would start the bench host's root login shell, bash, which reads root's
``.bashrc`` for commands over ssh (about 150 ms per session on the machine of issue 15), a cost
of this machine's root account rather than of any deploy.

sshd also runs in a PID namespace of its own, as its init, as in the tests: each connection
and each command runs in a session of its own, out of reach of a signal to sshd's process
group, but when sshd stops the kernel ends every process in its namespace, so no connection
(nor the client's ssh master behind it) outlives the bench.

Needs root (mount and PID namespaces), sshd, ssh, ssh-keygen, rsync and unshare.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services import free_port
from sshd import CONNECT_TIMEOUT_S, SSHD
from sshd import _keygen as keygen
from sshd import _listening as listening

START_TIMEOUT_S = 15.0
#: The variable that tells the session which alias the client connected to.
ALIAS_VAR = "SSLM_BENCH_HOST"

#: The ssh user's login shell in sshd's view of /etc/passwd.
PLAIN_SHELL = "/bin/sh"

#: sshd itself, as in the tests: a private /run, the passwd file with the plain shell, then
#: sshd in the foreground.
_NAMESPACE_SCRIPT = """set -e
mount -t tmpfs -o mode=0755 sslm-bench-run /run
mkdir -m 0755 /run/sshd
mount --bind "$3" /etc/passwd
exec "$1" -D -e -f "$2"
"""

#: sshd's ForceCommand: the session's command in its alias's own view of the production path.
_SESSION_SCRIPT = """#!/bin/sh
set -eu
alias="${{{var}:-}}"
case "$alias" in
  ""|.*|*/*) echo "bench sshd: no usable {var} ($alias)" >&2; exit 1 ;;
esac
exec unshare --mount --propagation private -- sh -c \\
  'mount --bind "$1" "$2" && exec sh -c "${{SSH_ORIGINAL_COMMAND:-true}}"' \\
  sh {remote}/"$alias" {prod}
"""


@dataclass
class BenchSshd:
    """A running sshd, the client configuration that reaches it, and the remote directories."""

    process: subprocess.Popen[bytes]
    port: int
    client_config: Path
    log: Path
    remote_top: Path

    @property
    def ssh_command(self) -> tuple[str, ...]:
        return ("ssh", "-F", str(self.client_config))

    def env(self) -> dict[str, str]:
        """The deploy settings (``SSLM_SSH_*``) that reach these servers."""
        return {
            "SSLM_SSH_COMMAND": shlex.join(self.ssh_command),
            "SSLM_SSH_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
        }

    def remote_dir(self, alias: str) -> Path:
        """What ``alias`` has at the production path."""
        return self.remote_top / alias

    def sessions(self) -> int:
        """How many sessions sshd has started so far (its log says so for each one)."""
        return self.log.read_text(errors="replace").count("Starting session:")

    def logins(self) -> int:
        """How many connections have logged in so far (one per connection, whatever number
        of sessions it carries)."""
        return self.log.read_text(errors="replace").count("Accepted publickey")

    def stop(self) -> None:
        """Stop sshd (the kernel then ends the rest of its PID namespace) and unshare."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def require_tools() -> None:
    """Exit with a message when something sshd on loopback needs is missing."""
    for name in ("ssh", "ssh-keygen", "rsync", "unshare"):
        if shutil.which(name) is None:
            raise SystemExit(f"{name} is not installed (openssh-client, rsync, util-linux)")
    if not SSHD.is_file():
        raise SystemExit(f"{SSHD} is not installed (Debian: apt-get install openssh-server)")
    if os.geteuid() != 0:
        raise SystemExit("the deploy bench runs sshd in mount namespaces: it needs root")


def plain_shell_passwd(passwd: str, user: str) -> str:
    """``passwd`` (the text of /etc/passwd) with :data:`PLAIN_SHELL` as ``user``'s shell."""
    lines = []
    for line in passwd.splitlines():
        fields = line.split(":")
        if fields[0] == user and len(fields) == 7:
            fields[6] = PLAIN_SHELL
        lines.append(":".join(fields))
    return "\n".join(lines) + "\n"


def start_sshd(workdir: Path, *, prod_dir: Path, aliases: Sequence[str]) -> BenchSshd:
    """Start sshd on a free loopback port for ``aliases``, each seeing its own (empty)
    directory at ``prod_dir``; returns once sshd accepts connections."""
    require_tools()
    home = workdir / "sshd"
    remote_top = workdir / "remote"
    home.mkdir()
    for alias in aliases:
        (remote_top / alias).mkdir(parents=True)
    host_key = keygen(home / "host_key")
    client_key = home / "client_key"
    (home / "authorized_keys").write_text(keygen(client_key) + "\n")
    session = home / "session.sh"
    session.write_text(
        _SESSION_SCRIPT.format(
            var=ALIAS_VAR, remote=shlex.quote(str(remote_top)), prod=shlex.quote(str(prod_dir))
        )
    )
    session.chmod(0o755)
    port = free_port()
    user = pwd.getpwuid(os.geteuid()).pw_name
    passwd = home / "passwd"
    passwd.write_text(plain_shell_passwd(Path("/etc/passwd").read_text(), user))
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
StrictModes no
PrintMotd no
MaxStartups 100
AcceptEnv {ALIAS_VAR}
ForceCommand {session}
LogLevel VERBOSE
""")
    (home / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    client_config = home / "ssh_config"
    blocks = [f"Host {alias}\n    SetEnv {ALIAS_VAR}={alias}\n" for alias in aliases]
    client_config.write_text(
        "".join(blocks)
        + f"""\
Host {" ".join(aliases)}
    HostName 127.0.0.1
    Port {port}
Host *
    User {user}
    IdentityFile {client_key}
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile {home / "known_hosts"}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
"""
    )
    log = home / "sshd.log"
    argv = [
        "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--",
        "sh", "-c", _NAMESPACE_SCRIPT, "sh", str(SSHD), str(server_config), str(passwd),
    ]  # fmt: skip
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = BenchSshd(process, port, client_config, log, remote_top)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise SystemExit(f"sshd did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return server
