"""sslm's ssh connection sharing: the options it gives ssh, and where its sockets go (a real
connection shared by two deploys: tests/integration/test_ssh_deploy.py)."""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from support import unavailable

from sslm_tasks.config.settings import load_settings
from sslm_tasks.deploy import connections
from sslm_tasks.deploy.connections import control_path
from sslm_tasks.deploy.transport import SshTransport
from sslm_tasks.errors import ConfigError

PROD = Path("/srv/ssl-mgr/prod-certs")
#: ssh binds ``<ControlPath>.<16 characters>`` first; BSD's sun_path holds 104 bytes.
SOCKET_PATH_MAX = 104 - 17


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SSLM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SSLM_SSH_COMMAND", "ssh -F /etc/sslm/ssh_config")


def ssh_options(argv: list[str]) -> dict[str, str]:
    """The ``-o Name=value`` options of an ssh argv, first value kept (as ssh does)."""
    found: dict[str, str] = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "-o":
            name, _, setting = value.partition("=")
            found.setdefault(name, setting)
    return found


def test_the_commands_of_a_server_share_a_connection_by_default() -> None:
    transport = SshTransport.from_settings("smtp1.example.com", load_settings())
    run = ssh_options(transport._run_argv(["true"]))
    copy = ssh_options(shlex.split(transport.copy_argv(PROD)[-3]))  # rsync's -e
    assert run["ControlMaster"] == "auto"
    assert run["ControlPersist"] == "60"
    assert run == copy  # the copy and the restarts go through one connection
    socket = Path(run["ControlPath"])
    assert len(str(socket)) <= SOCKET_PATH_MAX
    assert "%" not in str(socket)  # no token for ssh to expand into something longer


def test_each_server_name_and_ssh_command_gets_its_own_socket(tmp_path: Path) -> None:
    command = ("ssh", "-F", "/etc/sslm/ssh_config")
    paths = {
        control_path(tmp_path, command, "smtp1.example.com"),
        control_path(tmp_path, command, "smtp2.example.com"),
        control_path(tmp_path, ("ssh", "-F", "/etc/sslm/other_config"), "smtp1.example.com"),
    }
    assert len(paths) == 3
    assert control_path(tmp_path, command, "smtp1.example.com") in paths  # stable


def test_control_persist_0_turns_sharing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSLM_SSH_CONTROL_PERSIST_S", "0")
    transport = SshTransport.from_settings("smtp1.example.com", load_settings())
    assert not any("Control" in arg for arg in transport._run_argv(["true"]))


@pytest.mark.parametrize("value", ["-1", "3601", "a minute"])
def test_a_bad_control_persist_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SSLM_SSH_CONTROL_PERSIST_S", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.key == "SSLM_SSH_CONTROL_PERSIST_S"


def test_keepalive_options_reach_ssh_and_win_over_the_ssh_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an interval of 20 s, and an ssh command that tries to turn keepalives off
    monkeypatch.setenv("SSLM_SSH_SERVER_ALIVE_S", "20")
    monkeypatch.setenv(
        "SSLM_SSH_COMMAND", "ssh -F /dev/null -o ServerAliveInterval=0 -o ServerAliveCountMax=9"
    )
    transport = SshTransport.from_settings("smtp1.example.com", load_settings())
    argv = transport._run_argv(["true"])
    # When ssh itself says what configuration it would connect with (-G: parse, never connect)
    host = argv.index("smtp1.example.com")
    ssh = shutil.which("ssh")
    if ssh is None:
        unavailable("ssh is not installed (Debian: apt-get install openssh-client)")
    shown = subprocess.run(
        [ssh, "-G", *argv[1:host], "smtp1.example.com"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    # Then it probes a silent server every 20 s and gives it up after 3, on the shared master
    # (the copy's rsync -e gives ssh the same options)
    assert "serveraliveinterval 20" in shown and "serveralivecountmax 3" in shown
    assert "controlmaster auto" in shown
    copy = ssh_options(shlex.split(transport.copy_argv(PROD)[-3]))
    assert (copy["ServerAliveInterval"], copy["ServerAliveCountMax"]) == ("20", "3")


@pytest.mark.parametrize("value", ["0", "3601"])
def test_a_bad_server_alive_interval_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SSLM_SSH_SERVER_ALIVE_S", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.key == "SSLM_SSH_SERVER_ALIVE_S"


def test_a_forked_child_makes_its_own_directory_and_leaves_its_parents_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given this process's directory of sockets, under a runtime directory of the test's own
    runtime = Path(tempfile.mkdtemp(prefix="sslm-xdg-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    try:
        ours = connections.control_directory("ssh")
        report = tmp_path / "child"
        # When a child forked now (a prefork pool process) asks for one, then ends
        pid = os.fork()
        if pid == 0:  # the child: report, clean up as a pool process does, never return
            try:
                report.write_text(str(connections.control_directory("ssh")))
                connections.close_all()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        # Then it got a directory of its own and removed it, and ours is still there
        theirs = Path(report.read_text())
        assert theirs != ours and theirs.parent == runtime
        assert not theirs.exists() and ours.is_dir()
        # and ours goes when this process cleans up
        connections.close_all()
        assert not ours.exists()
    finally:
        connections.close_all()
        shutil.rmtree(runtime, ignore_errors=True)
