"""DANE end to end, in-process, against the real BIND primary and secondary of the lab:
TLSA records published before the key changes, a roll that waits until every name server has
served the new records for twice their TTL, and the old records retired after the roll."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from exporter import key, samples
from lab_dane import (
    SERVICE,
    MailServer,
    serve_mail,
    served,
    spki_hash,
    validated_tlsa,
    wait_served,
    write_topdir,
)
from lab_dns import SECONDARY, DnsLab
from services import RedisServer, WorkerStarter
from support import chain_verifies, run_tool


@pytest.fixture
def topdir(tmp_path: Path, dns_lab: DnsLab) -> Path:
    return write_topdir(tmp_path / "top", dns_lab)


def mgr(topdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_tool("sslm-mgr", *args, cwd=topdir)
    return result


def spki_record(topdir: Path, which: str) -> str:
    return f"3 1 1 {spki_hash(topdir / 'certs/example.test/mail' / which / 'cert.pem')}"


def test_tlsa_rollover_waits_for_every_name_server_then_retires_the_old_records(
    topdir: Path, dns_lab: DnsLab
) -> None:
    owner = "_25._tcp.mx1.example.test"
    # Given a first certificate: its TLSA records for every MX host are published
    first = mgr(topdir, "-renew")
    assert first.returncode == 0, first.stdout + first.stderr
    assert chain_verifies(topdir, "example.test/mail")
    old = spki_record(topdir, "curr")
    wait_served(dns_lab, owner, {old})
    wait_served(dns_lab, "_25._tcp.mx2.example.test", {old})
    assert "DNS refresh: example.test" in first.stdout
    # When a new key is renewed: next's records are published beside curr's
    renewed = mgr(topdir, "-f", "-renew", "example.test:mail")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    new = spki_record(topdir, "next")
    assert new != old
    wait_served(dns_lab, owner, {old, new})
    # Then a dry run says what the roll would wait for, and records nothing
    state = topdir / "certs/example.test/mail/state.json"
    recorded = state.read_bytes()
    records_file = topdir / "certs/example.test/mail/next/tlsa.rr"
    records_file.unlink()  # the version's records file, which a real run writes again
    dry = mgr(topdir, "-d", "-roll", "example.test:mail")
    assert dry.returncode == 0 and "every NS serves the next TLSA records" in dry.stdout, dry.stdout
    assert state.read_bytes() == recorded
    assert not records_file.exists()
    # and the first roll only observes: both servers serve next, twice the TTL must pass
    early = mgr(topdir, "-roll", "example.test:mail")
    assert early.returncode == 0 and "not rolling yet" in early.stdout, early.stdout
    assert (topdir / "certs/example.test/mail/next").exists()
    status = json.loads(mgr(topdir, "-s", "--json", "example.test:mail").stdout)["services"][0]
    assert status["phase"] == "issued" and status["dane"]["next_seen"] is not None
    assert (status["dane"]["next_ns_serving"], status["dane"]["next_ns_asked"]) == (2, 2)
    # and the metrics say so for the zone
    written = run_tool("sslm-metrics", "--textfile", str(topdir / "sslm.prom"), cwd=topdir)
    assert written.returncode == 0, written.stderr
    metrics = samples((topdir / "sslm.prom").read_text())
    assert metrics[key("sslm_tlsa_published_nameservers", apex="example.test")] == 2
    assert metrics[key("sslm_tlsa_nameservers", apex="example.test")] == 2
    # and the records validate against the signed zone's key (DNSSEC) on both servers
    served_validated = validated_tlsa(dns_lab, owner)
    assert all(new in records for records in served_validated.values()), served_validated
    time.sleep(2.2)  # dane_tls_ttl = 1 s: 2 x TTL after the first sighting
    rolled = mgr(topdir, "-roll", "example.test:mail")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert "every NS has served the next TLSA records" in rolled.stdout
    assert spki_record(topdir, "curr") == new
    # and, the (no) servers having taken it, the old records are retired from DNS
    wait_served(dns_lab, owner, {old}, present=False)
    wait_served(dns_lab, owner, {new})
    text = (dns_lab.tlsa_dir / "tlsa.example.test").read_text().lower()
    assert new.split()[-1] in text and old.split()[-1] not in text


def test_a_lagging_secondary_holds_the_roll_and_is_named(topdir: Path, dns_lab: DnsLab) -> None:
    assert mgr(topdir, "-renew").returncode == 0
    dns_lab.stop_secondary()
    renewed = mgr(topdir, "-f", "-renew", "example.test:mail")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    held = mgr(topdir, "-roll", "example.test:mail")
    assert held.returncode == 0
    assert "waiting for DNS" in held.stdout and SECONDARY in held.stdout, held.stdout
    assert (topdir / "certs/example.test/mail/next").exists()
    # -f overrides the gate
    forced = mgr(topdir, "-f", "-roll", "example.test:mail")
    assert forced.returncode == 0 and not (topdir / "certs/example.test/mail/next").exists()


def test_reusing_the_key_needs_no_dns_wait(topdir: Path, dns_lab: DnsLab) -> None:
    assert mgr(topdir, "-renew").returncode == 0
    assert mgr(topdir, "-f", "-r", "-renew", "example.test:mail").returncode == 0
    rolled = mgr(topdir, "-roll", "example.test:mail")
    assert rolled.returncode == 0 and "TLSA records unchanged" in rolled.stdout, rolled.stdout
    assert not (topdir / "certs/example.test/mail/next").exists()


@pytest.fixture
def served_mx(topdir: Path, tmp_path: Path) -> Iterator[MailServer]:
    """An [smtp] server on this host whose restart command (re)starts a real TLS listener, and a
    verify probe for it; DANE records for its port under the MX names."""
    server = serve_mail(topdir, tmp_path, verify=True)
    try:
        yield server
    finally:
        server.stop()


def test_deploy_verifies_the_served_key_and_dane_and_a_mismatch_keeps_old_records(
    topdir: Path, dns_lab: DnsLab, served_mx: MailServer
) -> None:
    owner = f"_{served_mx.port}._tcp.mx1.example.test"
    # Given a first certificate: deployed, served, matching its published TLSA record
    first = mgr(topdir, "-renew")
    assert first.returncode == 0, first.stdout + first.stderr
    old = spki_record(topdir, "curr")
    wait_served(dns_lab, owner, {old})
    status = json.loads(mgr(topdir, "-s", "--json", "example.test:mail").stdout)["services"][0]
    deployed = [(s["server"], s["last_deploy"]["ok"]) for s in status["servers"]]
    assert deployed == [("smtp:localhost", True)]
    # When a new key is renewed (deployed and verified: the server still serves curr)
    assert mgr(topdir, "-f", "-renew", "example.test:mail").returncode == 0
    # When the server is made to serve another key at the next roll
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=wrong",
            "-keyout",
            str(served_mx.wrong_key),
            "-out",
            str(served_mx.wrong),
            "-days",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    assert "not rolling yet" in mgr(topdir, "-roll", "example.test:mail").stdout
    time.sleep(2.2)
    rolled = mgr(topdir, "-roll", "example.test:mail")
    # Then the roll is reported failed by server and probe, and the old records stay published
    assert rolled.returncode == 1, rolled.stdout
    assert "verify tls://mx1.example.test" in rolled.stdout and "expected" in rolled.stdout
    assert old in served(dns_lab, dns_lab.primary, owner)
    status = json.loads(mgr(topdir, "-s", "--json", "example.test:mail").stdout)["services"][0]
    assert status["dane"]["retiring_prev"] is True
    last_deploy = status["servers"][0]["last_deploy"]
    assert last_deploy["ok"] is False and last_deploy["failed_step"] == "verify"
    assert "verify" in last_deploy["detail"]
    # and the metrics name the failed verify
    assert verify_metrics(topdir) == (0, 1)
    # When the server serves the right certificate again, a deploy passes and retires them
    served_mx.wrong.unlink()
    fixed = mgr(topdir, "dev", "-fsr", "example.test:mail")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    wait_served(dns_lab, owner, {old}, present=False)
    assert verify_metrics(topdir) == (1, 0)


def verify_metrics(topdir: Path) -> tuple[float, float]:
    """``sslm_verify_status`` of the lab's server and how many servers fail verify, as
    ``sslm-metrics --textfile`` writes them."""
    written = run_tool("sslm-metrics", "--textfile", str(topdir / "sslm.prom"), cwd=topdir)
    assert written.returncode == 0, written.stderr
    metrics = samples((topdir / "sslm.prom").read_text())
    server = metrics[key("sslm_verify_status", server="smtp:localhost")]
    return server, metrics[key("sslm_failures", step="verify")]


def test_a_dane_tls_change_is_published_without_a_renewal(topdir: Path, dns_lab: DnsLab) -> None:
    assert mgr(topdir, "-renew").returncode == 0
    record = spki_record(topdir, "curr")
    # When a port is added to dane_tls and a renew finds nothing due
    svc = topdir / "conf.d/example.test/mail"
    svc.write_text(
        svc.read_text().replace(
            "[[25, 'tcp', 3, 1, 1]]", "[[25, 'tcp', 3, 1, 1], [465, 'tcp', 3, 1, 1]]"
        )
    )
    again = mgr(topdir, "-renew")
    # Then the new owners are published (for each DNS SAN), and the zone was refreshed
    assert again.returncode == 0 and "renew in" in again.stdout, again.stdout
    assert "DNS refresh: example.test" in again.stdout
    wait_served(dns_lab, "_465._tcp.mx1.example.test", {record})
    wait_served(dns_lab, "_465._tcp.example.test", {record})


def test_services_without_dane_leave_the_zone_file_alone_until_listed(
    topdir: Path, dns_lab: DnsLab
) -> None:
    # Given the zone's TLSA file with the mail service's records
    assert mgr(topdir, "-renew").returncode == 0
    record = spki_record(topdir, "curr")
    group_file = topdir / "certs/example.test/tlsa.example.test"
    assert record in group_file.read_text().lower()
    before = group_file.stat().st_mtime_ns
    # and, in the same zone, a service file that no longer loads
    broken = SERVICE.replace("service = 'mail'", "service = 'broken'")
    (topdir / "conf.d/example.test/broken").write_text(broken.replace("ktype = 'ec'", "ktype = 7"))
    (topdir / "certs/example.test/broken").mkdir(parents=True)
    # When a service of the zone without dane_tls is renewed
    web = topdir / "conf.d/example.test/web"
    web.write_text(
        SERVICE.replace("service = 'mail'", "service = 'web'").replace(
            "dane_tls = [[25, 'tcp', 3, 1, 1]]\n", ""
        )
    )
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text().replace("services = ['mail']", "services = ['mail', 'web']"))
    first = mgr(topdir, "-renew", "example.test:web")
    # Then it has its certificate: it neither rebuilt the zone's file nor read the others'
    assert first.returncode == 0, first.stdout + first.stderr
    assert (topdir / "certs/example.test/web/curr/cert.pem").is_file()
    assert group_file.stat().st_mtime_ns == before
    (topdir / "conf.d/example.test/broken").unlink()
    # When the mail service drops dane_tls, its next check takes its records out
    mail = topdir / "conf.d/example.test/mail"
    mail.write_text(mail.read_text().replace("dane_tls = [[25, 'tcp', 3, 1, 1]]\n", ""))
    dropped = mgr(topdir, "-renew", "example.test:mail")
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert record not in group_file.read_text().lower()
    wait_served(dns_lab, "_25._tcp.mx1.example.test", {record}, present=False)


def test_the_dane_roll_through_workers(
    topdir: Path, dns_lab: DnsLab, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a worker serving every queue of this tree, and the CLI talking to it
    workers.start("dane@test", pool="prefork", concurrency=2, env={"SSL_MGR_TOPDIR": str(topdir)})
    broker = {"SSLM_BROKER_URL": redis_server.url()}

    def remote(*args: str) -> subprocess.CompletedProcess[str]:
        return run_tool("sslm-mgr", *args, cwd=topdir, env=broker, timeout=180)

    owner = "_25._tcp.mx1.example.test"
    # When the first certificate is issued, its records reach both name servers
    first = remote("-renew")
    assert first.returncode == 0, first.stdout + first.stderr
    old = spki_record(topdir, "curr")
    wait_served(dns_lab, owner, {old})
    # and a renewal publishes next's records beside them
    renewed = remote("-f", "-renew", "example.test:mail")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    new = spki_record(topdir, "next")
    wait_served(dns_lab, owner, {old, new})
    # Then the roll task first only observes, and rolls 2 x TTL later
    early = remote("-roll", "example.test:mail")
    assert early.returncode == 0 and "not rolling yet" in early.stdout, early.stdout
    time.sleep(2.2)
    rolled = remote("-roll", "example.test:mail")
    assert rolled.returncode == 0 and "rolled" in rolled.stdout, rolled.stdout
    assert spki_record(topdir, "curr") == new
    # and once the (no) servers are deployed, the old records are retired from DNS
    wait_served(dns_lab, owner, {old}, present=False)
    wait_served(dns_lab, owner, {new})
