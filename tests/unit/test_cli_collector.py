"""cli.collector: no collection while the configuration loads; what it loaded is out of the
collector's reach afterwards, and the collector runs again as before."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sslm_tasks.cli.collector import kept_for_the_run


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_the_load_runs_without_collections_and_its_objects_are_frozen_after() -> None:
    gc.unfreeze()
    loaded: list[dict[str, int]] = []
    with kept_for_the_run():
        assert not gc.isenabled()
        loaded += [{"service": n} for n in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(loaded)


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with kept_for_the_run():
        pass
    assert not gc.isenabled()


def test_a_failed_load_turns_the_collector_back_on() -> None:
    with pytest.raises(RuntimeError), kept_for_the_run():
        raise RuntimeError("bad configuration")
    assert gc.isenabled()
