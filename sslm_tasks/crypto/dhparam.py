"""Diffie-Hellman parameter files for servers that still want classic DHE.

Two kinds, as upstream: RFC 7919 named groups (``ffdhe2048`` ...), fixed and vetted, made once
by ``openssl``; and classic random-prime parameters of a given size, made by cryptography and
regenerated when they get old. Servers find them as ``<dir>/dh/dhparam.pem``.
"""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh
from cryptography.utils import CryptographyDeprecationWarning

from sslm_tasks.errors import CryptoError, StoreError
from sslm_tasks.store.atomic import ensure_dir, symlink_atomic, write_atomic

#: The one external binary sslm's crypto code runs, by absolute path (never via $PATH: these
#: tools run from root's cron).
OPENSSL = "/usr/bin/openssl"
NAMED_GROUPS = ("ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192")
#: Smaller classic parameters are broken; 512 is still accepted so tests stay fast.
MIN_CLASSIC_BITS = 512
DH_SUBDIR = "dh"
LINK_NAME = "dhparam.pem"
#: Parameters are public; servers running as other users must read them.
_FILE_MODE = 0o644
_DIR_MODE = 0o750
_OPENSSL_TIMEOUT_S = 60


def generate_named(group: str) -> bytes:
    """PEM DH parameters of an RFC 7919 group (instant: the primes are fixed).

    Raises:
      CryptoError: unknown group, or openssl failed.
    """
    if group not in NAMED_GROUPS:
        raise CryptoError(f"unknown DH group {group!r}; known: {', '.join(NAMED_GROUPS)}")
    argv = [OPENSSL, "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", f"group:{group}"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=_OPENSSL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CryptoError(f"running {OPENSSL} for DH group {group}: {err}") from err
    if done.returncode != 0 or b"BEGIN DH PARAMETERS" not in done.stdout:
        stderr = done.stderr.decode(errors="replace").strip()
        raise CryptoError(f"openssl could not make DH group {group}: {stderr}")
    return done.stdout


def generate_classic(bits: int) -> bytes:
    """Random DH parameters of ``bits`` size, generator 2, as PKCS#3 PEM.

    Slow for real sizes (minutes for 4096 bits); not idempotent.

    Raises:
      CryptoError: ``bits`` below :data:`MIN_CLASSIC_BITS`.
    """
    if bits < MIN_CLASSIC_BITS:
        raise CryptoError(f"DH size {bits} is below the minimum of {MIN_CLASSIC_BITS} bits")
    # cryptography deprecates finite-field DH as a whole. Producing parameter files for
    # servers configured for DHE is exactly what an operator asked for, so that warning
    # would only add noise to every cron mail.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        params = dh.generate_parameters(generator=2, key_size=bits)
    return params.parameter_bytes(serialization.Encoding.PEM, serialization.ParameterFormat.PKCS3)


def dh_file_name(key: str) -> str:
    """``dh-<group>.pem`` for a named group, ``dh<bits>.pem`` for a size.

    Raises:
      CryptoError: ``key`` is neither a named group nor a size of at least 512 bits.
    """
    if key in NAMED_GROUPS:
        return f"dh-{key}.pem"
    if key.isascii() and key.isdigit() and int(key) >= MIN_CLASSIC_BITS:
        return f"dh{int(key)}.pem"
    raise CryptoError(
        f"DH key {key!r} is neither one of {', '.join(NAMED_GROUPS)} "
        f"nor a size of at least {MIN_CLASSIC_BITS} bits"
    )


def _is_due(path: Path, key: str, *, max_age: timedelta, force: bool, now: datetime) -> bool:
    """Whether ``path`` must be (re)written: forced, missing, or an aged classic file.

    Named groups never age: their content is fixed by RFC 7919.
    """
    if force:
        return True
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return True
    if key in NAMED_GROUPS:
        return False
    return now - datetime.fromtimestamp(mtime, tz=now.tzinfo) > max_age


def refresh_dir(
    directory: Path, keys: Sequence[str], *, max_age_days: float, force: bool, now: datetime
) -> list[str]:
    """Bring ``<directory>/dh/`` up to date for ``keys`` and point ``dhparam.pem`` at the first.

    Parameters:
      directory(Path): an existing directory (a production cert dir or one of its groups).
      keys(Sequence[str]): RFC 7919 group names and/or decimal sizes, in preference order;
        duplicates are ignored.
      max_age_days(float): classic files older than this are regenerated.
      force(bool): regenerate every file.
      now(datetime): timezone-aware current time, for the age check.

    Returns:
      The file names written, in ``keys`` order; empty when all were current. Idempotent
      apart from aged files. ``dhparam.pem`` is relinked only when its target changes,
      atomically, to the first key whichever kind it is (upstream crashed when no key was a
      size).

    Raises:
      CryptoError: ``keys`` is empty or holds an unknown key (checked before anything is
        written), or generation failed.
      StoreError: ``directory`` is missing or a file could not be written.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    # File name -> key: "4096" and "04096" are one file, generated once.
    names: dict[str, str] = {}
    for key in keys:
        names.setdefault(dh_file_name(key), key)
    if not names:
        raise CryptoError("no DH keys given")
    if not directory.is_dir():
        raise StoreError(f"DH parameters: no such directory {directory}")
    dh_dir = ensure_dir(directory / DH_SUBDIR, mode=_DIR_MODE)
    max_age = timedelta(days=max_age_days)
    written: list[str] = []
    for name, key in names.items():
        path = dh_dir / name
        if not _is_due(path, key, max_age=max_age, force=force, now=now):
            continue
        pem = generate_named(key) if key in NAMED_GROUPS else generate_classic(int(key))
        write_atomic(path, pem, mode=_FILE_MODE)
        written.append(name)
    first = next(iter(names))
    link = dh_dir / LINK_NAME
    if not (link.is_symlink() and str(link.readlink()) == first):
        symlink_atomic(link, first)
    return written
