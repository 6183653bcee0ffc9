"""An ACME account's files as certbot lays them out: its registration and its creation record
written in one batch, durable before the account is used, the creation record never replaced."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import record_disk_order, synced_before

from sslm_tasks.acme import accounts

NOW = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)


def test_the_registration_and_creation_record_are_synced_with_their_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # When a new account's records are written
    events = record_disk_order(monkeypatch)
    accounts._write_records(tmp_path, "https://ca.test/acct/1", now=NOW)
    # Then each file was synced before its name, and the directory after both names
    for name in (accounts.REGR, accounts.META):
        path = tmp_path / name
        assert any(Path(p).name.startswith(f"{name}.tmp-") for p in synced_before(events, path))
    last_rename = max(i for i, (kind, _) in enumerate(events) if kind == "rename")
    assert ("fsync", os.path.realpath(tmp_path)) in events[last_rename:]
    assert json.loads((tmp_path / accounts.REGR).read_text())["uri"] == "https://ca.test/acct/1"
    created = json.loads((tmp_path / accounts.META).read_text())["creation_dt"]
    assert created == "2026-12-04T06:00:00Z"


def test_a_creation_record_there_already_is_kept(tmp_path: Path) -> None:
    # Given an account certbot (or an earlier run) created
    (tmp_path / accounts.META).write_text('{"creation_dt": "2020-01-01T00:00:00Z"}')
    # When its registration is written again
    accounts._write_records(tmp_path, "https://ca.test/acct/2", now=NOW)
    # Then its creation record is the old one
    assert "2020-01-01" in (tmp_path / accounts.META).read_text()
