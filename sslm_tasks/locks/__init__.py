"""Named locks that die with their holder: the seam between sslm and its lock backends.

Implementations: :class:`~sslm_tasks.locks.file.FileLocker` (``flock``, one host) and a Redis
one (a redis-py ``Lock``: ``acquire(name, ttl_s=…)`` maps to ``Lock(name, timeout=ttl_s)``
tried every :func:`poll_delays` for ``blocking_s``, ``refresh`` to ``reacquire``, ``release``
to ``release``).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Protocol, Self

#: A waiter looks again after this long, then twice as long each time, up to POLL_MAX_S. Most
#: locks are held for milliseconds (one step's files), so the first looks come quickly: a
#: fixed 0.1 s poll cost a waiting worker far more than the wait itself (bench/bench_acme.py).
POLL_FIRST_S = 0.005
POLL_MAX_S = 0.25


def poll_delays() -> Iterator[float]:
    """The pauses between two tries of a busy lock: growing, capped, endless."""
    delay = POLL_FIRST_S
    while True:
        yield delay
        delay = min(delay * 2, POLL_MAX_S)


class Lease(Protocol):
    """A held lock. Use it as a context manager, or call :meth:`release` yourself.

    Implementations inherit this class to get the context-manager methods.
    """

    @property
    def name(self) -> str:
        """The lock's name as given to :meth:`Locker.acquire`."""
        ...

    def release(self) -> None:
        """Give the lock up. Idempotent: a second call, or a call after the lease expired,
        does nothing, since the lock is then free or someone else's and there is nothing left
        to undo. (Raising here would also hide the error that ended the ``with`` block.)
        """
        ...

    def refresh(self) -> None:
        """Prove the lease is still ours and restart its TTL from now.

        A holder whose work may outlast the TTL calls this between steps, and must stop
        writing if it raises.

        Raises:
          LockBusy: the lease was lost (it expired, and may now be held by another).
        """
        ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Locker(Protocol):
    """A named mutex shared by every process that may write the same thing.

    Contract (after certmagic's ``Locker``):

    * It guards work, not every file access: take ``<op>:<group>:<service>`` around a step
      that writes a service, the run lock around a whole run.
    * **Lock, check again, act.** Whoever waited for the lock must re-read the state after
      acquiring it: the previous holder may have done the work already, and a redelivered task
      must then do nothing.
    * A holder that dies loses the lock without anyone cleaning up: at process death for file
      locks (``kill -9`` included), after ``ttl_s`` for Redis. A holder that lives longer than
      ``ttl_s`` must :meth:`Lease.refresh` in time, or the lock may pass to someone else.
    * Locks are not reentrant: acquiring a name already held, even by the same process, is
      busy.
    * Implementations are safe to use from several threads, each with its own leases.
    """

    def acquire(self, name: str, *, ttl_s: float, blocking_s: float = 0) -> Lease:
        """Take the lock ``name``, waiting up to ``blocking_s`` seconds for it.

        Parameters:
          name(str): any non-empty string; implementations map it to their key space safely.
          ttl_s(float): how long the lock outlives a holder that stopped refreshing
            (backends whose locks die with the process may ignore it). Must be > 0.
          blocking_s(float): 0 means try once.

        Raises:
          LockBusy: the lock is held by another; the message names the lock and, when known,
            the holder (pid and host). Transient: retry later.
        """
        ...
