"""One error tree for the whole project.

Every layer raises a subclass of :class:`SslmError`. The split that matters to callers is
transient (worth retrying: a lock held by someone else, a server that did not answer) versus
permanent (bad input, a broken chain: retrying gives the same answer). Celery retry policy and
CLI exit codes are both derived from that split, so a new error type must pick a side.
"""

from __future__ import annotations

import reprlib
from datetime import datetime
from pathlib import Path

#: How values are shown in a ConfigError: a path or a name whole, a deeply nested or huge
#: table cut short, so the error stays one readable line.
_VALUE_REPR = reprlib.Repr()
_VALUE_REPR.maxstring = _VALUE_REPR.maxother = 300
_VALUE_REPR.maxlevel = 3


class SslmError(Exception):
    """Base of every error sslm raises on purpose.

    Attributes:
      step(str | None): the pipeline step it failed, the innermost one (set by
        ``lifecycle.pipeline.look``); what a failure is recorded under follows from it.
    """

    step: str | None = None


class PermanentError(SslmError):
    """Retrying cannot help: the input or the state on disk must change first."""


class TransientError(SslmError):
    """The same call may succeed later (lock busy, server down, DNS not caught up).

    Attributes:
      retry_after(datetime | None): when the other side asked to be asked again (an ACME CA's
        ``Retry-After``), None when it did not say.
    """

    retry_after: datetime | None = None


class ConfigError(PermanentError):
    """A configuration value is wrong.

    The message always names the file, the key and the offending value, because an operator
    reading one line in a cron mail must be able to fix the file without reading our code.
    """

    def __init__(self, file: Path | str, key: str, value: object, problem: str) -> None:
        self.file = str(file)
        self.key = key
        self.value = value
        self.problem = problem
        shown = "" if value is None else f" = {_VALUE_REPR.repr(value)}"
        super().__init__(_printable(f"{self.file}: {key}{shown}: {problem}"))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str, object, str]]:
        # A remembered configuration keeps the errors of the services that fail alone.
        return (type(self), (self.file, self.key, self.value, self.problem))


def _printable(text: str) -> str:
    """``text`` with what does not print escaped as in a repr: a file or key name holding a
    newline, a terminal escape or an undecodable byte still makes one harmless line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class StoreError(PermanentError):
    """The on-disk tree is not in a state the requested step can work from."""


class CryptoError(PermanentError):
    """Key, CSR or certificate material is unusable (bad PEM, wrong key type, broken chain)."""


class LockBusy(TransientError):
    """Another run holds the lock for the same tree, service or file."""
