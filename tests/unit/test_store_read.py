"""store.read: a small file read whole, with ``open``'s errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sslm_tasks.store.read import read_bytes


def test_a_file_is_read_whole_whatever_its_size(tmp_path: Path) -> None:
    for size in (0, 1, 4096, 200_000):
        path = tmp_path / f"f{size}"
        data = os.urandom(size)
        path.write_bytes(data)
        assert read_bytes(path) == data
        assert read_bytes(str(path)) == data


def test_what_is_no_readable_file_raises_as_open_does(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_bytes(tmp_path / "absent")
    with pytest.raises(IsADirectoryError):
        read_bytes(tmp_path)
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError):
        read_bytes(tmp_path / "loop")


def test_a_file_longer_than_it_was_at_the_stat_is_read_to_its_end(tmp_path: Path) -> None:
    # /proc files say size 0 and hold more: the read goes on to the end
    data = read_bytes("/proc/self/status")
    assert b"Name:" in data and data.endswith(b"\n") and len(data) > 100
