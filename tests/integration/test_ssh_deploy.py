"""Deploying to another host over ssh, against a real sshd on loopback.

The "other host" is this machine seen through sshd running in its own mount namespace, where
an empty directory stands in for the production tree (see ``sshd.py``): rsync writes to the
same absolute path as upstream, yet only what travels over ssh reaches the remote directory, and
restart commands run in an ssh session (``$SSH_CONNECTION`` is set) with that remote view.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import (
    REPO,
    RedisServer,
    Services,
    WorkerStarter,
    producer,
    services_in,
    wait_for,
)
from sshd import CONNECT_TIMEOUT_S, SshServer, ssh_masters, start_sshd
from support import RunMgr

from sslm_tasks.config.models import MainConfig
from sslm_tasks.config.settings import load_settings
from sslm_tasks.deploy.connections import (
    close_connections,
    control_directory,
    control_path,
)
from sslm_tasks.deploy.server import deploy
from sslm_tasks.deploy.targets import DeployTarget
from sslm_tasks.errors import ConfigError, PermanentError, TransientError

pytestmark = pytest.mark.integration

#: The files of the local production tree, with their modes.
PROD_FILES = {
    "example.com/tlsa.example.com": 0o644,
    "example.com/mail-ec/curr/privkey.pem": 0o600,
    "example.com/mail-ec/curr/bundle.pem": 0o600,
    "example.com/mail-ec/curr/fullchain.pem": 0o644,
    "example.com/mail-ec/next/fullchain.pem": 0o644,
    "ca/my-root/curr/cert.pem": 0o644,
}
#: Planted in the local tree although production never writes it: it must not travel.
CA_KEY = "ca/my-root/curr/privkey.pem"

#: A restart command that leaves evidence: whether it ran under ssh, its arguments as it got
#: them, and what the production path holds from where it runs.
EVIDENCE_SCRIPT = """#!/bin/sh
{{
  echo "SSH_CONNECTION=$SSH_CONNECTION"
  for arg in "$@"; do echo "arg=$arg"; done
  echo "sees=$(cd {prod} && find . -type f | sort | tr '\\n' ' ')"
}} >> {evidence}
"""
#: Arguments with a space and shell syntax: the remote side must get them unchanged.
RESTART_ARGS = ["smtp", "a b", "$HOME;exit 9"]


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def read_evidence(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


def files_under(top: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``top`` (relative path → mode, content)."""
    return {
        str(path.relative_to(top)): (stat.S_IMODE(path.stat().st_mode), path.read_bytes())
        for path in sorted(top.rglob("*"))
        if path.is_file()
    }


def smtp_config(command: str, *, skip_prod_copy: bool = False) -> MainConfig:
    return MainConfig.model_validate(
        {
            "smtp": {
                "servers": ["smtp1.test"],
                "restart_cmd": command,
                "skip_prod_copy": skip_prod_copy,
            }
        }
    )


def target(host: str = "smtp1.test") -> DeployTarget:
    return DeployTarget("smtp", host, "default", restart=True)


@pytest.fixture
def prod(tmp_path: Path) -> Path:
    """A local production tree (absolute path, as ``Config.layout`` gives it)."""
    top = tmp_path / "prod-certs"
    for name, mode in {**PROD_FILES, CA_KEY: 0o600}.items():
        path = top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"local {name}\n")
        path.chmod(mode)
    return top


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """What the server has at the production path before the deploy: stale files only."""
    top = tmp_path / "remote"
    for name in ("example.com/old-svc/curr/fullchain.pem", CA_KEY):  # CA_KEY: upstream's leftover
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text("stale\n")
    return top


@pytest.fixture
def sshd(
    services: Services, prod: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> SshServer:
    """sshd serving ``remote`` at ``prod``'s path; this process's deploy settings point at it."""
    server = start_sshd(services, remote_roots={prod: remote})
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return server


@pytest.fixture
def evidence(tmp_path: Path) -> Path:
    return tmp_path / "evidence.log"


@pytest.fixture
def restart(tmp_path: Path, prod: Path, evidence: Path) -> str:
    script = write_script(
        tmp_path / "restart.sh", EVIDENCE_SCRIPT.format(prod=prod, evidence=evidence)
    )
    return " ".join([str(script), "smtp", "'a b'", "'$HOME;exit 9'"])


def test_deploy_copies_the_tree_over_ssh_then_restarts_there(
    sshd: SshServer, prod: Path, remote: Path, restart: str, evidence: Path, tmp_path: Path
) -> None:
    # Given a production tree here, and stale files (an old service, upstream's copy of a CA
    # key) on the server
    # When smtp1.test is deployed
    ran = deploy(smtp_config(restart), target(), prod_dir=prod, timeout_s=20)

    # Then the server holds exactly production, modes kept, and no CA private key
    expected = files_under(prod)
    del expected[CA_KEY]
    assert files_under(remote) == expected
    assert stat.S_IMODE((remote / "example.com/mail-ec/curr/privkey.pem").stat().st_mode) == 0o600
    assert not list(remote.rglob(".~tmp~"))
    # and the restart command ran in an ssh session, with its arguments intact and unexpanded,
    # seeing the copied tree
    seen = read_evidence(evidence)
    assert seen["SSH_CONNECTION"][0].startswith("127.0.0.1 ")
    assert seen["arg"] == RESTART_ARGS
    assert seen["sees"][0].split() == sorted(f"./{name}" for name in expected)
    assert [r.argv for r in ran] == [(str(tmp_path / "restart.sh"), *RESTART_ARGS)]
    assert sshd.sessions() == 2  # rsync, then the restart command


def test_a_changed_file_replaces_the_old_one_whole(
    sshd: SshServer, prod: Path, remote: Path, restart: str
) -> None:
    # Given a deployed tree, and a server process holding the old certificate open
    config = smtp_config(restart)
    deploy(config, target(), prod_dir=prod, timeout_s=20)
    name = "example.com/mail-ec/curr/fullchain.pem"
    with (remote / name).open("rb") as reader:
        # When the certificate changes and is deployed again
        (prod / name).write_text("renewed\n")
        deploy(config, target(), prod_dir=prod, timeout_s=20)
        # Then the open file is still the whole old one (renamed over, never rewritten), and
        # the path now gives the whole new one
        assert reader.read() == f"local {name}\n".encode()
    assert (remote / name).read_text() == "renewed\n"
    assert not list(remote.rglob(".~tmp~"))


def test_two_deploys_to_one_server_share_one_ssh_connection_kept_in_a_private_directory(
    sshd: SshServer, prod: Path, remote: Path, restart: str
) -> None:
    # When smtp1.test is deployed twice, within the connection's ControlPersist
    config = smtp_config(restart)
    deploy(config, target(), prod_dir=prod, timeout_s=20)
    deploy(config, target(), prod_dir=prod, timeout_s=20)

    # Then sshd ran four sessions (two copies, two restarts) on one login
    assert sshd.sessions() == 4
    assert sshd.logins() == 1
    # and the connection waits for the next deploy behind a socket in a directory that is
    # this process's alone: ours, 0700, not a link
    settings = load_settings()
    directory = control_directory(settings.ssh_command[0])
    socket = control_path(directory, settings.ssh_command, "smtp1.test")
    assert stat.S_ISSOCK(socket.lstat().st_mode)
    held = directory.lstat()
    assert stat.S_ISDIR(held.st_mode) and held.st_uid == os.geteuid()
    assert stat.S_IMODE(held.st_mode) == 0o700
    # and what the process does at exit closes it
    close_connections(settings.ssh_command[0], directory)
    wait_for("the connection closes", lambda: not socket.exists(), timeout_s=5)


def _tree(root: int) -> list[int]:
    """``root`` and every process below it (sshd's per-connection children start sessions of
    their own, so its process group does not hold them)."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


@contextlib.contextmanager
def frozen(root: int) -> Iterator[None]:
    """SIGSTOP ``root``'s whole tree: its connections stay open and answer nothing, as a
    server that died or a network that dropped them; SIGCONT on the way out."""
    stopped = _tree(root)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_a_shared_connection_to_a_server_gone_silent_is_given_up(
    sshd: SshServer, prod: Path, restart: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given keepalive probes every second, and a deploy whose connection waits for the next
    # one behind its socket (for ControlPersist, 60 s)
    monkeypatch.setenv("SSLM_SSH_SERVER_ALIVE_S", "1")
    config = smtp_config(restart)
    deploy(config, target(), prod_dir=prod, timeout_s=20)
    settings = load_settings()
    socket_path = control_path(
        control_directory(settings.ssh_command[0]), settings.ssh_command, "smtp1.test"
    )
    assert stat.S_ISSOCK(socket_path.lstat().st_mode)

    # When the server stops answering without closing the connection
    with frozen(sshd.service.process.pid):
        # Then the master gives the connection up after 3 unanswered probes, not 60 s idle
        wait_for("the master gives up", lambda: not socket_path.exists(), timeout_s=15)

    # and once the server answers again, the next deploy logs in anew and succeeds
    deploy(config, target(), prod_dir=prod, timeout_s=20)
    assert sshd.logins() == 2


def _running_since(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), or None if it no longer runs (a zombie
    runs nothing): with the pid, it names one process, never a later one given that pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _named(token: str) -> list[int]:
    """The processes whose command line holds ``token``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if token.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


def test_stopping_the_services_leaves_no_process_of_sshd_nor_ssh_master_behind(
    tmp_path: Path, prod: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given sshd started by the harness, and a deploy through it whose restart command leaves
    # a daemon running in a session of its own (as a restarted service does)
    lingering = f"3600.{secrets.randbelow(10**9)}"  # an argument no other process has
    script = write_script(
        tmp_path / "restart.sh",
        f"#!/bin/sh\nsetsid sleep {lingering} </dev/null >/dev/null 2>&1 &\n",
    )
    started: dict[int, int | None] = {}
    try:
        with services_in(tmp_path) as services:
            server = start_sshd(services, remote_roots={prod: remote})
            for name, value in server.env().items():
                monkeypatch.setenv(name, value)
            deploy(smtp_config(str(script)), target(), prod_dir=prod, timeout_s=20)
            wait_for("the daemon starts", lambda: bool(_named(lingering)), timeout_s=5)
            # and the connection kept for the next deploy by an ssh master of this process,
            # one that answers nothing (stopped): it cannot notice that sshd went away
            names = server.control_socket_names()
            [master] = ssh_masters(names)
            os.kill(master, signal.SIGSTOP)
            sshd_side = _tree(server.service.process.pid)
            started = {pid: _running_since(pid) for pid in [*sshd_side, *_named(lingering), master]}
            # sshd's processes hold the listener and the connection's (a session of its own)
            assert len(sshd_side) >= 2, sshd_side

        # When the services are stopped, as at the end of every test
        # Then none of those processes runs any more, nor any ssh master of the test's sockets
        left = [pid for pid, since in started.items() if _running_since(pid) == since]
        assert left == [], {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left}
        assert ssh_masters(names) == []
        assert _named(lingering) == []
    finally:
        # This test made them: if the harness left any, the test ends them.
        for pid, since in started.items():
            if _running_since(pid) == since:
                with contextlib.suppress(ProcessLookupError):  # it has ended meanwhile
                    os.kill(pid, signal.SIGKILL)


def test_without_connection_sharing_each_command_logs_in(
    sshd: SshServer, prod: Path, restart: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSLM_SSH_CONTROL_PERSIST_S", "0")
    config = smtp_config(restart)
    deploy(config, target(), prod_dir=prod, timeout_s=20)
    deploy(config, target(), prod_dir=prod, timeout_s=20)
    assert (sshd.sessions(), sshd.logins()) == (4, 4)


def test_an_unreachable_server_fails_transiently_by_name_within_the_connect_timeout(
    sshd: SshServer, prod: Path, restart: str
) -> None:
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"down\.test") as raised:
        deploy(smtp_config(restart), target("down.test"), prod_dir=prod, timeout_s=20)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S
    assert "Connection refused" in str(raised.value)


def test_a_server_whose_host_key_is_unknown_fails_permanently(
    sshd: SshServer, prod: Path, remote: Path, restart: str
) -> None:
    with pytest.raises(PermanentError, match=r"stranger\.test") as raised:
        deploy(smtp_config(restart), target("stranger.test"), prod_dir=prod, timeout_s=20)
    assert not isinstance(raised.value, TransientError)
    assert "Host key verification failed" in str(raised.value)
    assert not (remote / "example.com/mail-ec").exists()


def test_a_failing_restart_command_fails_permanently_with_its_status_and_output(
    sshd: SshServer, prod: Path, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "fail.sh", "#!/bin/sh\necho 'postfix: bad config' >&2\nexit 3\n"
    )
    with pytest.raises(PermanentError) as raised:
        deploy(smtp_config(str(script)), target(), prod_dir=prod, timeout_s=20)
    message = str(raised.value)
    assert "on smtp1.test exited 3" in message and "postfix: bad config" in message


@pytest.fixture
def hanging(tmp_path: Path) -> Path:
    """A restart command that never ends. sshd does not stop a command without a terminal
    when its client is killed (which the docs say): stopping sshd does (its PID namespace)."""
    return write_script(tmp_path / "hang.sh", "#!/bin/sh\nexec sleep 60\n")


def test_a_hanging_restart_command_is_killed_at_the_timeout(
    sshd: SshServer, prod: Path, hanging: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"on smtp1\.test: timed out after 3 s"):
        deploy(smtp_config(str(hanging)), target(), prod_dir=prod, timeout_s=3)
    assert time.monotonic() - started < 3 + 2


def test_skip_prod_copy_restarts_without_copying(
    sshd: SshServer, prod: Path, remote: Path, restart: str, evidence: Path
) -> None:
    before = files_under(remote)
    deploy(smtp_config(restart, skip_prod_copy=True), target(), prod_dir=prod, timeout_s=20)
    assert files_under(remote) == before
    seen = read_evidence(evidence)
    assert seen["SSH_CONNECTION"][0].startswith("127.0.0.1 ")
    assert sshd.sessions() == 1  # the restart command only


def test_sslm_mgr_renew_deploys_to_a_remote_server_over_ssh(
    services: Services, topdir: Path, mgr: RunMgr, tmp_path: Path
) -> None:
    # Given the example configuration with an [smtp] server on another host
    prod = topdir / "prod-certs"
    prod.mkdir()
    remote = tmp_path / "remote"
    remote.mkdir()
    evidence = tmp_path / "evidence.log"
    script = write_script(
        tmp_path / "restart.sh", EVIDENCE_SCRIPT.format(prod=prod, evidence=evidence)
    )
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text()
        + f"""
[smtp]
    servers = ['smtp1.test']
    restart_cmd = '{script} smtp'
    depends = ['cert']
"""
    )
    server = start_sshd(services, remote_roots={prod: remote})

    # When sslm-mgr renews, in-process, with the deploy settings in its environment
    result = mgr("-f", "-renew", env=server.env())

    # Then the server got production without the CA keys, and restarted over ssh
    assert result.returncode == 0, result.stdout + result.stderr
    assert files_under(remote) == files_under(prod)
    assert (remote / "example.com/mail-ec/curr/bundle.pem").is_file()
    assert not list(remote.glob("ca/*/*/privkey.pem"))
    assert (remote / "ca/my-int/curr/cert.pem").is_file()
    seen = read_evidence(evidence)
    assert seen["SSH_CONNECTION"] and seen["SSH_CONNECTION"][0].startswith("127.0.0.1 ")
    assert seen["arg"] == ["smtp"]


#: A restart command that notes when it began and ended, each run in files of its own.
SPAN_SCRIPT = """#!/bin/sh
span={spans}/$$
date +%s.%N > "$span.start"
sleep 1
date +%s.%N > "$span.end"
"""


def test_a_deploy_worker_deploys_several_servers_at_once(
    services: Services,
    redis_server: RedisServer,
    workers: WorkerStarter,
    tmp_path: Path,
    runtime_dir: Path,
) -> None:
    # Given two servers over ssh whose restart takes a second, and the deploy worker as its
    # launcher starts it (pool and concurrency are the launcher's defaults)
    spans = tmp_path / "spans"
    spans.mkdir()
    script = write_script(tmp_path / "restart.sh", SPAN_SCRIPT.format(spans=spans))
    topdir = tmp_path / "top"
    shutil.copytree(REPO / "conf.d", topdir / "conf.d")
    hosts = ["smtp1.test", "smtp2.test"]
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text()
        + f"\n[smtp]\n    servers = {hosts!r}\n    restart_cmd = '{script}'\n"
        + "    skip_prod_copy = true\n"
    )
    server = start_sshd(services, remote_roots={}, aliases=hosts)
    worker = workers.start(
        f"deploy-default@{socket.gethostname()}",
        script="workers/deploy.sh",
        ping_queue="deploy.default",
        env={**server.env(), "SSL_MGR_TOPDIR": str(topdir), "XDG_RUNTIME_DIR": str(runtime_dir)},
    )

    # When both servers' deploys are sent at once
    app = producer(redis_server.url())
    sent = [
        app.send_task(
            "sslm.deploy.server", args=(target(host).to_json(), []), kwargs={"site": "default"}
        )
        for host in hosts
    ]
    results = [result.get(timeout=60) for result in sent]

    # Then both succeeded, and each restart began before the other ended: they ran together
    assert [r["server"] for r in results] == [f"smtp:{host}" for host in hosts]
    assert all(r["ok"] for r in results)
    runs = sorted(path.stem for path in spans.glob("*.start"))
    assert len(runs) == 2
    began = [float((spans / f"{run}.start").read_text()) for run in runs]
    ended = [float((spans / f"{run}.end").read_text()) for run in runs]
    assert max(began) < min(ended), (began, ended)
    # and when the worker stops, its connections close and their directory goes (the deploys
    # ran on threads of the worker process itself: its atexit does it)
    assert len(list(runtime_dir.glob("sslm-ssh-*"))) == 1
    assert worker.terminate() == 0
    assert list(runtime_dir.iterdir()) == []


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A short ``$XDG_RUNTIME_DIR`` of the test's own (a socket's path has 104 bytes at most,
    and ``/tmp`` is shared): where a worker makes its ``sslm-ssh-*`` directory."""
    path = Path(tempfile.mkdtemp(prefix="sslm-xdg-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_prefork_pool_process_removes_its_ssh_directory_when_it_ends(
    services: Services,
    redis_server: RedisServer,
    workers: WorkerStarter,
    tmp_path: Path,
    runtime_dir: Path,
) -> None:
    # Given a prefork worker whose pool process deployed a server over ssh, the connection
    # left open for the next deploy behind a socket in its directory
    topdir = tmp_path / "top"
    shutil.copytree(REPO / "conf.d", topdir / "conf.d")
    script = write_script(tmp_path / "restart.sh", "#!/bin/sh\ntrue\n")
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text()
        + f"\n[smtp]\n    servers = ['smtp1.test']\n    restart_cmd = '{script}'\n"
        + "    skip_prod_copy = true\n"
    )
    server = start_sshd(services, remote_roots={})
    env = {**server.env(), "SSL_MGR_TOPDIR": str(topdir), "XDG_RUNTIME_DIR": str(runtime_dir)}
    worker = workers.start("prefork@test", pool="prefork", concurrency=1, env=env)
    app = producer(redis_server.url())
    sent = app.send_task(
        "sslm.deploy.server", args=(target().to_json(), []), kwargs={"site": "default"}
    )
    assert sent.get(timeout=60)["ok"]
    (directory,) = runtime_dir.glob("sslm-ssh-*")
    assert any(stat.S_ISSOCK(entry.lstat().st_mode) for entry in directory.iterdir())

    # When the worker stops (warm shutdown: its pool process ends without running atexit)
    assert worker.terminate() == 0

    # Then the pool process closed its connection and removed its directory
    assert list(runtime_dir.iterdir()) == []


def test_an_unbalanced_ssh_command_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSLM_SSH_COMMAND", "ssh -F '/etc/sslm/ssh config")
    with pytest.raises(ConfigError, match=r"SSLM_SSH_COMMAND = .*No closing quotation"):
        load_settings()
