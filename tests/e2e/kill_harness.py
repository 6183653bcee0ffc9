"""Run sslm-mgr and SIGKILL it at the N-th rename: ``os.replace`` (every atomic write and link
flip ends in one) or the exchange that switches a production version, or let it finish when N is
larger than the number of calls. Test-only: never imported by the package.
Usage: python kill_harness.py N [sslm-mgr args...]"""

from __future__ import annotations

import os
import signal
import sys

from sslm_tasks.cli import mgr
from sslm_tasks.store import confined

kill_at = int(sys.argv[1])
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


os.replace = replace_then_maybe_die  # type: ignore[assignment]
confined.exchange = exchange_then_maybe_die
code = mgr.main(sys.argv[2:])
print(f"replace calls: {calls}")
sys.exit(code)
