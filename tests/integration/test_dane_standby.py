"""Standby keys (``key_standby``) end to end, in-process, against the lab's signed BIND primary
and secondary and a TLS server that each deploy restarts with the production certificate.

A service with a 1-day ``key_rollover_days`` is driven with an injected clock through renewals
on its key and one key switch. At every step the zone (read with ``delv``, DNSSEC-validated on
both name servers) lists the key being served and the standby, and a DANE client checking the
server against exactly those records (``openssl s_client -dane_tlsa_rrdata``) succeeds.
"""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lab_dane import MailServer, serve_mail, spki_hash, validated_tlsa, wait_served, write_topdir
from lab_dns import DnsLab
from lab_update import redis_texts, texts_under
from services import RedisServer, WorkerStarter
from support import edit, run_tool

from sslm_tasks.cli.local import run_in_process
from sslm_tasks.cli.run import RunReport, RunRequest
from sslm_tasks.config.load import load_config
from sslm_tasks.lifecycle.workspace import Workspace

SVC = "example.test/mail"
MX = "mx1.example.test"


@pytest.fixture
def topdir(tmp_path: Path, dns_lab: DnsLab) -> Path:
    top = write_topdir(tmp_path / "top", dns_lab)
    edit(
        top / "conf.d/example.test/mail",
        "dane_tls_ttl = 1\n",
        "dane_tls_ttl = 1\nkey_standby = true\nkey_rollover_days = 1\n",
    )
    # Certificates of 0.2 days, due at half their life: every 3 (injected) hours, a renewal.
    edit(top / "conf.d/ca/my-int", "sign_end_days = 90", "sign_end_days = 0.2")
    return top


@pytest.fixture
def mail_server(topdir: Path, tmp_path: Path) -> Iterator[MailServer]:
    server = serve_mail(topdir, tmp_path, verify=True)
    yield server
    server.stop()


def dane_client_ok(server: MailServer, rrdata: set[str], at: datetime) -> str:
    """Connect as a DANE client that trusts exactly ``rrdata`` at ``MX``; the verdict line."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername", MX]
    args += ["-dane_tlsa_domain", MX, "-verify_return_error", "-attime", str(int(at.timestamp()))]
    for rr in sorted(rrdata):
        args += ["-dane_tlsa_rrdata", rr]
    probe = subprocess.run(args, input="", capture_output=True, text=True, timeout=30, check=False)
    assert probe.returncode == 0 and "Verification: OK" in probe.stdout, probe.stdout + probe.stderr
    return next(line for line in probe.stdout.splitlines() if "DANE TLSA" in line)


def run_at(topdir: Path, at: datetime) -> RunReport:
    """One renew-and-roll run of the service (and its CAs) with the clock at ``at``."""
    config, refs = load_config(["example.test:mail"], conf_dir=topdir / "conf.d")
    return run_in_process(
        Workspace(config=config, clock=lambda: at), refs, RunRequest(renew=True, roll=True)
    )


def actions(report: RunReport) -> list[str]:
    return [action for outcome in report.outcomes for action in outcome.actions]


def test_renewals_keep_the_key_and_the_switch_to_the_standby_needs_no_wait(
    topdir: Path, dns_lab: DnsLab, mail_server: MailServer
) -> None:
    owner = f"_{mail_server.port}._tcp.{MX}"
    certs = topdir / "certs" / SVC
    start = datetime.now(UTC)

    def check_dns_and_client(at: datetime, served_key: str, standby_key: str) -> set[str]:
        """Both keys are in the validated zone on every NS, and a DANE client trusts the
        server by those records alone."""
        wanted = {f"3 1 1 {served_key}", f"3 1 1 {standby_key}"}
        wait_served(dns_lab, owner, wanted)
        served = validated_tlsa(dns_lab, owner)
        assert all(wanted <= records for records in served.values()), served
        assert spki_hash(topdir / "prod-certs" / SVC / "curr/cert.pem") == served_key
        line = dane_client_ok(mail_server, served[dns_lab.primary], at)
        assert f"...{served_key[-24:]} matched ee certificate" in line.lower(), line
        return served[dns_lab.primary]

    # Given a first certificate (its key K1) and a standby key made and published beside it
    first = run_tool("sslm-mgr", "-renew", cwd=topdir)
    assert first.returncode == 0, first.stdout + first.stderr
    k1 = spki_hash(certs / "curr/cert.pem")
    standby_file = certs / "standby/privkey.pem"
    s1 = spki_hash(standby_file, private=True)
    assert s1 != k1
    assert stat.S_IMODE(standby_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(standby_file.parent.stat().st_mode) == 0o700
    assert not list((topdir / "prod-certs").rglob("standby"))
    assert "PRIVATE" not in (certs / "state.json").read_text()
    check_dns_and_client(start, k1, s1)

    # When it is renewed twice within the day: the key stays, so do the records, no DNS wait
    for hours in (3, 6):
        at = start + timedelta(hours=hours)
        report = run_at(topdir, at)
        assert report.ok, actions(report)
        assert any("TLSA records unchanged" in a or "rolled" in a for a in actions(report)), (
            actions(report)
        )
        assert spki_hash(certs / "curr/cert.pem") == k1
        assert not (certs / "next").exists()
        check_dns_and_client(at, k1, s1)
    renewed_at = json.loads((certs / "state.json").read_text())["keys"]
    assert renewed_at["standby_key"] == s1 and renewed_at["standby_seen"] is not None

    # When the key is a day old: the renewal takes the standby key and rolls in the same run
    switch_at = start + timedelta(hours=25)
    report = run_at(topdir, switch_at)
    said = actions(report)
    assert report.ok, said
    assert any("switching to the standby key" in a for a in said), said
    assert any("next holds the standby key" in a for a in said), said
    assert spki_hash(certs / "curr/cert.pem") == s1
    assert spki_hash(topdir / "prod-certs" / SVC / "curr/cert.pem") == s1
    assert not (certs / "next").exists()
    # Then a new standby (S2) is published beside S1, and K1's records are retired
    s2 = spki_hash(standby_file, private=True)
    assert s2 not in (k1, s1)
    after_switch = check_dns_and_client(switch_at, s1, s2)
    wait_served(dns_lab, owner, {f"3 1 1 {k1}"}, present=False)

    # When renewed again on the new key: nothing in DNS changes
    later = switch_at + timedelta(hours=3)
    report = run_at(topdir, later)
    assert report.ok, actions(report)
    assert spki_hash(certs / "curr/cert.pem") == s1
    assert check_dns_and_client(later, s1, s2) == after_switch - {f"3 1 1 {k1}"}

    # and -s says how old the key is and which standby is ready since when
    status = json.loads(run_tool("sslm-mgr", "-s", "--json", cwd=topdir).stdout)
    mail = next(s for s in status["services"] if s["service"] == "mail")
    assert mail["keys"]["curr_key"] == s1 and mail["keys"]["standby_key"] == s2
    assert mail["keys"]["rollover_days"] == 1
    text = run_tool("sslm-mgr", "-s", "example.test:mail", cwd=topdir).stdout
    assert f"standby key : {s2[:16]}" in text and "key age" in text, text


def test_a_compromised_key_is_replaced_by_the_standby_whose_records_are_out(
    topdir: Path, dns_lab: DnsLab
) -> None:
    owner = f"_25._tcp.{MX}"
    certs = topdir / "certs" / SVC
    # Given a certificate and its standby, which every name server has been seen serving
    first = run_tool("sslm-mgr", "-renew", cwd=topdir)
    assert first.returncode == 0, first.stdout + first.stderr
    k1 = spki_hash(certs / "curr/cert.pem")
    s1 = spki_hash(certs / "standby/privkey.pem", private=True)
    wait_served(dns_lab, owner, {f"3 1 1 {k1}", f"3 1 1 {s1}"})
    watched = run_tool("sslm-mgr", "-renew", "example.test:mail", cwd=topdir)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert json.loads((certs / "state.json").read_text())["keys"]["standby_seen"] is not None
    # When curr's key is reported compromised
    done = run_tool(
        "sslm-mgr", "revoke", "example.test:mail", "--reason", "keyCompromise", cwd=topdir
    )
    # Then the new build holds the standby key, whose roll waits only for what is left of the
    # standby's 2 x TTL (the owners' negative-caching TTL, asked before it was published)
    assert done.returncode == 0, done.stdout + done.stderr
    assert spki_hash(certs / "next/cert.pem") == s1
    assert "not rolling yet: next holds the standby key" in done.stdout, done.stdout
    # and once that has passed, it rolls with no new wait for DNS
    report = run_at(topdir, datetime.now(UTC) + timedelta(minutes=3))
    assert report.ok, actions(report)
    assert any("next holds the standby key, whose TLSA" in a for a in actions(report))
    assert spki_hash(certs / "curr/cert.pem") == s1
    # and the compromised key's records leave the zone, a new standby's come in
    s2 = spki_hash(certs / "standby/privkey.pem", private=True)
    assert s2 not in (k1, s1)
    wait_served(dns_lab, owner, {f"3 1 1 {s1}", f"3 1 1 {s2}"})
    wait_served(dns_lab, owner, {f"3 1 1 {k1}"}, present=False)


def test_on_workers_the_standby_is_published_and_watched_and_is_in_no_message(
    topdir: Path, dns_lab: DnsLab, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a worker serving every queue of this tree, and the CLI talking to it
    worker = workers.start("standby@test", env={"SSL_MGR_TOPDIR": str(topdir)})
    broker = {"SSLM_BROKER_URL": redis_server.url()}
    owner = f"_25._tcp.{MX}"
    certs = topdir / "certs" / SVC
    # When the first certificate is issued through the workers
    first = run_tool("sslm-mgr", "-renew", cwd=topdir, env=broker, timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr
    # Then its key's and the standby's records reach both name servers
    k1 = spki_hash(certs / "curr/cert.pem")
    standby_file = certs / "standby/privkey.pem"
    s1 = spki_hash(standby_file, private=True)
    wait_served(dns_lab, owner, {f"3 1 1 {k1}", f"3 1 1 {s1}"})
    # and the next renew check (nothing due) sees every NS serve the standby
    again = run_tool("sslm-mgr", "-renew", cwd=topdir, env=broker, timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    keys = json.loads((certs / "state.json").read_text())["keys"]
    assert keys["standby_key"] == s1 and keys["standby_ns"] == "2 of 2", keys
    # and the standby key is in no message, task result, log line or record
    body = "".join(standby_file.read_text().splitlines()[1:-1])
    held = (
        redis_texts(redis_server.url()) + texts_under(topdir / "logs") + worker.service.log_text()
    )
    held += (certs / "state.json").read_text()
    assert body[40:100] not in held and "PRIVATE KEY" not in held  # past the ASN.1 header


def test_an_owner_a_renewal_adds_is_asked_before_the_standby_goes_there(
    topdir: Path, dns_lab: DnsLab
) -> None:
    # Given a standby service whose records are at its names (SANs), seen on every NS
    service = topdir / "conf.d/example.test/mail"
    edit(service, "dane_tls = [[25, 'tcp', 3, 1, 1]]", "dane_tls = [[443, 'tcp', 3, 1, 1]]")
    certs = topdir / "certs" / SVC
    start = datetime.now(UTC)
    first = run_tool("sslm-mgr", "-renew", cwd=topdir)
    assert first.returncode == 0, first.stdout + first.stderr
    report = run_at(topdir, start + timedelta(hours=1))
    assert report.ok, actions(report)
    keys = json.loads((certs / "state.json").read_text())["keys"]
    new_owner = "_443._tcp.www.example.test."
    assert keys["standby_seen"] is not None and new_owner not in keys["standby_owners"]
    s1 = keys["standby_key"]
    # When a renewal adds a name, and its certificate rolls (after the usual DNS gate)
    edit(service, "sans = ['example.test',", "sans = ['www.example.test', 'example.test',")
    k1 = keys["curr_key"]
    for hours in (4, 4.1, 5):
        report = run_at(topdir, start + timedelta(hours=hours))
        assert report.ok, actions(report)
        # next's records (the same key at the new name too) reach both NS before the gate looks
        wait_served(dns_lab, new_owner, {f"3 1 1 {k1}"})
    assert not (certs / "next").exists(), "the renewal with the new name did not roll"
    # Then the standby goes to the new name only after every NS was asked what caches hold
    # there, and must be seen again before it is ready
    keys = json.loads((certs / "state.json").read_text())["keys"]
    assert new_owner in keys["standby_owners"], keys
    assert keys["standby_seen"] is None and keys["standby_key"] == s1, keys
    wait_served(dns_lab, new_owner, {f"3 1 1 {s1}"})
    assert run_at(topdir, start + timedelta(hours=6)).ok
    keys = json.loads((certs / "state.json").read_text())["keys"]
    assert keys["standby_seen"] is not None and keys["standby_ns"] == "2 of 2", keys
