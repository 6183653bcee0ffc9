"""Clean: keep the newest N unused versions; never touch linked, unknown or in-flight ones."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sslm_tasks.store.clean import clean_service
from sslm_tasks.store.layout import Layout, ServiceRef
from sslm_tasks.store.versions import new_version, point

REF = ServiceRef("example.com", "mail")
START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(topdir=tmp_path, prod_dir=tmp_path / "prod")


def make_versions(layout: Layout, count: int) -> list[str]:
    """``count`` versions one day apart, oldest first, with mtimes in the *reverse* order."""
    stamps = [new_version(layout, REF, now=START + timedelta(days=i)) for i in range(count)]
    for i, stamp in enumerate(stamps):
        # Upstream sorted by mtime; make mtime disagree with age so only name order passes.
        t = (START - timedelta(days=i)).timestamp()
        os.utime(layout.version_dir(REF, stamp), (t, t))
    return stamps


def remaining(layout: Layout) -> list[str]:
    return sorted(p.name for p in layout.db_dir(REF).iterdir())


def test_keeps_the_newest_by_name(layout: Layout) -> None:
    # Given six unlinked versions
    stamps = make_versions(layout, 6)
    # When cleaned keeping 2
    deleted = clean_service(layout, REF, keep=2, in_flight=None)
    # Then the four oldest by stamp are gone, oldest first in the report
    assert deleted == stamps[:4]
    assert remaining(layout) == stamps[4:]


def test_keep_below_one_keeps_one(layout: Layout) -> None:
    stamps = make_versions(layout, 3)
    assert clean_service(layout, REF, keep=0, in_flight=None) == stamps[:2]
    assert remaining(layout) == stamps[2:]


def test_linked_versions_survive_on_top_of_keep(layout: Layout) -> None:
    # Given old versions that are prev, curr and next, and three unlinked newer ones
    stamps = make_versions(layout, 6)
    for which, stamp in zip(("prev", "curr", "next"), stamps[:3], strict=True):
        point(layout, REF, which, stamp)  # type: ignore[arg-type]
    # When cleaned keeping 1
    deleted = clean_service(layout, REF, keep=1, in_flight=None)
    # Then the linked three and the newest unlinked one remain
    assert deleted == stamps[3:5]
    assert remaining(layout) == [*stamps[:3], stamps[5]]


def test_unexpected_names_survive(layout: Layout) -> None:
    # Given versions plus an operator's backup dir and a stray file named like a stamp
    stamps = make_versions(layout, 3)
    (layout.db_dir(REF) / "backup").mkdir()
    (layout.db_dir(REF) / "20000101-00:00:00").write_bytes(b"not a dir")
    # When cleaned keeping 1
    clean_service(layout, REF, keep=1, in_flight=None)
    # Then only the unused stamped directories went
    assert remaining(layout) == ["20000101-00:00:00", stamps[2], "backup"]


def test_version_being_built_survives(layout: Layout) -> None:
    # Given an old version that a renew is still building (no link yet)
    stamps = make_versions(layout, 4)
    # When cleaned keeping 1
    deleted = clean_service(layout, REF, keep=1, in_flight=stamps[0])
    # Then the in-flight version is kept beside the newest one
    assert deleted == stamps[1:3]
    assert remaining(layout) == [stamps[0], stamps[3]]


def test_temp_files_of_killed_writes_are_removed(layout: Layout) -> None:
    # Given a curr version and the temps that writes killed before their rename left behind
    stamps = make_versions(layout, 1)
    point(layout, REF, "curr", stamps[0])
    service, version = layout.service_dir(REF), layout.version_dir(REF, stamps[0])
    leftovers = [
        service / "state.json.tmp-0123456789abcdef",
        version / "cert.pem.tmp-fedcba9876543210",
    ]
    for path in leftovers:
        path.write_text("half")
    (service / "prev.tmp-00112233445566aa").symlink_to("db/" + stamps[0])
    keep = [service / "notes.tmp-mine", version / "cert.pem.tmp-short"]
    for path in keep:
        path.write_text("an operator's")
    # When cleaned
    clean_service(layout, REF, keep=1, in_flight=None)
    # Then exactly the temps are gone
    assert not any(path.exists() for path in leftovers)
    assert not (service / "prev.tmp-00112233445566aa").is_symlink()
    assert all(path.exists() for path in keep)
    assert (layout.link(REF, "curr")).is_symlink()


def test_no_db_dir_is_nothing_to_do(layout: Layout) -> None:
    assert clean_service(layout, REF, keep=3, in_flight=None) == []
