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

from collections.abc import Sequence

from redis import Redis
from redis.exceptions import RedisError

from sslm_tasks.errors import TransientError

#: Prefix of every claim key, beside the lock keys.
KEY_PREFIX = "sslm:claim:"
#: Suffix of the set of notes a pending job takes when it starts.
_NOTES = ":notes"

# Delete or extend the key only while it still names the owner; atomic on the server.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_REPLACE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) end return 0"
)
# Claim a pending job, or add notes to the one that waits: one step, so a note never lands
# after the waiting job took its notes (it would be lost with nobody sending another job).
_CLAIM_OR_NOTE = (
    "if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end "
    "if #ARGV > 2 then redis.call('sadd', KEYS[2], unpack(ARGV, 3)) "
    "redis.call('pexpire', KEYS[2], ARGV[2]) end return 0"
)
# A job that starts clears its marker and takes the notes left for it, at once.
_START = (
    "local notes = redis.call('smembers', KEYS[2]) redis.call('del', KEYS[1], KEYS[2]) return notes"
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

        Idempotent: claiming again for the same owner refreshes the claim.

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

    def claim_or_note(self, name: str, owner: str, notes: Sequence[str]) -> bool:
        """Claim the pending job ``name`` for ``owner`` (True: the caller sends it), or, when a
        job of that name waits already, leave ``notes`` for it to take when it starts (False).

        Raises:
          TransientError: Redis could not be reached.
        """
        key = KEY_PREFIX + name
        try:
            claimed = self.client.eval(
                _CLAIM_OR_NOTE, 2, key, key + _NOTES, owner, self.ttl_ms, *notes
            )
        except RedisError as err:
            raise TransientError(f"claiming job {name!r}: redis unreachable: {err}") from err
        return bool(claimed)

    def start_job(self, name: str) -> set[str]:
        """The pending job ``name`` starts: a job sent from now on is a new one. Returns the
        notes left for it meanwhile (see :meth:`claim_or_note`).

        Raises:
          TransientError: Redis could not be reached.
        """
        key = KEY_PREFIX + name
        try:
            notes = self.client.eval(_START, 2, key, key + _NOTES)
        except RedisError as err:
            raise TransientError(f"starting job {name!r}: redis unreachable: {err}") from err
        return {n.decode() if isinstance(n, bytes) else str(n) for n in notes or []}

    def holder(self, name: str) -> str | None:
        """Who holds ``name`` now, or None."""
        try:
            value = self.client.get(KEY_PREFIX + name)
        except RedisError as err:
            raise TransientError(f"reading claim {name!r}: redis unreachable: {err}") from err
        if value is None:
            return None
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    def held(self, names: Sequence[str]) -> set[str]:
        """Those of ``names`` that someone holds now: one round trip for all of them (a scan
        over 10,000 services asked one at a time would wait for 10,000 replies).

        Raises:
          TransientError: Redis could not be reached.
        """
        if not names:
            return set()
        try:
            values = self.client.mget([KEY_PREFIX + name for name in names])
        except RedisError as err:
            raise TransientError(f"reading claims: redis unreachable: {err}") from err
        return {name for name, value in zip(names, values, strict=True) if value is not None}

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

    def release(self, name: str, owner: str) -> None:
        """Drop ``name`` if ``owner`` holds it; someone else's claim is left alone."""
        try:
            self.client.eval(_RELEASE, 1, KEY_PREFIX + name, owner)
        except RedisError as err:
            raise TransientError(f"releasing claim {name!r}: redis unreachable: {err}") from err
