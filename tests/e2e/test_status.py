"""``sslm-mgr -s``, ``-s --json`` and ``-s --check`` on real trees in each state a service can
be in: the health word, the exit status, the documented JSON schema, the plugin's verdict."""

from __future__ import annotations

import io
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import BIN, REPO, RunMgr, edit

from sslm_tasks.cli import status as status_command
from sslm_tasks.config.load import load_config
from sslm_tasks.lifecycle import status as lifecycle_status
from sslm_tasks.lifecycle.workspace import Workspace

SCHEMA = REPO / "docs/status.schema.json"
SERVICES = ["ca:my-root", "ca:my-int", "example.com:mail-ec", "example.com:mail-rsa",
            "example.com:web-ec"]  # fmt: skip


def validate(document: str, tmp_path: Path) -> None:
    """``document`` is valid against docs/status.schema.json, as check-jsonschema judges."""
    path = tmp_path / "status.json"
    path.write_text(document)
    checker = BIN / "check-jsonschema"
    assert checker.is_file(), "check-jsonschema is missing: pip install -e '.[dev]'"
    run = subprocess.run(
        [str(checker), "--schemafile", str(SCHEMA), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def status_json(mgr: RunMgr, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = mgr("-s", "--json", *args)
    assert result.stderr == ""
    validate(result.stdout, tmp_path)
    document: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, document


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{s['group']}:{s['service']}": s for s in document["services"]}


def failing_smtp(topdir: Path, tmp_path: Path) -> None:
    """An [smtp] server on this host whose restart command fails."""
    script = tmp_path / "smtp-restart.sh"
    script.write_text("#!/bin/sh\necho 'postfix: bad config' >&2\nexit 3\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
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


def test_a_tree_without_certificates_is_pending_and_exits_0(mgr: RunMgr, tmp_path: Path) -> None:
    code, document = status_json(mgr, tmp_path)
    assert code == 0
    assert document["schema_version"] == 1
    assert [s["health"] for s in document["services"]] == ["pending"] * 5
    assert document["summary"] == {
        "health": "pending",
        "services": 5,
        "ok": 0,
        "pending": 5,
        "expiring": 0,
        "failing": 0,
        "unreadable": 0,
    }
    assert mgr("-s").returncode == 0


def test_an_issued_tree_is_ok_with_machine_values(mgr: RunMgr, tmp_path: Path) -> None:
    assert mgr("-renew").returncode == 0
    code, document = status_json(mgr, tmp_path)
    assert code == 0
    services = by_name(document)
    assert list(services) == SERVICES
    web = services["example.com:web-ec"]
    assert web["health"] == "ok" and web["problems"] == [] and web["pending_servers"] == []
    assert web["curr"]["lifetime_days"] == 90 and 89.9 < web["curr"]["days_left"] <= 90
    assert web["curr"]["not_after"].endswith("Z")
    assert web["renew"]["target_days"] == 30 and 59.9 < web["renew"]["in_days"] <= 60
    # and -s's text says the same word
    assert "              health : ok" in mgr("-s", "example.com:web-ec").stdout


def test_a_waiting_next_is_pending(mgr: RunMgr, tmp_path: Path) -> None:
    assert mgr("-renew").returncode == 0
    assert mgr("-f", "-renew", "example.com:web-ec").returncode == 0
    code, document = status_json(mgr, tmp_path, "example.com:web-ec")
    web = document["services"][0]
    assert code == 0
    assert web["health"] == "pending" and web["next"] is not None
    assert web["pending_since"] == web["roll_due"]


def test_a_failing_deploy_is_failing_by_server_and_exits_1(
    topdir: Path, mgr: RunMgr, tmp_path: Path
) -> None:
    # Given an issued tree, then a server whose restart command fails takes mail-ec
    assert mgr("-renew").returncode == 0
    failing_smtp(topdir, tmp_path)
    assert mgr("-f", "-renew", "example.com:mail-ec").returncode == 1

    # When the status is asked for
    code, document = status_json(mgr, tmp_path)
    text = mgr("-s", "example.com:mail-ec")

    # Then mail-ec is failing, by server, with when and why; the others are not
    assert code == 1 and text.returncode == 1
    services = by_name(document)
    mail = services["example.com:mail-ec"]
    assert mail["health"] == "failing"
    [problem] = mail["problems"]
    assert problem["what"] == "deploy" and problem["where"] == "smtp:localhost"
    assert problem["attempts"] == 1 and "postfix: bad config" in problem["reason"]
    assert problem["since"] is not None and problem["retry_at"] > problem["since"]
    [server] = mail["servers"]
    assert server["has_curr"] is False and server["last_deploy"]["failed_step"] == "deploy"
    assert mail["pending_servers"] == ["smtp:localhost"]
    assert services["example.com:web-ec"]["health"] == "ok"
    assert document["summary"]["health"] == "failing" and document["summary"]["failing"] == 1
    assert "             failing : deploy on smtp:localhost since " in text.stdout
    assert "1 attempt, next try " in text.stdout and "postfix: bad config" in text.stdout


def test_past_its_renew_point_is_expiring_and_exits_1(
    topdir: Path, mgr: RunMgr, tmp_path: Path
) -> None:
    # Given an issued tree whose 90-day certificates should now renew with 95 days left
    assert mgr("-renew").returncode == 0
    edit(topdir / "conf.d/ssl-mgr.conf", "target_90 = 30", "target_90 = 95")
    code, document = status_json(mgr, tmp_path, "example.com:ALL")
    assert code == 1
    assert {s["health"] for s in document["services"]} == {"expiring"}
    assert all(s["renew"]["due"] for s in document["services"])


def test_an_unreadable_service_is_named_and_exits_1(
    topdir: Path, mgr: RunMgr, tmp_path: Path
) -> None:
    assert mgr("-renew").returncode == 0
    link = topdir / "certs/example.com/web-ec/curr"
    link.unlink()
    link.symlink_to("/etc")
    code, document = status_json(mgr, tmp_path)
    assert code == 1
    assert [e["where"] for e in document["errors"]] == ["example.com:web-ec"]
    assert len(document["services"]) == 4 and document["summary"]["unreadable"] == 1


def test_the_json_is_written_service_by_service(
    topdir: Path, mgr: RunMgr, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an issued tree, and a count of the services read so far
    assert mgr("-renew").returncode == 0
    read: list[str] = []
    real = lifecycle_status.service_status

    def counted(*args: Any, **kwargs: Any) -> lifecycle_status.ServiceStatus:
        found = real(*args, **kwargs)
        read.append(str(found.ref))
        return found

    monkeypatch.setattr(status_command, "service_status", counted)

    # and an output that notes, at every write, how many services had been read
    writes: list[tuple[int, str]] = []

    class Output(io.StringIO):
        def write(self, text: str) -> int:
            writes.append((len(read), text))
            return super().write(text)

    out = Output()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setenv("SSL_MGR_TOPDIR", str(topdir))
    config, refs = load_config([])

    # When the status is written as JSON
    status_command.show(Workspace(config=config), refs, as_json=True, verbose=False)

    # Then the document is whole, and each service went out before the next one was read
    assert len(json.loads(out.getvalue())["services"]) == len(SERVICES)
    services = [
        (count, json.loads(text.lstrip(",")))
        for count, text in writes
        if '"group"' in text and '"schema_version"' not in text
    ]
    shown = [(count, f"{service['group']}:{service['service']}") for count, service in services]
    assert shown == list(enumerate(SERVICES, start=1))


# --------------------------------------------------------------------------- -s --check


def check(mgr: RunMgr, *args: str) -> tuple[int, list[str]]:
    result = mgr("-s", "--check", *args)
    return result.returncode, result.stdout.splitlines()


def test_check_is_ok_with_days_left_per_certificate(mgr: RunMgr) -> None:
    assert mgr("-renew").returncode == 0
    code, lines = check(mgr)
    assert code == 0
    [line] = lines
    summary, _, perf = line.partition(" | ")
    assert summary == "SSLM OK - 5 services: 5 ok"
    assert perf.split() == [
        "'ca:my-root'=3650.0d;730:;7:",
        "'ca:my-int'=3650.0d;730:;7:",
        "'example.com:mail-ec'=90.0d;30:;7:",
        "'example.com:mail-rsa'=90.0d;30:;7:",
        "'example.com:web-ec'=90.0d;30:;7:",
    ]


def test_check_is_critical_for_a_failing_deploy(topdir: Path, mgr: RunMgr, tmp_path: Path) -> None:
    assert mgr("-renew").returncode == 0
    failing_smtp(topdir, tmp_path)
    assert mgr("-f", "-renew", "example.com:mail-ec").returncode == 1
    code, lines = check(mgr)
    assert code == 2
    assert lines[0].startswith(
        "SSLM CRITICAL - 5 services: 1 critical, 4 ok; example.com:mail-ec: deploy on "
        "smtp:localhost failing: [smtp] localhost: "
    )
    assert "'example.com:mail-ec'=90.0d;30:;7:" in lines[0].partition(" | ")[2].split()
    assert lines[1].startswith("CRITICAL: example.com:mail-ec: deploy on smtp:localhost")
    assert len(lines) == 2


def test_check_warns_past_the_renew_point_and_its_thresholds_are_options(
    topdir: Path, mgr: RunMgr
) -> None:
    assert mgr("-renew").returncode == 0
    edit(topdir / "conf.d/ssl-mgr.conf", "target_90 = 30", "target_90 = 95")
    code, lines = check(mgr, "example.com:web-ec")
    assert code == 1
    assert lines[0].startswith("SSLM WARNING - 1 services: 1 warning; example.com:web-ec: past")
    # and an operator's own limits win
    code, lines = check(mgr, "--crit-days", "100", "example.com:web-ec")
    assert code == 2 and "curr expires in 90.0 days" in lines[0]
    assert lines[0].endswith("'example.com:web-ec'=90.0d;95:;100:")


def test_check_warns_about_services_sslm_never_worked_on(mgr: RunMgr) -> None:
    code, lines = check(mgr, "example.com:web-ec")
    assert code == 1
    assert (
        lines[0]
        == "SSLM WARNING - 1 services: 1 warning; example.com:web-ec: pending: no certificate yet"
    )


@pytest.mark.parametrize(
    ("breakage", "args", "said"),
    [
        ("config", [], "SSLM UNKNOWN - "),
        ("none", ["--crit-days", "-1"], "SSLM UNKNOWN - bad command line (see stderr)"),
        ("link", [], "SSLM UNKNOWN - 5 services: 1 unknown, 4 ok; example.com:web-ec: unreadable"),
    ],
)
def test_check_is_unknown_when_it_cannot_read(
    breakage: str, args: list[str], said: str, topdir: Path, mgr: RunMgr
) -> None:
    assert mgr("-renew").returncode == 0
    if breakage == "config":
        (topdir / "conf.d/ssl-mgr.conf").write_text("[globals\n")
    elif breakage == "link":
        link = topdir / "certs/example.com/web-ec/curr"
        link.unlink()
        link.symlink_to("/etc")
    code, lines = check(mgr, *args)
    assert code == 3
    assert lines[0].startswith(said), lines
