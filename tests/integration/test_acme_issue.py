"""ACME dns-01 issuance end to end, in-process: ``sslm-mgr -renew`` of a service signed by the
lab's Pebble, its challenges published through the lab's BIND (primary and secondary).

Run under the lab lock:
``flock /tmp/sslm-lab.lock .venv/bin/pytest -q tests/integration/test_acme_issue.py``.
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from lab_dns import DnsLab
from lab_pebble import Pebble
from services import RedisServer, WorkerStarter, require_binary
from support import REPO, run_tool

from sslm_tasks import workflows
from sslm_tasks.acme.orders import OrderFailed
from sslm_tasks.config.load import load_config
from sslm_tasks.dns.challenges import parse_include_text
from sslm_tasks.lifecycle import acme_issue, build
from sslm_tasks.lifecycle.workspace import RunOptions, Workspace
from sslm_tasks.workflows import RunRequest, run_in_process

pytestmark = pytest.mark.integration

SERVICE = """name = 'Web'
group = 'example.test'
service = 'web'
signing_ca = 'pebble'

[KeyOpts]
    ktype = 'ec'
    ec_algo = 'secp256r1'

[X509]
    CN = 'example.test'
    O = 'Example'
    C = 'US'
    email = 'hostmaster@example.test'
    sans = ['example.test', '*.example.test', 'www.other.test']
"""
SVC = "example.test/web"
APEXES = ("example.test", "other.test")


@pytest.fixture
def topdir(tmp_path: Path, dns_lab: DnsLab, pebble: Pebble) -> Path:
    top = tmp_path / "top"
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    (top / "conf.d/example.test").mkdir()
    (top / "conf.d/example.test/web").write_text(SERVICE)
    ca_info = top / "conf.d/ca-info.conf"
    ca_info.write_text(
        ca_info.read_text()
        + f"""
[pebble]
    ca_desc = 'The lab Pebble'
    ca_type = 'acme'
    ca_validation = 'dns-01'
    ca_acme_directory = '{pebble.directory_url}'
    ca_acme_ca_bundle = '{pebble.ca_bundle}'
"""
    )
    main = top / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text()
        + f"""
[[groups]]
    active = true
    domain = 'example.test'
    services = ['web']

[[dns_primary]]
    domain = 'default'
    server = '{dns_lab.primary}'
    port = {dns_lab.port}

[[dns_primary]]
    domain = 'other.test'
    server = '{dns_lab.primary}'
    port = {dns_lab.port}

[dns]
    acme_dir = ['{dns_lab.acme_dir}']
    restart_cmd = '{dns_lab.refresh_script}'
"""
    )
    return top


def mgr(topdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tool("sslm-mgr", *args, cwd=topdir, timeout=300)


def openssl_verify(pebble: Pebble, version: Path, tmp_path: Path) -> str:
    """``openssl verify`` of the stored cert against Pebble's root, through the stored chain."""
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.roots_pem())
    done = subprocess.run(
        [
            require_binary("openssl"),
            "verify",
            "-CAfile",
            str(root),
            "-untrusted",
            str(version / "chain.pem"),
            str(version / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout + done.stderr


def records_left(lab: DnsLab) -> dict[str, list[str]]:
    """The challenge records still in each apex's include (which must stay loadable)."""
    left = {}
    for apex in APEXES:
        path = lab.acme_file(apex)
        left[apex] = [r.value for r in parse_include_text(path.read_text(), source=path)]
    return left


def test_dns01_certificate_with_a_wildcard_and_two_apexes(
    topdir: Path, dns_lab: DnsLab, pebble: Pebble, tmp_path: Path
) -> None:
    # When the service is renewed the first time
    first = mgr(topdir, "-renew", "example.test:web")

    # Then it is issued by Pebble, for every name, and rolled into curr
    assert first.returncode == 0, first.stdout + first.stderr
    curr = topdir / "certs" / SVC / "curr"
    assert openssl_verify(pebble, curr, tmp_path).strip().endswith("OK")
    # and the stored intermediate is Pebble's
    assert pebble.intermediates_pem().strip() in (curr / "chain.pem").read_bytes()
    text = subprocess.run(
        ["openssl", "x509", "-in", str(curr / "cert.pem"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("DNS:example.test", "DNS:*.example.test", "DNS:www.other.test"):
        assert name in text
    # and the account is under cb/, its key readable by the owner only
    keys = list((topdir / "certs" / SVC / "cb").rglob("private_key.json"))
    assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    # and the challenge records are gone again, from files the zones still include
    assert records_left(dns_lab) == {apex: [] for apex in APEXES}
    assert dns_lab.refresh(*APEXES).returncode == 0
    # and a second renew finds nothing due
    issued = curr.resolve()
    again = mgr(topdir, "-renew", "example.test:web")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "renewing" not in again.stdout, again.stdout
    assert curr.resolve() == issued


def test_records_the_zone_does_not_serve_fail_the_build_keep_curr_and_resume(
    topdir: Path,
    dns_lab: DnsLab,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a current certificate
    assert mgr(topdir, "-renew", "example.test:web").returncode == 0
    curr = topdir / "certs" / SVC / "curr"
    before = (curr / "cert.pem").read_bytes()
    # and an acme_dir the zones do not include
    elsewhere = tmp_path / "not-included"
    elsewhere.mkdir()
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text().replace(str(dns_lab.acme_dir), str(elsewhere)))

    # When a forced renewal runs in-process with a short bound
    monkeypatch.setattr(workflows, "ACME_WAIT_S", 3.0)
    monkeypatch.setattr(workflows, "ACME_POLL_S", 0.2)
    config, refs = load_config(["example.test:web"], conf_dir=topdir / "conf.d")
    ws = Workspace(config=config, options=RunOptions(force=True))
    report = run_in_process(ws, refs, RunRequest(renew=True))

    # Then it fails naming the step and the server that lacks the records
    assert not report.ok
    failure = " ".join(report.outcomes[0].actions)
    assert "acme_propagated: not done after 3 s" in failure, failure
    assert f"{dns_lab.primary}" in failure and "TXT lacks" in failure, failure
    # and curr is what it was, the order kept for the next run
    assert (curr / "cert.pem").read_bytes() == before
    assert not (topdir / "certs" / SVC / "next").exists()
    state = json.loads((topdir / "certs" / SVC / "state.json").read_text())
    order_url = state["extra"]["acme_order"]["url"]

    # When the setup is repaired and the service renewed again (no -f: the build resumes)
    main.write_text(main.read_text().replace(str(elsewhere), str(dns_lab.acme_dir)))
    config, refs = load_config(["example.test:web"], conf_dir=topdir / "conf.d")
    with caplog.at_level(logging.INFO):
        resumed = run_in_process(Workspace(config=config), refs, RunRequest(renew=True))

    # Then the same order finishes: no second order for the same build
    assert resumed.ok, resumed.outcomes[0].actions
    assert f"resumed order {order_url}" in caplog.text
    assert "created order" not in caplog.text
    assert (topdir / "certs" / SVC / "next").exists()
    assert records_left(dns_lab) == {apex: [] for apex in APEXES}


def test_workers_issue_the_same_certificate_through_the_acme_tasks(
    topdir: Path, pebble: Pebble, redis_server: RedisServer, workers: WorkerStarter, tmp_path: Path
) -> None:
    # Given a worker on every queue, and dns_check_delay as a short first countdown
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text().replace("dns_xtra_ns = []", "dns_xtra_ns = []\n    dns_check_delay = 1")
    )
    worker = workers.start(
        "all@acme", pool="prefork", concurrency=2, env={"SSL_MGR_TOPDIR": str(topdir)}
    )

    # When the CLI enqueues the renewal
    result = run_tool(
        "sslm-mgr",
        "-renew",
        "example.test:web",
        cwd=topdir,
        env={"SSLM_BROKER_URL": redis_server.url()},
        timeout=300,
    )

    # Then the ACME tasks ran between csr and store, and the chain verifies to Pebble's root
    assert result.returncode == 0, result.stdout + result.stderr
    curr = topdir / "certs" / SVC / "curr"
    assert openssl_verify(pebble, curr, tmp_path).strip().endswith("OK")
    log = worker.service.log_text()
    for step in ("order", "publish", "propagated", "answer", "validated", "finalize"):
        assert f"sslm.issue.acme_{step}[" in log and "succeeded" in log, step
    state = (topdir / "certs" / SVC / "state.json").read_text()
    assert "acme_order" not in state  # the finished order's record is gone


def test_a_challenge_pebble_rejects_fails_the_order_and_withdraws_its_records(
    topdir: Path, dns_lab: DnsLab
) -> None:
    # Given a build whose order was created and published, but answered before DNS had
    # the records (the lab's include is emptied: the CA finds no TXT value)
    config, refs = load_config(["example.test:web"], conf_dir=topdir / "conf.d")
    ws = Workspace(config=config)
    ref = refs[0]
    build.start_build(ws, ref)
    build.make_key(ws, ref)
    build.make_csr(ws, ref)
    acme_issue.order(ws, ref)
    acme_issue.publish(ws, ref)
    for apex in APEXES:
        dns_lab.acme_file(apex).write_text(";; emptied by the test\n")
    assert dns_lab.refresh(*APEXES).returncode == 0
    acme_issue.answer(ws, ref)

    # When the authorizations are polled
    deadline = time.monotonic() + 30
    with pytest.raises(OrderFailed) as failed:
        while time.monotonic() < deadline:
            ready, _ = acme_issue.validated(ws, ref)
            assert not ready
            time.sleep(0.2)

    # Then the order failed with Pebble's reason, its record is gone, so is every record
    assert "unauthorized" in str(failed.value) and "TXT" in str(failed.value), failed.value
    state = json.loads((topdir / "certs" / SVC / "state.json").read_text())
    assert acme_issue.ORDER_KEY not in state["extra"]
    store_file = topdir / "certs/example.test/acme-challenge.example.test"
    assert parse_include_text(store_file.read_text(), source=store_file) == []
    # and the next run orders anew and succeeds
    report = run_in_process(ws, refs, RunRequest(renew=True))
    assert report.ok, report.outcomes[0].actions
    assert (topdir / "certs" / SVC / "curr").exists()
