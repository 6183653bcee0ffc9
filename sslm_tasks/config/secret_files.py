"""Files that hold a secret sslm reads (a TSIG key, an ACME CA's EAB HMAC key): they must be
their owner's alone, as ssh insists of a private key, so a secret others could read is refused
before it is used rather than quietly trusted.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Final

#: Mode bits a secret file must not have: none for the group, none for others (0600 and 0400
#: pass).
FOREIGN_BITS: Final = 0o077


def secret_file_problem(path: Path, secret: str) -> str | None:
    """Say why ``path`` cannot hold ``secret`` (``"a TSIG secret"``), looking at the file only
    (not its content), or return None."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "no such file"
    except OSError as err:
        return f"cannot be read: {err.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    mode = stat.S_IMODE(info.st_mode)
    if mode & FOREIGN_BITS:
        return (
            f"is readable or writable by others than its owner (mode {mode:04o}): {secret} "
            "must be mode 0600 (chmod 600 it)"
        )
    return None
