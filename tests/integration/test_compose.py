"""docker-compose.yml without Docker: it validates offline, its rules hold, every command runs.

No Docker engine runs here, so the file is checked against the compose-spec schema and by
Debian's docker-compose 1.29, its structure is checked here (who mounts the store, where the
secrets come from, how long a worker may take to stop, what the build context holds), and
each service's command and health check are run as local processes against a private
redis-server: the same commands the containers run.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from exporter import clean_env
from ruamel.yaml import YAML
from services import (
    REPO,
    START_TIMEOUT_S,
    VENV_BIN,
    RedisServer,
    Services,
    WorkerStarter,
    celery_env,
    free_port,
    producer,
    require_binary,
    unavailable,
    wait_for,
)
from support import LOG_LINE, RunMgr

pytestmark = pytest.mark.integration

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
HOST = socket.gethostname()
IMAGE = "sslm:local"
#: Where the store is mounted in every container that has it.
STORE = "/srv/ssl-mgr/certs"
SCRIPTS = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def env_example() -> dict[str, str]:
    text = ENV_EXAMPLE.read_text()
    return dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", text, re.M))


def load_compose(text: str | None = None) -> dict[str, Any]:
    """The compose file as compose reads it with the example .env: variables interpolated
    (``${VAR:-default}``: the .env value unless empty), ``$$`` unescaped, anchors merged."""
    values = env_example()

    def interpolate(match: re.Match[str]) -> str:
        return values.get(match["name"]) or (match["default"] or "")

    raw = COMPOSE.read_text() if text is None else text
    raw = re.sub(r"(?<!\$)\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}", interpolate, raw)
    loaded: dict[str, Any] = YAML(typ="safe").load(raw.replace("$$", "$"))
    return loaded


def sslm_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in config["services"].items() if spec["image"] == IMAGE}


def mount_targets(spec: dict[str, Any]) -> set[str]:
    return {volume.split(":")[1] for volume in spec.get("volumes", [])}


def health_argv(spec: dict[str, Any]) -> list[str]:
    """The command of a service's health check, as a list of words."""
    test = spec["healthcheck"]["test"]
    return list(test[1:]) if test[0] == "CMD" else shlex.split(test[1])


# --- the file, offline ---------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    checker = require_binary("check-jsonschema")
    run = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def compose_config(compose: Path) -> dict[str, Any]:
    """What Debian's docker-compose makes of ``compose`` with the example .env."""
    compose_args = ["-f", str(compose), "--env-file", str(ENV_EXAMPLE), "config"]
    run = subprocess.run(
        [require_binary("docker-compose"), *compose_args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=compose.parent,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    config: dict[str, Any] = YAML(typ="safe").load(run.stdout)
    return config


def test_docker_compose_accepts_the_file_with_the_example_env() -> None:
    services = compose_config(COMPOSE)["services"]
    assert set(services) == {
        "redis",
        "store-init",
        "worker-issue",
        "worker-deploy",
        "beat",
        "flower",
        "metrics",
    }


def test_a_site_is_one_block_as_the_file_shows(tmp_path: Path) -> None:
    # Given the compose file with its commented example site "paris" taken in, as its
    # comment tells an operator to do
    lines = COMPOSE.read_text().splitlines()
    start = lines.index("  # worker-deploy-paris:")
    end = lines.index("", start)
    secrets = lines.index("  # paris_ssh_key:")
    for index in [*range(start, end), *range(secrets, secrets + 4)]:
        lines[index] = lines[index].replace("# ", "", 1)
    variant = tmp_path / "docker-compose.yml"
    variant.write_text("\n".join(lines) + "\n")

    # When compose reads it
    services = compose_config(variant)["services"]

    # Then paris's deploy worker is the default site's, with its own queue and ssh secrets
    paris, default = services["worker-deploy-paris"], services["worker-deploy"]
    assert paris["command"] == ["sslm-worker", "--site", "paris"]
    assert paris["healthcheck"]["test"] == [
        "CMD",
        "sslm-mgr",
        "--health",
        "--queue",
        "deploy.paris",
    ]
    assert paris["secrets"] == [
        {"source": "redis_password"},
        {"source": "paris_ssh_key", "target": "ssh_key"},
        {"source": "paris_ssh_known_hosts", "target": "ssh_known_hosts"},
    ]
    different = {"command", "healthcheck", "secrets"}
    assert {k: v for k, v in paris.items() if k not in different} == {
        k: v for k, v in default.items() if k not in different
    }


def test_env_example_lists_exactly_the_variables_compose_reads() -> None:
    # ${VAR...} is interpolated by compose; $${VAR} is an escape left to the container's shell.
    read = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    listed = set(env_example())
    assert read, "found no variables in docker-compose.yml"
    assert read - listed == set(), "read by compose but missing from .env.example"
    assert listed - read == set(), "listed in .env.example but read by nothing"


def test_every_command_and_health_check_is_a_program_of_the_image() -> None:
    # Programs in the image: the package's console scripts, what the Dockerfile copies to a
    # program folder, and the base image's python.
    dockerfile = DOCKERFILE.read_text()
    copied = set(re.findall(r"^COPY \S+ /usr/local/bin/(\S+)$", dockerfile, re.M))
    assert re.search(r"^FROM python:", dockerfile, re.M)
    in_image = SCRIPTS | copied | {"python"}
    entrypoint = re.search(r'^ENTRYPOINT \["(\S+)"\]$', dockerfile, re.M)
    assert entrypoint is not None and entrypoint[1] in copied
    for name, spec in sslm_services(load_compose()).items():
        assert spec["command"][0] in SCRIPTS, name
        if spec.get("restart") == "no":
            continue  # store-init: runs once, has nothing to check
        assert health_argv(spec)[0] in in_image, name


def test_the_deploy_worker_scales() -> None:
    # compose refuses --scale with a fixed name or host port
    deploy = load_compose()["services"]["worker-deploy"]
    assert "container_name" not in deploy
    assert "ports" not in deploy


def test_only_the_workers_mount_the_store() -> None:
    config = load_compose()
    prod = env_example()["SSLM_PROD_CERT_DIR"]
    services = config["services"]
    holding = {name for name, spec in services.items() if mount_targets(spec) & {STORE, prod}}
    # store-init: the one-shot root job that gives the store to the workers' user; metrics:
    # reads it, see the next test
    assert holding == {"worker-issue", "worker-deploy", "store-init", "metrics"}
    assert "volumes" not in services["flower"]
    assert mount_targets(services["beat"]) == {"/srv/ssl-mgr/conf.d", "/var/lib/sslm/beat"}


def test_the_metrics_read_the_store_as_a_user_who_can_read_no_key() -> None:
    metrics = load_compose()["services"]["metrics"]
    # every mount read-only: the configuration, the store, the production tree
    assert all(volume.endswith(":ro") for volume in metrics["volumes"])
    prod = env_example()["SSLM_PROD_CERT_DIR"]
    assert mount_targets(metrics) == {"/srv/ssl-mgr/conf.d", STORE, prod}
    # not the store's owner (who may read its own 0600 keys), in the store's group (which may
    # read the records and the production certificates); tests/integration/test_metrics.py
    # runs sslm-metrics so and checks what it can and cannot read
    user, group = metrics["user"].split(":")
    assert user not in ("0", "10001") and group == "10001"
    assert "secrets" not in metrics


def test_secrets_are_declared_and_passwords_reach_services_only_as_files() -> None:
    config = load_compose()
    declared = set(config["secrets"])
    used: set[str] = set()
    for name, spec in config["services"].items():
        mounted: set[str] = set()
        for secret in spec.get("secrets", []):
            source = secret if isinstance(secret, str) else secret["source"]
            target = secret if isinstance(secret, str) else secret.get("target", source)
            assert source in declared, f"{name} uses the undeclared secret {source}"
            used.add(source)
            mounted.add(f"/run/secrets/{target}")
        environment = spec.get("environment", {})
        for key, value in environment.items():
            if key.endswith("_FILE"):
                assert value in mounted, f"{name}: {key} names no secret it mounts"
            assert not re.search(r"PASSWORD|AUTH|SECRET", key) or key.endswith("_FILE"), key
        if "SSLM_BROKER_URL" in environment:
            assert urlsplit(environment["SSLM_BROKER_URL"]).password is None, name
    assert used == declared, "declared but used by no service"
    for secret in config["secrets"].values():
        assert secret["file"].startswith("./secrets/")


def _seconds(duration: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(number) * {"s": 1, "m": 60, "h": 3600}[unit]


def test_workers_get_longer_to_stop_than_a_task_may_run() -> None:
    limit_s = int(env_example()["SSLM_TASK_TIME_LIMIT_S"])
    workers = {
        name: spec
        for name, spec in sslm_services(load_compose()).items()
        if spec["command"][0] == "sslm-worker"
    }
    assert set(workers) == {"worker-issue", "worker-deploy"}
    for name, spec in workers.items():
        assert str(spec["environment"]["SSLM_TASK_TIME_LIMIT_S"]) == str(limit_s)
        assert _seconds(spec["stop_grace_period"]) > limit_s, name


CONTEXT_FILES = [
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "docker/entrypoint.sh",
    "sslm_tasks/__init__.py",
    "sslm_tasks/__pycache__/__init__.cpython-311.pyc",
    "certs/ca/my-root/db/20261127-18:01:52/privkey.pem",
    "prod-certs/example.com/mail-ec/curr/privkey.pem",
    "secrets/redis_password",
    "secrets/ssh_key",
    ".env",
    ".venv/bin/python",
    ".git/config",
    "logs/sslm",
    "tests/conftest.py",
    "docs/workers.md",
]
#: Of CONTEXT_FILES, what the build may see: what the Dockerfile copies, and itself.
IN_CONTEXT = {
    ".dockerignore",
    "Dockerfile",
    "LICENSE",
    "README.md",
    "docker/entrypoint.sh",
    "pyproject.toml",
    "sslm_tasks",
    "sslm_tasks/__init__.py",
}
#: Docker's own rules for .dockerignore, as docker-py (a dependency of Debian's
#: docker-compose, on the system's Python) implements them for docker-compose's builds.
LIST_CONTEXT = """
import json, sys
from docker.utils.build import exclude_paths
root, ignore = sys.argv[1], open(sys.argv[2]).read().splitlines()
patterns = [p for p in ignore if p.strip() and not p.startswith("#")]
print(json.dumps(sorted(exclude_paths(root, patterns))))
"""


def test_the_build_context_holds_no_key_no_secret_and_no_env(tmp_path: Path) -> None:
    # Given a checkout after a run: store, production tree, secrets, .env, a virtualenv
    for name in CONTEXT_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    if subprocess.run(["/usr/bin/python3", "-c", "import docker"], timeout=30).returncode:
        unavailable("docker-py is missing (Debian: apt-get install docker-compose python3-docker)")

    # When Docker's rules pick what goes to the build
    run = subprocess.run(
        ["/usr/bin/python3", "-c", LIST_CONTEXT, str(tmp_path), str(REPO / ".dockerignore")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr

    # Then only what the Dockerfile copies goes, and everything it copies does
    sent = set(json.loads(run.stdout)) - {"docker", "sslm_tasks/__pycache__"}
    assert sent == IN_CONTEXT
    copied = re.findall(r"^COPY (.+) \S+$", DOCKERFILE.read_text(), re.M)
    for source in (word for line in copied for word in line.split()):
        assert source in sent, source


def test_git_ignores_the_env_file_and_the_secrets() -> None:
    for path in (".env", "secrets/redis_password", "docker-compose.override.yml"):
        run = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", path], timeout=30)
        assert run.returncode == 0, f"git would commit {path}"


# --- the commands, run as local processes --------------------------------------------------


def compose_env(redis_server: RedisServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A process environment as the compose file gives it: the broker URL without password,
    the password in a file."""
    password = tmp_path / "redis_password"
    password.write_text(redis_server.password + "\n")
    env = celery_env(
        f"redis://127.0.0.1:{redis_server.port}/0",
        SSLM_BROKER_PASSWORD_FILE=str(password),
        **extra,
    )
    return env


def run_health(spec: dict[str, Any], env: dict[str, str], *replace: str) -> Any:
    """Run ``spec``'s health check here; ``replace`` is pairs of words to swap in it."""
    argv = health_argv(spec)
    swaps = dict(zip(replace[::2], replace[1::2], strict=True))
    return subprocess.run(
        [swaps.get(word, word) for word in argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_workers_run_outside_docker_and_their_health_checks_pass(
    workers: WorkerStarter, redis_server: RedisServer, topdir: Path, tmp_path: Path
) -> None:
    # Given the issue worker and paris's deploy worker started through the launch scripts
    issue = workers.start(f"issue@{HOST}", script="workers/issue.sh", wait=False)
    deploy = workers.start(
        f"deploy-paris@{HOST}", script="workers/deploy.sh", wait=False, env={"SSLM_SITE": "paris"}
    )

    # Then each answers on its queues
    workers.wait_ready(issue, "issue")
    workers.wait_ready(deploy, "deploy.paris")
    workers.wait_ready(issue, "dns")
    # and the compose health checks pass for them, run as compose runs them
    services = load_compose()["services"]
    env = compose_env(redis_server, tmp_path, SSL_MGR_TOPDIR=str(topdir))
    healthy = run_health(services["worker-issue"], env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert f"queue issue consumed by issue@{HOST}; queue dns consumed by" in healthy.stdout
    paris = run_health(services["worker-deploy"], env, "deploy.default", "deploy.paris")
    assert paris.returncode == 0, paris.stdout + paris.stderr
    # and fail for a site whose worker is not here, naming it
    lyon = run_health(services["worker-deploy"], env, "deploy.default", "deploy.lyon")
    assert lyon.returncode == 1
    assert lyon.stdout.startswith(f"unhealthy: no worker on {HOST} consumes queue deploy.lyon")
    # and the workers log in the shape of the in-process log file
    assert any(
        LOG_LINE.fullmatch(line) and line.endswith(f"issue@{HOST} ready.")
        for line in issue.service.log_text().splitlines()
    ), issue.service.log_text()

    # When the broker goes away, Then the health check says so in one line
    redis_server.service.terminate()
    down = run_health(services["worker-issue"], env)
    assert down.returncode == 1
    unreachable = r"unhealthy: broker redis://:\*\*@127\.0\.0\.1:\d+/0 unreachable: .*\n"
    assert re.fullmatch(unreachable, down.stdout), down.stdout


def test_beat_runs_outside_docker_with_its_default_schedule(
    services: Services, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Given beat started through its launch script with no SSLM_BEAT_SCHEDULE
    state = tmp_path / "state"
    env = compose_env(redis_server, tmp_path, XDG_STATE_HOME=str(state))
    beat = services.spawn("beat", ["sh", "beat/beat.sh"], env=env)
    wait_for(
        "beat starts",
        lambda: "beat: Starting..." in beat.log_text(),
        timeout_s=START_TIMEOUT_S,
        log=beat.log,
        alive=lambda: beat.alive,
    )

    # Then it keeps its schedule in the user's state folder, which it made private,
    wait_for(
        "beat writes its schedule file",
        lambda: any((state / "sslm").glob("celerybeat-schedule*")),
        timeout_s=10,
        log=beat.log,
    )
    assert (state / "sslm").stat().st_mode & 0o777 == 0o700
    # its compose health check passes, and it stops cleanly
    check = run_health(load_compose()["services"]["beat"], env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert beat.alive
    assert beat.terminate() == 0, beat.log_text()


def test_the_metrics_run_outside_docker_and_their_health_check_passes(
    services: Services, topdir: Path, mgr: RunMgr
) -> None:
    # Given an issued tree, and the metrics service's command on a free loopback port
    assert mgr("-renew").returncode == 0
    spec = load_compose()["services"]["metrics"]
    program, option, listen = spec["command"]
    assert (option, listen) == ("--listen", "0.0.0.0:9750")
    port = str(free_port())
    env = {**clean_env(topdir), **spec["environment"], "SSL_MGR_TOPDIR": str(topdir)}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    metrics = services.spawn("metrics", [program, option, f"127.0.0.1:{port}"], env=env)
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for(
        "the metrics answer",
        lambda: _reachable(url),
        timeout_s=START_TIMEOUT_S,
        log=metrics.log,
        alive=lambda: metrics.alive,
    )

    # Then its compose health check, run here on that port, passes; and fails once it is gone
    check = [word.replace("9750", port) for word in health_argv(spec)]
    assert "9750" in " ".join(health_argv(spec))
    passed = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60)
    assert passed.returncode == 0, passed.stderr
    assert metrics.terminate() == 0
    failed = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0


def _get(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_flower_as_compose_runs_it_requires_the_login_and_names_our_tasks(
    services: Services, redis_server: RedisServer, workers: WorkerStarter, tmp_path: Path
) -> None:
    # Given the flower service's environment (logins from a file, no FLOWER_ADDRESS) on a
    # free port, and a worker
    worker = workers.start("flowered@test", queues=["deploy.default"], include=["probe_tasks"])
    port = free_port()
    logins = tmp_path / "flower_basic_auth"
    logins.write_text("ops:s3cret-pw\n")
    env = compose_env(
        redis_server, tmp_path, FLOWER_PORT=str(port), FLOWER_BASIC_AUTH_FILE=str(logins)
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

    # Then it listens on loopback's 127.0.0.1 only
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
    # and its pages and API need the login; /healthcheck and /metrics do not (Flower's
    # choice, documented in docs/workers.md)
    assert _get(f"{base}/api/workers?refresh=0") == 401
    assert _get(f"{base}/", auth="ops:wrong") == 401
    assert _get(f"{base}/api/workers?refresh=0", auth="ops:s3cret-pw") == 200
    assert _get(f"{base}/", auth="ops:s3cret-pw") == 200
    assert _get(f"{base}/metrics") == 200
    # and the login is in no command line
    assert "s3cret-pw" not in Path(f"/proc/{flower.process.pid}/cmdline").read_text()

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


@pytest.mark.parametrize("logins", ["", "admin:", "admin:,ops:c0rrect", "admin", "ops:pw,"])
def test_flower_refuses_a_login_without_a_password(redis_server: RedisServer, logins: str) -> None:
    run = subprocess.run(
        ["sh", "workers/flower.sh"],
        env=celery_env(redis_server.url(), FLOWER_BASIC_AUTH=logins),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("sslm-flower: environment: FLOWER_BASIC_AUTH: ")
    assert run.stderr.count("\n") == 1
    assert "c0rrect" not in run.stderr


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
