"""The Celery pipeline end to end: sslm-mgr enqueues, real workers on a real Redis do the work,
openssl checks what lands on disk."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.hashes import SHA256
from services import (
    FAST_REDELIVERY,
    REPO,
    RabbitMQServer,
    RedisServer,
    Services,
    Worker,
    WorkerStarter,
    celery_env,
    control_ping_answered,
    free_port,
    producer,
    wait_for,
)
from support import chain_verifies, run_tool

from sslm_tasks.cli import remote
from sslm_tasks.cli.remote import ServiceRun
from sslm_tasks.config.remembered import FILE_NAME as REMEMBERED
from sslm_tasks.lifecycle.cert_book import FILE_NAME as CERT_BOOK
from sslm_tasks.store.layout import ServiceRef

LEAVES = ["example.com/mail-ec", "example.com/mail-rsa", "example.com/web-ec"]


@pytest.fixture
def topdir(tmp_path: Path) -> Path:
    top = tmp_path / "top"
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    return top


def worker_env(topdir: Path, **extra: str) -> dict[str, str]:
    return {"SSL_MGR_TOPDIR": str(topdir), **extra}


def cli(
    topdir: Path, broker: str | None, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = {"SSLM_BROKER_URL": broker} if broker else {}
    return run_tool("sslm-mgr", *args, cwd=topdir, env=env, timeout=timeout)


def versions(topdir: Path, svc: str) -> set[str]:
    return {p.name for p in (topdir / "certs" / svc / "db").iterdir()}


def test_cli_enqueues_renew_and_roll_and_workers_build_verifiable_chains(
    topdir: Path, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given one plain worker (every queue) on a fresh tree
    worker = workers.start("all@test", pool="prefork", concurrency=2, env=worker_env(topdir))
    # When the CLI runs the main job through the broker
    result = cli(topdir, redis_server.url(), "-renew", "-roll")
    # Then it succeeded for every service, CAs first, and the chains verify
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\n  web-ec\n" in result.stdout
    assert re.search(r"rolled \d{8}-\d\d:\d\d:\d\d to curr", result.stdout), result.stdout
    for svc in LEAVES:
        assert chain_verifies(topdir, svc), svc
    # and the work ran on the worker, not in the CLI: the worker's own output has every
    # service's steps (a CLI that ran them itself would leave it without them)
    log = worker.service.log_text()
    for ref in ("ca:my-root", "ca:my-int", *(svc.replace("/", ":") for svc in LEAVES)):
        for step in ("check", "keygen", "sign", "store", "roll", "production"):
            assert f"{ref}: step {step}" in log, (ref, step)
    # and into the shared log file too
    assert "example.com:web-ec: step store" in (topdir / "logs/sslm").read_text()
    assert (topdir / "prod-certs/example.com/web-ec/curr/bundle.pem").is_file()
    # and -s reads state directly: no worker needed
    worker.terminate()
    status = cli(topdir, redis_server.url(), "-s", "--json")
    assert status.returncode == 0
    assert len(json.loads(status.stdout)["services"]) == 5


def test_progress_bars_on_a_terminal_and_no_wait_prints_ids(
    topdir: Path, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    workers.start("all@test", env=worker_env(topdir))
    # On a terminal: a bar per service, redrawn in place
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
    env.update(SSLM_BROKER_URL=redis_server.url(), SSL_MGR_TOPDIR=str(topdir))
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "sslm-mgr"), "-renew"],
        cwd=topdir,
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    assert process.wait(timeout=30) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "\x1b[2K" in text and "[####################] 1/1 done" in text
    assert "example.com:mail-rsa" in text
    # --no-wait: one line per service with its task ids, and the work still happens
    result = cli(topdir, redis_server.url(), "-f", "-renew", "example.com:web-ec", "--no-wait")
    assert result.returncode == 0
    line = result.stdout.strip().splitlines()
    assert (
        len(line) == 1
        and line[0].startswith("example.com:web-ec ")
        and len(line[0].split()) == 1 + 1  # a private-CA service's workflow: one task
    )
    wait_for(
        "the --no-wait renew finishes",
        lambda: (topdir / "certs/example.com/web-ec/next").exists(),
        timeout_s=60,
    )
    assert chain_verifies(topdir, "example.com/web-ec", "next")


@pytest.mark.parametrize("step", ["keygen", "sign", "roll"])
def test_worker_killed_inside_a_step_redelivers_and_ends_with_one_new_version(
    tmp_path: Path, topdir: Path, redis_server: RedisServer, workers: WorkerStarter, step: str
) -> None:
    # Given a tree with current certificates (in-process) and fast redelivery
    assert cli(topdir, None, "-renew").returncode == 0
    before = versions(topdir, "example.com/web-ec")
    marker = tmp_path / "slow-started"
    slow = workers.start(
        "slow@test",
        include=["slow_steps"],
        env=worker_env(
            topdir, SLOW_STEP=step, SLOW_S="60", SLOW_MARKER=str(marker), **FAST_REDELIVERY
        ),
    )
    # When a forced renew and roll is enqueued and its worker is SIGKILLed inside the step
    sent = cli(
        topdir,
        redis_server.url(),
        "-f",
        "-renew",
        "-roll",
        "-roll-mins",
        "0",
        "example.com:web-ec",
        "--no-wait",
    )
    assert sent.returncode == 0
    wait_for(f"the {step} step starts", marker.exists, timeout_s=60)
    slow.kill()
    started = time.monotonic()
    # Then a second worker gets the step again within the visibility timeout and finishes
    # (DEBUG: its routine last step, clean, finds nothing to do and says so at DEBUG)
    spare = workers.start(
        "spare@test", env=worker_env(topdir, SSLM_LOG_LEVEL="DEBUG", **FAST_REDELIVERY)
    )
    curr = topdir / "certs/example.com/web-ec/curr"
    wait_for(
        "the roll completes on the spare worker",
        lambda: (
            os.readlink(curr).removeprefix("db/") not in before
            and "step clean" in spare.service.log_text()
        ),
        timeout_s=90,
        log=spare.service.log,
    )
    assert time.monotonic() - started < 90
    new = versions(topdir, "example.com/web-ec") - before
    assert len(new) == 1, new  # the same build, no second one
    assert os.readlink(curr) == f"db/{new.pop()}"
    assert not (topdir / "certs/example.com/web-ec/next").exists()
    assert chain_verifies(topdir, "example.com/web-ec")
    state = json.loads((topdir / "certs/example.com/web-ec/state.json").read_text())
    assert (state["phase"], state["last_error"]) == ("rolled", None)
    assert (topdir / "prod-certs/example.com/web-ec/curr/cert.pem").read_bytes() == (
        curr / "cert.pem"
    ).read_bytes()
    # and the workflow's claim is gone: a new trigger is not told "already in progress"
    again = cli(topdir, redis_server.url(), "-renew", "example.com:web-ec")
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_segment_delivered_twice_mid_build_builds_once(
    tmp_path: Path, topdir: Path, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given current certificates, and a worker that pauses right after its keygen step
    assert cli(topdir, None, "-renew").returncode == 0
    before = versions(topdir, "example.com/web-ec")
    marker = tmp_path / "keygen-done"
    workers.start(
        "slow@test",
        pool="prefork",
        concurrency=2,
        include=["slow_steps"],
        env=worker_env(
            topdir, SLOW_STEP="keygen", SLOW_AFTER="1", SLOW_S="3", SLOW_MARKER=str(marker)
        ),
    )
    # When a forced renew is enqueued, and while its walk is inside the build the very same
    # message is delivered once more (as after a lost acknowledgement)
    sent = cli(topdir, redis_server.url(), "-f", "-renew", "example.com:web-ec", "--no-wait")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    first_id = sent.stdout.split()[1]
    wait_for("the build is inside keygen", marker.exists, timeout_s=60)
    app = producer(redis_server.url())
    state = app.backend.get_task_meta(first_id)  # not done yet: the walk is paused
    assert state["status"] == "PENDING"
    options = {"force": True, "dev": {}, "min_roll_mins": None, "clean_keep": None}
    replay = app.send_task(
        "sslm.lifecycle.walk",
        (None,),
        {
            "group": "example.com",
            "service": "web-ec",
            "options": options,
            "plan": {"renew": True, "roll": False, "acme": False},
            "index": 0,
        },
        queue="issue",
        root_id=first_id,
    )
    replayed = replay.get(timeout=60)
    # Then the replay waited for the build's lock and did not build again
    assert "of this run is done" in " ".join(replayed["walk"]["said"]), replayed
    wait_for(
        "the first delivery finishes",
        lambda: app.backend.get_task_meta(first_id)["status"] == "SUCCESS",
        timeout_s=60,
    )
    new = versions(topdir, "example.com/web-ec") - before
    assert len(new) == 1, new
    assert os.readlink(topdir / "certs/example.com/web-ec/next") == f"db/{new.pop()}"
    state = json.loads((topdir / "certs/example.com/web-ec/state.json").read_text())
    assert state["last_error"] is None


def test_two_triggers_at_once_one_works_the_other_reports_in_progress(
    tmp_path: Path, topdir: Path, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    assert cli(topdir, None, "-renew").returncode == 0
    before = versions(topdir, "example.com/web-ec")
    workers.start(
        "slow@test",
        pool="prefork",
        concurrency=2,
        include=["slow_steps"],
        env=worker_env(topdir, SLOW_STEP="keygen", SLOW_S="3", SLOW_MARKER=str(tmp_path / "m")),
    )
    # When two forced renews of one service are triggered at the same time
    env = {"SSLM_BROKER_URL": redis_server.url(), "SSL_MGR_TOPDIR": str(topdir)}
    cmd = [str(Path(sys.executable).parent / "sslm-mgr"), "-f", "-renew", "example.com:web-ec"]
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
    first = subprocess.Popen(
        cmd, cwd=topdir, env={**clean_env, **env}, stdout=subprocess.PIPE, text=True
    )
    second = subprocess.Popen(
        cmd, cwd=topdir, env={**clean_env, **env}, stdout=subprocess.PIPE, text=True
    )
    outputs = [first.communicate(timeout=120)[0], second.communicate(timeout=120)[0]]
    codes = sorted([first.returncode, second.returncode])
    # Then one did the work and the other said it was already in progress (exit 3)
    assert codes == [0, 3], outputs
    assert sum("already in progress" in out for out in outputs) == 1, outputs
    assert len(versions(topdir, "example.com/web-ec") - before) == 1


def test_broker_down_or_wrong_password_is_one_line_and_nonzero(
    topdir: Path, redis_server: RedisServer
) -> None:
    down = cli(topdir, f"redis://:secret@127.0.0.1:{free_port()}/0", "-renew", timeout=30)
    assert down.returncode == 1
    assert len(down.stderr.strip().splitlines()) == 1 and "unreachable" in down.stderr
    assert "secret" not in down.stderr
    refused = cli(topdir, redis_server.url(password="wrong"), "-renew", timeout=30)
    assert refused.returncode == 2 and "refused the credentials" in refused.stderr
    assert not (topdir / "certs").exists()


def test_beat_scans_every_service_and_follows_conf_d(
    tmp_path: Path,
    topdir: Path,
    services: Services,
    redis_server: RedisServer,
    workers: WorkerStarter,
) -> None:
    # Given a worker and beat with short intervals on a fresh tree
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text().replace("min_roll_mins = 90", "min_roll_mins = 0"))
    fast = {"SSLM_RENEW_CHECK_EVERY_S": "2", "SSLM_ROLL_CHECK_EVERY_S": "1"}
    worker = workers.start(
        "all@test", pool="prefork", concurrency=2, env=worker_env(topdir, **fast)
    )
    env = celery_env(redis_server.url(), SSL_MGR_TOPDIR=str(topdir), **fast)
    beat = services.spawn(
        "beat",
        ["sh", "beat/beat.sh", "--loglevel", "DEBUG"],
        env={**env, "SSLM_BEAT_SCHEDULE": str(tmp_path / "schedule")},
    )
    wait_for(
        "beat starts", lambda: "beat: Starting..." in beat.log_text(), timeout_s=30, log=beat.log
    )
    # Then every configured service gets its certificate without any CLI call
    wait_for(
        "beat-driven renewals",
        lambda: (
            all(
                chain_verifies(topdir, s)
                for s in LEAVES
                if (topdir / "certs" / s / "curr/cert.pem").exists()
            )
            and all((topdir / "certs" / s / "curr/cert.pem").exists() for s in LEAVES)
        ),
        timeout_s=120,
        log=beat.log,
    )
    # from the three scans: beat holds no entry per service
    assert "sslm.renew.scan" in beat.log_text()
    assert "renew-check" not in beat.log_text()
    # and a scan with nothing due sends nothing: no walk starts once all are issued
    time.sleep(3)
    walks = worker.service.log_text().count("step check")
    time.sleep(5)  # two more renew scans
    assert worker.service.log_text().count("step check") == walks
    # and the scans keep the whole tree's load for the next ones (conf.d is long past the racy
    # window by now), which the edit below must not hide
    assert (topdir / "certs" / REMEMBERED).is_file()
    # and the renew scan keeps the details -s shows of every certificate it checked
    book = json.loads((topdir / "certs" / CERT_BOOK).read_text())["entries"]
    for leaf in LEAVES:
        pem = (topdir / "certs" / leaf / "curr/cert.pem").read_bytes()
        assert x509.load_pem_x509_certificate(pem).fingerprint(SHA256()).hex() in book, leaf
    # When a service is added to conf.d, the next scan issues it without a restart
    (topdir / "conf.d/example.com/web2").write_text(
        (topdir / "conf.d/example.com/web-ec")
        .read_text()
        .replace("service = 'web-ec'", "service = 'web2'")
    )
    main.write_text(main.read_text().replace("'web-ec']", "'web-ec', 'web2']"))
    wait_for(
        "the new service is issued",
        lambda: (topdir / "certs/example.com/web2/curr/cert.pem").exists(),
        timeout_s=60,
        log=beat.log,
    )
    # And a next with a due roll is rolled by beat's roll scan (which may come before this
    # test could read next: the renewal alone never moves curr, so a new curr proves the roll)
    curr = topdir / "certs/example.com/mail-ec/curr"
    before = os.readlink(curr)
    forced = cli(
        topdir, redis_server.url(), "-f", "-renew", "-roll-mins", "0", "example.com:mail-ec"
    )
    assert forced.returncode == 0, forced.stdout + forced.stderr
    wait_for(
        "beat rolls the due next",
        lambda: os.readlink(curr) != before,
        timeout_s=60,
        log=beat.log,
    )
    # And so is a waiting next whose record says idle, as in a tree migrated from ssl-mgr
    web = topdir / "certs/example.com/web-ec"
    before = os.readlink(web / "curr")
    held = cli(
        topdir, redis_server.url(), "-f", "-renew", "-roll-mins", "1000", "example.com:web-ec"
    )
    assert held.returncode == 0, held.stdout + held.stderr
    assert os.readlink(web / "curr") == before
    record = json.loads((web / "state.json").read_text())
    (web / "state.json").write_text(json.dumps({**record, "phase": "idle", "roll_due": None}))
    wait_for(
        "beat rolls the migrated next",
        lambda: os.readlink(web / "curr") != before,
        timeout_s=60,
        log=beat.log,
    )


def smtp_in_berlin(tmp_path: Path, topdir: Path) -> Path:
    """smtp on this host, of site "berlin", restarted for every certificate change by a script
    that logs its site and arguments; the tree's first certificates issued in-process. Returns
    the restarts' log (empty)."""
    log = tmp_path / "restarts.log"
    script = tmp_path / "restart.sh"
    script.write_text(f'#!/bin/sh\necho "$SSLM_SITE $*" >> {log}\n')
    script.chmod(0o755)
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text()
        + f"""
[sites]
    berlin = ['localhost']

[smtp]
    servers = ['localhost']
    restart_cmd = '{script} smtp'
    depends = ['cert']
"""
    )
    assert cli(topdir, None, "-renew").returncode == 0
    log.unlink()
    return log


def start_berlin_deployer(topdir: Path, workers: WorkerStarter) -> Worker:
    return workers.start(
        f"deploy-berlin@{socket.gethostname()}",
        script="workers/deploy.sh",
        ping_queue="deploy.berlin",
        env=worker_env(topdir, SSLM_SITE="berlin"),
    )


def test_deploys_run_on_the_deploy_worker_of_the_servers_site(
    tmp_path: Path, topdir: Path, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given smtp served from site "berlin", an issue worker and berlin's deploy worker
    log = smtp_in_berlin(tmp_path, topdir)
    host = socket.gethostname()
    workers.start(f"issue@{host}", script="workers/issue.sh", env=worker_env(topdir))
    berlin = start_berlin_deployer(topdir, workers)
    # When a service changes through the broker
    result = cli(topdir, redis_server.url(), "-f", "-renew", "example.com:mail-ec")
    # Then the restart ran once, on berlin's deploy worker, and the CLI reports it
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Deployed smtp:localhost" in result.stdout
    assert log.read_text().splitlines() == ["berlin smtp"]
    assert "sslm.deploy.server" in berlin.service.log_text()


def test_a_fan_out_that_fails_for_a_moment_is_tried_again_from_what_the_walk_did(
    tmp_path: Path, topdir: Path, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given smtp served from berlin, berlin's deploy worker, and an issue worker whose first
    # fan-out fails as in a Redis outage (fanout_faults)
    log = smtp_in_berlin(tmp_path, topdir)
    marker = tmp_path / "fanout-failed"
    fault = {"FANOUT_FAULT": "transient", "FANOUT_MARKER": str(marker)}
    issue = workers.start(
        f"issue@{socket.gethostname()}",
        script="workers/issue.sh",
        include=["fanout_faults"],
        env=worker_env(topdir, **fault),
    )
    start_berlin_deployer(topdir, workers)
    # When a service changes through the broker
    result = cli(topdir, redis_server.url(), "-f", "-renew", "example.com:mail-ec")
    # Then the fan-out failed once and was tried again with what the walk had changed (a walk
    # run again would find nothing to change and deploy nothing): the server was deployed once
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker.exists()
    assert "fan-out: choosing servers: redis unreachable" in issue.service.log_text()
    assert "Deployed smtp:localhost" in result.stdout
    assert log.read_text().splitlines() == ["berlin smtp"]


def test_a_failed_fan_out_fails_its_workflow_not_the_services_record_nor_what_it_signs(
    tmp_path: Path, topdir: Path, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given current certificates, and a worker whose every fan-out fails (fanout_faults)
    assert cli(topdir, None, "-renew").returncode == 0
    workers.start(
        "all@test",
        include=["fanout_faults"],
        env=worker_env(topdir, FANOUT_FAULT="permanent"),
    )
    # When a CA and a service it signs are renewed through the broker
    result = cli(topdir, redis_server.url(), "-f", "-renew", "ca:my-int", "example.com:mail-ec")
    # Then both workflows failed at their fan-out, and the run says so
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count("fan-out: choosing servers: the test says no") == 2, result.stdout
    # and the service went ahead once its CA's walk was done: it has a new certificate
    assert "not started" not in result.stdout, result.stdout
    for svc in ("ca/my-int", "example.com/mail-ec"):
        assert (topdir / f"certs/{svc}/next").is_symlink(), svc
        # and no step failed: the records say nothing of the fan-out
        state = json.loads((topdir / f"certs/{svc}/state.json").read_text())
        assert (state["last_error"], state["failures"]) == (None, {}), svc


def test_the_cli_follows_what_a_ca_signs_when_only_the_cas_fan_out_failed(
    redis_server: RedisServer,
) -> None:
    # Given a CA's workflow whose walk succeeded and whose fan-out failed, and a service it
    # signs whose walk has not ended yet (results in a real Redis, as workers store them)
    app = producer(redis_server.url())
    ca = ServiceRun(ServiceRef("ca", "my-int"), ["renew"], ["ca-walk"])
    leaf = ServiceRun(ServiceRef("example.com", "mail-ec"), ["renew"], ["leaf-walk"], after=ca)
    walked = {"walk": {"said": ["renewing: forced"]}, "busy": False, "changed": True}
    failed = {**walked, "deploys": [], "fanout_error": "choosing servers: no"}
    app.backend.store_result("ca-walk", failed, "SUCCESS")
    # When the CLI looks
    assert not remote.wait(app, [ca, leaf], timeout_s=0.2, out=io.StringIO())
    # Then the CA failed, and the service still runs: its walk went ahead, as the CA's did
    assert ca.error == "fan-out: choosing servers: no"
    assert (leaf.error, leaf.current) == (None, "renew")
    # and once that walk ends, the service is done, and the report says both
    app.backend.store_result(
        "leaf-walk", {**walked, "deploys": [], "fanout_error": None}, "SUCCESS"
    )
    assert remote.wait(app, [ca, leaf], timeout_s=10, out=io.StringIO())
    outcomes = remote.report(app, [ca, leaf]).outcomes
    assert [outcome.ok for outcome in outcomes] == [False, True]


def test_a_deploy_worker_killed_inside_a_deploy_redelivers_and_the_server_is_deployed_once(
    tmp_path: Path, topdir: Path, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given mail-ec served by a server whose first restart hangs (it says when it starts),
    # an issue worker and a deploy worker with fast redelivery
    started, restarts = tmp_path / "restart-started", tmp_path / "restarts.log"
    script = tmp_path / "restart.sh"
    script.write_text(
        f"#!/bin/sh\necho restart >> {restarts}\n"
        f"if [ ! -e {started} ]; then touch {started}; sleep 60; fi\n"
    )
    script.chmod(0o755)
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text()
        + f"""
[smtp]
    servers = ['localhost']
    restart_cmd = '{script}'
    svc_depends = [['example.com', ['mail-ec']]]
"""
    )
    started.touch()  # the first certificates (in-process) are deployed without the hang
    assert cli(topdir, None, "-renew").returncode == 0
    started.unlink()
    restarts.unlink()
    (topdir / "certs/.deploys.json").unlink()
    host = socket.gethostname()
    fast = worker_env(topdir, **FAST_REDELIVERY)
    workers.start(f"issue@{host}", script="workers/issue.sh", env=fast)
    deployer = workers.start(
        f"deploy-default@{host}", script="workers/deploy.sh", ping_queue="deploy.default", env=fast
    )
    # When a change is enqueued and the deploy worker is SIGKILLed inside the restart
    sent = cli(topdir, redis_server.url(), "-f", "-renew", "example.com:mail-ec", "--no-wait")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_for("the restart starts", started.exists, timeout_s=60, log=deployer.service.log)
    deployer.kill()
    # Then a new deploy worker (the site's, under its name) gets the deploy again and finishes it
    spare = workers.start(
        f"deploy-default@{host}", script="workers/deploy.sh", ping_queue="deploy.default", env=fast
    )
    ledger = topdir / "certs/.deploys.json"
    wait_for(
        "the spare deploy worker deploys the server",
        lambda: ledger.is_file() and json.loads(ledger.read_text())["smtp:localhost"]["ok"],
        timeout_s=90,
        log=spare.service.log,
    )
    # once more only: the killed restart and the one that finished
    assert restarts.read_text().splitlines() == ["restart", "restart"]
    assert "sslm.deploy.server" in spare.service.log_text()
    status = cli(topdir, None, "-s", "example.com:mail-ec")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "deploy : smtp:localhost: ok at" in status.stdout, status.stdout


def test_the_pipeline_runs_on_rabbitmq_too(
    topdir: Path, services: Services, redis_server: RedisServer, rabbitmq: RabbitMQServer
) -> None:
    # Given a private RabbitMQ node as broker, and Redis for results
    broker = rabbitmq.url()
    backend = {"SSLM_RESULT_BACKEND": redis_server.url()}
    # Started without the starter's ping task: that one waits for its result over the
    # broker, while these workers store results in Redis; a control ping needs no backend.
    WorkerStarter(services, broker).start(
        "amqp@test",
        pool="prefork",
        concurrency=2,
        wait=False,
        env=worker_env(topdir, **backend),
    )
    app = producer(broker)
    wait_for(
        "the amqp worker answers", lambda: control_ping_answered(app, "amqp@test"), timeout_s=30
    )
    # When the CLI runs the main job through it
    result = run_tool(
        "sslm-mgr",
        "-renew",
        "-roll",
        cwd=topdir,
        env={"SSLM_BROKER_URL": broker, **backend},
        timeout=120,
    )
    # Then the same certificates land on disk
    assert result.returncode == 0, result.stdout + result.stderr
    for svc in LEAVES:
        assert chain_verifies(topdir, svc), svc
