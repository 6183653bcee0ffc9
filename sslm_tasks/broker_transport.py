"""kombu's Redis transport, made to lose no message when Redis restarts under a worker.

A worker holds messages it has not acknowledged: tasks with a countdown wait in its memory, and
a task that runs when the connection drops finishes, and is acknowledged, after it. Two things
go wrong with kombu 5.7 and Celery 5.7 when Redis goes away (measured with a 5 s restart during
a dozen workflows, tests/integration/test_broker_outage.py):

* Celery tears the broken connection down, which detaches kombu's channel from its connection;
  putting the held messages back, or acknowledging a finished one on that channel, then needs
  the connection's parameters, finds them gone and raises ``AttributeError``, which Celery does
  not count as a connection error: the worker stopped for good, every time.
* kombu takes a message off its queue (``BRPOP``) and only then records it as unacknowledged.
  When the connection drops between the two, Redis has no copy left and the worker drops its
  own: the workflow of that message was lost (one in three runs).

So a channel here keeps the parameters it connected with, and a message Redis may have no copy
of is kept in this process and put back on its queue as soon as a channel connects again: one
taken off a queue but not recorded, and one held when Redis went away (from Redis's unacked
set, where it still is; when another worker's visibility timeout restored it first, there is
nothing left to do). A process that dies meanwhile loses what it kept, as kombu would.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, redis

log = logging.getLogger(__name__)

#: Messages Redis has no copy of (payload, exchange, routing key), and the delivery tags of
#: messages in its unacked set, that this process owes their queues (see the module docstring).
_untracked: list[tuple[dict[str, Any], str, str]] = []
_held: list[str] = []


def _forget_owed() -> None:
    # A pool process forked after an outage would put the same messages back a second time.
    _untracked.clear()
    _held.clear()


os.register_at_fork(after_in_child=_forget_owed)

#: What ``broker_transport`` names for a ``redis://`` or ``rediss://`` broker; also the scheme
#: kombu shows in its log lines ("Connected to sslm-redis://...").
TRANSPORT = "sslm-redis"


class _QoS(redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
        except self.channel.connection_errors:
            delivery = message.delivery_info
            _untracked.append((message._raw, delivery["exchange"], delivery["routing_key"]))
            log.warning("a message taken as the broker went away goes back once it is back")
            raise

    def restore_unacked(self, client: Any = None) -> Any:
        tags = list(self._delivered)
        try:
            return super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except self.channel.connection_errors as err:
            self._delivered.clear()
            _held.extend(tags)
            log.warning(
                "could not put %d held message(s) back (%s): they go back once the broker is",
                len(tags),
                err,
            )
            return None

    def put_back_owed(self) -> None:
        """Put back on their queues the messages this process owes them; keep what fails."""
        while _untracked:
            payload, exchange, routing_key = _untracked[0]
            with self.channel.conn_or_acquire() as client, client.pipeline() as pipe:
                self.channel._do_restore_message(payload, exchange, routing_key, pipe)
                pipe.execute()
            _untracked.pop(0)
        while _held:
            self.restore_by_tag(_held[0])  # type: ignore[no-untyped-call]
            _held.pop(0)


class _Channel(redis.Channel):
    QoS = _QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connected_with: dict[bool, dict[str, Any]] = {}
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        if _untracked or _held:
            owed = len(_untracked) + len(_held)
            try:
                self.qos.put_back_owed()
            except self.connection_errors as err:
                log.warning("could not put back %d message(s) yet: %s", owed, err)
            else:
                log.warning("put back %d message(s) held when the broker went away", owed)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection is None or self.connection.client is None:
            # The poller's (asynchronous) pool is made before any teardown; plain ones too.
            return dict(self._connected_with.get(asynchronous) or self._connected_with[False])
        params: dict[str, Any] = super()._connparams(  # type: ignore[no-untyped-call]
            asynchronous=asynchronous
        )
        self._connected_with[asynchronous] = dict(params)
        return params


class Transport(redis.Transport):
    Channel = _Channel


TRANSPORT_ALIASES.setdefault(TRANSPORT, f"{__name__}:Transport")
