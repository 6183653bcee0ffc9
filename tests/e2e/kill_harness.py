"""Run sslm-mgr and SIGKILL it at the N-th ``os.replace`` (every atomic write and link flip ends
in one), or let it finish when N is larger than the number of calls. Test-only: never imported by
the package. Usage: python kill_harness.py N [sslm-mgr args...]"""

from __future__ import annotations

import os
import signal
import sys

from sslm_tasks.cli import mgr

kill_at = int(sys.argv[1])
calls = 0
real_replace = os.replace


def replace_then_maybe_die(src: str, dst: str, *args: object, **kwargs: object) -> None:
    global calls
    calls += 1
    if calls == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, *args, **kwargs)  # type: ignore[arg-type]


os.replace = replace_then_maybe_die  # type: ignore[assignment]
code = mgr.main(sys.argv[2:])
print(f"replace calls: {calls}")
sys.exit(code)
