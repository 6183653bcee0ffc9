"""Version directories and the curr/next/prev links, including crashes in the middle of a roll."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from support import record_disk_order, synced_before

from sslm_tasks.errors import StoreError
from sslm_tasks.store import versions
from sslm_tasks.store.layout import COMPLETE_FILES, Layout, ServiceRef
from sslm_tasks.store.versions import (
    is_complete,
    new_version,
    point,
    read_link,
    roll_links,
    unlink,
)

REF = ServiceRef("example.com", "mail")
NOW = datetime(2026, 3, 29, 0, 30, 0, tzinfo=UTC)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(topdir=tmp_path, prod_dir=tmp_path / "prod")


def complete_version(layout: Layout, now: datetime) -> str:
    stamp = new_version(layout, REF, now=now)
    for name in COMPLETE_FILES:
        (layout.version_dir(REF, stamp) / name).write_bytes(b"pem")
    return stamp


def test_new_version_is_private_and_named_in_utc(layout: Layout) -> None:
    # Given a local time two hours ahead of UTC
    local = datetime(2026, 3, 29, 3, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    # When a version is created
    stamp = new_version(layout, REF, now=local)
    # Then its name is the UTC time and its directory is 0700
    assert stamp == "20260329-01:00:00"
    assert stat.S_IMODE(layout.version_dir(REF, stamp).stat().st_mode) == 0o700
    assert stat.S_IMODE(layout.db_dir(REF).stat().st_mode) == 0o700


def test_two_versions_in_the_same_second_get_different_stamps(layout: Layout) -> None:
    # When three versions are created with the same clock reading
    stamps = [new_version(layout, REF, now=NOW) for _ in range(3)]
    # Then each has its own directory, in creation order
    assert stamps == ["20260329-00:30:00", "20260329-00:30:01", "20260329-00:30:02"]
    assert all(layout.version_dir(REF, s).is_dir() for s in stamps)


def test_point_makes_the_version_durable_before_the_link(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a complete version whose files were written without a directory fsync
    stamp = complete_version(layout, NOW)
    events = record_disk_order(monkeypatch)
    # When next is pointed at it
    point(layout, REF, "next", stamp)
    # Then the version directory and db/ (which names it) were fsynced before the link was
    synced = synced_before(events, layout.link(REF, "next"))
    assert os.path.realpath(layout.version_dir(REF, stamp)) in synced
    assert os.path.realpath(layout.db_dir(REF)) in synced


def test_roll_makes_what_was_written_into_next_durable_before_curr(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given curr and a complete next, and after an interrupted roll curr == next too
    for interrupted in (False, True):
        curr, nxt = complete_version(layout, NOW), complete_version(layout, NOW)
        point(layout, REF, "curr", nxt if interrupted else curr)
        point(layout, REF, "next", nxt)
        events = record_disk_order(monkeypatch)
        # When it rolls (the ``info`` file was written into next just before, unsynced)
        roll_links(layout, REF)
        monkeypatch.undo()
        # Then next's directory was fsynced before its link was dropped
        synced = (
            synced_before(events, layout.link(REF, "curr"))
            if not interrupted
            else {path for kind, path in events if kind == "fsync"}
        )
        assert os.path.realpath(layout.version_dir(REF, nxt)) in synced


def test_new_version_needs_an_aware_clock(layout: Layout) -> None:
    with pytest.raises(ValueError, match="timezone"):
        new_version(layout, REF, now=datetime(2026, 1, 1))


def test_point_read_and_unlink(layout: Layout) -> None:
    # Given a version
    stamp = new_version(layout, REF, now=NOW)
    # When next points at it, then it reads back, as a relative link
    point(layout, REF, "next", stamp)
    assert read_link(layout, REF, "next") == stamp
    assert layout.link(REF, "next").readlink() == Path("db") / stamp
    # When it is unlinked (twice), then it is absent
    unlink(layout, REF, "next")
    unlink(layout, REF, "next")
    assert read_link(layout, REF, "next") is None


def test_point_refuses_a_missing_version(layout: Layout) -> None:
    new_version(layout, REF, now=NOW)
    with pytest.raises(StoreError, match="missing version"):
        point(layout, REF, "curr", "20000101-00:00:00")


def test_dangling_link_reads_as_absent(layout: Layout) -> None:
    # Given a link whose version was removed
    stamp = new_version(layout, REF, now=NOW)
    point(layout, REF, "prev", stamp)
    layout.version_dir(REF, stamp).rmdir()
    # Then it reads as absent
    assert read_link(layout, REF, "prev") is None


def test_a_version_that_is_a_link_loop_reads_as_absent(layout: Layout) -> None:
    # Given a link whose version directory was replaced by a link to itself
    stamp = new_version(layout, REF, now=NOW)
    point(layout, REF, "prev", stamp)
    version = layout.version_dir(REF, stamp)
    version.rmdir()
    version.symlink_to(version.name)
    # Then it reads as absent, as a dangling one does
    assert read_link(layout, REF, "prev") is None


def test_a_version_that_cannot_be_looked_at_is_an_error(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a link whose version the system cannot look at (an I/O error)
    stamp = new_version(layout, REF, now=NOW)
    point(layout, REF, "prev", stamp)

    link, real_stat = os.fspath(layout.link(REF, "prev")), os.stat

    def failing(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if os.fspath(path) == link:
            raise OSError(5, "Input/output error")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing)
    # Then reading it stops with the link named, rather than taking it as absent
    with pytest.raises(StoreError, match="Input/output error"):
        read_link(layout, REF, "prev")


def test_foreign_link_is_an_error(layout: Layout) -> None:
    # Given a curr link edited by hand to point elsewhere
    new_version(layout, REF, now=NOW)
    layout.link(REF, "curr").symlink_to("/etc")
    # Then reading it is refused rather than guessed
    with pytest.raises(StoreError, match="expected db/"):
        read_link(layout, REF, "curr")


def test_is_complete_needs_every_file_non_empty(layout: Layout) -> None:
    # Given a complete version
    stamp = complete_version(layout, NOW)
    assert is_complete(layout, REF, stamp)
    # When one file is empty, then it is not complete
    (layout.version_dir(REF, stamp) / "chain.pem").write_bytes(b"")
    assert not is_complete(layout, REF, stamp)


def test_first_roll_sets_curr_and_no_prev(layout: Layout) -> None:
    # Given only a next
    nxt = complete_version(layout, NOW)
    point(layout, REF, "next", nxt)
    # When it is rolled
    roll_links(layout, REF)
    # Then curr is it, and there is no prev and no next
    assert read_link(layout, REF, "curr") == nxt
    assert read_link(layout, REF, "prev") is None
    assert not layout.link(REF, "next").is_symlink()


def test_roll_refuses_an_incomplete_next(layout: Layout) -> None:
    # Given a curr and a next without its certificate
    curr = complete_version(layout, NOW)
    point(layout, REF, "curr", curr)
    nxt = complete_version(layout, NOW + timedelta(days=1))
    (layout.version_dir(REF, nxt) / "cert.pem").unlink()
    point(layout, REF, "next", nxt)
    # When it is rolled, then it is refused and nothing moved
    with pytest.raises(StoreError, match="incomplete"):
        roll_links(layout, REF)
    assert (read_link(layout, REF, "curr"), read_link(layout, REF, "next")) == (curr, nxt)


def test_roll_with_no_next_changes_nothing(layout: Layout) -> None:
    curr = complete_version(layout, NOW)
    point(layout, REF, "curr", curr)
    roll_links(layout, REF)
    assert (read_link(layout, REF, "curr"), read_link(layout, REF, "prev")) == (curr, None)


class Crash(Exception):
    """Stands for the process dying at that instant."""


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_roll_survives_a_crash_after_any_step(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    # Given curr, an older prev and a complete next
    old_prev = complete_version(layout, NOW - timedelta(days=60))
    old_curr = complete_version(layout, NOW - timedelta(days=30))
    old_next = complete_version(layout, NOW)
    for which, stamp in (("prev", old_prev), ("curr", old_curr), ("next", old_next)):
        point(layout, REF, which, stamp)  # type: ignore[arg-type]
    # And a process that dies at its crash_at-th link operation (prev, curr, drop next)
    calls = 0

    def dies_at_crash_at(real: Callable[..., object]) -> Callable[..., object]:
        def op(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            if calls == crash_at:
                raise Crash
            return real(*args, **kwargs)

        return op

    for op_name in ("symlink_atomic", "remove_file"):
        monkeypatch.setattr(versions, op_name, dies_at_crash_at(getattr(versions, op_name)))
    with pytest.raises(Crash):
        roll_links(layout, REF)
    # Then curr is still a complete version
    assert read_link(layout, REF, "curr") in (old_curr, old_next)
    assert is_complete(layout, REF, read_link(layout, REF, "curr") or "")
    # When the roll is run again after the restart
    monkeypatch.undo()
    roll_links(layout, REF)
    # Then it finished exactly as an uninterrupted roll would have
    assert read_link(layout, REF, "curr") == old_next
    assert read_link(layout, REF, "prev") == old_curr
    assert not layout.link(REF, "next").is_symlink()
