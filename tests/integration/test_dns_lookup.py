"""DNS lookups and one-pass propagation checks against a real BIND primary and secondary.

The lab (``lab_dns.py``) serves ``example.test``, signed, from 127.0.0.53 and transfers it to
127.0.0.54; both are the zone's NS (ns1, ns2) and the zone has MX 10 mx1 and MX 20 mx2. Records
reach the zone the way sslm publishes them: appended to an ``$INCLUDE``d file, then the refresh
script (``--serial_bump``). Every query names its server; none goes to the system resolver.

Run under ``flock /tmp/sslm-lab.lock``: the lab binds fixed addresses on port 53.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest
from lab_dns import PROPAGATION_TIMEOUT_S, SECONDARY, DnsLab
from services import wait_for

from sslm_tasks.config.load import Config
from sslm_tasks.config.models import MainConfig
from sslm_tasks.dns.lookup import (
    DnsNoAnswer,
    MxHost,
    extra_nameservers,
    mx_hosts,
    nameservers,
    primary_for,
    soa_serial,
    txt_values,
)
from sslm_tasks.dns.propagation import check_records, check_serial, check_txt, serial_target
from sslm_tasks.dns.servers import Nameserver, NsHost, SerialTarget
from sslm_tasks.errors import ConfigError

pytestmark = pytest.mark.integration

APEX = "example.test"
CHALLENGE = f"_acme-challenge.{APEX}"
TLSA_OWNER = f"_25._tcp.mx1.{APEX}"
#: Short, so that a stopped server costs little; loopback answers within a millisecond.
TIMEOUT_S = 0.5
TRIES = 2
#: A pass asks the primary first (SOA, NS, A+AAAA of each NS), then every server at once: a
#: dead server costs TRIES * TIMEOUT_S once, whatever the number of servers.
PASS_BOUND_S = TRIES * TIMEOUT_S + 1.0


def primary_of(lab: DnsLab) -> Nameserver:
    return Nameserver(lab.primary, lab.port)


def publish(lab: DnsLab, include: Path, *lines: str) -> int:
    """Append ``lines`` to ``include``, refresh the zone and return the primary's new serial.

    ``rndc reload`` returns before inline signing publishes the change, so this waits until
    the primary serves a newer serial than before.
    """
    before = lab.serial()
    with include.open("a") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
    done = lab.refresh()
    assert done.returncode == 0, done.stderr
    wait_for(
        f"{lab.primary} serves a serial above {before}",
        lambda: lab.serial() > before,
        timeout_s=PROPAGATION_TIMEOUT_S,
    )
    return lab.serial()


def config_with(tmp_path: Path, main: dict[str, object]) -> Config:
    return Config(
        topdir=tmp_path,
        conf_dir=tmp_path / "conf.d",
        main=MainConfig.model_validate(main),
        cas={},
    )


# --------------------------------------------------------------------------- lookups


def test_nameservers_come_with_their_addresses_from_the_primary(dns_lab: DnsLab) -> None:
    # When the NS of the apex are asked at the primary
    found = nameservers(primary_of(dns_lab), APEX, timeout_s=TIMEOUT_S)
    # Then both NS come back, each with the address the zone gives it
    assert found == [
        NsHost("ns1.example.test", [dns_lab.primary]),
        NsHost("ns2.example.test", [dns_lab.secondary]),
    ]


def test_nameserver_ipv6_addresses_are_found_and_checked(dns_lab: DnsLab) -> None:
    # Given ns1 also has an AAAA record, on which nothing serves DNS
    publish(dns_lab, dns_lab.tlsa_file(), "ns1 300 IN AAAA ::1")
    dns_lab.wait_until_secondary_has(dns_lab.serial())
    # When the NS are looked up, both address families are there
    found = nameservers(primary_of(dns_lab), APEX, timeout_s=TIMEOUT_S)
    assert found[0] == NsHost("ns1.example.test", [dns_lab.primary, "::1"])
    # And the serial check asks the IPv6 address too, which lags (upstream asked IPv4 only)
    result = check_serial(APEX, primary_of(dns_lab), timeout_s=TIMEOUT_S, tries=TRIES)
    assert not result.ok
    assert list(result.errors) == ["ns1.example.test (::1)"]
    assert sorted(result.caught_up) == [
        f"ns1.example.test ({dns_lab.primary})",
        f"ns2.example.test ({dns_lab.secondary})",
    ]


def test_ns_host_without_address_at_the_primary_is_reported_not_resolved(dns_lab: DnsLab) -> None:
    # Given a third NS in a zone the primary does not serve
    publish(dns_lab, dns_lab.tlsa_file(), "@ 300 IN NS ns3.elsewhere.invalid.")
    dns_lab.wait_until_secondary_has(dns_lab.serial())
    # When the NS are looked up, it comes back without addresses (no system resolver asked)
    found = nameservers(primary_of(dns_lab), APEX, timeout_s=TIMEOUT_S)
    assert NsHost("ns3.elsewhere.invalid", []) in found
    # And the serial check names it as lagging, the other two being current
    result = check_serial(APEX, primary_of(dns_lab), timeout_s=TIMEOUT_S)
    assert not result.ok
    assert len(result.caught_up) == 2
    assert [line.split(":")[0] for line in result.lagging] == ["ns3.elsewhere.invalid"]
    assert "no A or AAAA" in result.errors["ns3.elsewhere.invalid"]


def test_mx_hosts_sorted_by_preference_keeping_equal_preferences(dns_lab: DnsLab) -> None:
    primary = primary_of(dns_lab)
    # The lab's MX records, in preference order
    assert mx_hosts(primary, APEX, timeout_s=TIMEOUT_S) == [
        MxHost(10, "mx1.example.test"),
        MxHost(20, "mx2.example.test"),
    ]
    # Given a second MX host with the same preference as mx1
    publish(
        dns_lab, dns_lab.tlsa_file(), "@ 300 IN MX 10 mx0.example.test.", "mx0 300 IN A 127.0.0.1"
    )
    # Then both preference-10 hosts are kept (upstream's dict kept one of them)
    assert mx_hosts(primary, APEX, timeout_s=TIMEOUT_S) == [
        MxHost(10, "mx0.example.test"),
        MxHost(10, "mx1.example.test"),
        MxHost(20, "mx2.example.test"),
    ]


def test_soa_serial_is_what_each_server_serves(dns_lab: DnsLab) -> None:
    primary = primary_of(dns_lab)
    secondary = Nameserver(dns_lab.secondary)
    assert soa_serial(primary, APEX, timeout_s=TIMEOUT_S) == dns_lab.serial()
    assert soa_serial(secondary, APEX, timeout_s=TIMEOUT_S) == dns_lab.serial(dns_lab.secondary)


def test_query_at_a_stopped_server_is_a_transient_error_bounded_by_the_timeout(
    dns_lab: DnsLab,
) -> None:
    dns_lab.stop_secondary()
    started = time.monotonic()
    with pytest.raises(
        DnsNoAnswer, match=rf"{re.escape(SECONDARY)}: no answer in 2 tries .*timed out"
    ):
        soa_serial(Nameserver(dns_lab.secondary), APEX, timeout_s=TIMEOUT_S, tries=TRIES)
    assert time.monotonic() - started < PASS_BOUND_S


def test_an_unreachable_primary_raises_a_transient_error() -> None:
    # Nothing serves DNS on 127.0.0.55 (no lab needed): the reference itself is unknown
    dead = Nameserver("127.0.0.55")
    with pytest.raises(DnsNoAnswer, match=r"example\.test SOA at 127\.0\.0\.55"):
        check_serial(APEX, dead, timeout_s=0.2, tries=1)
    with pytest.raises(DnsNoAnswer, match=r"TXT at 127\.0\.0\.55"):
        check_txt(dead, [(CHALLENGE, "token")], timeout_s=0.2, tries=1)


# --------------------------------------------------------------------------- TXT at the primary


def test_txt_check_passes_once_the_include_is_published(dns_lab: DnsLab) -> None:
    primary = primary_of(dns_lab)
    wanted = [(CHALLENGE, "token-one"), (f"{CHALLENGE}.", "token-two")]
    # Given nothing published yet: not ok, and the missing values are named
    before = check_txt(primary, wanted, timeout_s=TIMEOUT_S)
    assert not before.ok
    assert before.lagging == [
        f"{dns_lab.primary}: {CHALLENGE} TXT lacks ['token-one', 'token-two'], serves []"
    ]
    # When both values (and another order's) are in the include and the zone is refreshed
    publish(
        dns_lab,
        dns_lab.acme_file(),
        f'{CHALLENGE}. 60 IN TXT "token-one"',
        f'{CHALLENGE}. 60 IN TXT "token-two"',
        f'{CHALLENGE}. 60 IN TXT "someone-else"',
    )
    # Then the primary serves them all and the check passes
    assert txt_values(primary, CHALLENGE) == ["someone-else", "token-one", "token-two"]
    after = check_txt(primary, wanted, timeout_s=TIMEOUT_S)
    assert after.ok, after.summary()
    assert after.caught_up == [dns_lab.primary]


# --------------------------------------------------------------------------- SOA serials


def test_serial_check_ok_when_every_ns_serves_the_new_serial(dns_lab: DnsLab) -> None:
    # Given a change published and transferred
    serial = publish(dns_lab, dns_lab.acme_file(), f'{CHALLENGE}. 60 IN TXT "x"')
    dns_lab.wait_until_secondary_has(serial)
    # When the serial check runs once
    result = check_serial(APEX, primary_of(dns_lab), timeout_s=TIMEOUT_S)
    # Then both NS are current
    assert result.ok, result.summary()
    assert result.lagging == [] and result.errors == {}
    assert sorted(result.caught_up) == [
        f"ns1.example.test ({dns_lab.primary})",
        f"ns2.example.test ({dns_lab.secondary})",
    ]
    assert result.expected == f"{APEX} SOA serial >= {serial} (the primary's)"


def test_serial_check_names_a_stopped_secondary_then_passes_when_it_is_back(
    dns_lab: DnsLab,
) -> None:
    primary = primary_of(dns_lab)
    # Given the secondary is down
    dns_lab.stop_secondary()
    # When the check runs once, it returns (no exception) within the per-query bound
    started = time.monotonic()
    result = check_serial(APEX, primary, timeout_s=TIMEOUT_S, tries=TRIES)
    assert time.monotonic() - started < PASS_BOUND_S
    # Then it is not ok and names the secondary as lagging, with the reason
    assert not result.ok
    lagging = f"ns2.example.test ({dns_lab.secondary})"
    assert [line.split(": ")[0] for line in result.lagging] == [lagging]
    assert "timed out" in result.errors[lagging]
    assert dns_lab.secondary in result.summary()
    assert result.caught_up == [f"ns1.example.test ({dns_lab.primary})"]
    # When the secondary is back
    dns_lab.start_secondary()
    # Then the next pass is ok
    again = check_serial(APEX, primary, timeout_s=TIMEOUT_S, tries=TRIES)
    assert again.ok, again.summary()


def test_serial_check_names_a_secondary_that_answers_an_old_serial(dns_lab: DnsLab) -> None:
    primary = primary_of(dns_lab)
    # Given a secondary that can no longer transfer, and a change on the primary
    old = dns_lab.serial(dns_lab.secondary)
    dns_lab.start_secondary(lagging=True)
    new = publish(dns_lab, dns_lab.acme_file(), f'{CHALLENGE}. 60 IN TXT "late"')
    # When the check runs
    result = check_serial(APEX, primary, timeout_s=TIMEOUT_S)
    # Then the secondary lags with the serial it served, and it answered (no error)
    assert not result.ok
    assert result.lagging == [f"ns2.example.test ({dns_lab.secondary}): serial {old}"]
    assert result.errors == {}
    assert f">= {new}" in result.expected


def test_a_serial_target_stays_put_while_the_primary_moves_on(dns_lab: DnsLab) -> None:
    primary = primary_of(dns_lab)
    # Given records published and the target taken once the primary served them
    served = publish(dns_lab, dns_lab.acme_file(), f'{CHALLENGE}. 60 IN TXT "ours"')
    target = serial_target(APEX, primary, timeout_s=TIMEOUT_S)
    assert target.serial == served
    assert [host.name for host in target.hosts] == ["ns1.example.test", "ns2.example.test"]
    dns_lab.wait_until_secondary_has(served)
    # and a later change the secondary never gets (it can no longer transfer)
    dns_lab.start_secondary(lagging=True)
    later = publish(dns_lab, dns_lab.acme_file(), f'{CHALLENGE}. 60 IN TXT "theirs"')
    # When the target comes back from the JSON it was kept as
    kept = SerialTarget.from_json(json.loads(json.dumps(target.to_json())))
    assert kept == target
    # Then the check against it passes: the secondary serves what our records need
    ours = check_serial(APEX, primary, target=kept, timeout_s=TIMEOUT_S)
    assert ours.ok, ours.summary()
    assert ours.expected == f"{APEX} SOA serial >= {served} (the primary's with the records)"
    # while the check against the primary's current serial chases the later change
    current = check_serial(APEX, primary, timeout_s=TIMEOUT_S)
    assert not current.ok
    assert f">= {later}" in current.expected


def test_extra_servers_are_checked_too(dns_lab: DnsLab, tmp_path: Path) -> None:
    # Given dns_xtra_ns names the secondary (as a resolver would be named)
    config = config_with(tmp_path, {"globals": {"dns_xtra_ns": [dns_lab.secondary]}})
    extra = extra_nameservers(config)
    assert extra == [Nameserver(dns_lab.secondary, recursive=True)]
    # And that secondary is also an NS: it is asked once, under its NS name
    result = check_serial(APEX, primary_of(dns_lab), extra=extra, timeout_s=TIMEOUT_S)
    assert result.ok, result.summary()
    assert len(result.caught_up) == 2


# --------------------------------------------------------------------------- record sets


def test_check_records_passes_once_every_ns_serves_the_tlsa_records(dns_lab: DnsLab) -> None:
    primary = primary_of(dns_lab)
    curr = hashlib.sha256(b"curr key").hexdigest()
    nxt = hashlib.sha256(b"next key").hexdigest()
    # Given curr and next are published and transferred
    serial = publish(
        dns_lab,
        dns_lab.tlsa_file(),
        f"{TLSA_OWNER}. 1800 IN TLSA 3 1 1 {curr}",
        f"{TLSA_OWNER}. 1800 IN TLSA 3 1 1 {nxt}",
    )
    dns_lab.wait_until_secondary_has(serial)
    # When the roll asks whether every NS serves next (as data: hex case does not matter)
    result = check_records(
        APEX, primary, "TLSA", TLSA_OWNER, [f"3 1 1 {nxt.upper()}"], timeout_s=TIMEOUT_S
    )
    # Then both do (curr next to it is fine), and the TTL the roll must wait for is reported
    assert result.ok, result.summary()
    assert sorted(result.caught_up) == [
        f"ns1.example.test ({dns_lab.primary})",
        f"ns2.example.test ({dns_lab.secondary})",
    ]
    assert result.ttl == 1800


def test_check_records_names_the_ns_that_lacks_the_records(dns_lab: DnsLab) -> None:
    primary = primary_of(dns_lab)
    curr = hashlib.sha256(b"curr key").hexdigest()
    nxt = hashlib.sha256(b"next key").hexdigest()
    # Given curr is published everywhere, and the secondary then stops taking changes
    serial = publish(dns_lab, dns_lab.tlsa_file(), f"{TLSA_OWNER}. 1800 IN TLSA 3 1 1 {curr}")
    dns_lab.wait_until_secondary_has(serial)
    dns_lab.start_secondary(lagging=True)
    # When next is published next to curr
    publish(dns_lab, dns_lab.tlsa_file(), f"{TLSA_OWNER}. 1800 IN TLSA 3 1 1 {nxt}")
    # Then "every NS serves next" is not true, naming the secondary and what it lacks
    result = check_records(APEX, primary, "TLSA", TLSA_OWNER, [f"3 1 1 {nxt}"], timeout_s=TIMEOUT_S)
    assert not result.ok
    assert result.caught_up == [f"ns1.example.test ({dns_lab.primary})"]
    assert result.lagging == [
        f"ns2.example.test ({dns_lab.secondary}): lacks ['3 1 1 {nxt[:42]}...'], "
        "serves 1 TLSA record(s)"
    ]
    assert result.errors == {}


def test_check_records_rejects_rdata_that_does_not_parse(dns_lab: DnsLab) -> None:
    with pytest.raises(ValueError, match="TLSA"):
        check_records(APEX, primary_of(dns_lab), "TLSA", TLSA_OWNER, ["3 1 1 not-hex"])


# --------------------------------------------------------------------------- configuration


def test_primary_selection_exact_then_default(tmp_path: Path) -> None:
    config = config_with(
        tmp_path,
        {
            "dns_primary": [
                {"domain": "default", "server": "127.0.0.53"},
                {"domain": "example.test", "server": "::1", "port": 5353},
            ]
        },
    )
    assert primary_for(config, "Example.Test.") == Nameserver("::1", 5353)
    assert primary_for(config, "other.test") == Nameserver("127.0.0.53", 53)


def test_no_primary_for_the_apex_is_a_config_error(tmp_path: Path) -> None:
    config = config_with(
        tmp_path, {"dns_primary": [{"domain": "example.test", "server": "127.0.0.53"}]}
    )
    with pytest.raises(ConfigError, match=r"dns_primary.*'other\.test'") as raised:
        primary_for(config, "other.test")
    assert raised.value.file == str(tmp_path / "conf.d" / "ssl-mgr.conf")


def test_a_primary_given_by_name_is_a_config_error_naming_it(tmp_path: Path) -> None:
    config = config_with(tmp_path, {"dns_primary": [{"domain": "*", "server": "ns1.example.test"}]})
    with pytest.raises(ConfigError) as raised:
        primary_for(config, APEX)
    assert raised.value.key == "dns_primary[0].server"
    assert raised.value.value == "ns1.example.test"
    assert "ns1.example.test" in str(raised.value)
    assert "system resolver" in str(raised.value)


def test_an_extra_server_given_by_name_is_a_config_error(tmp_path: Path) -> None:
    config = config_with(tmp_path, {"globals": {"dns_xtra_ns": ["127.0.0.1", "dns.google"]}})
    with pytest.raises(ConfigError, match=r"globals\.dns_xtra_ns\[1\] = 'dns\.google'"):
        extra_nameservers(config)
