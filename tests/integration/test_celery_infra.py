"""The Celery infrastructure with real processes: redis-server, ``celery worker``, RabbitMQ.

Each test gets its own redis-server (password required, no persistence) and starts the
workers it needs as separate processes, so what is tested is what production runs.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from services import (
    REPO,
    START_TIMEOUT_S,
    VENV_BIN,
    RabbitMQServer,
    RedisServer,
    Services,
    WorkerStarter,
    celery_env,
    control_ping_answered,
    free_port,
    producer,
    start_redis,
    wait_for,
)

from sslm_tasks.app import UNACKED_RESTORE_INTERVAL_S
from sslm_tasks.broker import check_broker
from sslm_tasks.errors import ConfigError, LockBusy, TransientError
from sslm_tasks.locks.redis import RedisLocker

pytestmark = pytest.mark.integration

PROBES = ("probe_tasks",)


def test_plain_worker_consumes_every_configured_queue(workers: WorkerStarter) -> None:
    # Given a worker started without -Q on an installation with the extra site "paris"
    worker = workers.start("all@test", env={"SSLM_SITES": "paris"})
    app = producer(workers.broker_url)

    # When I ask it which queues it consumes
    replies = app.control.inspect(destination=[worker.node], timeout=5).active_queues()

    # Then it is every queue the configuration defines, and sslm.ping makes the round trip
    assert {q["name"] for q in replies[worker.node]} == {
        "issue",
        "dns",
        "deploy.default",
        "deploy.paris",
    }
    assert app.send_task("sslm.ping").get(timeout=10) == worker.node


def test_deploy_task_goes_only_to_its_site(
    workers: WorkerStarter, redis_server: RedisServer
) -> None:
    # Given one deploy worker for site paris and one for site berlin
    paris = workers.start("paris@test", queues=["deploy.paris"], include=PROBES, wait=False)
    berlin = workers.start("berlin@test", queues=["deploy.berlin"], include=PROBES, wait=False)
    workers.wait_ready(paris, "deploy.paris")
    workers.wait_ready(berlin, "deploy.berlin")
    app = producer(workers.broker_url)

    # When deploy tasks are sent for paris, berlin, and lyon (which has no worker),
    # and other tasks that no worker here consumes
    to_paris = app.send_task("sslm.deploy.test_probe", kwargs={"site": "paris"})
    to_berlin = app.send_task("sslm.deploy.test_probe", kwargs={"site": "berlin"})
    to_lyon = app.send_task("sslm.deploy.test_probe", kwargs={"site": "lyon"})
    app.send_task("sslm.dns.test_unknown")
    app.send_task("sslm.crypto.test_unknown")
    app.send_task("sslm.deploy.test_unknown")

    # Then each runs on its own site's worker only, and lyon's waits in deploy.lyon
    assert to_paris.get(timeout=10) == paris.node
    assert to_berlin.get(timeout=10) == berlin.node
    assert to_paris.id not in berlin.service.log_text()
    assert to_berlin.id not in paris.service.log_text()
    assert to_lyon.state == "PENDING"
    # and the others wait in their queues: dns, issue (the default), deploy.default
    client = redis_server.client()
    assert [client.llen(q) for q in ("deploy.lyon", "dns", "issue", "deploy.default")] == [
        1,
        1,
        1,
        1,
    ]


def test_sigkilled_worker_task_is_redelivered(workers: WorkerStarter, tmp_path: Path) -> None:
    # Given a short visibility timeout (time limits must stay below it) and worker A
    # running an acks_late task
    visibility_s = 8
    limits = {
        "SSLM_VISIBILITY_TIMEOUT_S": str(visibility_s),
        "SSLM_TASK_TIME_LIMIT_S": "7",
        "SSLM_TASK_SOFT_TIME_LIMIT_S": "6",
    }
    a = workers.start("a@test", queues=["issue"], pool="prefork", include=PROBES, env=limits)
    markers = tmp_path / "markers"
    markers.mkdir()
    result = producer(workers.broker_url).send_task("sslm.test.hold", args=[str(markers), 60])
    wait_for("worker a starts the task", (markers / "a@test.started").exists, timeout_s=10)

    # When A and its pool child are killed with SIGKILL in the middle of the task
    # (at once: the task's soft time limit must not end it first)
    a.kill()
    killed_at = time.time()
    (markers / "release").touch()
    # and another worker, B, serves the queue
    b = workers.start("b@test", queues=["issue"], pool="prefork", include=PROBES, env=limits)

    # Then B runs the task within the visibility timeout plus one restore scan
    assert result.get(timeout=visibility_s + 3 * UNACKED_RESTORE_INTERVAL_S) == b.node
    redelivered_after = float((markers / "b@test.started").read_text()) - killed_at
    started_a = float((markers / "a@test.started").read_text())
    print(
        f"redelivered {redelivered_after:.1f} s after SIGKILL, "
        f"{killed_at - started_a + redelivered_after:.1f} s after the first delivery"
    )
    assert redelivered_after < visibility_s + 2 * UNACKED_RESTORE_INTERVAL_S


def test_worker_resumes_after_broker_restart(
    services: Services, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a working worker
    worker = workers.start("survivor@test")

    # When its broker goes away and comes back on the same address
    redis_server.service.terminate()
    start_redis(services, port=redis_server.port, password=redis_server.password)

    # Then the worker reconnects by itself and works again
    app = producer(workers.broker_url)
    took = wait_for(
        "the worker answers again",
        lambda: control_ping_answered(app, worker.node),
        timeout_s=30,
        log=worker.service.log,
        alive=lambda: worker.service.alive,
    )
    print(f"worker answered {took:.1f} s after the broker came back")
    assert app.send_task("sslm.ping").get(timeout=10) == worker.node


HOLDER = """
import sys, time
from sslm_tasks.locks.redis import RedisLocker
lease = RedisLocker.from_url(sys.argv[1]).acquire("renew:mail:mx1", ttl_s=float(sys.argv[2]))
print("held", flush=True)
time.sleep(120)
"""


def test_redis_lock_contention_and_dead_holder(
    redis_server: RedisServer, services: Services
) -> None:
    # Given another process holding the lock with a 2 s TTL
    ttl_s = 2.0
    holder = services.spawn(
        "lock-holder", [sys.executable, "-c", HOLDER, redis_server.url(), str(ttl_s)]
    )
    wait_for(
        "the holder takes the lock",
        lambda: "held" in holder.log_text(),
        timeout_s=10,
        log=holder.log,
        alive=lambda: holder.alive,
    )
    locker = RedisLocker.from_url(redis_server.url())

    # When I try to take it, I am told it is busy, by whom
    with pytest.raises(LockBusy) as busy:
        locker.acquire("renew:mail:mx1", ttl_s=10)
    assert "renew:mail:mx1" in str(busy.value)
    assert f"pid {holder.process.pid} on {socket.gethostname()}" in str(busy.value)

    # When the holder is SIGKILLed, the lock is mine once its TTL has passed
    holder.kill()
    started = time.monotonic()
    with locker.acquire("renew:mail:mx1", ttl_s=10, blocking_s=ttl_s + 3) as lease:
        waited = time.monotonic() - started
        lease.refresh()
    assert waited <= ttl_s + 0.5
    # and the lock is free again after the with-block
    locker.acquire("renew:mail:mx1", ttl_s=1).release()


def test_check_broker_down_is_quick_and_redacted() -> None:
    # Given a broker URL with a password, on a port where nothing listens
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"

    # When I check it, Then it fails as transient within seconds, password masked
    started = time.monotonic()
    with pytest.raises(TransientError) as err:
        check_broker(url, timeout_s=2)
    assert time.monotonic() - started < 5
    assert "unreachable" in str(err.value)
    assert "127.0.0.1" in str(err.value)
    assert "hunter2secret" not in str(err.value)


def test_check_broker_wrong_password_says_so(redis_server: RedisServer) -> None:
    check_broker(redis_server.url(), timeout_s=2)
    with pytest.raises(ConfigError) as err:
        check_broker(redis_server.url(password="wrong-password"), timeout_s=2)
    assert "refused the credentials" in str(err.value)
    assert "SSLM_BROKER_URL" in str(err.value)
    assert "wrong-password" not in str(err.value)


def test_worker_without_broker_refuses_to_start(tmp_path: Path) -> None:
    # Given no SSLM_BROKER_URL (Celery would otherwise try amqp://guest@localhost)
    env = celery_env("")
    del env["SSLM_BROKER_URL"]
    env["SSL_MGR_TOPDIR"] = str(REPO)

    # When a worker is started, Then it exits at once naming the variable
    run = subprocess.run(
        [str(VENV_BIN / "celery"), "-A", "sslm_tasks", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        cwd=tmp_path,
    )
    assert run.returncode != 0
    assert "SSLM_BROKER_URL" in run.stderr


def test_ping_over_rabbitmq(services: Services, rabbitmq: RabbitMQServer) -> None:
    # Given a worker on a private RabbitMQ node. Results come back over the broker (the rpc://
    # default for amqp).
    worker = WorkerStarter(services, rabbitmq.url()).start("amqp@test", queues=["issue"])
    app = producer(rabbitmq.url())
    # When a ping is sent, Then this worker answers it through that node
    assert app.send_task("sslm.ping", queue="issue").get(timeout=10) == worker.node
    assert "issue" in rabbitmq.ctl("list_queues", "name").stdout
