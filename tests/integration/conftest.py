"""Fixtures that start real services (redis-server, celery workers) and always stop them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_acme import write_topdir
from lab_dns import DnsLab, start_dns_lab
from lab_pebble import Pebble, start_pebble
from services import (
    OUR_VARIABLES,
    RabbitMQServer,
    RedisServer,
    Services,
    WorkerStarter,
    services_in,
    start_rabbitmq,
    start_redis,
)


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
def rabbitmq(services: Services) -> RabbitMQServer:
    """A private RabbitMQ node (own epmd, node name, data, user) on a free loopback port."""
    return start_rabbitmq(services)


@pytest.fixture
def workers(services: Services, redis_server: RedisServer) -> WorkerStarter:
    """Starts celery workers on :func:`redis_server`'s database 0."""
    return WorkerStarter(services, redis_server.url())


@pytest.fixture
def dns_lab(services: Services, tmp_path: Path) -> Iterator[DnsLab]:
    """BIND on 127.0.0.53 (primary, signing) and 127.0.0.54 (secondary), port 53, serving
    ``example.test`` and ``other.test``; closed (aliases removed, lock released) at the end."""
    lab = start_dns_lab(services, tmp_path / "dns", other_apexes=("other.test",))
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def pebble(
    request: pytest.FixtureRequest, services: Services, dns_lab: DnsLab, tmp_path: Path
) -> Pebble:
    """Pebble resolving and validating through :func:`dns_lab`'s primary. It rejects no good
    nonce, or the percentage a test gives indirectly
    (``@pytest.mark.parametrize("pebble", [50], indirect=True)``)."""
    return start_pebble(
        services,
        tmp_path / "pebble",
        dns_server=f"{dns_lab.primary}:{dns_lab.port}",
        nonce_reject=getattr(request, "param", 0),
    )


@pytest.fixture
def acme_topdir(tmp_path: Path, dns_lab: DnsLab, pebble: Pebble) -> Path:
    """A topdir whose ``example.test:web`` is signed by :func:`pebble` over dns-01, published
    through :func:`dns_lab` (see ``lab_acme``)."""
    return write_topdir(tmp_path / "top", dns_lab, pebble)
