"""Run sslm-mgr and SIGKILL it at the N-th rename: ``os.replace`` (every atomic write and link
flip ends in one) or the exchange that switches a production version, or let it finish when N is
larger than the number of calls. Test-only: never imported by the package.

A server, so that the hundreds of runs of a kill test pay for Python and sslm's imports once: it
reads one JSON request per line on stdin, ``{"kill_at": N, "args": [...], "topdir": "...",
"out": "..."}``, forks a child that runs ``sslm-mgr args`` in ``topdir`` with its output in
``out.stdout`` and ``out.stderr``, waits for it and answers one line: the child's return code
(negative: the signal that ended it, as subprocess says). One request at a time.
Usage: python kill_harness.py
"""

from __future__ import annotations

import json
import os
import signal
import sys

from sslm_tasks.cli import mgr
from sslm_tasks.store import confined

kill_at = 0
calls = 0
real_replace = os.replace
real_exchange = confined.exchange


def count_then_maybe_die() -> None:
    global calls
    calls += 1
    if calls == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def replace_then_maybe_die(src: str, dst: str, *args: object, **kwargs: object) -> None:
    count_then_maybe_die()
    real_replace(src, dst, *args, **kwargs)  # type: ignore[arg-type]


def exchange_then_maybe_die(directory: confined.Dir, first: str, second: str) -> bool:
    count_then_maybe_die()
    return real_exchange(directory, first, second)


def run_child(request: dict[str, object]) -> None:
    """In the forked child: the run, its output in files, then exit without the parent's
    clean-up (it is the parent's stdin and stdout that the child shares)."""
    global kill_at
    kill_at = int(str(request["kill_at"]))
    topdir = str(request["topdir"])
    os.chdir(topdir)
    os.environ["SSL_MGR_TOPDIR"] = topdir
    out = str(request["out"])
    for fd, suffix in ((1, ".stdout"), (2, ".stderr")):
        target = os.open(out + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    code = 1
    try:
        code = mgr.main([str(arg) for arg in request["args"]])  # type: ignore[attr-defined]
        print(f"replace calls: {calls}")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    os.replace = replace_then_maybe_die  # type: ignore[assignment]
    confined.exchange = exchange_then_maybe_die
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            run_child(request)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
