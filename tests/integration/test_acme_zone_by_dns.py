"""dns-01 records of a name in no configured zone go into the zone its primary serves it in,
found by SOA queries at the primary (issue 13, item 8), against the lab's BIND and Pebble."""

from __future__ import annotations

from pathlib import Path

import pytest
from lab_acme import SVC, mgr, service_text
from lab_dns import PROPAGATION_TIMEOUT_S, DnsLab
from lab_pebble import Pebble
from services import wait_for
from support import edit

from sslm_tasks.dns.lookup import zone_cut
from sslm_tasks.dns.servers import Nameserver

pytestmark = pytest.mark.integration

NAME = "example.test:web"


def test_the_zone_cut_is_where_the_primary_answers_with_the_soa(dns_lab: DnsLab) -> None:
    primary = Nameserver(dns_lab.primary, dns_lab.port)
    assert zone_cut(primary, "www.other.test") == "other.test"
    assert zone_cut(primary, "*.example.test") == "example.test"
    assert zone_cut(primary, "a.b.c.example.test") == "example.test"
    assert zone_cut(primary, "example.test") == "example.test"
    # A name in no zone of the primary's: it refuses every name on the way
    assert zone_cut(primary, "www.nowhere.test") is None
    # A name in a child zone the primary delegates: not its zone to write into
    before = dns_lab.serial()
    with dns_lab.tlsa_file().open("a") as include:
        include.write("sub.example.test. 300 IN NS ns9.example.test.\n")
        include.write("ns9.example.test. 300 IN A 127.0.0.1\n")
    assert dns_lab.refresh().returncode == 0
    wait_for("the delegation", lambda: dns_lab.serial() > before, timeout_s=PROPAGATION_TIMEOUT_S)
    assert zone_cut(primary, "www.sub.example.test") is None
    assert zone_cut(primary, "sub.example.test") is None


def test_a_name_in_a_zone_only_dns_knows_gets_its_record_there(
    acme_topdir: Path, dns_lab: DnsLab, pebble: Pebble
) -> None:
    # Given a service with a name in other.test, a zone neither a group nor a [[dns_primary]]
    # domain (only the default primary is configured)
    main = acme_topdir / "conf.d/ssl-mgr.conf"
    other = "[[dns_primary]]\n    domain = 'other.test'\n"
    edit(main, f"{other}    server = '{dns_lab.primary}'\n    port = {dns_lab.port}\n", "")
    assert "'other.test'" not in main.read_text()
    # When it is renewed
    result = mgr(acme_topdir, "-renew", NAME)
    # Then the record went into other.test's include (whose zone was refreshed for it), and the
    # certificate was issued
    assert result.returncode == 0, result.stdout + result.stderr
    assert any("other.test" in call for call in dns_lab.refresh_calls())
    assert pebble.verify_output(acme_topdir / "certs" / SVC / "curr").strip().endswith("OK")


def test_a_name_the_primary_serves_no_zone_for_is_the_error_it_was(
    acme_topdir: Path, dns_lab: DnsLab
) -> None:
    edit(
        acme_topdir / "conf.d/example.test/web",
        "sans = ['example.test', '*.example.test', 'www.other.test']",
        "sans = ['example.test', 'www.nowhere.test']",
    )
    assert (
        service_text(["example.test", "www.nowhere.test"])
        == (acme_topdir / "conf.d/example.test/web").read_text()
    )
    result = mgr(acme_topdir, "-renew", NAME)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no zone for 'www.nowhere.test'" in result.stdout, result.stdout
    assert "add a [[dns_primary]] entry with its domain" in result.stdout
