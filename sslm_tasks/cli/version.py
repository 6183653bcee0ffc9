"""``--version`` for every console script: the version of the installed distribution.

The version is read from the installed metadata (which the build takes from
``sslm_tasks.__version__``), so a script reports what pip installed, also when an old checkout
sits next to it.
"""

from __future__ import annotations

import argparse
from importlib import metadata

from sslm_tasks import __version__

#: The distribution name in pyproject.toml (the import package is ``sslm_tasks``).
DISTRIBUTION = "sslm"


def installed_version() -> str:
    """Return the installed distribution's version; the package's own when not installed
    (run from a source tree with ``python -m``), marked as such."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return f"{__version__} (not installed)"


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` a ``--version`` that prints ``<prog> <version>`` and exits 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
