"""The dns-01 include file shared by concurrent orders: nobody loses a record, it always loads.

``named-checkzone`` judges every file on a zone that ``$INCLUDE``s it, and the concurrency test
runs real processes against a real ``FileLocker``.
"""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from support import record_disk_order, synced_before, unavailable

from sslm_tasks.dns.challenges import ChallengeFile, ChallengeRecord
from sslm_tasks.errors import LockBusy, StoreError
from sslm_tasks.locks.file import FileLocker
from sslm_tasks.store.layout import Layout

APEX = "example.test"
OWNER = f"_acme-challenge.{APEX}."
WRITERS = 8


def served_txt(tmp_path: Path, include: Path) -> set[tuple[str, int, str]]:
    """Load a zone that ``$INCLUDE``s ``include`` with named-checkzone; its TXT records as
    (owner, TTL, value with the strings joined). Fails when the zone does not load cleanly."""
    binary = shutil.which("named-checkzone") or unavailable(
        "named-checkzone is not installed (Debian: apt-get install bind9-utils)"
    )
    zone_file = tmp_path / "zone.db"
    zone_file.write_text(
        f"$ORIGIN {APEX}.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 300\n"
        f"@ IN NS ns1\nns1 IN A 192.0.2.1\n$INCLUDE {include}\n"
    )
    done = subprocess.run(
        [binary, "-D", "-o", "-", APEX, str(zone_file)], capture_output=True, text=True, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "ignoring" not in output, output
    served = set()
    for line in done.stdout.splitlines():
        owner, ttl, _class, rtype, rdata = line.split(maxsplit=4)
        if rtype == "TXT":
            served.add((owner, int(ttl), rdata.replace('" "', "").strip('"')))
    return served


def validation(seed: str) -> str:
    """A dns-01 value: 43 characters of unpadded base64url, as RFC 8555 §8.4 makes them."""
    digest = hashlib.sha256(seed.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def challenge_file(top: Path, **kwargs: float) -> ChallengeFile:
    """The include files of the store under ``top``, served from ``top/ns1`` and ``top/ns2``."""
    return ChallengeFile(
        layout=Layout(top, top / "prod"),
        acme_dirs=[top / "ns1", top / "ns2"],
        locker=FileLocker(top / "locks"),
        **kwargs,
    )


@pytest.fixture
def files(tmp_path: Path) -> ChallengeFile:
    for name in ("ns1", "ns2"):
        (tmp_path / name).mkdir()
    return challenge_file(tmp_path)


def copies(files: ChallengeFile) -> list[Path]:
    master = files.path(APEX)
    return [
        master,
        master.parents[2] / "ns1" / master.name,
        master.parents[2] / "ns2" / master.name,
    ]


def test_two_orders_share_an_owner_and_removing_one_keeps_the_other(
    tmp_path: Path, files: ChallengeFile
) -> None:
    # Given order A (apex + wildcard: one owner, two values) and order B (same apex name)
    a_apex, a_wild, b_apex = validation("a1"), validation("a2"), validation("b1")
    assert files.add(APEX, [(APEX, a_apex), (f"*.{APEX}", a_wild)], order_id="order-a") is True
    assert files.add(APEX, [(APEX, b_apex), (f"www.{APEX}", b_apex)], order_id="order-b") is True
    # Then every record sits side by side, owned by its order
    assert files.records(APEX) == [
        ChallengeRecord(OWNER, a_apex, "order-a"),
        ChallengeRecord(OWNER, a_wild, "order-a"),
        ChallengeRecord(OWNER, b_apex, "order-b"),
        ChallengeRecord(f"_acme-challenge.www.{APEX}.", b_apex, "order-b"),
    ]
    # And the served copy loads with all of them, TTL 60
    assert served_txt(tmp_path, copies(files)[1]) == {
        (OWNER, 60, a_apex),
        (OWNER, 60, a_wild),
        (OWNER, 60, b_apex),
        (f"_acme-challenge.www.{APEX}.", 60, b_apex),
    }
    # When order A cleans up
    assert files.remove(APEX, order_id="order-a") is True
    # Then only B's records are left, in every copy
    assert [r.order_id for r in files.records(APEX)] == ["order-b", "order-b"]
    for copy in copies(files):
        assert served_txt(tmp_path, copy) == {
            (OWNER, 60, b_apex),
            (f"_acme-challenge.www.{APEX}.", 60, b_apex),
        }


def test_removing_every_order_leaves_a_loadable_empty_include(
    tmp_path: Path, files: ChallengeFile
) -> None:
    # Given two orders' records
    files.add(APEX, [(APEX, validation("a"))], order_id="order-a")
    files.add(APEX, [(APEX, validation("b"))], order_id="order-b")
    # When both clean up
    assert files.remove(APEX, order_id="order-b") is True
    assert files.remove(APEX, order_id="order-a") is True
    # Then every copy is still there, with comments only, and loads with no TXT at all
    for copy in copies(files):
        assert copy.read_text().startswith(f";; acme-challenge : {APEX}\n")
        assert all(line.startswith(";;") for line in copy.read_text().splitlines())
        assert served_txt(tmp_path, copy) == set()
    # And removing again changes nothing
    assert files.remove(APEX, order_id="order-a") is False


def test_remove_on_a_fresh_apex_creates_the_empty_include(
    tmp_path: Path, files: ChallengeFile
) -> None:
    assert files.remove(APEX, order_id="order-a") is True
    assert served_txt(tmp_path, copies(files)[2]) == set()


def test_adding_the_same_records_again_changes_nothing(files: ChallengeFile) -> None:
    records = [(APEX, validation("a")), (f"*.{APEX}", validation("b"))]
    assert files.add(APEX, records, order_id="order-a") is True
    before = [copy.stat().st_mtime_ns for copy in copies(files)]
    # When a redelivered task adds them again
    assert files.add(APEX, records, order_id="order-a") is False
    # Then no file was rewritten (so no DNS refresh is needed)
    assert [copy.stat().st_mtime_ns for copy in copies(files)] == before
    assert len(files.records(APEX)) == 2


def test_a_value_two_orders_share_stays_until_both_removed_it(
    tmp_path: Path, files: ChallengeFile
) -> None:
    # Given the CA reused one authorization for two orders: same name, same value
    shared = validation("shared")
    files.add(APEX, [(APEX, shared)], order_id="order-a")
    assert files.add(APEX, [(APEX, shared)], order_id="order-b") is True
    # When one order cleans up, the record is still served for the other
    files.remove(APEX, order_id="order-a")
    assert served_txt(tmp_path, copies(files)[0]) == {(OWNER, 60, shared)}
    files.remove(APEX, order_id="order-b")
    assert served_txt(tmp_path, copies(files)[0]) == set()


def test_every_copy_has_the_same_bytes_and_mode_0644(files: ChallengeFile) -> None:
    files.add(APEX, [(APEX, validation("a"))], order_id="https://ca.test/order/1")
    contents = [copy.read_bytes() for copy in copies(files)]
    assert contents[0] == contents[1] == contents[2]
    assert b'60 IN TXT "' in contents[0] and b"; order https://ca.test/order/1\n" in contents[0]
    assert {stat.S_IMODE(copy.stat().st_mode) for copy in copies(files)} == {0o644}


def test_a_stale_copy_is_repaired_by_the_next_call(files: ChallengeFile) -> None:
    # Given a copy lost after an earlier write (a crash between two renames)
    records = [(APEX, validation("a"))]
    files.add(APEX, records, order_id="order-a")
    lost = copies(files)[2]
    lost.unlink()
    # When the task is redelivered, it reports a change and restores the copy
    assert files.add(APEX, records, order_id="order-a") is True
    assert lost.read_bytes() == copies(files)[0].read_bytes()


def test_a_long_value_is_split_into_strings_and_loads(tmp_path: Path, files: ChallengeFile) -> None:
    value = "x" * 300
    files.add(APEX, [(APEX, value)], order_id="order-a")
    assert f'"{"x" * 255}" "{"x" * 45}"' in copies(files)[0].read_text()
    assert files.records(APEX) == [ChallengeRecord(OWNER, value, "order-a")]
    assert served_txt(tmp_path, copies(files)[0]) == {(OWNER, 60, value)}


@pytest.mark.parametrize(
    ("name", "value", "order_id"),
    [
        ("www.other.test", validation("a"), "order-a"),
        (f"bad name.{APEX}", validation("a"), "order-a"),
        (APEX, 'with "quote"', "order-a"),
        (APEX, validation("a"), "order a"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    files: ChallengeFile, name: str, value: str, order_id: str
) -> None:
    with pytest.raises(ValueError):
        files.add(APEX, [(APEX, validation("ok")), (name, value)], order_id=order_id)
    assert not files.path(APEX).exists()


def test_a_non_canonical_apex_is_refused(files: ChallengeFile) -> None:
    for apex in ("Example.test", f"{APEX}.", "../x"):
        with pytest.raises(ValueError):
            files.path(apex)


def test_a_master_edited_by_hand_is_refused_not_overwritten(files: ChallengeFile) -> None:
    files.add(APEX, [(APEX, validation("a"))], order_id="order-a")
    master = files.path(APEX)
    edited = master.read_text() + f"{OWNER} 60 IN TXT unquoted\n"
    master.write_text(edited)
    with pytest.raises(StoreError, match=":4: not a challenge record"):
        files.add(APEX, [(APEX, validation("b"))], order_id="order-b")
    assert master.read_text() == edited


def test_writers_take_the_dns_include_lock_of_the_apex(tmp_path: Path) -> None:
    # Given someone holds dns-include:<apex>
    for name in ("ns1", "ns2"):
        (tmp_path / name).mkdir()
    files = challenge_file(tmp_path, lock_wait_s=0.2)
    with FileLocker(tmp_path / "locks").acquire(f"dns-include:{APEX}", ttl_s=30):
        # Then a writer waits, gives up with LockBusy, and has written nothing
        with pytest.raises(LockBusy):
            files.add(APEX, [(APEX, validation("a"))], order_id="order-a")
        assert not files.path(APEX).exists()
        # While another apex is not blocked
        assert files.add("other.test", [("other.test", validation("b"))], order_id="o") is True


def add_in_child(top: str, index: int, start: multiprocessing.synchronize.Barrier) -> None:
    """One concurrent order: waits for the others, then adds its two records in two calls."""
    files = challenge_file(Path(top))
    start.wait(timeout=60)
    files.add(APEX, [(APEX, validation(f"{index}-apex"))], order_id=f"order-{index}")
    files.add(APEX, [(f"www.{APEX}", validation(f"{index}-www"))], order_id=f"order-{index}")


def test_concurrent_orders_in_separate_processes_lose_no_record(
    tmp_path: Path, files: ChallengeFile
) -> None:
    # Given 8 processes, released at the same moment, each adding its own records
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WRITERS)
    children = [
        context.Process(target=add_in_child, args=(str(tmp_path), index, start))
        for index in range(WRITERS)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0] * WRITERS
    # Then every record of every order is there, once
    expected = {
        (owner, validation(f"{index}-{part}"), f"order-{index}")
        for index in range(WRITERS)
        for owner, part in ((OWNER, "apex"), (f"_acme-challenge.www.{APEX}.", "www"))
    }
    found = files.records(APEX)
    assert len(found) == 2 * WRITERS and set(found) == expected
    # And every acme_dir holds the master's bytes, which BIND loads with all 16 records
    contents = {copy.read_bytes() for copy in copies(files)}
    assert len(contents) == 1
    assert len(served_txt(tmp_path, copies(files)[1])) == 2 * WRITERS


def test_every_copy_is_fsynced_before_its_rename_and_its_directory_after(
    files: ChallengeFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # When records are added (the master and every copy written in one batch)
    events = record_disk_order(monkeypatch)
    files.add(APEX, [(APEX, validation("a"))], order_id="order-a")
    # Then each file's data was synced before it got its name, and its directory after that
    for copy in copies(files):
        assert any(
            Path(p).name.startswith(f"{copy.name}.tmp-") for p in synced_before(events, copy)
        )
        renamed = events.index(("rename", os.path.realpath(copy)))
        assert ("fsync", os.path.realpath(copy.parent)) in events[renamed:]
