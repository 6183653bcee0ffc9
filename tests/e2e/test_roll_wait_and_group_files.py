"""The roll's wait follows the setting, says what it waits for in plain words, and a group
folder holding more than service files does not stop a run (issue 13, item 9)."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from support import RunMgr, edit

MAIN = "conf.d/ssl-mgr.conf"
WEB = "example.com:web-ec"


def status(mgr: RunMgr, service: str) -> dict[str, object]:
    result = mgr("-s", "--json", service)
    assert result.returncode == 0, result.stdout + result.stderr
    found: dict[str, object] = json.loads(result.stdout)["services"][0]
    return found


def roll_due(mgr: RunMgr) -> datetime | None:
    found = status(mgr, WEB)["roll_due"]
    return None if found is None else datetime.fromisoformat(str(found))


def not_before(topdir: Path, which: str) -> datetime:
    pem = (topdir / "certs/example.com/web-ec" / which / "cert.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem).not_valid_before_utc


def test_a_changed_min_roll_mins_moves_a_next_that_is_already_waiting(
    topdir: Path, mgr: RunMgr
) -> None:
    # Given a next built under min_roll_mins = 90
    assert mgr("-renew").returncode == 0
    assert mgr("-f", "-renew", WEB).returncode == 0
    issued = not_before(topdir, "next")
    assert roll_due(mgr) == issued + timedelta(minutes=90)
    too_soon = mgr("-roll", WEB)
    assert "too soon to roll: cert is 0 mins old < 90 mins" in too_soon.stdout, too_soon.stdout
    # When the setting changes, the waiting next's due time follows it
    edit(topdir / MAIN, "min_roll_mins = 90", "min_roll_mins = 1")
    assert roll_due(mgr) == issued + timedelta(minutes=1)
    edit(topdir / MAIN, "min_roll_mins = 1", "min_roll_mins = 0")
    rolled = mgr("-roll", WEB)
    assert rolled.returncode == 0 and "rolled" in rolled.stdout, rolled.stdout
    assert not (topdir / "certs/example.com/web-ec/next").exists()


def test_a_roll_mins_given_to_the_renew_sticks_to_its_next(topdir: Path, mgr: RunMgr) -> None:
    # Given a next renewed with its own wait
    assert mgr("-renew").returncode == 0
    assert mgr("-f", "-renew", "-roll-mins", "600", WEB).returncode == 0
    issued = not_before(topdir, "next")
    # Then a changed setting does not move it, a -roll-mins given to the roll does
    edit(topdir / MAIN, "min_roll_mins = 90", "min_roll_mins = 0")
    assert roll_due(mgr) == issued + timedelta(minutes=600)
    assert "< 600 mins" in mgr("-roll", WEB).stdout
    assert mgr("-roll", "-roll-mins", "0", WEB).returncode == 0
    assert not (topdir / "certs/example.com/web-ec/next").exists()


def test_the_wait_reads_well(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew").returncode == 0
    assert mgr("-f", "-renew", WEB).returncode == 0
    # one minute is one minute
    too_soon = mgr("-roll", "-roll-mins", "1", WEB)
    assert "too soon to roll: cert is 0 mins old < 1 min\n" in too_soon.stdout, too_soon.stdout
    # and a wait under a minute is in seconds (upstream: "cert is 1 mins old < 0.1 mins")
    seconds = mgr("-roll", "-roll-mins", "0.5", WEB)
    assert re.search(r"too soon to roll: cert is \d+ s old < 30 s\n", seconds.stdout), (
        seconds.stdout
    )


def everything_issued(topdir: Path) -> bool:
    return all(
        (topdir / "certs/example.com" / svc / "curr/cert.pem").is_file()
        for svc in ("mail-ec", "mail-rsa", "web-ec")
    )


def test_a_copy_of_a_service_file_is_ignored_with_a_warning(topdir: Path, mgr: RunMgr) -> None:
    # Given every service of the group found by '*', and a backup copy beside the real file
    edit(topdir / MAIN, "services = ['mail-ec', 'mail-rsa', 'web-ec']", "services = ['*']")
    group = topdir / "conf.d/example.com"
    shutil.copy(group / "web-ec", group / "web-ec.bak")
    (group / ".web-ec.swp").write_bytes(b"\x00vim swap")
    # When the group is renewed
    result = mgr("-renew")
    # Then the copy is named once as ignored, and every service of every group is issued
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"Warning: {group / 'web-ec.bak'}: says service = 'web-ec', so it is no service file "
        "of its own (a copy?): ignored"
    ]
    assert everything_issued(topdir)
    assert not (topdir / "certs/example.com/web-ec.bak").exists()


def test_a_service_file_that_does_not_load_fails_alone(topdir: Path, mgr: RunMgr) -> None:
    # Given a service of a '*' group whose file does not load, and a CA group found by '*'
    # whose intermediate does not load either
    main = topdir / MAIN
    edit(main, "services = ['mail-ec', 'mail-rsa', 'web-ec']", "services = ['*']")
    edit(main, "services = ['my-root', 'my-int']", "services = 'ALL'")
    group = topdir / "conf.d/example.com"
    text = (group / "web-ec").read_text().replace("service = 'web-ec'", "service = 'broken'")
    (group / "broken").write_text(text.replace("ktype = 'ec'", "ktype = 7"))
    # When everything is renewed
    result = mgr("-renew")
    # Then that service fails with one line naming file, key and value; the others are issued
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"Error: example.com:broken fails alone: {group / 'broken'}: KeyOpts.ktype = 7: "
        "Input should be 'ec', 'rsa' or 'ed25519'"
    ], result.stderr
    assert everything_issued(topdir)
    assert not (topdir / "certs/example.com/broken").exists()
    # When the intermediate's file breaks, what it signs fails with it; the root still works
    int_file = topdir / "conf.d/ca/my-int"
    int_file.write_text(int_file.read_text().replace("ktype = 'ec'", "ktype = 7"))
    forced = mgr("-f", "-renew")
    assert forced.returncode == 1
    errors = forced.stderr.splitlines()
    assert any(line.startswith("Error: ca:my-int fails alone:") for line in errors), errors
    assert any(
        line.startswith("Error: example.com:web-ec fails alone:")
        and "the CA's service file" in line
        for line in errors
    ), errors
    assert os.readlink(topdir / "certs/ca/my-root/next")
    # When the broken service is named, the run stops before anything is written
    named = mgr("-renew", "example.com:broken")
    assert named.returncode == 2 and "KeyOpts.ktype" in named.stderr
