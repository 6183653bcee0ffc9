"""The deploy ledger counts every failure once, whoever records it at the same moment.

A deploy worker deploys on several threads, several workers run at once, and two deploys of
one server can overlap (a change noted while the first ran). ``record_outcome`` reads the
server's entry, counts one more failure onto it and writes the ledger back, all under the
``deploy-record`` lock; a failure counted from an entry another writer was replacing would be
counted once for two, and the server retried too early. Here threads of this process and of
several other processes record failures of one server at once, through the locks workers
take: ``flock`` files in ``certs/`` (no Redis) and Redis locks (a real redis-server).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from services import REPO, RedisServer

from sslm_tasks.acme.timing import retry_time_after_failure
from sslm_tasks.config.load import load_config
from sslm_tasks.config.settings import RuntimeSettings
from sslm_tasks.lifecycle.deployment import (
    ServerOutcome,
    read_ledger,
    record_outcome,
    server_key,
)
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.locks.file import FileLocker
from sslm_tasks.locks.redis import RedisLocker
from sslm_tasks.locks.select import locker_for
from sslm_tasks.store.atomic import ensure_dir
from sslm_tasks.store.layout import DIR_MODE_GROUP

pytestmark = pytest.mark.integration

SERVER = server_key("smtp", "smtp1.test")
#: A broker without Redis: workers then lock with flock files in certs/ (locks.select).
NO_REDIS = "amqp://sslm:unused@127.0.0.1:1//"
#: Writers in this process and in each other process, and the failures each records.
THREADS, PROCESSES, EACH = 8, 3, 5
#: Every record, from this process and the others.
RECORDS = THREADS * EACH * (1 + PROCESSES)

#: Another process's writers: THREADS threads, each recording EACH failures of SERVER once
#: the test says "go" on stdin; each record's returned (failures, at, retry_at) on stdout.
WRITER = """
import json, sys, threading
from datetime import UTC, datetime
from pathlib import Path
from sslm_tasks.config.load import load_config
from sslm_tasks.config.settings import RuntimeSettings
from sslm_tasks.lifecycle.deployment import ServerOutcome, record_outcome
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.locks.select import locker_for

conf_dir, broker_url, server, threads, each = sys.argv[1:]
config, _ = load_config([], conf_dir=Path(conf_dir))
ws = Workspace(
    config=config,
    locker=locker_for(RuntimeSettings(broker_url=broker_url), config.layout().certs_dir),
)
go = threading.Event()
lock = threading.Lock()

def write() -> None:
    go.wait()
    for _ in range(int(each)):
        at = datetime.now(UTC)
        got = record_outcome(ws, server, ServerOutcome(at, at, False, "refused"))
        with lock:
            print(json.dumps([got.failures, got.at.isoformat(), got.retry_at.isoformat()]))

writers = [threading.Thread(target=write) for _ in range(int(threads))]
for writer in writers:
    writer.start()
print("ready", flush=True)
assert sys.stdin.readline() == "go\\n"
go.set()
for writer in writers:
    writer.join()
"""


@dataclass(frozen=True)
class Recorded:
    """What one ``record_outcome`` returned."""

    failures: int
    at: datetime
    retry_at: datetime | None


def workspace(topdir: Path, broker_url: str) -> Workspace:
    """A workspace on ``topdir`` with the locker a worker on ``broker_url`` takes."""
    config, _ = load_config([], conf_dir=topdir / "conf.d")
    certs = ensure_dir(config.layout().certs_dir, mode=DIR_MODE_GROUP)
    return Workspace(
        config=config, locker=locker_for(RuntimeSettings(broker_url=broker_url), certs)
    )


@pytest.fixture
def writers(topdir: Path) -> Iterator[Callable[[str], list[subprocess.Popen[str]]]]:
    """Starts PROCESSES writer processes on ``topdir`` (see WRITER), ready for "go"; kills
    those still running at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(broker_url: str) -> list[subprocess.Popen[str]]:
        argv = [str(topdir / "conf.d"), broker_url, SERVER, str(THREADS), str(EACH)]
        for _ in range(PROCESSES):
            started.append(
                subprocess.Popen(
                    [sys.executable, "-c", WRITER, *argv],
                    cwd=REPO,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for process in started:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        return started

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)


def record_all_at_once(ws: Workspace, others: list[subprocess.Popen[str]]) -> list[Recorded]:
    """Release the other processes' writers and THREADS of this process's together; return
    what every record returned."""
    go = threading.Event()
    mine: list[Recorded] = []
    guard = threading.Lock()

    def write() -> None:
        go.wait()
        for _ in range(EACH):
            at = datetime.now(UTC)
            got = record_outcome(ws, SERVER, ServerOutcome(at, at, False, "refused"))
            with guard:
                mine.append(Recorded(got.failures, got.at, got.retry_at))

    threads = [threading.Thread(target=write) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for process in others:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    go.set()
    for thread in threads:
        thread.join(timeout=120)
    theirs = []
    for process in others:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        for line in out.splitlines():
            failures, at, retry_at = json.loads(line)
            theirs.append(
                Recorded(failures, datetime.fromisoformat(at), datetime.fromisoformat(retry_at))
            )
    return mine + theirs


def assert_each_failure_counted_once(ws: Workspace, recorded: list[Recorded]) -> None:
    # Every record counted one more failure than the one before it: none counted from an
    # entry another was replacing (two records would then share a count)
    assert len(recorded) == RECORDS
    assert sorted(r.failures for r in recorded) == list(range(1, RECORDS + 1))
    # and each got the retry time of its count: 1 min, 10 min, 100 min, then daily
    for r in recorded:
        assert r.retry_at == retry_time_after_failure(r.failures, now=r.at), r
    # and the ledger holds the last: every failure in a row, the retry time of that many
    entry = read_ledger(ws)[SERVER]
    assert entry.failures == RECORDS
    assert entry.retry_at == retry_time_after_failure(RECORDS, now=entry.at)
    last = max(recorded, key=lambda r: r.failures)
    assert (entry.at, entry.retry_at) == (last.at, last.retry_at)


def test_failures_recorded_at_once_under_file_locks_are_each_counted(
    topdir: Path, writers: Callable[[str], list[subprocess.Popen[str]]]
) -> None:
    # Given workers without Redis (flock files in certs/), in this process and three others
    ws = workspace(topdir, NO_REDIS)
    assert isinstance(ws.locker, FileLocker)
    others = writers(NO_REDIS)

    # When all their threads record failures of one server at once
    recorded = record_all_at_once(ws, others)

    # Then each is counted
    assert_each_failure_counted_once(ws, recorded)


def test_failures_recorded_at_once_under_redis_locks_are_each_counted(
    topdir: Path,
    redis_server: RedisServer,
    writers: Callable[[str], list[subprocess.Popen[str]]],
) -> None:
    # Given workers locking in Redis, in this process and three others
    ws = workspace(topdir, redis_server.url())
    assert isinstance(ws.locker, RedisLocker)
    others = writers(redis_server.url())

    # When all their threads record failures of one server at once
    recorded = record_all_at_once(ws, others)

    # Then each is counted
    assert_each_failure_counted_once(ws, recorded)
