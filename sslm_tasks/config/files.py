"""The names of ssl-mgr's configuration files, as every error message quotes them."""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: Where ssl-mgr looks for ``conf.d``, in order, after ``$SSL_MGR_TOPDIR/conf.d``.
SEARCH_DIRS: Final = (Path("conf.d"), Path("/etc/ssl-mgr/conf.d"))
MAIN_FILE: Final = "ssl-mgr.conf"
CA_FILE: Final = "ca-info.conf"
