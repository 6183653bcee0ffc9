"""The dns-01 include file ``acme-challenge.<apex>``, shared by every order for the apex.

The operator's zone ``$INCLUDE``s ``<acme_dir>/acme-challenge.<apex>``, so the file must load in
BIND at every moment, also when no order is running (then it holds comments only). Many orders
may write it at once: several services of one apex, several groups whose certificates cover the
apex, and an apex plus its wildcard, whose records share the owner ``_acme-challenge.<apex>``
and must sit side by side. So the file is a set of records, each line naming the order that owns
it, and every change is read-modify-write under the lock ``dns-include:<apex>``.

Where the master copy lives: ``certs/<apex>/acme-challenge.<apex>`` in the store (beside the
group's ``tlsa.<group>``), and every ``acme_dir`` gets a byte-identical copy. Upstream kept it
in each service's ``cb/`` and rewrote the served file from it, so one service's push replaced
the records another service of the same apex had just published, and that order failed. One
master per apex, changed only under the lock, is what keeps every order's records. An apex that
is not itself a group (a certificate covering names of several zones) gets a directory of its
own under ``certs/``; nothing treats it as a group, since groups come from the configuration.

Nothing here talks to DNS: callers refresh the zone (``dns.refresh``) when :meth:`ChallengeFile.add`
or :meth:`ChallengeFile.remove` report a change, so N orders that change nothing cause no refresh.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, NamedTuple

from sslm_tasks.errors import StoreError
from sslm_tasks.locks import Locker
from sslm_tasks.store.atomic import ensure_dir, write_files_atomic
from sslm_tasks.store.layout import DIR_MODE_GROUP, PUBLIC_MODE, Layout

#: TTL of the TXT records, upstream's: short, so a retried order's new value is seen soon.
CHALLENGE_TTL: Final = 60
#: Lock name prefix; the lock for ``example.com`` is ``dns-include:example.com``.
LOCK_PREFIX: Final = "dns-include:"
#: Longest character-string in a TXT record (RFC 1035 §3.3.14); longer values are split.
_TXT_STRING_MAX: Final = 255
_LABEL: Final = "_acme-challenge"
_HOST_RE: Final = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
#: A value we can put between double quotes unescaped: printable ASCII but space, ``"``, ``\``.
_VALUE_RE: Final = re.compile(r"[!#-\[\]-~]+")
#: An order id fits in a trailing comment: printable ASCII, no whitespace.
_ORDER_RE: Final = re.compile(r"[!-~]+")
_LINE_RE: Final = re.compile(
    r'(?P<owner>\S+) (?P<ttl>[0-9]+) IN TXT (?P<strings>"[^"]*"(?: "[^"]*")*)'
    r" ; order (?P<order>\S+)"
)
_STRING_RE: Final = re.compile(r'"([^"]*)"')


class ChallengeRecord(NamedTuple):
    """One TXT record of the include file and the order that owns it."""

    owner: str
    """Absolute owner name, e.g. ``_acme-challenge.www.example.com.``."""
    value: str
    """The dns-01 validation (key authorization digest)."""
    order_id: str
    """Whoever added it: an order URL or any id without whitespace."""


def challenge_owner(name: str, *, apex: str) -> str:
    """The TXT owner for identifier ``name``: ``_acme-challenge.<name>.`` (RFC 8555 §8.4).

    A wildcard ``*.x`` is validated at ``_acme-challenge.x.``, the same owner as ``x`` itself.

    Raises:
      ValueError: ``name`` is not a host name inside ``apex``'s zone (its record would be
        ignored by the server as out-of-zone data; a caller bug, the order is for this apex).
    """
    zone = apex.rstrip(".").lower()
    host = name.rstrip(".").lower().removeprefix("*.")
    if not _HOST_RE.fullmatch(host) or (host != zone and not host.endswith(f".{zone}")):
        raise ValueError(f"dns-01 name {name!r} is not a host name in the zone {zone}")
    return f"{_LABEL}.{host}."


def _record_line(record: ChallengeRecord) -> str:
    value = record.value
    parts = [value[i : i + _TXT_STRING_MAX] for i in range(0, len(value), _TXT_STRING_MAX)]
    strings = " ".join(f'"{part}"' for part in parts)
    return f"{record.owner} {CHALLENGE_TTL} IN TXT {strings} ; order {record.order_id}"


def include_text(apex: str, records: Sequence[ChallengeRecord]) -> str:
    """The include file: a comment header, then one line per record, in the given order.

    No timestamp, so the same records always give the same bytes and "changed" means the
    records changed. A value longer than 255 characters becomes several quoted strings on the
    one line, which DNS joins back (RFC 7208 §3.3 uses the same rule for SPF).
    """
    lines = [
        f";; acme-challenge : {apex}",
        ";; written by sslm; each record ends with the ACME order that owns it",
        *(_record_line(record) for record in records),
    ]
    return "\n".join(lines) + "\n"


def parse_include_text(text: str, *, source: Path) -> list[ChallengeRecord]:
    """The records of an include file written by :func:`include_text`.

    Raises:
      StoreError: a line is neither a comment nor a record in our format (someone edited the
        master copy). We stop rather than drop or keep what we cannot read: dropping could
        lose another order's record, keeping could break the zone.
    """
    found: list[ChallengeRecord] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        match = _LINE_RE.fullmatch(line)
        if match is None:
            raise StoreError(f"{source}:{number}: not a challenge record written by sslm: {line!r}")
        value = "".join(_STRING_RE.findall(match["strings"]))
        found.append(ChallengeRecord(match["owner"], value, match["order"]))
    return found


class ChallengeFile:
    """The ``acme-challenge.<apex>`` include files: the store master and its ``acme_dir`` copies.

    Concurrency: :meth:`add` and :meth:`remove` take the lock ``dns-include:<apex>`` from
    ``locker``, re-read the master, change it and write every copy before releasing, so
    concurrent callers (threads, processes, hosts sharing the locker and the store) never lose
    each other's records. A caller waits up to ``lock_wait_s`` for the lock.

    Every file is written atomically (temp, fsync, rename) with mode 0644, so BIND never reads
    a half-written include. ``acme_dir`` directories must exist: they are the operator's.

    Parameters:
      layout(Layout): the store; the master is ``certs/<apex>/acme-challenge.<apex>``.
      acme_dirs(Sequence[Path]): ``[dns] acme_dir``, where the zone includes the file from.
      locker(Locker): shared with every other writer of the same store.
      lock_ttl_s(float): how long a dead holder blocks others (Redis); the work takes
        milliseconds.
      lock_wait_s(float): how long to wait for the lock before :class:`LockBusy`.
    """

    def __init__(
        self,
        *,
        layout: Layout,
        acme_dirs: Sequence[Path],
        locker: Locker,
        lock_ttl_s: float = 30.0,
        lock_wait_s: float = 10.0,
    ) -> None:
        self._layout = layout
        self._acme_dirs = list(acme_dirs)
        self._locker = locker
        self._lock_ttl_s = lock_ttl_s
        self._lock_wait_s = lock_wait_s

    def path(self, apex: str) -> Path:
        """The master copy for ``apex``.

        Raises:
          ValueError: ``apex`` is not a lower-case host name without a trailing dot (one zone
            must map to one file and one lock, whatever its spelling elsewhere).
        """
        if not _HOST_RE.fullmatch(apex):
            raise ValueError(f"apex {apex!r} is not a lower-case host name without trailing dot")
        return self._layout.group_dir(apex) / f"acme-challenge.{apex}"

    def records(self, apex: str) -> list[ChallengeRecord]:
        """The records now in the master copy, in file order; none when it does not exist.

        Reads without the lock: writes are atomic renames, so this sees one complete version.

        Raises:
          StoreError: the master is unreadable or not in our format.
        """
        return _load(self.path(apex))

    def add(self, apex: str, records: Sequence[tuple[str, str]], *, order_id: str) -> bool:
        """Publish ``records`` for ``order_id`` beside whatever other orders published.

        Idempotent: a record (owner, value, order) already present is not added again, so a
        redelivered task changes nothing. The same owner and value for two orders (an
        authorization the CA reuses across orders) gives two lines, one per owner: DNS serves
        one record, and it stays until both orders removed theirs.

        Parameters:
          apex(str): the zone whose include file to change.
          records(Sequence[tuple[str, str]]): (identifier name, validation) pairs; wildcards
            ``*.x`` are published at ``x``'s owner.
          order_id(str): the owner of the records, without whitespace.

        Returns:
          Whether any file was written, i.e. whether the zone needs a refresh. Also True when
          only a copy was stale (a crash after an earlier write), which this call repaired.

        Raises:
          ValueError: a bad apex (see :meth:`path`), a name outside it, a value that is not
            printable ASCII without space, ``"`` or ``\\``, or an order id with whitespace
            (caller bugs).
          LockBusy: another writer held the lock for ``lock_wait_s`` (transient).
          StoreError: a file could not be read or written, or the master is not ours.
        """
        _check_order(order_id)
        wanted = [
            ChallengeRecord(challenge_owner(name, apex=apex), _check_value(value), order_id)
            for name, value in records
        ]

        def added(current: list[ChallengeRecord]) -> list[ChallengeRecord]:
            return list(dict.fromkeys([*current, *wanted]))

        return self._update(apex, added)

    def remove(self, apex: str, *, order_id: str) -> bool:
        """Withdraw every record of ``order_id``; other orders' records stay.

        Idempotent. Afterwards the master and every copy exist, records or not, so the zone's
        ``$INCLUDE`` keeps loading.

        Returns:
          Whether any file was written (see :meth:`add`).

        Raises:
          ValueError: a bad apex (see :meth:`path`), or ``order_id`` has whitespace.
          LockBusy, StoreError: as for :meth:`add`.
        """
        _check_order(order_id)

        def removed(current: list[ChallengeRecord]) -> list[ChallengeRecord]:
            return [record for record in current if record.order_id != order_id]

        return self._update(apex, removed)

    def _update(
        self, apex: str, change: Callable[[list[ChallengeRecord]], list[ChallengeRecord]]
    ) -> bool:
        """Lock, re-read the master, apply ``change``, write every copy that differs."""
        master = self.path(apex)
        with self._locker.acquire(
            f"{LOCK_PREFIX}{apex}", ttl_s=self._lock_ttl_s, blocking_s=self._lock_wait_s
        ) as lease:
            current = _load(master)
            data = include_text(apex, change(current)).encode()
            # Each copy is compared on its own, so a crash between two writes is repaired by
            # the next call instead of leaving a stale copy that "nothing changed" would skip.
            targets = [master, *(directory / master.name for directory in self._acme_dirs)]
            stale = [path for path in targets if _read_bytes(path) != data]
            if not stale:
                return False
            ensure_dir(master.parent, mode=DIR_MODE_GROUP)
            # A lease lost to its TTL (Redis, a long pause) may be someone else's now: stop.
            lease.refresh()
            # One batch: every copy written, then all fsynced in one pass, then renamed (the
            # lock, which every order of the zone waits for, is held the shorter for it).
            write_files_atomic({path: (data, PUBLIC_MODE) for path in stale})
            return True


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreError(f"reading {path}: {err.strerror or err}") from err


def _load(path: Path) -> list[ChallengeRecord]:
    """The records of the include file at ``path``; none when it does not exist."""
    try:
        text = (_read_bytes(path) or b"").decode("ascii")
    except UnicodeDecodeError as err:
        raise StoreError(f"reading {path}: not ASCII, so not written by sslm: {err}") from err
    return parse_include_text(text, source=path)


def _check_value(value: str) -> str:
    if not _VALUE_RE.fullmatch(value):
        raise ValueError(f"dns-01 value {value!r} is not printable ASCII without space, '\"', '\\'")
    return value


def _check_order(order_id: str) -> str:
    if not _ORDER_RE.fullmatch(order_id):
        raise ValueError(f"order id {order_id!r} is empty or has whitespace")
    return order_id
