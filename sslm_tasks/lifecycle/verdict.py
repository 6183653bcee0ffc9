"""What a step says (:class:`Verdict`), apart from the steps themselves: the walkers and the
statement read it where no step runs (the broker CLI cuts its chains from the statement), and the
steps bring the ACME client, the DNS and the deploy code with them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Verdict:
    """What a step says: go on (or not, for a decision or a wait), and why, in one line; for a
    wait that is not ready, the time the CA asked not to be asked again before (its
    ``Retry-After``), which both walkers honour (``pipeline.pause``)."""

    go: bool = True
    detail: str = ""
    retry_after: datetime | None = None
