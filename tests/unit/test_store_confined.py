"""store.confined: directories and files opened without following links."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import record_disk_order

from sslm_tasks.errors import StoreError
from sslm_tasks.store import confined


def test_a_linked_subdirectory_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    # Given a root holding a link to a directory elsewhere
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root/sub").symlink_to(elsewhere)
    with confined.open_root(tmp_path / "root", mode=0o750) as root:
        # When it is opened, with or without creating
        for mode in (None, 0o750):
            with (
                pytest.raises(StoreError, match="is a link"),
                confined.open_subdir(root, "sub", mode=mode),
            ):
                pass
    assert os.listdir(elsewhere) == []


@pytest.fixture
def narrow_umask() -> Iterator[None]:
    """A umask that takes everything from group and others, given back afterwards (a test
    process runs many tests: a umask left behind narrows every directory they make)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("narrow_umask")
def test_new_files_get_their_exact_mode_and_never_replace_a_link(tmp_path: Path) -> None:
    with confined.open_root(tmp_path / "root", mode=0o750) as root:
        confined.write_new_files(root, {"key": (b"k", 0o600), "cert": (b"c", 0o644)})
        (tmp_path / "target").write_text("theirs")
        (tmp_path / "root/planted").symlink_to(tmp_path / "target")
        with pytest.raises(StoreError):
            confined.write_new_files(root, {"planted": (b"mine", 0o644)})
        assert confined.read_file(root, "planted") is None
    assert (tmp_path / "target").read_text() == "theirs"
    assert (tmp_path / "root/key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "root/cert").stat().st_mode & 0o777 == 0o644


def test_only_a_directory_of_known_files_is_removed(tmp_path: Path) -> None:
    with confined.open_root(tmp_path, mode=0o750) as root:
        for name, extra in (("ours", None), ("theirs", "notes.txt")):
            with confined.open_subdir(root, name, mode=0o750) as version:
                confined.write_new_files(version, {"cert.pem": (b"c", 0o644)})
                if extra:
                    confined.write_new_files(version, {extra: (b"x", 0o644)})
        assert confined.remove_if_only(root, "ours", frozenset({"cert.pem"}))
        assert not confined.remove_if_only(root, "theirs", frozenset({"cert.pem"}))
    assert not (tmp_path / "ours").exists()
    assert sorted(os.listdir(tmp_path / "theirs")) == ["cert.pem", "notes.txt"]


def test_exchange_swaps_two_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/one").write_text("1")
    (tmp_path / "b").mkdir()
    with confined.open_root(tmp_path, mode=0o750) as root:
        assert confined.exchange(root, "a", "b")
    assert os.listdir(tmp_path / "b") == ["one"]
    assert os.listdir(tmp_path / "a") == []


def test_overlap_is_seen_through_links(tmp_path: Path) -> None:
    store = tmp_path / "certs"
    store.mkdir()
    (tmp_path / "alias").symlink_to(store)
    assert confined.overlaps(tmp_path / "alias/ca", store)
    assert confined.overlaps(tmp_path, store)
    assert not confined.overlaps(tmp_path / "prod-certs", store)


def test_a_file_is_replaced_whole_and_a_link_in_its_place_is_left_alone(tmp_path: Path) -> None:
    with confined.open_root(tmp_path / "root", mode=0o750) as root:
        # Given a file, then its replacement
        confined.replace_file(root, "tlsa.example.com", b"old", mode=0o644)
        confined.replace_file(root, "tlsa.example.com", b"new", mode=0o644)
        # Then it holds the new content at its mode, and no temporary file is left
        assert confined.read_file(root, "tlsa.example.com") == b"new"
        assert confined.entries(root) == ["tlsa.example.com"]
        assert (tmp_path / "root/tlsa.example.com").stat().st_mode & 0o777 == 0o644
        # When a link stands where the file goes, neither a write nor a removal follows it
        (tmp_path / "target").write_text("theirs")
        (tmp_path / "root/tlsa.other.com").symlink_to(tmp_path / "target")
        with pytest.raises(StoreError, match="is a link"):
            confined.replace_file(root, "tlsa.other.com", b"mine", mode=0o644)
        with pytest.raises(StoreError, match="is a link"):
            confined.remove_file(root, "tlsa.other.com")
        # and a file is removed once, then found absent
        assert confined.remove_file(root, "tlsa.example.com") is True
        assert confined.remove_file(root, "tlsa.example.com") is False
    assert (tmp_path / "target").read_text() == "theirs"
    assert (tmp_path / "root/tlsa.other.com").is_symlink()


def test_new_files_are_fsynced_before_their_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # When a version's files are written in one batch
    events = record_disk_order(monkeypatch)
    with confined.open_root(tmp_path, mode=0o750) as root:
        confined.write_new_files(root, {"key": (b"k", 0o600), "cert": (b"c", 0o644)})
    # Then every file was fsynced, and the directory after them
    synced = [path for kind, path in events if kind == "fsync"]
    names = [os.path.realpath(tmp_path / name) for name in ("key", "cert")]
    assert sorted(synced[:-1]) == sorted(names)
    assert synced[-1] == os.path.realpath(tmp_path)
