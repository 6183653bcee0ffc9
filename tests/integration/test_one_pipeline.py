"""One pipeline: a renew and a roll of a DANE service deployed to two servers run the same
steps, in the same order, in-process and on workers (each step logs ``<where>: step <name>``).

The walk of the service must match exactly. The finish is compared in its own shape: the zone
refresh first; then every server's deploy before its verify (the two servers' deploys run side
by side on workers, so their relative order is free); then the retirement of the old TLSA
records and the refresh that publishes it.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from lab_dane import write_topdir
from lab_dns import DnsLab
from services import RedisServer, WorkerStarter, wait_for
from support import run_tool

SERVICE = "example.test:mail"
SERVERS = ("smtp:localhost", "imap:localhost")
STEP = re.compile(r"(?P<where>\S+): step (?P<step>\w+)")


def with_two_servers(top: Path, tmp_path: Path) -> Path:
    """Two server classes on this host, each restarting by appending to a file."""
    log = tmp_path / "restarts.log"
    main = top / "conf.d/ssl-mgr.conf"
    for server_class in ("smtp", "imap"):
        main.write_text(
            main.read_text()
            + f"""
[{server_class}]
    servers = ['localhost']
    restart_cmd = 'sh -c "echo {server_class} >> {log}"'
    svc_depends = [['example.test', ['mail']]]
"""
        )
    return top


def steps_of(text: str) -> list[tuple[str, str]]:
    return [(m["where"], m["step"]) for m in STEP.finditer(text)]


def shape(trace: list[tuple[str, str]]) -> dict[str, object]:
    """The service's own walk in order, each server's steps in order, and the order of the
    finish's service-wide steps around them."""
    walk = [step for where, step in trace if where == SERVICE]
    servers = {server: [step for where, step in trace if where == server] for server in SERVERS}
    finish = [
        "deploys" if where in SERVERS else step
        for where, step in trace
        if where == "example.test" or where in SERVERS
    ]
    collapsed = [step for i, step in enumerate(finish) if i == 0 or step != finish[i - 1]]
    return {"walk": walk, "servers": servers, "finish": collapsed}


def run(topdir: Path, broker: str | None, *args: str) -> None:
    # DEBUG: the routine steps that found nothing to do are part of the walk compared here
    env = {"SSLM_LOG_LEVEL": "DEBUG", **({"SSLM_BROKER_URL": broker} if broker else {})}
    done = run_tool("sslm-mgr", *args, cwd=topdir, env=env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_renew_and_a_roll_walk_the_same_steps_in_process_and_on_workers(
    tmp_path: Path, dns_lab: DnsLab, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a DANE service with a first certificate, deployed to two servers
    local = with_two_servers(write_topdir(tmp_path / "local", dns_lab), tmp_path)
    run(local, None, "-renew", "-roll")
    remote = tmp_path / "remote"
    shutil.copytree(local, remote, symlinks=True)
    log = local / "logs/sslm"

    # When it is renewed, then rolled: the first roll sees the new records on every NS, the
    # second (2 x TTL later) rolls
    def in_process(*args: str) -> list[tuple[str, str]]:
        start = len(log.read_text())
        run(local, None, *args)
        return steps_of(log.read_text()[start:])

    local_renew = in_process("-f", "-renew", SERVICE)
    time.sleep(1)
    local_look = in_process("-roll", SERVICE)
    time.sleep(2.5)
    local_roll = in_process("-roll", SERVICE)

    # And the same happens to its copy through a worker
    worker = workers.start(
        "all@parity", env={"SSL_MGR_TOPDIR": str(remote), "SSLM_LOG_LEVEL": "DEBUG"}
    )

    def on_workers(*args: str, done: Callable[[str], bool]) -> list[tuple[str, str]]:
        start = len(worker.service.log_text())
        run(remote, redis_server.url(), *args)
        # the deploys and the refreshes after them end after the chains the CLI follows
        wait_for(
            "the workers' finish",
            lambda: done(worker.service.log_text()[start:]),
            timeout_s=60,
            log=worker.service.log,
        )
        return steps_of(worker.service.log_text()[start:])

    refresh = "example.test: step dns_refresh"
    remote_renew = on_workers("-f", "-renew", SERVICE, done=lambda text: refresh in text)
    time.sleep(1)
    remote_look = on_workers("-roll", SERVICE, done=lambda text: True)
    time.sleep(2.5)
    remote_roll = on_workers(
        "-roll",
        SERVICE,
        done=lambda text: refresh in text.partition(f"{SERVICE}: step retire_tlsa")[2],
    )

    # Then both walked the same steps in the same order
    assert shape(local_renew) == shape(remote_renew)
    assert shape(local_look) == shape(remote_look)
    assert shape(local_roll) == shape(remote_roll)
    assert shape(local_look)["walk"] == ["roll_gate", "production", "tlsa", "clean"]
    # and the roll did the whole lifecycle, the finish included
    rolled = shape(local_roll)
    assert rolled["walk"] == ["roll_gate", "roll", "production", "tlsa", "clean", "retire_tlsa"]
    assert rolled["servers"] == {server: ["deploy", "verify"] for server in SERVERS}
    # (the roll changes no TLSA record: next's become curr's and curr's stay as prev's until
    # the servers took the new certificate, so the first refresh comes after the retirement)
    assert rolled["finish"] == ["deploys", "dns_refresh"]
