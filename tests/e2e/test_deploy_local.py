"""Restart commands, post_copy_cmd and the DNS refresh, in-process, with commands that leave
evidence: only the servers that depend on what changed restart, once per run."""

from __future__ import annotations

import stat
from pathlib import Path

from support import RunMgr

SCRIPT = """#!/bin/sh
echo "$0 $*" >> {log}
"""


def add_servers(topdir: Path, tmp_path: Path, *, smtp_exit: int = 0) -> Path:
    log = tmp_path / "evidence.log"
    for name, code in (("restart", 0), ("dns", 0), ("post", 0), ("smtp-restart", smtp_exit)):
        script = tmp_path / f"{name}.sh"
        script.write_text(SCRIPT.format(log=log) + f"exit {code}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    main = topdir / "conf.d/ssl-mgr.conf"
    text = main.read_text().replace(
        "dns_xtra_ns = []",
        f"dns_xtra_ns = []\n    post_copy_cmd = [['localhost', '{tmp_path}/post.sh']]",
    )
    text += f"""
[dns]
    restart_cmd = '{tmp_path}/dns.sh'

[smtp]
    servers = ['localhost']
    restart_cmd = '{tmp_path}/smtp-restart.sh smtp "quoted arg"'
    svc_depends = [['example.com', ['mail-ec', 'mail-rsa']]]

[web]
    servers = ['localhost']
    restart_cmd = ['{tmp_path}/restart.sh web']
    svc_depends = [['other.example', ['x']], ['any', ['web-ec']]]
"""
    main.write_text(text)
    return log


def test_only_dependent_servers_restart_and_post_copy_runs(
    topdir: Path, tmp_path: Path, mgr: RunMgr
) -> None:
    log = add_servers(topdir, tmp_path)
    assert mgr("-renew").returncode == 0
    log.unlink()
    # When only mail-ec changes
    result = mgr("-f", "-renew", "example.com:mail-ec")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = log.read_text().splitlines()
    # Then smtp restarted (with its quoted argument kept whole), web did not, post-copy ran
    assert f"{tmp_path}/smtp-restart.sh smtp quoted arg" in lines
    assert not any("restart.sh web" in line for line in lines)
    assert f"{tmp_path}/post.sh localhost" in lines
    # in upstream's order: the post-copy command before the restart
    post = lines.index(f"{tmp_path}/post.sh localhost")
    assert post < lines.index(f"{tmp_path}/smtp-restart.sh smtp quoted arg")
    assert sum("post.sh" in line for line in lines) == 1


def test_every_svc_depends_entry_counts_and_each_server_restarts_once(
    topdir: Path, tmp_path: Path, mgr: RunMgr
) -> None:
    log = add_servers(topdir, tmp_path)
    assert mgr("-renew").returncode == 0
    log.unlink()
    # web's second svc_depends entry (upstream honoured only the last one... here it is last,
    # and the first names another domain); both mail services change in one run
    assert mgr("-f", "-renew", "example.com:ALL").returncode == 0
    lines = log.read_text().splitlines()
    assert sum("smtp-restart.sh" in line for line in lines) == 1
    assert sum("restart.sh web" in line for line in lines) == 1


def test_dns_flag_refreshes_the_selected_zones(topdir: Path, tmp_path: Path, mgr: RunMgr) -> None:
    log = add_servers(topdir, tmp_path)
    result = mgr("-dns", "ca:ALL", "example.com:web-ec")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{tmp_path}/dns.sh --serial_bump example.com" in log.read_text().splitlines()


def test_a_failing_restart_is_reported_by_name_and_the_others_still_run(
    topdir: Path, tmp_path: Path, mgr: RunMgr
) -> None:
    log = add_servers(topdir, tmp_path, smtp_exit=3)
    result = mgr("-renew")
    assert result.returncode == 1
    assert "Deploy failed: [smtp] localhost" in result.stdout and "exited 3" in result.stdout
    assert any("restart.sh web" in line for line in log.read_text().splitlines())
    # the certificates themselves are fine
    assert (topdir / "certs/example.com/mail-ec/curr/cert.pem").is_file()
