"""The canvases: one service's workflow as a Celery chain, cut from the pipeline's statement.

A workflow is the service's walk (:func:`sslm_tasks.lifecycle.pipeline.service_stages`) cut
before every wait (:func:`~sslm_tasks.lifecycle.pipeline.segments`), one ``sslm.lifecycle.walk``
task per segment, then the fan-out of its deploys::

    walk[0] → walk[1] → ... → fanout → deploy (each server, on its site's queue)

A private-CA service renews and rolls in one walk task; an ACME service in four (the waits for
DNS, for validation and for the certificate each retry their own task). Signatures are built
from task names only, so sending a workflow needs the app, not the task module.
"""

from __future__ import annotations

from typing import Any

from celery import Signature, chain  # type: ignore[import-untyped]

from sslm_tasks.app import app
from sslm_tasks.config.load import Config, acme_ca_of
from sslm_tasks.lifecycle import pipeline
from sslm_tasks.lifecycle.workspace import RunOptions
from sslm_tasks.routing import TaskName
from sslm_tasks.store.layout import ServiceRef


def service_steps(
    config: Config, ref: ServiceRef, options: RunOptions, *, renew: bool, roll: bool
) -> list[Signature]:
    """The chain of one service's workflow, first segment first, fan-out last."""
    acme = acme_ca_of(config, ref) is not None
    plan = {"renew": renew, "roll": roll, "acme": acme}
    stages = pipeline.service_stages(renew_it=renew, roll_it=roll, wanted=options.dev, acme=acme)
    names: dict[str, Any] = {"group": ref.group, "service": ref.service}
    steps: list[Signature] = []
    for index, segment in enumerate(pipeline.segments(stages)):
        kwargs = {**names, "options": options.to_json(), "plan": plan, "index": index}
        steps.append(
            app.signature(
                TaskName.WALK.value,
                # The first takes no previous result: linked behind a CA's chain it must not
                # receive the CA's.
                args=(None,) if index == 0 else (),
                kwargs=kwargs,
                immutable=index == 0,
                shadow=f"{segment.name} {ref}",
            )
        )
    fanout = {**names, "options": options.to_json()}
    steps.append(app.signature(TaskName.FANOUT.value, kwargs=fanout, shadow=f"fanout {ref}"))
    return steps


def send_service(
    config: Config, ref: ServiceRef, options: RunOptions, *, renew: bool, roll: bool
) -> str:
    """Send one service's workflow; returns the id of its first task."""
    result = chain(*service_steps(config, ref, options, renew=renew, roll=roll)).apply_async()
    return str(result.id)


def dns_refresh(apexes: list[str]) -> Signature:
    """``-dns``: refresh these zones on a worker."""
    return app.signature(TaskName.DNS_REFRESH.value, args=(apexes,))
