"""Which lock backend a worker uses: Redis when one is configured, else file locks.

Workers on several hosts share Redis (the broker, or the result backend when the broker is
RabbitMQ). Without any Redis, file locks in ``certs/`` still keep the processes of one host
apart, which is all a single-host RabbitMQ installation has; workflow claims then do not
exist and a second trigger simply resumes the same build (every step is idempotent).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from redis import Redis

from sslm_tasks.config.settings import RuntimeSettings, is_redis_url
from sslm_tasks.locks import Locker
from sslm_tasks.locks.claims import WorkflowClaims
from sslm_tasks.locks.file import FileLocker
from sslm_tasks.locks.redis import RedisLocker

#: Socket timeouts of the lock connection: a vanished Redis must fail a step, not hang it.
REDIS_TIMEOUT_S = 10.0


def lock_url(settings: RuntimeSettings) -> str | None:
    """The Redis that holds locks: the broker's, else the result backend's, else none."""
    for url in (settings.broker_url, settings.result_backend):
        if is_redis_url(url):
            return url
    return None


@cache
def _client(url: str) -> Redis:
    return Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )


def locker_for(settings: RuntimeSettings, certs_dir: Path) -> Locker:
    url = lock_url(settings)
    return RedisLocker(_client(url)) if url else FileLocker(certs_dir)


def claims_for(settings: RuntimeSettings, *, ttl_s: float) -> WorkflowClaims | None:
    url = lock_url(settings)
    return WorkflowClaims(_client(url), ttl_s=ttl_s) if url else None
