"""docker-compose.yml without Docker: it validates offline, and every service's command runs.

No Docker engine runs here, so the file is checked against the compose-spec schema (and by
Debian's docker-compose 1.29 when installed), and each service's launch script is started as
a local process against a private redis-server: the same command the container would run.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from services import (
    REPO,
    START_TIMEOUT_S,
    RedisServer,
    Services,
    WorkerStarter,
    celery_env,
    free_port,
    producer,
    require_binary,
    start_beat,
    wait_for,
)

pytestmark = pytest.mark.integration

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
HOST = socket.gethostname()


def test_compose_file_matches_the_compose_spec() -> None:
    checker = require_binary("check-jsonschema")
    run = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_docker_compose_accepts_the_file_with_the_example_env() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("Debian's docker-compose is not installed (the schema test still ran)")
    run = subprocess.run(
        [binary, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_env_example_lists_exactly_the_variables_compose_reads() -> None:
    # ${VAR...} is interpolated by compose; $${VAR} is an escape left to the container's shell.
    read = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    listed = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert read, "found no variables in docker-compose.yml"
    assert read - listed == set(), "read by compose but missing from .env.example"
    assert listed - read == set(), "listed in .env.example but read by nothing"


def test_every_sslm_service_runs_a_launch_script_of_the_repository() -> None:
    services = YAML(typ="safe").load(COMPOSE.read_text())["services"]
    commands = {name: spec["command"] for name, spec in services.items() if name != "redis"}
    assert commands == {
        "worker-issue": ["sh", "workers/issue.sh"],
        "worker-deploy": ["sh", "workers/deploy.sh"],
        "beat": ["sh", "beat/beat.sh"],
        "flower": ["sh", "workers/flower.sh"],
    }
    for _, script in commands.values():
        assert (REPO / script).is_file()
    # Scalable: compose refuses --scale with a fixed name or host port.
    assert "container_name" not in services["worker-deploy"]
    assert "ports" not in services["worker-deploy"]


def _healthcheck(script: str, *args: str, broker_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", script, *args],
        env=celery_env(broker_url),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_worker_scripts_run_outside_docker(workers: WorkerStarter) -> None:
    # Given the compose services' own commands, started as local processes
    issue = workers.start(f"issue@{HOST}", script="workers/issue.sh", wait=False)
    deploy = workers.start(
        f"deploy-paris@{HOST}", script="workers/deploy.sh", wait=False, env={"SSLM_SITE": "paris"}
    )

    # Then each answers on its queues
    workers.wait_ready(issue, "issue")
    workers.wait_ready(deploy, "deploy.paris")
    workers.wait_ready(issue, "dns")
    # and the compose health checks pass for them and fail for a worker that is not there
    for node in ("issue", "deploy-paris"):
        run = _healthcheck("workers/healthcheck.sh", node, broker_url=workers.broker_url)
        assert run.returncode == 0, run.stdout + run.stderr
    absent = _healthcheck(
        "workers/healthcheck.sh", "deploy-lyon", "--timeout", "2", broker_url=workers.broker_url
    )
    assert absent.returncode != 0


def test_beat_script_runs_outside_docker(
    services: Services, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Given beat/beat.sh with its schedule in a writable directory
    schedule = tmp_path / "beat" / "celerybeat-schedule"
    schedule.parent.mkdir()
    beat = start_beat(services, redis_server.url(), schedule)

    # Then it keeps its schedule there, its health check passes, and it stops cleanly
    wait_for(
        "beat writes its schedule file",
        lambda: any(schedule.parent.iterdir()),
        timeout_s=10,
        log=beat.log,
    )
    run = _healthcheck("beat/healthcheck.sh", broker_url=redis_server.url())
    assert run.returncode == 0, run.stdout + run.stderr
    assert beat.alive
    assert beat.terminate() == 0, beat.log_text()


def _get(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_flower_script_requires_basic_auth_and_names_our_tasks(
    services: Services, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given workers/flower.sh on a free loopback port with a login, and a worker
    worker = workers.start("flowered@test", queues=["deploy.default"], include=["probe_tasks"])
    port = free_port()
    env = celery_env(
        redis_server.url(),
        FLOWER_PORT=str(port),
        FLOWER_ADDRESS="127.0.0.1",
        FLOWER_BASIC_AUTH="ops:s3cret-pw",
    )
    flower = services.spawn("flower", ["sh", "workers/flower.sh"], env=env)
    base = f"http://127.0.0.1:{port}"
    wait_for(
        "flower answers its health check",
        lambda: _reachable(f"{base}/healthcheck"),
        timeout_s=START_TIMEOUT_S,
        log=flower.log,
        alive=lambda: flower.alive,
    )

    # Then its pages and API need the login
    assert _get(f"{base}/api/workers?refresh=0") == 401
    assert _get(f"{base}/", auth="ops:wrong") == 401
    assert _get(f"{base}/api/workers?refresh=0", auth="ops:s3cret-pw") == 200
    assert _get(f"{base}/", auth="ops:s3cret-pw") == 200

    # and it shows a task by its name, arguments and worker. Workers send task events only
    # once Flower has switched them on (it does so for every worker it sees), so send probes
    # until one is seen.
    app = producer(redis_server.url())
    task: Any = None
    deadline = time.monotonic() + 30
    while task is None and time.monotonic() < deadline:
        sent = app.send_task("sslm.deploy.test_probe", kwargs={"site": "default"})
        assert sent.get(timeout=10) == worker.node
        task = fetch_json(f"{base}/api/task/info/{sent.id}", auth="ops:s3cret-pw", timeout_s=2)
    assert task is not None, "Flower never showed a probe task: task events not enabled?"
    assert (task["name"], task["state"], task["worker"]) == (
        "sslm.deploy.test_probe",
        "SUCCESS",
        worker.node,
    )
    assert "'site': 'default'" in task["kwargs"]


def test_flower_script_refuses_to_run_without_a_login(redis_server: RedisServer) -> None:
    run = subprocess.run(
        ["sh", "workers/flower.sh"],
        env=celery_env(redis_server.url()),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode != 0
    assert "FLOWER_BASIC_AUTH" in run.stderr


def fetch_json(url: str, *, auth: str, timeout_s: float) -> Any:
    """GET ``url`` until it shows a finished task; None after ``timeout_s``."""
    request = urllib.request.Request(url)
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    answer: list[Any] = []

    def fetched() -> bool:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                answer.append(json.load(response))
        except urllib.error.HTTPError:
            return False
        return bool(answer and answer[-1].get("state") == "SUCCESS")

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fetched():
            return answer[-1]
        time.sleep(0.2)
    return None


def _reachable(url: str) -> bool:
    try:
        return _get(url) == 200
    except OSError:
        return False
