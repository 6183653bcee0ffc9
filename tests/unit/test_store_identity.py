"""store.identity: the digest changes with any write, rename or new name, and is withheld while
a file is too recent to trust."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sslm_tasks.store import identity
from sslm_tasks.store.identity import files_identity

NAMES = ("cert.pem", "privkey.pem")


@pytest.fixture
def version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cert.pem").write_text("certificate")
    (tmp_path / "privkey.pem").write_text("key")
    monkeypatch.setattr(identity, "RACY_S", 0.0)
    time.sleep(0.05)  # past the kernel's timestamp tick of the writes above
    return tmp_path


def _of(version: Path) -> str | None:
    return files_identity([(os.fspath(version), NAMES)])


def test_unchanged_files_give_the_same_digest(version: Path) -> None:
    first = _of(version)
    assert first is not None
    assert _of(version) == first


def test_an_in_place_edit_of_the_same_size_changes_it(version: Path) -> None:
    before = _of(version)
    (version / "cert.pem").write_text("CERTIFICATE")
    assert _of(version) != before


def test_a_file_replaced_by_rename_changes_it(version: Path) -> None:
    before = _of(version)
    (version / "new").write_text("certificate")
    os.replace(version / "new", version / "cert.pem")
    assert _of(version) != before


def test_a_name_added_beside_the_files_changes_it(version: Path) -> None:
    before = _of(version)
    (version / "stray").write_text("")
    assert _of(version) != before


def test_an_absent_file_counts_and_its_arrival_changes_it(version: Path) -> None:
    (version / "privkey.pem").unlink()
    time.sleep(0.05)
    before = _of(version)
    assert before is not None
    (version / "privkey.pem").write_text("key")
    assert _of(version) != before


def test_a_file_changed_within_the_racy_window_gives_no_digest(
    version: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(identity, "RACY_S", 2.0)
    (version / "cert.pem").write_text("certificate")
    assert _of(version) is None


def test_an_absent_directory_is_one_look_and_the_digest_it_always_was(
    version: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a place whose directory is absent (a service with no next), beside a present one
    gone = version / "next"
    places = [(os.fspath(version), NAMES), (os.fspath(gone), NAMES)]
    # When its identity is taken
    looked: list[str] = []
    real_lstat = os.lstat

    def counting_lstat(path: str) -> os.stat_result:
        looked.append(path)
        return real_lstat(path)

    monkeypatch.setattr(identity.os, "lstat", counting_lstat)
    digest = files_identity(places)
    # Then the absent directory's names are not asked for one by one
    assert looked.count(os.fspath(gone)) == 1
    assert not [path for path in looked if path.startswith(os.fspath(gone) + os.sep)]
    # And the digest is the one a look at every name gives, so the identities that services'
    # records remember from before stay valid
    monkeypatch.setattr(identity.os, "lstat", real_lstat)
    assert digest == _first_release_digest(places)


def _first_release_digest(places: list[tuple[str, tuple[str, ...]]]) -> str:
    """The digest as the first release took it: each name joined by os.path.join, each looked at."""
    seen: list[object] = []
    for directory, names in places:
        for path in (directory, *(os.path.join(directory, name) for name in names)):
            try:
                found = os.lstat(path)
            except FileNotFoundError:
                seen.append((path, None))
                continue
            times = (found.st_mtime_ns, found.st_ctime_ns)
            seen.append((path, found.st_dev, found.st_ino, found.st_mode, found.st_size, *times))
    return identity.hashlib.blake2b(repr(seen).encode(), digest_size=16).hexdigest()


def test_the_digest_joins_names_as_os_path_join_does(version: Path) -> None:
    # A directory given with a trailing separator, and a name that is a path of its own
    elsewhere = version / "elsewhere"
    elsewhere.write_text("x")
    places = [(os.fspath(version) + "/", (*NAMES, os.fspath(elsewhere)))]
    assert files_identity(places) == _first_release_digest(places)
