"""The one writer: exact modes from the first byte, atomic replace, nothing left on failure."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import record_disk_order, synced_before

from sslm_tasks.errors import StoreError
from sslm_tasks.store.atomic import (
    create_dir,
    ensure_dir,
    remove_file,
    symlink_atomic,
    write_atomic,
    write_files_atomic,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The worst case for key files: a umask that takes nothing away."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_key_file_is_0600_even_with_umask_000(tmp_path: Path) -> None:
    # Given a umask of 000
    key = tmp_path / "privkey.pem"
    # When a key is written with mode 0600
    write_atomic(key, b"secret", mode=0o600)
    # Then the file is 0600 with the content
    assert mode_of(key) == 0o600
    assert key.read_bytes() == b"secret"


@pytest.mark.usefixtures("open_umask")
def test_temp_file_has_the_final_mode_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a rename that fails, after recording the temp file's mode at that moment
    seen: dict[str, int] = {}

    def failing_replace(src: str | Path, dst: str | Path) -> None:
        seen[Path(src).name] = mode_of(Path(src))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    key = tmp_path / "privkey.pem"
    # When a key is written
    with pytest.raises(StoreError, match=r"privkey\.pem"):
        write_atomic(key, b"secret", mode=0o600)
    # Then the temp file was never wider than 0600, and nothing remains
    assert list(seen.values()) == [0o600]
    assert list(tmp_path.iterdir()) == []


def test_umask_does_not_narrow_a_public_file(tmp_path: Path) -> None:
    # Given a strict umask
    old = os.umask(0o077)
    try:
        # When a public file is written with 0644
        write_atomic(tmp_path / "cert.pem", b"cert", mode=0o644)
    finally:
        os.umask(old)
    # Then it is 0644 (the mode given is the mode you get)
    assert mode_of(tmp_path / "cert.pem") == 0o644


def test_write_replaces_existing_content(tmp_path: Path) -> None:
    # Given an existing file
    target = tmp_path / "info"
    target.write_bytes(b"old content that is longer")
    # When it is rewritten
    write_atomic(target, b"new")
    # Then only the new content is there, and no temp file
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["info"]


def test_write_files_atomic_leaves_nothing_when_a_write_fails(tmp_path: Path) -> None:
    # Given a batch whose last file cannot be created (its directory is missing)
    existing = tmp_path / "cert.pem"
    existing.write_bytes(b"old cert")
    files = {
        tmp_path / "privkey.pem": (b"key", 0o600),
        existing: (b"new cert", 0o644),
        tmp_path / "missing" / "chain.pem": (b"chain", 0o644),
    }
    # When the batch is written
    with pytest.raises(StoreError, match=r"chain\.pem"):
        write_files_atomic(files)
    # Then no target changed and no temp remains
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem"]
    assert existing.read_bytes() == b"old cert"


def test_write_files_atomic_removes_temps_when_a_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a rename that fails for the second file
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "b.pem":
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    # When a batch of three is written
    with pytest.raises(StoreError, match=r"installing .*b\.pem"):
        write_files_atomic({tmp_path / n: (n.encode(), 0o644) for n in ("a.pem", "b.pem", "c.pem")})
    # Then the first file is in place and no temp file is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pem"]


def test_write_files_atomic_writes_every_file_with_its_mode(tmp_path: Path) -> None:
    # When a batch is written
    write_files_atomic(
        {
            tmp_path / "privkey.pem": (b"key", 0o600),
            tmp_path / "cert.pem": (b"cert", 0o644),
        }
    )
    # Then each file has its own content and mode
    assert (mode_of(tmp_path / "privkey.pem"), mode_of(tmp_path / "cert.pem")) == (0o600, 0o644)
    assert (tmp_path / "cert.pem").read_bytes() == b"cert"


def test_symlink_flips_to_the_new_target(tmp_path: Path) -> None:
    # Given a link to one version
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    link = tmp_path / "curr"
    symlink_atomic(link, "a")
    # When it is pointed at another
    symlink_atomic(link, "b")
    # Then it points there, relatively, and no temp link remains
    assert os.readlink(link) == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "curr"]


def test_symlink_refuses_an_absolute_target(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="relative"):
        symlink_atomic(tmp_path / "curr", str(tmp_path / "a"))


def test_symlink_over_a_real_directory_fails_cleanly(tmp_path: Path) -> None:
    # Given a real directory where the link should go
    (tmp_path / "curr").mkdir()
    (tmp_path / "curr" / "keep").write_bytes(b"x")
    # When a link is forced over it
    with pytest.raises(StoreError, match="curr"):
        symlink_atomic(tmp_path / "curr", "a")
    # Then the directory is intact and no temp link remains
    assert (tmp_path / "curr" / "keep").read_bytes() == b"x"
    assert [p.name for p in tmp_path.iterdir()] == ["curr"]


@pytest.mark.usefixtures("open_umask")
def test_ensure_dir_gives_every_created_dir_the_mode(tmp_path: Path) -> None:
    # Given an existing parent with its own mode
    tmp_path.chmod(0o755)
    # When a deep path is ensured with 0700
    deep = ensure_dir(tmp_path / "a" / "b" / "c", mode=0o700)
    # Then every created level is 0700 and the existing parent kept its mode
    assert deep.is_dir()
    assert [mode_of(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    assert mode_of(tmp_path) == 0o755


def test_ensure_dir_leaves_an_existing_dir_mode_alone(tmp_path: Path) -> None:
    # Given a directory made by someone else at 0755
    existing = tmp_path / "svc"
    existing.mkdir()
    existing.chmod(0o755)
    # When it is ensured with 0750
    ensure_dir(existing, mode=0o750)
    # Then its mode is unchanged
    assert mode_of(existing) == 0o755


def test_ensure_dir_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"")
    with pytest.raises(StoreError, match="not a directory"):
        ensure_dir(tmp_path / "a" / "b", mode=0o700)


def test_create_dir_is_exclusive(tmp_path: Path) -> None:
    # Given a directory that exists
    create_dir(tmp_path / "v", mode=0o700)
    # When it is created again, then the caller is told
    with pytest.raises(FileExistsError):
        create_dir(tmp_path / "v", mode=0o700)


def test_remove_file_reports_whether_it_removed(tmp_path: Path) -> None:
    # Given a link
    (tmp_path / "next").symlink_to("db/x")
    # When it is removed twice, then only the first call removes something
    assert remove_file(tmp_path / "next") is True
    assert remove_file(tmp_path / "next") is False
    assert not (tmp_path / "next").is_symlink()


@pytest.mark.parametrize("sync_dir", [True, False])
def test_every_file_is_fsynced_before_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync_dir: bool
) -> None:
    # When two files are written in one batch
    events = record_disk_order(monkeypatch)
    write_files_atomic(
        {tmp_path / "a": (b"a", 0o644), tmp_path / "b": (b"b", 0o600)}, sync_dir=sync_dir
    )
    # Then each one's data was fsynced (as its temp) before it got its name
    for name in ("a", "b"):
        synced = synced_before(events, tmp_path / name)
        assert any(Path(path).name.startswith(f"{name}.tmp-") for path in synced)
    # And the directory was synced only when asked: a caller that says no syncs it later
    synced_dirs = {path for kind, path in events if kind == "fsync"}
    assert (os.path.realpath(tmp_path) in synced_dirs) is sync_dir
