"""Redis locks for many hosts: a key set with ``NX`` and a TTL, so a dead holder's lock expires.

Built on redis-py's :class:`redis.lock.Lock`, whose release and refresh are Lua scripts that
act only while the key still holds our token, so a holder whose lease expired can never free
or extend the lock of whoever took it next. The token we store names the holder (pid and
host) for the :class:`~sslm_tasks.errors.LockBusy` message.

Unlike a file lock, a Redis lock survives its holder's death for up to ``ttl_s``: pick a TTL
a little above the longest step between two :meth:`RedisLease.refresh` calls, not the length
of the whole job.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from redis import Redis
from redis.exceptions import LockError, RedisError
from redis.lock import Lock

from sslm_tasks.errors import LockBusy, TransientError
from sslm_tasks.locks import Lease, Locker, poll_delays

log = logging.getLogger(__name__)

#: Prefix of every lock key, so locks never collide with Celery's keys in a shared database.
KEY_PREFIX = "sslm:lock:"

# Separates the holder description from the random part of the token.
_TOKEN_SEP = " #"


class RedisLease(Lease):
    """A held Redis lock; see :class:`~sslm_tasks.locks.Lease` for the contract."""

    def __init__(self, name: str, lock: Lock) -> None:
        self._name = name
        self._lock: Lock | None = lock

    @property
    def name(self) -> str:
        return self._name

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is None:
            return
        try:
            lock.release()
        except LockError:
            # Our TTL passed and the key is gone or someone else's: nothing of ours to free.
            log.info("lock %r had already expired when released", self._name)
        except RedisError as err:
            # Raising would hide whatever ended the caller's with-block; the TTL frees it.
            log.warning("lock %r not released (it expires by itself): %s", self._name, err)

    def refresh(self) -> None:
        """Restart the lease's TTL from now; see :meth:`sslm_tasks.locks.Lease.refresh`.

        Raises:
            LockBusy: the lease was released or expired, or Redis could not confirm it is
                still ours (unreachable): in every case the holder must stop writing.
        """
        if self._lock is None:
            raise LockBusy(f"lock {self._name!r} was released")
        try:
            self._lock.reacquire()
        except LockError as err:
            raise LockBusy(f"lock {self._name!r} was lost: its TTL passed") from err
        except RedisError as err:
            raise LockBusy(f"lock {self._name!r} could not be refreshed: {err}") from err


class RedisLocker(Locker):
    """Named locks in one Redis database, shared by every host that reaches it.

    Lock ``n`` is the key ``sslm:lock:n``. Each :meth:`acquire` builds its own redis-py
    ``Lock`` with the token kept on the lease (not thread-local), so leases may be used from
    several threads and a lease released in another thread than the one that took it.
    """

    def __init__(self, client: Redis) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 10.0) -> RedisLocker:
        """Make a locker on the Redis at ``url`` (``redis://:password@host:port/db``).

        ``timeout_s`` bounds connecting and each command, so a vanished Redis shows up as an
        error rather than a hang. Contacts nothing until the first lock is taken.
        """
        client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(client)

    def acquire(self, name: str, *, ttl_s: float, blocking_s: float = 0) -> RedisLease:
        """Take lock ``name``; see :meth:`sslm_tasks.locks.Locker.acquire`.

        Raises:
            ValueError: ``name`` is empty or ``ttl_s`` is not positive.
            LockBusy: still held by another after ``blocking_s`` seconds; names the holder.
            TransientError: Redis could not be reached.
        """
        if not name:
            raise ValueError("lock name must not be empty")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        key = KEY_PREFIX + name
        lock = Lock(self.client, key, timeout=ttl_s, thread_local=False)
        holder = f"pid {os.getpid()} on {socket.gethostname()}"
        token = f"{holder}{_TOKEN_SEP}{uuid.uuid4().hex}"
        deadline = time.monotonic() + blocking_s
        delays = poll_delays()
        try:
            # Our own loop rather than redis-py's blocking acquire, which polls every 0.1 s.
            while not lock.acquire(blocking=False, token=token):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    holder_now = _held_by(self.client.get(key))
                    raise LockBusy(f"lock {name!r} is busy ({holder_now}; redis key {key})")
                time.sleep(min(next(delays), remaining))
        except RedisError as err:
            raise TransientError(f"taking lock {name!r}: redis unreachable: {err}") from err
        return RedisLease(name, lock)


def _held_by(token: object) -> str:
    # The key may have expired between our failed SET NX and the GET.
    if token is None:
        return "holder unknown"
    text = token.decode(errors="replace") if isinstance(token, bytes) else str(token)
    return f"held by {text.partition(_TOKEN_SEP)[0]}"
