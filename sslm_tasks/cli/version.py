"""``--version`` for every console script: the version of the installed distribution.

The version is read from the installed metadata (which the build takes from
``sslm_tasks.__version__``), so a script reports what pip installed, also when an old checkout
sits next to it. It is read only when ``--version`` is given: importing ``importlib.metadata``
alone takes ~25 ms, a large part of what ``sslm-mgr -h`` may cost.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from sslm_tasks import __version__

#: The distribution name in pyproject.toml (the import package is ``sslm_tasks``).
DISTRIBUTION = "sslm"


def installed_version() -> str:
    """Return the installed distribution's version; the package's own when not installed
    (run from a source tree with ``python -m``), marked as such."""
    # Imported here, not at the top: only --version reads the metadata (start-up cost).
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return f"{__version__} (not installed)"


class _InstalledVersion(argparse._VersionAction):
    """argparse's ``version`` action, with the version looked up when the flag is given."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        self.version = f"%(prog)s {installed_version()}"
        super().__call__(parser, namespace, values, option_string)


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` a ``--version`` that prints ``<prog> <version>`` and exits 0."""
    parser.add_argument("--version", action=_InstalledVersion)
