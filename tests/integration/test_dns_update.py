"""dns-01 challenges and TLSA records by RFC 2136 update, signed with TSIG, against the lab's
BIND (``example.test`` and ``third.test`` take updates under an ``update-policy``, ``other.test``
keeps its include files) and Pebble: issuance in-process and through workers, a DANE roll
checked by ``delv``, a wrong key, a key without rights, and a record added by hand.

Run in a network namespace of its own (the lab binds 127.0.0.53/54:53):
``unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -q tests/integration/test_dns_update.py'``
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest
from lab_acme import SVC, mgr, ordered_build, service_text, use_pebble, write_topdir
from lab_dane import write_topdir as write_dane_topdir
from lab_dns import PRIMARY, DnsLab, start_dns_lab
from lab_pebble import Pebble
from lab_update import (
    drop_dns_section,
    redis_texts,
    secret_of,
    texts_under,
    update_by_hand,
    use_dns_update,
)
from services import RedisServer, Services, WorkerStarter, wait_for
from support import REPO, run_tool

from sslm_tasks.config.load import load_config
from sslm_tasks.lifecycle import acme_sign
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import Workspace

pytestmark = pytest.mark.integration

#: The zones that take updates, and the one that keeps include files.
UPDATED = ("example.test", "third.test")
INCLUDED = "other.test"
#: The names of the mixed order: an apex and its wildcard, and a name in each other zone.
NAMES = ["example.test", "*.example.test", "www.third.test", "www.other.test"]
#: The owners of the challenge records the mixed order adds by update.
UPDATED_OWNERS = ("_acme-challenge.example.test", "_acme-challenge.www.third.test")
#: Services of the concurrent test: their labels are granted in the zones' update-policy.
CONCURRENT = 10


@pytest.fixture
def dns_lab(services: Services, tmp_path: Path) -> Iterator[DnsLab]:
    """The lab (overriding conftest's, so Pebble resolves through this one): two zones that
    take updates, one with include files."""
    lab = start_dns_lab(
        services,
        tmp_path / "dns",
        other_apexes=(INCLUDED, "third.test"),
        updatable=UPDATED,
        update_hosts=[f"svc{i:02d}" for i in range(1, CONCURRENT + 1)],
    )
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def topdir(tmp_path: Path, dns_lab: DnsLab, pebble: Pebble) -> Path:
    """``example.test:web`` for :data:`NAMES`, signed by Pebble over dns-01; the update zones
    through ``[[dns_update]]``, ``other.test`` through its include file."""
    top = write_topdir(tmp_path / "top", dns_lab, pebble)
    (top / "conf.d/example.test/web").write_text(service_text(NAMES))
    use_dns_update(top, dns_lab, UPDATED)
    return top


def txt_everywhere(lab: DnsLab, owner: str) -> list[set[str]]:
    return [lab.txt(owner, server) for server in lab.servers]


def state(topdir: Path, svc: str = SVC) -> dict[str, object]:
    data = json.loads((topdir / "certs" / svc / "state.json").read_text())
    assert isinstance(data, dict)
    return data


def workspace(topdir: Path) -> Workspace:
    config, _ = load_config(["example.test:web"], conf_dir=topdir / "conf.d")
    return Workspace(config=config)


# --------------------------------------------------------------------------- dns-01


def test_one_order_across_update_and_include_zones_with_a_wildcard(
    topdir: Path, dns_lab: DnsLab, pebble: Pebble
) -> None:
    # When the service is renewed in-process
    done = mgr(topdir, "-renew", "example.test:web")

    # Then Pebble issued it for every name, validating records of both kinds
    assert done.returncode == 0, done.stdout + done.stderr
    curr = topdir / "certs" / SVC / "curr"
    assert pebble.verify_output(curr).strip().endswith("OK")
    sans = subprocess.run(
        ["openssl", "x509", "-in", str(curr / "cert.pem"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(f"DNS:{name}" in sans for name in NAMES), sans
    # and the records added by update are deleted again, on both servers
    for owner in UPDATED_OWNERS:
        wait_for(
            f"{owner} without TXT records",
            lambda owner=owner: txt_everywhere(dns_lab, owner) == [set(), set()],
            timeout_s=10,
        )
    assert state(topdir)["dns_updates"] == {"records": [], "order": None, "serials": {}}
    # and only the include zone was ever refreshed (the others refuse a reload: dynamic zones)
    refreshed = {zone for call in dns_lab.refresh_calls() for zone in call[1:]}
    assert refreshed == {INCLUDED}


def test_records_are_recorded_before_they_are_sent_and_deleted_as_recorded(
    topdir: Path, dns_lab: DnsLab, tmp_path: Path
) -> None:
    # Given a build whose order is published with a key the server rejects
    main = topdir / "conf.d/ssl-mgr.conf"
    good = main.read_text()
    wrong = dns_lab.write_key(tmp_path / "wrong.key")
    main.write_text(good.replace(str(dns_lab.update_key_file), str(wrong)))
    ws = workspace(topdir)
    ref = next(iter(ws.config.services))
    ordered_build(ws, ref)
    with pytest.raises(Exception, match="BADSIG"):
        acme_sign.publish(ServiceContext(ws, ref))
    # Then nothing is in DNS, but the records the update carried are recorded (a run killed
    # while it waited for the answer could not tell either)
    assert all(txt_everywhere(dns_lab, owner) == [set(), set()] for owner in UPDATED_OWNERS)
    recorded = state(topdir)["dns_updates"]
    assert isinstance(recorded, dict)
    owners = {record["owner"] for record in recorded["records"]}
    assert owners == {f"{owner}." for owner in UPDATED_OWNERS}

    # When the right key is back and the order is published twice (a redelivered step)
    main.write_text(good)
    ws = workspace(topdir)
    acme_sign.publish(ServiceContext(ws, ref))
    acme_sign.publish(ServiceContext(ws, ref))
    values = [record["value"] for record in recorded["records"]]
    # Then each value is served once (a second add changes nothing) and the order is served
    wait_for(
        "the order's records served",
        lambda: acme_sign.propagated(ServiceContext(ws, ref))[0],
        timeout_s=15,
    )
    served = set().union(*(dns_lab.txt(owner) for owner in UPDATED_OWNERS))
    assert served == set(values)

    # When the configuration no longer has the zones, and the order is withdrawn
    main.write_text(good.split("\n[[dns_update]]")[0])
    acme_sign.withdraw(ServiceContext(workspace(topdir), ref))
    # Then the records are deleted all the same, through the recorded server and key file
    for owner in UPDATED_OWNERS:
        wait_for(
            f"{owner} empty",
            lambda owner=owner: txt_everywhere(dns_lab, owner) == [set(), set()],
            timeout_s=10,
        )
    assert state(topdir)["dns_updates"] == {"records": [], "order": None, "serials": {}}


def test_a_wrong_key_is_reported_by_name_and_nothing_is_published(
    topdir: Path, dns_lab: DnsLab, tmp_path: Path
) -> None:
    # Given a key file with the update key's name and another secret
    wrong = dns_lab.write_key(tmp_path / "wrong.key")
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text().replace(str(dns_lab.update_key_file), str(wrong)))

    # When the service is renewed
    done = mgr(topdir, "-renew", "example.test:web")

    # Then it fails, saying BADSIG, the server, the zone and the key name
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "BADSIG" in out and f"zone example.test at {PRIMARY} with key sslm-update" in out, out
    # and nothing is served at the owners it would have changed
    assert all(txt_everywhere(dns_lab, owner) == [set(), set()] for owner in UPDATED_OWNERS)
    assert not (topdir / "certs" / SVC / "curr").exists()
    # and neither secret is in the output, the log or the store
    for key in (wrong, dns_lab.update_key_file):
        assert secret_of(key) not in out + texts_under(topdir)


def test_a_secondary_that_never_catches_up_holds_the_order_for_the_whole_bound_and_is_named(
    topdir: Path, dns_lab: DnsLab, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a secondary that answers but no longer transfers the zones, and a worker whose
    # bound (12 s) takes more looks than a task's own retries for errors (8)
    dns_lab.start_secondary(lagging=True)
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text().replace("dns_xtra_ns = []", "dns_xtra_ns = []\n    dns_check_delay = 0")
    )
    env = {"SSL_MGR_TOPDIR": str(topdir), "SSLM_ACME_WAIT_S": "12"}
    workers.start("update@lagging", pool="prefork", concurrency=2, env=env)

    # When the renewal goes through the worker
    done = run_tool(
        "sslm-mgr",
        "-renew",
        "example.test:web",
        cwd=topdir,
        env={"SSLM_BROKER_URL": redis_server.url()},
        timeout=180,
    )

    # Then the propagation step gives up at the bound (the first look past 12 s), naming the
    # secondary that lacks the serial the updates made
    assert done.returncode == 1, done.stdout + done.stderr
    assert "acme_propagated: not done after 16.5 s" in done.stdout, done.stdout
    assert f"ns2.example.test ({dns_lab.secondary}): serial" in done.stdout, done.stdout


def test_ten_orders_of_one_zone_through_workers_keep_each_others_records(
    tmp_path: Path,
    dns_lab: DnsLab,
    pebble: Pebble,
    redis_server: RedisServer,
    workers: WorkerStarter,
) -> None:
    # Given ten services of example.test, each also naming the apex or www: five orders add
    # their values at one owner at once, beside each other's. (Five, not ten: Pebble asks
    # without EDNS and takes the part of a truncated answer that fits in 512 bytes, eight
    # values, where a CA's resolver asks again over TCP.)
    top = tmp_path / "top"
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    (top / "conf.d/example.test").mkdir()
    for i in range(1, CONCURRENT + 1):
        name, shared = f"svc{i:02d}", "example.test" if i % 2 else "www.example.test"
        text = service_text([f"{name}.example.test", shared])
        text = text.replace("service = 'web'", f"service = '{name}'")
        text = text.replace("CN = 'example.test'", f"CN = '{name}.example.test'")
        (top / "conf.d/example.test" / name).write_text(text)
    use_pebble(top, pebble)
    main = top / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text().replace("dns_xtra_ns = []", "dns_xtra_ns = []\n    dns_check_delay = 0")
        + f"""
[[groups]]
    active = true
    domain = 'example.test'
    services = ['ALL']

[[dns_primary]]
    domain = 'default'
    server = '{dns_lab.primary}'
"""
    )
    use_dns_update(top, dns_lab, ["example.test"])
    worker = workers.start(
        "update@acme", pool="prefork", concurrency=2, env={"SSL_MGR_TOPDIR": str(top)}
    )

    # When the CLI enqueues the renewal of all ten
    done = run_tool(
        "sslm-mgr",
        "-renew",
        "example.test:ALL",
        cwd=top,
        env={"SSLM_BROKER_URL": redis_server.url()},
        timeout=300,
    )

    # Then every certificate is issued (no order lost its record to another's update)
    assert done.returncode == 0, done.stdout + done.stderr
    for i in range(1, CONCURRENT + 1):
        assert pebble.verify_output(top / f"certs/example.test/svc{i:02d}/curr").endswith("OK\n")
    assert len(pebble.orders_created()) == CONCURRENT
    log = worker.service.log_text()
    assert log.count("dns-01 records added by update in example.test") >= CONCURRENT
    # and every record is deleted again, with nothing recorded left
    for shared in ("example.test", "www.example.test"):
        wait_for(
            f"the challenge records of {shared} deleted",
            lambda shared=shared: (
                txt_everywhere(dns_lab, f"_acme-challenge.{shared}") == [set(), set()]
            ),
            timeout_s=15,
        )
    for i in range(1, CONCURRENT + 1):
        assert state(top, f"example.test/svc{i:02d}")["dns_updates"]["records"] == []  # type: ignore[index]
    assert dns_lab.refresh_calls() == []
    # and the secret is in no log, state record, task result or message
    secret = secret_of(dns_lab.update_key_file)
    assert secret not in log + done.stdout + done.stderr + texts_under(top)
    held = redis_texts(redis_server.url())
    assert "example.test" in held and secret not in held


# --------------------------------------------------------------------------- TLSA


@pytest.fixture
def dane_top(tmp_path: Path, dns_lab: DnsLab) -> Path:
    """The DANE lab's ``example.test:mail`` (TLSA at the MX hosts, TTL 1 s), its zone taking
    the records by update, with no ``[dns]`` section at all."""
    top = write_dane_topdir(tmp_path / "dane", dns_lab)
    drop_dns_section(top)
    use_dns_update(top, dns_lab, ["example.test"])
    return top


OWNER = "_25._tcp.mx1.example.test"


def spki(top: Path, which: str) -> str:
    """The ``3 1 1`` record of the mail service's ``which`` certificate, as data text."""
    cert = top / "certs/example.test/mail" / which / "cert.pem"
    der = subprocess.run(
        f"openssl x509 -in {cert} -noout -pubkey | openssl pkey -pubin -outform der",
        shell=True,
        capture_output=True,
        check=True,
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-r"], input=der, capture_output=True, check=True
    ).stdout.split()[0]
    return f"3 1 1 {digest.decode()}"


def tlsa(lab: DnsLab, server: str, owner: str = OWNER) -> set[str]:
    return {rdata.to_text().lower() for rdata in lab.query(owner, "TLSA", server)}


def wait_tlsa(lab: DnsLab, wanted: set[str], owner: str = OWNER) -> None:
    wait_for(
        f"{owner} TLSA {wanted} on both servers",
        lambda: all(tlsa(lab, server, owner) == wanted for server in lab.servers),
        timeout_s=20,
    )


def delv_validates(lab: DnsLab, record: str) -> None:
    anchors = str(lab.trust_anchor_file())
    for server in lab.servers:
        delv = subprocess.run(
            ["delv", f"@{server}", "-a", anchors, "+root=example.test", OWNER, "TLSA"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert "; fully validated" in delv.stdout, delv.stdout + delv.stderr
        assert record.split()[-1] in delv.stdout.replace(" ", "").lower()


def test_tlsa_by_update_through_a_full_dane_roll(dane_top: Path, dns_lab: DnsLab) -> None:
    # Given a first certificate: its records are published by update at both MX hosts
    first = mgr(dane_top, "-renew")
    assert first.returncode == 0, first.stdout + first.stderr
    old = spki(dane_top, "curr")
    wait_tlsa(dns_lab, {old})
    wait_tlsa(dns_lab, {old}, "_25._tcp.mx2.example.test")
    published = json.loads(
        (dane_top / "certs/example.test/tlsa.example.test.published").read_text()
    )
    assert {(r["owner"], r["data"]) for r in published["records"]} == {
        (f"{owner}.", old.split()[-1]) for owner in (OWNER, "_25._tcp.mx2.example.test")
    }
    # When a new key is renewed: next's records are added beside curr's
    assert mgr(dane_top, "-f", "-renew", "example.test:mail").returncode == 0
    new = spki(dane_top, "next")
    wait_tlsa(dns_lab, {old, new})
    # Then the roll first only observes the name servers
    early = mgr(dane_top, "-roll", "example.test:mail")
    assert early.returncode == 0 and "not rolling yet" in early.stdout, early.stdout
    status = json.loads(mgr(dane_top, "-s", "--json", "example.test:mail").stdout)
    dane = status["services"][0]["dane"]
    assert (dane["next_ns_serving"], dane["next_ns_asked"]) == (2, 2), dane
    # and the records validate against the signed zone's key on both servers
    delv_validates(dns_lab, new)
    time.sleep(2.2)  # dane_tls_ttl = 1 s: 2 x TTL after the first sighting
    rolled = mgr(dane_top, "-roll", "example.test:mail")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert "every NS has served the next TLSA records" in rolled.stdout
    assert spki(dane_top, "curr") == new
    # and the old records are deleted: only the new one is served, and it validates
    wait_tlsa(dns_lab, {new})
    wait_tlsa(dns_lab, {new}, "_25._tcp.mx2.example.test")
    delv_validates(dns_lab, new)
    # and no refresh command was ever run, also not for -dns (the server re-signs by itself)
    refreshed = mgr(dane_top, "-dns", "example.test")
    assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr
    assert dns_lab.refresh_calls() == []


def test_an_update_whose_recording_was_lost_is_recognised(dane_top: Path, dns_lab: DnsLab) -> None:
    # Given the first certificate's records, published and recorded
    assert mgr(dane_top, "-renew").returncode == 0
    published = dane_top / "certs/example.test/tlsa.example.test.published"
    recorded = published.read_text()
    # and a renewal whose update the server applied, but whose recording a kill prevented
    assert mgr(dane_top, "-f", "-renew", "example.test:mail").returncode == 0
    old, new = spki(dane_top, "curr"), spki(dane_top, "next")
    wait_tlsa(dns_lab, {old, new})
    published.write_text(recorded)

    # When the next run brings the zone in line again
    again = mgr(dane_top, "-renew", "example.test:mail")

    # Then it finds the zone holding what it wants, records that, and reports no hand edit
    assert again.returncode == 0, again.stdout + again.stderr
    records = json.loads(published.read_text())["records"]
    assert {r["data"] for r in records if r["owner"] == f"{OWNER}."} == {
        old.split()[-1],
        new.split()[-1],
    }
    wait_tlsa(dns_lab, {old, new})


def test_the_dane_roll_by_update_through_workers(
    dane_top: Path, dns_lab: DnsLab, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a worker serving every queue of this tree
    workers.start(
        "dane@update", pool="prefork", concurrency=2, env={"SSL_MGR_TOPDIR": str(dane_top)}
    )

    def remote(*args: str) -> subprocess.CompletedProcess[str]:
        broker = {"SSLM_BROKER_URL": redis_server.url()}
        return run_tool("sslm-mgr", *args, cwd=dane_top, env=broker, timeout=180)

    # When the first certificate and a renewal are issued, their records are added by update
    assert remote("-renew").returncode == 0
    old = spki(dane_top, "curr")
    wait_tlsa(dns_lab, {old})
    assert remote("-f", "-renew", "example.test:mail").returncode == 0
    new = spki(dane_top, "next")
    wait_tlsa(dns_lab, {old, new})
    # Then the roll waits for the name servers, rolls, and the old records are deleted
    early = remote("-roll", "example.test:mail")
    assert early.returncode == 0 and "not rolling yet" in early.stdout, early.stdout
    time.sleep(2.2)
    rolled = remote("-roll", "example.test:mail")
    assert rolled.returncode == 0 and "rolled" in rolled.stdout, rolled.stdout
    wait_tlsa(dns_lab, {new})
    assert dns_lab.refresh_calls() == []


def test_records_without_a_ttl_get_the_zones_soa_ttl(dane_top: Path, dns_lab: DnsLab) -> None:
    # Given dane_tls_ttl = 0: upstream's "leave the TTL out, the zone's $TTL applies"
    svc = dane_top / "conf.d/example.test/mail"
    svc.write_text(svc.read_text().replace("dane_tls_ttl = 1", "dane_tls_ttl = 0"))
    # When the records are published by update
    assert mgr(dane_top, "-renew").returncode == 0
    # Then they carry the TTL of the zone's SOA record (the lab's $TTL, 300 s)
    published = json.loads(
        (dane_top / "certs/example.test/tlsa.example.test.published").read_text()
    )
    assert {record["ttl"] for record in published["records"]} == {300}
    wait_tlsa(dns_lab, {spki(dane_top, "curr")})
    answer = dns.query.tcp(dns.message.make_query(OWNER, "TLSA"), dns_lab.primary, timeout=5)
    assert [rrset.ttl for rrset in answer.answer] == [300]


def test_a_record_added_by_hand_is_reported_and_kept(dane_top: Path, dns_lab: DnsLab) -> None:
    # Given the first certificate's records, and a record an operator added by hand
    assert mgr(dane_top, "-renew").returncode == 0
    old = spki(dane_top, "curr")
    wait_tlsa(dns_lab, {old})
    mine = "3 1 1 " + "ab" * 32
    update_by_hand(dns_lab, "example.test", add=[(f"{OWNER}.", "TLSA", mine)])
    wait_tlsa(dns_lab, {old, mine})

    # When a renewal wants next's records at that owner
    renewed = mgr(dane_top, "-f", "-renew", "example.test:mail")

    # Then it fails naming the owner and the record sslm did not publish
    assert renewed.returncode == 1, renewed.stdout
    out = renewed.stdout + renewed.stderr
    assert f"{OWNER}. holds {mine[:32]}..., which sslm did not publish" in out, out
    assert "mx2" not in out and "sslm changed nothing" in out, out
    # and the zone is as it was: the hand-made record kept, next's records not added anywhere
    new = spki(dane_top, "next")
    wait_tlsa(dns_lab, {old, mine})
    wait_tlsa(dns_lab, {old}, "_25._tcp.mx2.example.test")

    # When the operator removes the record, the next run publishes next's records
    update_by_hand(dns_lab, "example.test", delete=[(f"{OWNER}.", "TLSA", mine)])
    again = mgr(dane_top, "-renew", "example.test:mail")
    assert again.returncode == 0, again.stdout + again.stderr
    wait_tlsa(dns_lab, {old, new})


def test_a_key_without_rights_is_reported_as_refused(dane_top: Path, dns_lab: DnsLab) -> None:
    # Given the zone's key file is one the server knows, without rights to TLSA names
    main = dane_top / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text().replace(str(dns_lab.update_key_file), str(dns_lab.rightless_key_file))
    )

    # When the first certificate is issued
    done = mgr(dane_top, "-renew")

    # Then publishing its records fails, naming REFUSED, server, zone and key
    assert done.returncode == 1, done.stdout
    out = done.stdout + done.stderr
    assert "REFUSED" in out and f"zone example.test at {PRIMARY} with key lab-rightless" in out
    assert "update-policy" in out, out
    # and nothing was published, nor recorded as published
    assert tlsa(dns_lab, dns_lab.primary) == set()
    assert not (dane_top / "certs/example.test/tlsa.example.test.published").exists()
    assert secret_of(dns_lab.rightless_key_file) not in out + texts_under(dane_top)
