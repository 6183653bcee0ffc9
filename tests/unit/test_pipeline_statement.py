"""The statement names its steps' functions, looked up when a step runs (so that reading it
imports none of them): every step must still reach the function it names, and every function
of ``lifecycle.steps`` must be reachable from the statement."""

from __future__ import annotations

import inspect
from typing import Any, cast

import pytest

from sslm_tasks.lifecycle import pipeline, steps
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.verdict import Verdict
from sslm_tasks.lifecycle.workspace import DevSteps


def step_functions() -> set[str]:
    return {
        name
        for name, value in vars(steps).items()
        if inspect.isfunction(value) and value.__module__ == steps.__name__
        if not name.startswith("_")
    }


def every_stage() -> list[pipeline.Stage]:
    stages: list[pipeline.Stage] = []
    for acme in (False, True):
        for renew_it in (False, True):
            for roll_it in (False, True):
                stages += pipeline.service_stages(
                    renew_it=renew_it, roll_it=roll_it, wanted=DevSteps(), acme=acme
                )
        stages.append(pipeline.dev(DevSteps(keys=True, cert=True), acme=acme))
    return stages


def test_each_step_runs_the_function_of_lifecycle_steps_it_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    called: list[tuple[str, object]] = []

    def recorder(name: str) -> Any:
        def record(ctx: object) -> Verdict:
            called.append((name, ctx))
            return Verdict(detail=name)

        return record

    functions = step_functions()
    for name in functions:
        monkeypatch.setattr(steps, name, recorder(name))
    ctx = cast(ServiceContext, object())
    reached: dict[str, set[str]] = {}
    for stage in every_stage():
        for step in stage.steps:
            called.clear()
            verdict = step.run(ctx)
            assert len(called) == 1 and called[0][1] is ctx, step.name
            reached.setdefault(step.name, set()).add(verdict.detail)
    assert set().union(*reached.values()) == functions
    # where a step's name is not its function's, the statement says which
    assert reached["production"] == {"to_production"}
    assert reached["roll_gate"] == {"roll_gate", "first_roll_gate"}
    assert reached["check"] == {"check"}
