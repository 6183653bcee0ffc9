"""The per-service state record: round trip, defaults, corruption named, no keys stored."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sslm_tasks.errors import StoreError
from sslm_tasks.store.layout import Layout, ServiceRef
from sslm_tasks.store.state import Phase, ServiceState, load_state, save_state

REF = ServiceRef("example.com", "mail")


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(topdir=tmp_path, prod_dir=tmp_path / "prod")


def test_missing_record_is_idle(layout: Layout) -> None:
    assert load_state(layout, REF) == ServiceState(phase=Phase.IDLE)


def test_record_round_trips_and_is_private(layout: Layout) -> None:
    # Given a record mid-renew
    state = ServiceState(
        phase=Phase.ISSUED,
        stamp="20260101-00:00:00",
        roll_due="2026-01-01T01:30:00+00:00",
        extra={"order_url": "https://acme.test/order/1"},
    )
    # When it is saved and loaded
    save_state(layout, REF, state, now=datetime(2026, 1, 1, tzinfo=UTC))
    loaded = load_state(layout, REF)
    # Then it comes back equal, stamped with the save time, in a 0600 file
    assert loaded == state
    assert loaded.updated == "2026-01-01T00:00:00+00:00"
    assert loaded.phase is Phase.ISSUED
    assert stat.S_IMODE(layout.state_file(REF).stat().st_mode) == 0o600


def test_corrupt_record_names_the_file(layout: Layout) -> None:
    # Given a truncated state file
    layout.service_dir(REF).mkdir(parents=True)
    layout.state_file(REF).write_text('{"phase": "ren')
    # Then loading it fails with the file's path in the message
    with pytest.raises(StoreError, match=r"state\.json: corrupt JSON"):
        load_state(layout, REF)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ({"phase": "exploded"}, "unknown phase"),
        ({"stamp": 7}, "stamp = 7"),
        ({"colour": "red"}, "unknown keys"),
        ({"extra": []}, "extra"),
        ([], "JSON object"),
    ],
)
def test_malformed_record_is_refused(layout: Layout, content: object, problem: str) -> None:
    layout.service_dir(REF).mkdir(parents=True)
    layout.state_file(REF).write_text(json.dumps(content))
    with pytest.raises(StoreError, match=problem):
        load_state(layout, REF)


def test_private_key_is_never_stored(layout: Layout) -> None:
    # Given a record where a key slipped into extra
    state = ServiceState(extra={"oops": "-----BEGIN EC PRIVATE KEY-----\nMHc..."})
    # Then saving is refused and no file is written
    with pytest.raises(StoreError, match="private key"):
        save_state(layout, REF, state)
    assert not layout.state_file(REF).exists()


def test_unserialisable_extra_is_refused(layout: Layout) -> None:
    with pytest.raises(StoreError, match="JSON"):
        save_state(layout, REF, ServiceState(extra={"when": datetime(2026, 1, 1)}))
