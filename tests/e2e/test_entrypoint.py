"""docker/entrypoint.sh and the compose health check, run for real outside Docker.

As root on a fresh folder (what Docker hands a new bind mount), the entry point gives the
store to uid 10001 and runs its command as that user; the command here is the store-init
service's, ``sslm-mgr --health`` from the installed wheel, which then finds the store writable.
Without the entry point the same check, as the same user, says the store is not writable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO
from wheel_install import WheelInstall

ENTRYPOINT = REPO / "docker/entrypoint.sh"
#: The image's unprivileged user (Dockerfile); it need not exist on this host.
UID = 10001


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may enter (pytest's own are root's alone)."""
    if os.geteuid() != 0:
        pytest.fail("these tests change owners and drop to uid 10001: they must run as root")
    path = Path(tempfile.mkdtemp(prefix="sslm-entry-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def topdir(base: Path) -> Path:
    top = base / "top"
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    return top


def run(argv: list[str], *, top: Path, writable: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSLM_", "SSL_MGR_"))}
    env.update(SSL_MGR_TOPDIR=str(top), SSLM_WRITABLE_DIRS=":".join(map(str, writable)))
    return subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=120)


def owner(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid


def test_on_a_fresh_folder_the_store_becomes_the_users_and_the_command_runs_as_it(
    open_dir: Path, wheel_install: WheelInstall
) -> None:
    # Given a tree with conf.d only, and store folders that do not exist yet
    top = topdir(open_dir)
    writable = [top / "certs", top / "prod-certs", open_dir / "beat state"]

    # When the entry point runs, as root, the user's identity and then the store-init check
    ids = run(
        ["sh", str(ENTRYPOINT), "sh", "-c", "id -u; id -g; id -G"], top=top, writable=writable
    )
    health = run(
        ["sh", str(ENTRYPOINT), str(wheel_install.bin / "sslm-mgr"), "--health"],
        top=top,
        writable=writable,
    )

    # Then the command ran as 10001 with no other group, every folder exists and is 10001's
    assert (ids.returncode, ids.stdout) == (0, f"{UID}\n{UID}\n{UID}\n"), ids.stderr
    for folder in writable:
        assert owner(folder) == (UID, UID), folder
    assert owner(top) == (0, 0), "the entry point changed a folder it was not given"
    # and the health check, as 10001, found the store writable and left nothing in it
    assert health.returncode == 0, health.stdout + health.stderr
    assert health.stdout == f"healthy: conf.d {top}/conf.d; store {top}/certs writable\n"
    assert list((top / "certs").iterdir()) == []


def test_a_store_that_root_wrote_to_is_given_back_without_following_links(
    open_dir: Path,
) -> None:
    # Given a store with root's files in it and a link from it to a file of root's elsewhere
    top = topdir(open_dir)
    certs = top / "certs"
    (certs / "example.com/mail-ec/db").mkdir(parents=True)
    (certs / "example.com/mail-ec/state.json").write_text("{}")
    elsewhere = open_dir / "not-the-store"
    elsewhere.write_text("root's")
    (certs / "example.com/mail-ec/curr").symlink_to(elsewhere)

    # When the entry point runs a command that writes into the formerly root-owned folder
    done = run(
        ["sh", str(ENTRYPOINT), "touch", str(certs / "example.com/mail-ec/db/new")],
        top=top,
        writable=[certs],
    )

    # Then everything in the store is the user's, the link itself included, its target not
    assert done.returncode == 0, done.stderr
    for path in [certs, *certs.rglob("*")]:
        assert owner(path) == (UID, UID), path
    assert owner(elsewhere) == (0, 0)


def test_without_the_entry_point_the_health_check_finds_the_store_unwritable(
    open_dir: Path, wheel_install: WheelInstall
) -> None:
    # Given a store folder as Docker creates a bind mount: root's
    top = topdir(open_dir)
    (top / "certs").mkdir()
    drop = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--"]

    # When uid 10001 runs the entry point (it is not root, so it only runs the command) and
    # the health check
    health = run(
        [*drop, "sh", str(ENTRYPOINT), str(wheel_install.bin / "sslm-mgr"), "--health"],
        top=top,
        writable=[top / "certs"],
    )

    # Then the check fails in one line naming the store and why, and nothing changed owner
    assert health.returncode == 1
    assert health.stdout == f"unhealthy: store {top}/certs is not writable: Permission denied\n"
    assert owner(top / "certs") == (0, 0)
