"""kombu's Redis transport, made to outlive a broker restart while a worker holds messages.

A worker holds messages it has not acknowledged: tasks with a countdown wait in its memory, and
a task that runs when the connection drops finishes, and is acknowledged, after it. When Redis
goes away, Celery 5.7 tears the broken connection down, which detaches kombu's channel from its
connection; putting the held messages back, or acknowledging a finished one on that channel,
then needs the connection's parameters, finds them gone and raises ``AttributeError``. Celery
does not count that as a connection error: the worker stops for good (measured: 8 to 12 held
messages at a 5 s Redis restart, every time, and with the worker the rest of a dozen workflows).

A channel here keeps the parameters it connected with, so it can still reach Redis after the
teardown: a finished task is acknowledged once the broker is back, and a held message is put
back. Where Redis is still away, a held message is left where it is: Redis keeps every
delivered, unacknowledged message in its ``unacked`` hash, and any worker restores it from there
once the visibility timeout has passed.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, redis

log = logging.getLogger(__name__)

#: What ``broker_transport`` names for a ``redis://`` or ``rediss://`` broker; also the scheme
#: kombu shows in its log lines ("Connected to sslm-redis://...").
TRANSPORT = "sslm-redis"


class _QoS(redis.QoS):
    def restore_unacked(self, client: Any = None) -> Any:
        held = len(self._delivered)
        try:
            return super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except self.channel.connection_errors as err:
            self._delivered.clear()
            log.warning(
                "could not put %d held message(s) back (%s): they come back from Redis's"
                " unacked set after the visibility timeout",
                held,
                err,
            )
            return None


class _Channel(redis.Channel):
    QoS = _QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connected_with: dict[bool, dict[str, Any]] = {}
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

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
