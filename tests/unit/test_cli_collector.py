"""cli.collector: no collection while the configuration loads; what it loaded is out of the
collector's reach afterwards, and the collector runs again as before; ``-s`` shows the status
without collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from sslm_tasks.cli import check, mgr_tree
from sslm_tasks.cli.collector import kept_for_the_run
from sslm_tasks.cli.mgr import build_parser
from sslm_tasks.config.load import load_config


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


def test_the_status_is_shown_without_collections(
    topdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given -s on the example configuration, with the collector on
    config, refs = load_config([], conf_dir=topdir / "conf.d")
    seen: list[bool] = []

    def show(*_: object) -> int:
        seen.append(gc.isenabled())
        return 0

    monkeypatch.setattr(check, "show", show)
    gc.enable()
    # When the status is shown
    assert mgr_tree._run(config, refs, build_parser(dev=False).parse_args(["-s"])) == 0
    # Then no collection ran meanwhile, and the collector is on again after it
    assert seen == [False]
    assert gc.isenabled()
