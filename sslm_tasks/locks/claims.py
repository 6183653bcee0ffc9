"""Workflow claims: "this service's renew (or roll) is in progress", held by a workflow.

A lock (:mod:`sslm_tasks.locks`) belongs to a process and guards one step. A renew is a chain
of steps that run in different worker processes, so "one renew at a time per service" needs a
lease owned by the *workflow*: the claim's value is the workflow id (the chain's root task id).
Every step of that chain may refresh or release it, a redelivered step of the same chain finds
the claim already its own, and a second trigger finds it held and reports the workflow that
holds it. A claim expires after its TTL, so a chain whose worker died does not block the service
for good; the state record then lets the next trigger resume the build.
"""

from __future__ import annotations

from redis import Redis
from redis.exceptions import RedisError

from sslm_tasks.errors import TransientError

#: Prefix of every claim key, beside the lock keys.
KEY_PREFIX = "sslm:claim:"

# Delete or extend the key only while it still names the owner; atomic on the server.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_REPLACE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) end return 0"
)
_REFRESH = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class WorkflowClaims:
    """Claims in one Redis database.

    Parameters:
      client(Redis): a client with socket timeouts set (a vanished Redis must not hang a task).
      ttl_s(float): how long a claim outlives the last step that refreshed it.
    """

    def __init__(self, client: Redis, *, ttl_s: float) -> None:
        self.client = client
        self.ttl_ms = int(ttl_s * 1000)

    def claim(self, name: str, owner: str) -> str | None:
        """Take ``name`` for ``owner``; returns None when it is ours, else the current holder.

        Idempotent: claiming again for the same owner refreshes the claim. Also used to
        de-duplicate pending jobs: the first to claim a job's name sends it.

        Raises:
          TransientError: Redis could not be reached.
        """
        key = KEY_PREFIX + name
        try:
            if self.client.set(key, owner, nx=True, px=self.ttl_ms):
                return None
            if self.refresh(name, owner):
                return None
        except RedisError as err:
            raise TransientError(f"claiming {name!r}: redis unreachable: {err}") from err
        # "unknown": it expired between the two calls; the caller retries later anyway.
        return self.holder(name) or "unknown"

    def holder(self, name: str) -> str | None:
        """Who holds ``name`` now, or None."""
        try:
            value = self.client.get(KEY_PREFIX + name)
        except RedisError as err:
            raise TransientError(f"reading claim {name!r}: redis unreachable: {err}") from err
        if value is None:
            return None
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    def refresh(self, name: str, owner: str) -> bool:
        """Restart the TTL if ``owner`` still holds ``name``; False when it does not."""
        try:
            return bool(self.client.eval(_REFRESH, 1, KEY_PREFIX + name, owner, self.ttl_ms))
        except RedisError as err:
            raise TransientError(f"refreshing claim {name!r}: redis unreachable: {err}") from err

    def take_over(self, name: str, *, dead: str, owner: str) -> bool:
        """Give ``name`` to ``owner`` if the workflow ``dead`` still holds it; False when the
        claim moved on meanwhile (someone else took it over, or it expired)."""
        try:
            return bool(self.client.eval(_REPLACE, 1, KEY_PREFIX + name, dead, owner, self.ttl_ms))
        except RedisError as err:
            raise TransientError(f"taking over claim {name!r}: redis unreachable: {err}") from err

    def drop(self, name: str) -> None:
        """Remove ``name`` whoever holds it: for job markers, cleared by the job that runs."""
        try:
            self.client.delete(KEY_PREFIX + name)
        except RedisError as err:
            raise TransientError(f"dropping claim {name!r}: redis unreachable: {err}") from err

    def release(self, name: str, owner: str) -> None:
        """Drop ``name`` if ``owner`` holds it; someone else's claim is left alone."""
        try:
            self.client.eval(_RELEASE, 1, KEY_PREFIX + name, owner)
        except RedisError as err:
            raise TransientError(f"releasing claim {name!r}: redis unreachable: {err}") from err
