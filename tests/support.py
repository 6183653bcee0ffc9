"""Helpers shared by the tests: run the real command-line programs as subprocesses (so exit
codes, output and files are what users get), snapshot a tree, call the real openssl."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

from sslm_tasks.store.identity import RACY_S

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: One line of sslm's log, in the log file of an in-process run and on a worker's stdout alike:
#: UTC ISO 8601 time, the level, the message (sslm_tasks.logs).
LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S.*"
)

#: Set by CI: a service or tool the tests need that is missing fails the test there, as in
#: dramatiq's tests (a laptop without redis-server may skip; CI must not pass by skipping).
CI = os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}


def unavailable(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere: a missing service must never pass CI silently."""
    if CI:
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


#: The ``mgr`` fixture: run sslm-mgr on the test's topdir.
RunMgr = Callable[..., subprocess.CompletedProcess[str]]


def settle(mgr: RunMgr) -> None:
    """Run a no-op renew once the files the last run wrote are old enough to vouch for
    (store/identity.py's racy rule): it remembers what it finds whole (the production copies,
    the configuration), after which a run with nothing to do writes nothing."""
    time.sleep(RACY_S + 0.1)
    settled = mgr("-renew")
    assert settled.returncode == 0, settled.stdout + settled.stderr


def tree_snapshot(top: Path) -> dict[str, str]:
    """Every path under ``top`` with a digest of its content (or link target) and mode."""
    found: dict[str, str] = {}
    for path in sorted(top.rglob("*")):
        rel = str(path.relative_to(top))
        if path.is_symlink():
            found[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[rel] = f"{oct(path.stat().st_mode)}:{digest}"
        else:
            found[rel] = f"dir:{oct(path.stat().st_mode)}"
    return found


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first ``old`` in the text file ``path`` by ``new``; ``old`` must be there."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def run_tool(
    tool: str,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    wrapper: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``tool`` of this venv on the topdir ``cwd``, without the caller's ``SSLM_*``
    variables; ``wrapper`` is a command that runs it (``sh -c 'umask 077; exec "$@"' sh``)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
    full_env["SSL_MGR_TOPDIR"] = str(cwd)
    full_env.update(env or {})
    return subprocess.run(
        [*wrapper, str(BIN / tool), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def openssl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=check)


def verify_output(topdir: Path, version: Path) -> str:
    """``openssl verify`` of ``version``'s cert.pem, with its chain.pem, against the example's
    root (``certs/ca/my-root/curr``); its whole output."""
    return verify_against(topdir / "certs/ca/my-root/curr/cert.pem", version)


def verify_against(root: Path, version: Path) -> str:
    """``openssl verify`` of ``version``'s cert.pem, with its chain.pem, against the trust
    anchor ``root`` (PEM); its whole output."""
    result = openssl(
        "verify",
        "-CAfile",
        str(root),
        "-untrusted",
        str(version / "chain.pem"),
        str(version / "cert.pem"),
        check=False,
    )
    return result.stdout + result.stderr


def crl_verify(topdir: Path, version: Path) -> tuple[bool, str]:
    """``openssl verify -crl_check`` of ``version`` against the example's root, with the
    example intermediate my-int's CRL (``certs/ca/my-int/crl.pem``): whether it passed, and
    openssl's whole output."""
    result = openssl(
        "verify",
        "-crl_check",
        "-CAfile",
        str(topdir / "certs/ca/my-root/curr/cert.pem"),
        "-untrusted",
        str(version / "chain.pem"),
        "-CRLfile",
        str(topdir / "certs/ca/my-int/crl.pem"),
        str(version / "cert.pem"),
        check=False,
    )
    return result.returncode == 0, result.stdout + result.stderr


def chain_verifies(topdir: Path, svc: str, which: str = "curr") -> bool:
    """Whether ``certs/<svc>/<which>`` verifies to the example's root with openssl."""
    return verify_output(topdir, topdir / "certs" / svc / which).strip().endswith("OK")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def record_disk_order(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record, in order, every fsync (of what path) and every rename (to what path) made
    through ``os`` from now on: the events durability rules are stated in."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path, **kwargs: int | None) -> None:
        real_replace(src, dst, **kwargs)  # type: ignore[arg-type]
        dst_fd = kwargs.get("dst_dir_fd")
        where = os.readlink(f"/proc/self/fd/{dst_fd}") if dst_fd is not None else ""
        events.append(("rename", os.path.realpath(os.path.join(where, dst))))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def synced_before(events: list[tuple[str, str]], renamed_to: Path) -> set[str]:
    """What was fsynced before the last rename to ``renamed_to``."""
    target = ("rename", os.path.realpath(renamed_to))
    last = len(events) - 1 - events[::-1].index(target)
    return {path for kind, path in events[:last] if kind == "fsync"}
