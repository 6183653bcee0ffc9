"""Issue 12's failure, seen everywhere it must be: a service deployed to an ssh server that
refuses connections. ``-s`` exits non-zero naming the server, ``-s --check`` is CRITICAL, the
metrics endpoint of a real ``sslm-metrics`` process shows the deploy failed and the
certificate's real notAfter; then the server comes back, the next in-process run deploys
without a new certificate, and everything says ok again.

The failed deploy's retry is due 1 minute later; the test moves the ledger's ``retry_at`` into
the past (the command line has no clock to inject) rather than wait.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from exporter import key, not_after, start_exporter
from services import Services
from sshd import start_sshd
from support import RunMgr

from sslm_tasks.cli.scrape import DEPLOY_STATUS, EXPIRATION, HEALTH, READY

pytestmark = pytest.mark.integration

SERVER = "smtp:smtp1.test"
MAIL = {"group": "example.com", "service": "mail-ec"}


def links(topdir: Path) -> dict[str, str]:
    return {str(p.relative_to(topdir)): str(p.readlink()) for p in topdir.glob("certs/*/*/curr")}


def test_a_refused_deploy_is_shown_everywhere_until_the_server_takes_it(
    services: Services, topdir: Path, mgr: RunMgr, tmp_path: Path
) -> None:
    # Given the example with mail-ec deployed over ssh to smtp1.test, whose sshd is down
    prod, remote = topdir / "prod-certs", tmp_path / "remote"
    prod.mkdir()
    remote.mkdir()
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text()
        + """
[smtp]
    servers = ['smtp1.test']
    svc_depends = [['example.com', ['mail-ec']]]
"""
    )
    sshd = start_sshd(services, remote_roots={prod: remote})
    sshd.service.terminate()

    # When the certificates are issued
    issued = mgr("-renew", env=sshd.env())

    # Then the deploy failed by name, and the run says so
    assert issued.returncode == 1, issued.stdout + issued.stderr
    [failed] = [line for line in issued.stdout.splitlines() if line.startswith("Deploy failed")]
    assert "smtp1.test" in failed and "Connection refused" in failed, issued.stdout
    certificates = links(topdir)

    # and -s exits 1 naming the server, with when and why
    status = mgr("-s", "example.com:mail-ec")
    assert status.returncode == 1, status.stdout + status.stderr
    assert "              health : failing" in status.stdout
    assert f"             failing : deploy on {SERVER} since " in status.stdout
    assert "Connection refused" in status.stdout
    assert f"             pending : {SERVER} has not taken curr yet" in status.stdout
    # and the check is CRITICAL, naming it
    check = mgr("-s", "--check")
    assert check.returncode == 2
    assert f"example.com:mail-ec: deploy on {SERVER} failing:" in check.stdout

    # and the metrics endpoint shows the failed deploy and the real notAfter
    exporter = start_exporter(services, topdir)
    shown = exporter.scrape()
    assert shown[key(DEPLOY_STATUS, server=SERVER, **MAIL)] == 0
    cert = topdir / "certs/example.com/mail-ec/curr/cert.pem"
    assert shown[key(EXPIRATION, version="curr", **MAIL)] == not_after(cert)
    assert shown[key(HEALTH, health="failing", **MAIL)] == 1
    assert shown[key(READY, condition="True", **MAIL)] == 1  # the certificate itself is fine
    assert shown[key("sslm_failures", step="deploy")] == 1
    assert shown[key("sslm_deploy_consecutive_failures", server=SERVER)] == 1

    # When the server is back, and its retry is due (moved into the past, see above)
    sshd.start_again(services)
    ledger_file = topdir / "certs/.deploys.json"
    ledger = json.loads(ledger_file.read_text())
    assert ledger[SERVER]["ok"] is False and ledger[SERVER]["retry_at"] is not None
    ledger[SERVER]["retry_at"] = "2000-01-01T00:00:00+00:00"
    ledger_file.write_text(json.dumps(ledger))
    # and sslm-mgr runs with no action
    again = mgr(env=sshd.env())

    # Then it deployed the certificates it had, making no new one
    assert again.returncode == 0, again.stdout + again.stderr
    assert links(topdir) == certificates
    assert (remote / "example.com/mail-ec/curr/cert.pem").read_bytes() == cert.read_bytes()
    # and -s, the check and the metrics say ok
    status = mgr("-s", "example.com:mail-ec")
    assert status.returncode == 0, status.stdout
    assert "              health : ok" in status.stdout
    assert mgr("-s", "--check").returncode == 0
    shown = exporter.scrape()
    assert shown[key(DEPLOY_STATUS, server=SERVER, **MAIL)] == 1
    assert shown[key(HEALTH, health="ok", **MAIL)] == 1
    assert shown[key("sslm_failures", step="deploy")] == 0
    assert shown[key("sslm_deploy_consecutive_failures", server=SERVER)] == 0
