"""What every console script does the same way around its ``main``: end quietly when the
reader of its output goes away (``sslm-mgr -s | head``).

Python reports a closed pipe as a ``BrokenPipeError`` traceback, and again at exit when it
flushes stdout. A Unix tool instead stops writing and ends as if killed by SIGPIPE; so does
every sslm program, through :func:`console_script`: stdout is pointed at ``/dev/null`` (so the
flush at exit has nowhere to fail) and the status is 141 (128 + SIGPIPE), what a shell shows
for ``yes | head``. Whatever the program had done before its output was cut short stays done.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Final, ParamSpec

P = ParamSpec("P")
#: A shell's status for a program ended by SIGPIPE.
EXIT_BROKEN_PIPE: Final = 128 + signal.SIGPIPE


def console_script(main: Callable[P, int]) -> Callable[P, int]:
    """Wrap the ``main`` of a console script: it returns its status as before, or
    :data:`EXIT_BROKEN_PIPE` without a word when stdout's reader has gone."""

    @functools.wraps(main)
    def run(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            try:
                return main(*args, **kwargs)
            finally:
                # Inside the try: a SystemExit (argparse's --help, --version) flushes too.
                sys.stdout.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_BROKEN_PIPE

    return run
