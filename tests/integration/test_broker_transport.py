"""sslm's Redis transport (sslm_tasks/broker_transport.py) against a real Redis that stops and
comes back with its append-only file: a message taken off its queue as Redis went away, and one
held unacknowledged when it did, are both back on the queue once a channel connects again,
once each. test_broker_outage.py shows the same through workers; here each case is forced."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue
from services import RedisServer, Services, start_redis

from sslm_tasks import broker_transport
from sslm_tasks.broker_transport import TRANSPORT

pytestmark = pytest.mark.integration

QUEUE = Queue("work", Exchange("work", type="direct"), routing_key="work")


@pytest.fixture
def redis(services: Services) -> Iterator[RedisServer]:
    yield start_redis(services, appendonly=True)
    # Nothing a test left owed may reach the next one's broker.
    broker_transport._untracked.clear()
    broker_transport._held.clear()


def connect(redis: RedisServer) -> Any:
    return Connection(redis.url(), transport=TRANSPORT)


def publish(redis: RedisServer, body: str) -> None:
    with connect(redis) as conn:
        conn.Producer().publish(body, exchange=QUEUE.exchange, routing_key="work", declare=[QUEUE])


def queued(redis: RedisServer) -> list[str]:
    """The bodies waiting on the queue, taken off it (acknowledged)."""
    bodies = []
    with connect(redis) as conn:
        channel = conn.channel()
        while (message := channel.basic_get("work", no_ack=True)) is not None:
            bodies.append(channel.message_to_python(message).decode())
    return bodies


def test_a_message_taken_as_redis_went_away_goes_back_when_it_is_back(
    services: Services, redis: RedisServer
) -> None:
    # Given a message taken off its queue (unacknowledged, as a worker takes it)
    publish(redis, "taken")
    conn = connect(redis)
    channel = conn.channel()
    message = channel.message_to_python(channel.basic_get("work"))
    tag = message.delivery_tag
    channel.qos._delivered.pop(tag)
    redis.client().delete("unacked", "unacked_index")
    # When Redis goes away before kombu recorded it as unacknowledged
    redis.service.terminate()
    with pytest.raises(channel.connection_errors):
        channel.qos.append(message, tag)
    start_redis(services, port=redis.port, password=redis.password, appendonly=True)
    # Then a channel that connects puts it back on its queue, once
    with connect(redis) as again:
        again.channel()
        again.channel()
    assert queued(redis) == ["taken"]


def test_a_message_held_when_redis_went_away_goes_back_when_it_is_back(
    services: Services, redis: RedisServer
) -> None:
    # Given a message a worker holds, unacknowledged
    publish(redis, "held")
    conn = connect(redis)
    channel = conn.channel()
    assert channel.basic_get("work") is not None
    assert redis.client().hlen("unacked") == 1
    # When Redis goes away, and the channel is closed meanwhile (its messages cannot go back)
    redis.service.terminate()
    channel.close()
    start_redis(services, port=redis.port, password=redis.password, appendonly=True)
    assert redis.client().llen("work") == 0 and redis.client().hlen("unacked") == 1
    # Then a channel that connects puts it back from the unacked set, once
    with connect(redis) as again:
        again.channel()
        again.channel()
    assert queued(redis) == ["held"]
    assert redis.client().hlen("unacked") == 0
