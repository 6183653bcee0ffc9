"""``sslm-metrics`` as an operator runs it: a real process serving HTTP, or writing
node_exporter's text file, on real trees, as root or as a user who may not read a key."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from exporter import key, not_after, run_metrics, samples, start_exporter
from services import Services
from support import REPO, RunMgr, edit, run_tool

from sslm_tasks.cli.scrape import EXPIRATION, HEALTH, READY, RENEWAL, ROLL_DUE

pytestmark = pytest.mark.integration

SERVICES = [("ca", "my-root"), ("ca", "my-int"), ("example.com", "mail-ec"),
            ("example.com", "mail-rsa"), ("example.com", "web-ec")]  # fmt: skip
WEB = {"group": "example.com", "service": "web-ec"}
#: A user that owns nothing of the tree, in the tree's group (root's, as the tests run as root).
READER = ["setpriv", "--reuid=10002", "--regid=0", "--clear-groups", "--"]


def test_the_endpoint_shows_every_certificate_as_openssl_reads_it(
    services: Services, topdir: Path, mgr: RunMgr
) -> None:
    assert mgr("-renew").returncode == 0
    shown = start_exporter(services, topdir).scrape()
    for group, service in SERVICES:
        names = {"group": group, "service": service}
        cert = topdir / "certs" / group / service / "curr/cert.pem"
        assert shown[key(EXPIRATION, version="curr", **names)] == not_after(cert)
        assert shown[key(HEALTH, health="ok", **names)] == 1
        assert shown[key(READY, condition="True", **names)] == 1
    # a 90-day leaf renews with 30 days left
    web = topdir / "certs/example.com/web-ec/curr/cert.pem"
    assert shown[key(RENEWAL, **WEB)] == not_after(web) - 30 * 86400
    assert {shown[key("sslm_failures", step=step)] for step in ("build", "deploy")} == {0}
    assert shown[key("sslm_config_last_reload_successful")] == 1


def test_each_change_to_the_tree_shows_at_the_next_scrape(
    services: Services, topdir: Path, mgr: RunMgr
) -> None:
    # Given an exporter that has read the issued tree once
    assert mgr("-renew").returncode == 0
    exporter = start_exporter(services, topdir)
    before = exporter.scrape()
    assert before[key("sslm_metrics_services_rendered")] == 0  # all read at start, kept since

    # When web-ec gets a next
    assert mgr("-f", "-renew", "example.com:web-ec").returncode == 0
    shown = exporter.scrape()

    # Then only it was rendered again, and its next and roll time show
    assert shown[key("sslm_metrics_services_rendered")] == 1
    nxt = topdir / "certs/example.com/web-ec/next/cert.pem"
    assert shown[key(EXPIRATION, version="next", **WEB)] == not_after(nxt)
    assert key(ROLL_DUE, **WEB) in shown and key(ROLL_DUE, **WEB) not in before
    assert shown[key(HEALTH, health="pending", **WEB)] == 1

    # When it rolls, its curr is the new certificate
    assert mgr("-roll", "-roll-mins", "0", "example.com:web-ec").returncode == 0
    shown = exporter.scrape()
    curr = topdir / "certs/example.com/web-ec/curr/cert.pem"
    assert shown[key(EXPIRATION, version="curr", **WEB)] == not_after(curr)
    assert key(EXPIRATION, version="next", **WEB) not in shown

    # When the renew rule changes so that every 90-day certificate is due, each says so
    edit(topdir / "conf.d/ssl-mgr.conf", "target_90 = 30", "target_90 = 95")
    shown = exporter.scrape()
    assert shown[key(HEALTH, health="expiring", **WEB)] == 1
    assert shown[key(READY, condition="False", **WEB)] == 1

    # When the configuration is broken, the last good one stays, and a metric says so
    (topdir / "conf.d/ssl-mgr.conf").write_text("[globals\n")
    shown = exporter.scrape()
    assert shown[key("sslm_config_last_reload_successful")] == 0
    assert shown[key(HEALTH, health="expiring", **WEB)] == 1
    assert "configuration not reloaded, the last good one stays" in exporter.service.log_text()

    # When it stops, it says so and exits 0
    os.kill(exporter.service.process.pid, signal.SIGTERM)
    assert exporter.service.process.wait(timeout=30) == 0


def test_the_textfile_is_written_whole_for_node_exporter(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew").returncode == 0
    folder = topdir / "textfile"
    folder.mkdir()
    target = folder / "sslm.prom"
    target.write_text("old\n")
    done = run_metrics(topdir, "--textfile", str(target))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(folder) == ["sslm.prom"]  # no temp file left
    shown = samples(target.read_text())
    cert = topdir / "certs/example.com/web-ec/curr/cert.pem"
    assert shown[key(EXPIRATION, version="curr", **WEB)] == not_after(cert)


@pytest.fixture
def shared_top() -> Iterator[Path]:
    """A topdir the reader user may enter: the pytest folders are root's alone (0700)."""
    base = Path(tempfile.mkdtemp(prefix="sslm-metrics-"))
    base.chmod(0o750)
    top = base / "top"
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    try:
        yield top
    finally:
        shutil.rmtree(base)


def test_it_needs_no_access_to_a_private_key(shared_top: Path) -> None:
    # Given an issued tree, and a user who is in its group but owns nothing of it
    assert run_tool("sslm-mgr", "-renew", cwd=shared_top).returncode == 0
    keys = [
        *shared_top.glob("certs/*/*/db/*/privkey.pem"),
        *shared_top.glob("prod-certs/*/*/curr/privkey.pem"),
    ]
    assert len(keys) == 8
    for path in keys:
        denied = subprocess.run([*READER, "cat", str(path)], capture_output=True, text=True)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, path
    out = shared_top / "out"
    out.mkdir()
    os.chown(out, 10002, 0)

    # When that user writes the metrics
    done = run_metrics(shared_top, "--textfile", str(out / "sslm.prom"), wrapper=READER)

    # Then they are whole: every service read, its certificate's real dates
    assert done.returncode == 0, done.stderr
    shown = samples((out / "sslm.prom").read_text())
    assert shown[key("sslm_services_unreadable")] == 0
    for group, service in SERVICES:
        cert = shared_top / "certs" / group / service / "curr/cert.pem"
        names = {"group": group, "service": service}
        assert shown[key(EXPIRATION, version="curr", **names)] == not_after(cert)

    # When a record is private (0600, as an earlier release wrote it)
    (shared_top / "certs/example.com/web-ec/state.json").chmod(0o600)
    done = run_metrics(shared_top, "--textfile", str(out / "sslm.prom"), wrapper=READER)

    # Then that service is Unknown, and the log line names the file
    assert done.returncode == 0, done.stderr
    shown = samples((out / "sslm.prom").read_text())
    assert shown[key("sslm_services_unreadable")] == 1
    assert shown[key(READY, condition="Unknown", **WEB)] == 1
    assert "example.com:web-ec: cannot be read:" in done.stderr and "state.json" in done.stderr


def test_it_needs_no_access_to_the_secrets_the_configuration_names(shared_top: Path) -> None:
    # Given a TSIG key and an EAB HMAC key in files of their owner's alone (0600, root's)
    tsig = base64.b64encode(secrets.token_bytes(32)).decode()
    hmac_key = secrets.token_urlsafe(32)
    (shared_top / "tsig.key").write_text(
        f'key "sslm-example" {{ algorithm hmac-sha256; secret "{tsig}"; }};\n'
    )
    (shared_top / "eab.key").write_text(hmac_key + "\n")
    for name in ("tsig.key", "eab.key"):
        (shared_top / name).chmod(0o600)
    with (shared_top / "conf.d/ssl-mgr.conf").open("a") as conf:
        conf.write(
            "\n[[dns_update]]\n    domain = 'example.com'\n    server = '127.0.0.1'\n"
            "    key_file = 'tsig.key'\n"
        )
    with (shared_top / "conf.d/ca-info.conf").open("a") as conf:
        conf.write(
            "\n[zerossl]\n    ca_type = 'acme'\n    ca_eab_kid = 'kid-1'\n"
            "    ca_eab_hmac_key_file = 'eab.key'\n"
        )
    assert run_tool("sslm-mgr", "-renew", cwd=shared_top).returncode == 0
    out = shared_top / "out"
    out.mkdir()
    os.chown(out, 10002, 0)

    # When a user who may not read them writes the metrics
    done = run_metrics(shared_top, "--textfile", str(out / "sslm.prom"), wrapper=READER)

    # Then the configuration loads without them, and every service is read
    assert done.returncode == 0, done.stderr
    assert samples((out / "sslm.prom").read_text())[key("sslm_services_unreadable")] == 0


def test_a_port_in_use_is_one_line_naming_it(topdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_metrics(topdir, "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: sslm-metrics cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--listen", "localhost:9750"], "'localhost' does not appear to be an IPv4 or IPv6"),
        (["--listen", "127.0.0.1:70000"], "a port from 1 to 65535"),
        (["--listen", "::1:9750"], "write an IPv6 address in brackets"),
        (["--textfile", "x.prom", "--listen", "127.0.0.1:1"], "not allowed with argument"),
    ],
)
def test_a_bad_command_line_exits_2(args: list[str], said: str, topdir: Path) -> None:
    done = run_metrics(topdir, *args)
    assert done.returncode == 2
    assert said in done.stderr


def test_a_bad_configuration_exits_2_with_one_line(topdir: Path, tmp_path: Path) -> None:
    (topdir / "conf.d/ssl-mgr.conf").write_text("[globals\n")
    done = run_metrics(topdir, "--textfile", str(tmp_path / "x.prom"))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("Error: ") and "ssl-mgr.conf" in line
    assert not (tmp_path / "x.prom").exists()
