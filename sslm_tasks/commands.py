"""Running the operator's commands: restart commands and ``post_copy_cmd``.

Commands run without a shell (an argv list, split once by the config loader) and with a time
limit, so a hung ``systemctl`` cannot hold a worker forever. Output is kept short for the
report; a command never receives key material.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from sslm_tasks.errors import PermanentError, TransientError

#: Seconds a restart or post-copy command may take.
DEFAULT_TIMEOUT_S = 60.0
#: Characters of a failing command's output kept for the report.
_OUTPUT_KEPT = 400


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    output: str


def execute(
    argv: Sequence[str], *, what: str, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell, no stdin) and return what it did, whatever its exit status.

    Raises:
      PermanentError: the program does not exist or is not executable (``what`` names it).
      TransientError: it ran longer than ``timeout_s`` and was killed; may succeed later.
    """
    try:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise PermanentError(f"{what}: {argv[0]} not found") from None
    except PermissionError:
        raise PermanentError(f"{what}: {argv[0]} is not executable") from None
    except subprocess.TimeoutExpired:
        raise TransientError(f"{what}: timed out after {timeout_s:g} s and was killed") from None


def run_command(argv: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> CommandResult:
    """Run ``argv`` on this host and return its result.

    Raises:
      PermanentError: the program does not exist or exits non-zero (the config must change).
      TransientError: it ran longer than ``timeout_s`` (it was killed; may succeed later).
    """
    what = f"command {' '.join(argv)!r}"
    done = execute(argv, what=what, timeout_s=timeout_s)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise PermanentError(f"{what} exited {done.returncode}: {output[-_OUTPUT_KEPT:]}")
    return CommandResult(tuple(argv), done.returncode, output[-_OUTPUT_KEPT:])
