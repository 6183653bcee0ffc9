"""Shared ssh connections: one per server, kept open between the commands that reach it.

A deploy runs rsync and then each restart command over ssh, and a deploy worker deploys many
servers in a row; a new connection each time costs a key exchange, a login and a remote shell
start (bench/bench_deploy.py). ssh's own multiplexing (``ControlMaster=auto``) lets the first
command's connection serve the next ones for ``ControlPersist`` seconds of idleness.

Its control sockets are as good as the login they lead to, so they live in a directory of this
process alone: made by :func:`tempfile.mkdtemp` (mode 0700, owned by us, an unguessable name)
under ``$XDG_RUNTIME_DIR`` or ``/tmp``, never under a configured or shared path. Each socket is
named by a hash of the ssh command and the server's name as configured, so two aliases of one
machine, or two ssh configurations, never share a login. When the process exits, the
connections are closed and the directory removed by :func:`close_all`: at exit (``atexit``),
and, since a prefork pool process ends without running ``atexit``, on Celery's
``worker_process_shutdown`` too (connected in :mod:`sslm_tasks.app`; this module knows no
Celery). Only the process that made the directory removes it: a child forked after it was
made makes its own.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

#: A unix socket's path must fit in ``sun_path``: 104 bytes on the BSDs, 108 on Linux. ssh
#: first binds ``<ControlPath>.<16 random characters>``, then renames it into place.
_SOCKET_PATH_MAX = 104
_SSH_SUFFIX = 17
#: Hex digits of a socket's name: 64 bits, for the few hundred servers of one worker.
_NAME_DIGITS = 16
_PREFIX = "sslm-ssh-"
#: mkdtemp's random part is 8 characters.
_DIR_NAME = len(_PREFIX) + 8
#: The longest base directory that leaves room for the rest of the socket's path.
_BASE_MAX = _SOCKET_PATH_MAX - _SSH_SUFFIX - _NAME_DIGITS - _DIR_NAME - 2
#: Seconds ``ssh -O exit`` may take to tell one master to close, at exit.
_EXIT_TIMEOUT_S = 5.0

# Deploys run on the threads of one worker process: the directory is made once, by whichever
# thread comes first.
_guard = threading.Lock()
_directory: Path | None = None
#: The ssh program that closes the connections, and the process the directory belongs to.
_program = "ssh"
_owner = 0


def _base() -> str:
    """``$XDG_RUNTIME_DIR`` (the user's own, 0700 itself), else ``/tmp``. Not ``$TMPDIR``:
    it may be long enough to push a socket's path over the limit."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime) and len(runtime) <= _BASE_MAX:
        return runtime
    return "/tmp"


def control_directory(ssh_program: str) -> Path:
    """This process's directory of control sockets, made on first use; at exit ``ssh_program``
    tells each of its connections to close, and the directory is removed.

    Raises:
      OSError: the directory cannot be made.
    """
    global _directory, _program, _owner
    with _guard:
        if _directory is None or _owner != os.getpid():
            # None yet, or the parent's (this process was forked after it made its own):
            # never share the parent's sockets, nor remove its directory at this one's end.
            _directory = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=_base()))
            _program, _owner = ssh_program, os.getpid()
        return _directory


def close_all() -> None:
    """Close this process's shared connections and remove its directory, if it made one.

    Idempotent, and safe in any process: a forked child that inherited its parent's directory
    leaves it alone. Runs at exit, and on ``worker_process_shutdown`` in a prefork pool
    process, which ends without running ``atexit``.
    """
    global _directory
    with _guard:
        directory, owned = _directory, _owner == os.getpid()
        if owned:
            _directory = None
    if directory is not None and owned:
        _close_and_remove(_program, directory)


def control_path(directory: Path, ssh_command: Sequence[str], host: str) -> Path:
    """The control socket for ``host`` reached with ``ssh_command``: one connection per server
    name and ssh configuration, whatever machine the name leads to."""
    key = "\0".join([*ssh_command, host]).encode()
    return directory / hashlib.sha256(key).hexdigest()[:_NAME_DIGITS]


def close_connections(ssh_program: str, directory: Path) -> None:
    """Tell the master connection behind every control socket in ``directory`` to close. One
    that does not answer is left to close itself after ``ControlPersist`` idle seconds; the
    others are still told."""
    for socket in sorted(directory.iterdir()):
        # -F /dev/null: nobody's ssh_config is needed (or wanted) to talk to our own socket;
        # the host argument is only required by the syntax.
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                [ssh_program, "-F", "/dev/null", "-o", f"ControlPath={socket}", "-O", "exit", "x"],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=_EXIT_TIMEOUT_S,
                check=False,
            )


def _close_and_remove(ssh_program: str, directory: Path) -> None:
    with contextlib.suppress(OSError):  # the directory is gone already
        close_connections(ssh_program, directory)
    shutil.rmtree(directory, ignore_errors=True)


atexit.register(close_all)
