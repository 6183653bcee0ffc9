"""A held save of the state record (``hold``, inside a segment): written by the segment's next
full save, at its end (also when a step fails), or before the record is read again; never left
behind, never held outside a segment, and a save without ``hold`` is never held."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import REPO

from sslm_tasks.config.load import load_config
from sslm_tasks.lifecycle import pipeline
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.pipeline import Kind, Segment, Step, Walk
from sslm_tasks.lifecycle.record import Phase
from sslm_tasks.lifecycle.verdict import Verdict
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store import versions
from sslm_tasks.store.layout import COMPLETE_FILES, ServiceRef

WEB = ServiceRef("example.com", "web-ec")


@pytest.fixture
def ctx(tmp_path: Path) -> ServiceContext:
    shutil.copytree(REPO / "conf.d", tmp_path / "conf.d")
    config, _ = load_config([str(WEB)], conf_dir=tmp_path / "conf.d")
    return ServiceContext(Workspace(config=config), WEB)


def on_disk(ctx: ServiceContext) -> str | None:
    path = ctx.layout.state_file(ctx.ref)
    return json.loads(path.read_text())["phase"] if path.exists() else None


def saving(phase: Phase) -> Step:
    def run(ctx: ServiceContext) -> Verdict:
        ctx.record.phase = phase
        ctx.save(hold=True)
        return Verdict()

    return Step(f"to_{phase}", Kind.ACT, run)


def failing(ctx: ServiceContext) -> Verdict:
    # Not an SslmError: those are recorded as the step's failure, a full save of their own.
    raise RuntimeError("a bug")


def test_a_held_save_is_written_by_the_next_save_or_a_reload(ctx: ServiceContext) -> None:
    with ctx.held_saves():
        # Given a save with hold inside the block: nothing is written yet
        ctx.record.phase = Phase.RENEWING
        ctx.save(hold=True)
        assert on_disk(ctx) is None
        # When the record is read again, Then the held change is written first, not lost
        assert ctx.reload().phase is Phase.RENEWING
        assert on_disk(ctx) == "renewing"
        # And a later full save carries a held one with it
        ctx.record.phase = Phase.ISSUED
        ctx.save(hold=True)
        ctx.record.last_error = None
        ctx.save()
        assert on_disk(ctx) == "issued"
        # And a save without a directory fsync but without hold (a build's start, which a
        # step delivered again must find) is written at once
        ctx.record.phase = Phase.RENEWING
        ctx.save(sync_dir=False)
        assert on_disk(ctx) == "renewing"
    # And outside the block nothing is held
    ctx.record.phase = Phase.ROLLED
    ctx.save(hold=True)
    assert on_disk(ctx) == "rolled"


def test_a_segment_writes_its_held_save_at_its_end_even_when_a_step_fails(
    ctx: ServiceContext,
) -> None:
    # When a segment's steps save without a directory fsync and finish
    done = Segment(None, (("renew", saving(Phase.RENEWING)), ("renew", saving(Phase.ISSUED))))
    assert pipeline.run_steps(ctx, done, Walk()) is None
    # Then the last state is on disk once the segment returns
    assert on_disk(ctx) == "issued"
    # When a step saves so and a later step of the segment fails
    broken = Segment(
        None,
        (("roll", saving(Phase.ROLLED)), ("roll", Step("broken", Kind.ACT, failing))),
    )
    with pytest.raises(RuntimeError):
        pipeline.run_steps(ctx, broken, Walk())
    # Then what the first step recorded is on disk all the same
    assert on_disk(ctx) == "rolled"


def test_a_reading_context_reads_each_link_once_a_working_one_again_after_a_move(
    ctx: ServiceContext,
) -> None:
    # Given curr pointing at one version
    db = ctx.layout.db_dir(ctx.ref)
    for stamp in ("20260101-00:00:00", "20260201-00:00:00", "20260301-00:00:00"):
        (db / stamp).mkdir(parents=True)
    link = ctx.layout.link(ctx.ref, "curr")
    link.symlink_to("db/20260101-00:00:00")
    reading = ServiceContext(ctx.ws, ctx.ref, repair=False)
    assert reading.link("curr") == ctx.link("curr") == "20260101-00:00:00"
    assert reading.link("next") is None
    # When the link is changed behind the store's back (no step may: the service's lock keeps
    # other writers out), Then neither context reads it again: each link is read once
    link.unlink()
    link.symlink_to("db/20260201-00:00:00")
    assert reading.link("curr") == ctx.link("curr") == "20260101-00:00:00"
    # When a step moves a link through the store, Then a working context reads again, a look
    # under way keeps one answer, and a new look sees the move
    versions.point(ctx.layout, ctx.ref, "curr", "20260301-00:00:00")
    assert ctx.link("curr") == "20260301-00:00:00"
    assert reading.link("curr") == "20260101-00:00:00"
    assert ServiceContext(ctx.ws, ctx.ref, repair=False).link("curr") == "20260301-00:00:00"
    # And a removal and a roll count as moves too
    versions.unlink(ctx.layout, ctx.ref, "curr")
    assert ctx.link("curr") is None
    for name in COMPLETE_FILES:
        (db / "20260201-00:00:00" / name).write_text("x")
    versions.point(ctx.layout, ctx.ref, "next", "20260201-00:00:00")
    assert ctx.link("next") == "20260201-00:00:00"
    versions.roll_links(ctx.layout, ctx.ref)
    assert (ctx.link("curr"), ctx.link("next")) == ("20260201-00:00:00", None)
    # (an interrupted roll, finished: next is only removed)
    versions.point(ctx.layout, ctx.ref, "next", "20260201-00:00:00")
    assert ctx.link("next") == "20260201-00:00:00"
    versions.roll_links(ctx.layout, ctx.ref)
    assert ctx.link("next") is None
