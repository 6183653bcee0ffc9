"""Output formatting and the openssl runner shared by the certificate tools.

The layout of a summary block is upstream's (``sslm-info`` 7.8), so operators' greps keep
working: a 70-dash line, the source name, a blank line, then ``Label    : value`` lines.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509

from sslm_tasks.crypto.dhparam import OPENSSL
from sslm_tasks.crypto.inspect import cert_info
from sslm_tasks.errors import CryptoError

DASH_LINE = "-" * 70
DATE_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
#: Width after which the SAN list wraps, and the indent of continuation lines (under values).
_SANS_WIDTH = 60
_VALUE_INDENT = " " * 11
_OPENSSL_TIMEOUT_S = 60


def error(message: str) -> None:
    """Print one error line to stderr (stdout stays parseable)."""
    print(message, file=sys.stderr)


def run_openssl(args: Sequence[str], data: bytes) -> bytes:
    """Run ``openssl <args>`` with ``data`` on stdin and return its stdout.

    Raises:
      CryptoError: openssl could not run or failed; the message carries the first line of
        openssl's stderr, which describes the failure but never echoes the input.
    """
    argv = [OPENSSL, *args]
    try:
        done = subprocess.run(
            argv, input=data, capture_output=True, timeout=_OPENSSL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CryptoError(f"running {' '.join(argv)}: {err}") from err
    if done.returncode != 0:
        # The first line is openssl's summary; the rest is a library error stack.
        reason = next(iter(done.stderr.decode(errors="replace").splitlines()), "no message")
        raise CryptoError(f"{' '.join(argv)} failed: {reason}")
    return done.stdout


def block_header(source: str) -> list[str]:
    """The lines that open every block: dashes, where it came from, a blank line."""
    return [DASH_LINE, source, ""]


def relative(moment: datetime, now: datetime) -> str:
    """``{days:>4d}d HH:MM:SS`` between ``now`` and ``moment``, with `` ago`` unless future."""
    seconds = int(abs((moment - now).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{days:>4d}d {hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{text} ago" if moment <= now else text


def sans_lines(sans: Sequence[str]) -> list[str]:
    """``Sans     : a, b, c`` wrapped once a line passes 60 characters of names."""
    if not sans:
        return ["Sans     : (none)"]
    rows: list[str] = []
    row = ""
    for index, name in enumerate(sans):
        item = name if index == len(sans) - 1 else f"{name},"
        if row and len(row) + 1 + len(item) > _SANS_WIDTH:
            rows.append(row)
            row = item
        else:
            row = f"{row} {item}" if row else item
    rows.append(row)
    return [f"Sans     : {rows[0]}", *(f"{_VALUE_INDENT}{row}" for row in rows[1:])]


def _lifetime(days: float) -> str:
    """90 → ``90``, a six-hour certificate → ``0.25``."""
    return f"{round(days, 2):g}"


def cert_summary(cert: x509.Certificate, now: datetime) -> list[str]:
    """The summary lines of one certificate (without the block header)."""
    info = cert_info(cert)
    return [
        f"Expires  : {info.not_after:{DATE_FORMAT}} ({relative(info.not_after, now)})",
        f"Issued   : {info.not_before:{DATE_FORMAT}} ({relative(info.not_before, now)}) "
        f"({_lifetime(info.lifetime_days)} day cert)",
        f"Issuer   : {info.issuer}",
        f"Subject  : {info.subject}",
        *sans_lines(info.sans),
        f"Pubkey   : pubkey-{info.pubkey}",
        f"Sig algo : {info.sig_algo}",
    ]
