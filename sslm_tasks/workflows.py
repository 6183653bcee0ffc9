"""The canvases: one service's workflow as a Celery chain, cut from the pipeline's statement.

A workflow is the service's walk (:func:`sslm_tasks.lifecycle.pipeline.service_stages`) cut
before every wait (:func:`~sslm_tasks.lifecycle.pipeline.segments`), one ``sslm.lifecycle.walk``
task per segment; the last segment ends with the fan-out of its deploys::

    walk[0] → walk[1] → ... → walk[-1] (+ fan-out) → deploy (each server, on its site's queue)

A private-CA service renews, rolls and fans out in one task; an ACME service in four (the waits
for DNS, for validation and for the certificate each retry their own task). Signatures are built
from task names only, so sending a workflow needs the app, not the task module.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Signature, chain  # type: ignore[import-untyped]

from sslm_tasks.app import app
from sslm_tasks.config.load import Config, acme_ca_of
from sslm_tasks.lifecycle import pipeline
from sslm_tasks.lifecycle.workspace import RunOptions
from sslm_tasks.routing import TaskName
from sslm_tasks.store.layout import ServiceRef


def service_steps(
    config: Config,
    ref: ServiceRef,
    options: RunOptions,
    *,
    renew: bool,
    roll: bool,
    after: str | None = None,
) -> list[Signature]:
    """The chain of one service's workflow, first segment first. With ``after`` (a task id: the
    last walk of the signing CA's workflow in the same run) the workflow starts once that task
    succeeded."""
    acme = acme_ca_of(config, ref) is not None
    plan = {"renew": renew, "roll": roll, "acme": acme}
    stages = pipeline.service_stages(renew_it=renew, roll_it=roll, wanted=options.dev, acme=acme)
    names: dict[str, Any] = {"group": ref.group, "service": ref.service}
    steps: list[Signature] = []
    for index, segment in enumerate(pipeline.segments(stages)):
        kwargs = {**names, "options": options.to_json(), "plan": plan, "index": index}
        if index == 0 and after is not None:
            kwargs["after"] = after
        steps.append(
            app.signature(
                TaskName.WALK.value,
                args=(None,) if index == 0 else (),
                kwargs=kwargs,
                shadow=f"{segment.name} {ref}",
            )
        )
    return steps


def send_service(
    config: Config,
    ref: ServiceRef,
    options: RunOptions,
    *,
    renew: bool,
    roll: bool,
    after: str | None = None,
) -> str:
    """Send one service's workflow; returns the id of its last walk task (what a service it
    signs waits for)."""
    steps = service_steps(config, ref, options, renew=renew, roll=roll, after=after)
    last_walk = str(uuid.uuid4())
    steps[-1].set(task_id=last_walk)
    chain(*steps).apply_async()
    return last_walk


def dns_refresh(apexes: list[str]) -> Signature:
    """``-dns``: refresh these zones on a worker."""
    return app.signature(TaskName.DNS_REFRESH.value, args=(apexes,))
