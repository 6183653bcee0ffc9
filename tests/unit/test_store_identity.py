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
