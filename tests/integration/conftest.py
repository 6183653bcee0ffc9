"""Fixtures that start real services (redis-server, celery workers) and always stop them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import OUR_VARIABLES, RedisServer, Services, WorkerStarter, services_in, start_redis


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built in the test process must not pick up the developer's SSLM_* values."""
    for name in list(os.environ):
        if name.startswith(OUR_VARIABLES):
            monkeypatch.delenv(name)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """Starts daemons for one test; all of them are stopped when it ends, pass or fail."""
    with services_in(tmp_path) as started:
        yield started


@pytest.fixture
def redis_server(services: Services) -> RedisServer:
    """A private redis-server with a password on a free loopback port."""
    return start_redis(services)


@pytest.fixture
def workers(services: Services, redis_server: RedisServer) -> WorkerStarter:
    """Starts celery workers on :func:`redis_server`'s database 0."""
    return WorkerStarter(services, redis_server.url())
