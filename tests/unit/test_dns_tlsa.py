"""TLSA zone text: owners, records and the per-service and per-apex files.

The judges are the real tools: ``named-checkzone`` must load a zone that ``$INCLUDE``s what we
write (and its dump must show exactly our records), and openssl must compute the same 3 1 1 data.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support import unavailable

from sslm_tasks.config.models import DaneTls
from sslm_tasks.crypto.csr import SubjectSpec, build_csr
from sslm_tasks.crypto.keys import KeySpec, generate_private_key
from sslm_tasks.crypto.signing import SigningPolicy, self_sign
from sslm_tasks.crypto.tlsa import tlsa_data
from sslm_tasks.dns.tlsa import (
    TlsaRecord,
    group_file_text,
    listed_services,
    publish_group_file,
    records_digest,
    service_file_text,
    service_records,
    tlsa_owners,
)

ZONE = "example.test"
STAMP = "20260101-00:00:00"
ZONE_TTL = 300

#: A TLSA record as named-checkzone dumps it: owner, TTL, usage, selector, matching, hex.
Served = tuple[str, int, int, int, int, str]


def served_tlsa(tmp_path: Path, include: Path) -> set[Served]:
    """Load a zone that ``$INCLUDE``s ``include`` with named-checkzone; the TLSA records it holds.

    Fails the test when the zone does not load or any included line was ignored.
    """
    binary = shutil.which("named-checkzone") or unavailable(
        "named-checkzone is not installed (Debian: apt-get install bind9-utils)"
    )
    zone_file = tmp_path / "zone.db"
    zone_file.write_text(
        f"$ORIGIN {ZONE}.\n$TTL {ZONE_TTL}\n"
        f"@ IN SOA ns1 hostmaster 1 3600 600 86400 {ZONE_TTL}\n"
        "@ IN NS ns1\nns1 IN A 192.0.2.1\n"
        f"$INCLUDE {include}\n"
    )
    done = subprocess.run(
        [binary, "-D", "-o", "-", ZONE, str(zone_file)], capture_output=True, text=True, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "ignoring" not in output, output
    served: set[Served] = set()
    for line in done.stdout.splitlines():
        owner, ttl, _class, rtype, *rdata = line.split()
        if rtype == "TLSA":
            usage, selector, matching, *hex_parts = rdata
            data = "".join(hex_parts).lower()
            served.add((owner, int(ttl), int(usage), int(selector), int(matching), data))
    return served


def as_served(records: list[TlsaRecord], ttl: int = ZONE_TTL) -> set[Served]:
    return {
        (r.owner, r.ttl or ttl, r.usage, r.selector, r.matching, r.data.lower()) for r in records
    }


def entry(*fields: object) -> DaneTls:
    return DaneTls.model_validate(list(fields))


def make_cert() -> x509.Certificate:
    key = generate_private_key(KeySpec("rsa", rsa_bits=2048))
    csr = build_csr(key, SubjectSpec(CN=ZONE), [ZONE, f"www.{ZONE}"], is_ca=False)
    return self_sign(csr, key, SigningPolicy(days=30), now=datetime.now(UTC))


@pytest.fixture(scope="module")
def cert() -> x509.Certificate:
    return make_cert()


@pytest.fixture(scope="module")
def new_cert() -> x509.Certificate:
    """The certificate of a pending roll: another key."""
    return make_cert()


def web_records(cert: x509.Certificate, *dane: DaneTls, ttl: int = 1800) -> list[TlsaRecord]:
    records, warnings = service_records(
        cert, list(dane), ttl=ttl, apex=ZONE, sans=[ZONE, f"www.{ZONE}"], mx_hosts=[]
    )
    assert warnings == []
    return records


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("matching", [0, 1, 2])
def test_every_selector_and_matching_type_loads_in_named_checkzone(
    tmp_path: Path, cert: x509.Certificate, selector: int, matching: int
) -> None:
    # Given records for every SAN, short (SHA-256) or long (SHA-512, a whole DER cert or SPKI)
    records = web_records(cert, entry(443, "tcp", 3, selector, matching))
    include = tmp_path / "tlsa.rr"
    include.write_text(service_file_text(records, apex=ZONE, service="web", stamp=STAMP))
    # When BIND's checker loads a zone that includes the file
    served = served_tlsa(tmp_path, include)
    # Then it serves exactly these records, with the data crypto.tlsa computes
    data = tlsa_data(cert, selector, matching)
    assert served == {
        (f"_443._tcp.{ZONE}.", 1800, 3, selector, matching, data),
        (f"_443._tcp.www.{ZONE}.", 1800, 3, selector, matching, data),
    }
    # And no line is long, however long the data (matching 0 is hundreds of bytes)
    assert max(map(len, include.read_text().splitlines())) < 120


def test_3_1_1_data_is_what_openssl_computes(cert: x509.Certificate) -> None:
    # Given openssl's DANE-EE digest: SPKI in DER, SHA-256
    def openssl(*args: str, stdin: bytes) -> bytes:
        return subprocess.run(["openssl", *args], input=stdin, capture_output=True).stdout

    pubkey = openssl(
        "x509", "-pubkey", "-noout", stdin=cert.public_bytes(serialization.Encoding.PEM)
    )
    der = openssl("pkey", "-pubin", "-outform", "der", stdin=pubkey)
    expected = openssl("dgst", "-sha256", "-r", stdin=der).decode().split()[0]
    # When we build 3 1 1 records
    records = web_records(cert, entry(443, "tcp", 3, 1, 1))
    # Then their data is that digest, and the zone line is single-spaced
    assert [r.data for r in records] == [expected, expected]
    assert records[0].zone_line() == f"_443._tcp.{ZONE}. 1800 IN TLSA 3 1 1 {expected}"


@pytest.mark.parametrize("ttl", [0, -1])
def test_ttl_is_left_out_when_not_positive(
    tmp_path: Path, cert: x509.Certificate, ttl: int
) -> None:
    # Given dane_tls_ttl <= 0
    records = web_records(cert, entry(443, "tcp", 3, 1, 1), ttl=ttl)
    # Then the lines have no TTL
    assert [r.ttl for r in records] == [None, None]
    assert records[0].zone_line().startswith(f"_443._tcp.{ZONE}. IN TLSA 3 1 1 ")
    # And the zone's $TTL applies once loaded
    include = tmp_path / "tlsa.rr"
    include.write_text(service_file_text(records, apex=ZONE, service="web", stamp=STAMP))
    assert {served[1] for served in served_tlsa(tmp_path, include)} == {ZONE_TTL}


def test_record_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="absolute"):
        TlsaRecord(f"_443._tcp.{ZONE}", 60, 3, 1, 1, "ab")
    with pytest.raises(ValueError, match="hex"):
        TlsaRecord(f"_443._tcp.{ZONE}.", 60, 3, 1, 1, "abc")
    with pytest.raises(ValueError, match="8-bit"):
        TlsaRecord(f"_443._tcp.{ZONE}.", 60, 256, 1, 1, "ab")


# --------------------------------------------------------------------------- owners


def test_port_25_publishes_at_each_in_zone_mx_host_once() -> None:
    # Given two MX hosts (one listed twice, in another spelling), a foreign MX and a null MX
    mx_hosts = [f"mx1.{ZONE}.", f"mx2.{ZONE}.", f"MX1.{ZONE}", "mx.other.test.", "."]
    # When owners are computed for port 25, even with subtype SANS (port 25 is always mail)
    for dane in (entry(25, "tcp", 3, 1, 1), entry(25, "tcp", 3, 1, 1, "SANS")):
        owners, warnings = tlsa_owners(
            dane, apex=ZONE, sans=[ZONE, f"www.{ZONE}"], mx_hosts=mx_hosts
        )
        # Then each MX host of the zone is an owner once; the SANs and the apex are not
        assert owners == [f"_25._tcp.mx1.{ZONE}.", f"_25._tcp.mx2.{ZONE}."]
        # And the foreign and the null MX are reported, by name
        assert len(warnings) == 2
        assert "'mx.other.test.'" in warnings[0] and "outside the zone" in warnings[0]
        assert "null MX" in warnings[1]


def test_subtype_mx_uses_mx_hosts_on_other_ports() -> None:
    owners, _ = tlsa_owners(
        entry(465, "tcp", 3, 1, 1, "MX"), apex=ZONE, sans=[f"www.{ZONE}"], mx_hosts=[f"mx.{ZONE}."]
    )
    assert owners == [f"_465._tcp.mx.{ZONE}."]


def test_sans_give_owners_and_unusable_names_give_warnings() -> None:
    # Given SANs with the apex (twice, once with a trailing dot), an IP of each family, a
    # wildcard and a name of another zone
    sans = [ZONE, f"www.{ZONE}", "192.0.2.10", "2001:db8::10", f"*.{ZONE}", "www.other.test"]
    # When owners are computed for 443
    owners, warnings = tlsa_owners(
        entry(443, "tcp", 3, 1, 1), apex=f"{ZONE}.", sans=[*sans, f"{ZONE}."], mx_hosts=["mx."]
    )
    # Then the apex (a SAN like any other) and www are owners, each once
    assert owners == [f"_443._tcp.{ZONE}.", f"_443._tcp.www.{ZONE}."]
    # And every skipped name has its own warning saying why
    assert [w.split(": it ")[1].split()[:3] for w in warnings] == [
        ["is", "an", "IP"],
        ["is", "an", "IP"],
        ["is", "a", "wildcard;"],
        ["is", "outside", "the"],
    ]
    assert all(w.startswith("dane_tls [443, tcp]: skipping SAN ") for w in warnings)


def test_the_apex_is_no_owner_unless_it_is_a_san() -> None:
    owners, warnings = tlsa_owners(
        entry(443, "tcp", 3, 1, 1), apex=ZONE, sans=[f"www.{ZONE}"], mx_hosts=[]
    )
    assert (owners, warnings) == ([f"_443._tcp.www.{ZONE}."], [])


def test_service_records_report_each_warning_and_record_once(cert: x509.Certificate) -> None:
    # Given the same entry twice and an IP SAN
    dane = [entry(443, "tcp", 3, 1, 1), entry(443, "tcp", 3, 1, 1)]
    records, warnings = service_records(
        cert, dane, ttl=60, apex=ZONE, sans=[ZONE, "192.0.2.1"], mx_hosts=[]
    )
    assert [r.owner for r in records] == [f"_443._tcp.{ZONE}."]
    assert len(warnings) == 1


# --------------------------------------------------------------------------- files


def test_service_file_has_the_upstream_header_then_the_records(cert: x509.Certificate) -> None:
    records = web_records(cert, entry(443, "tcp", 3, 1, 1))
    text = service_file_text(records, apex=ZONE, service="web", stamp=STAMP)
    assert text.splitlines() == [
        ";;",
        f";; tlsa {ZONE} web {STAMP}",
        ";;",
        *(r.zone_line() for r in records),
    ]


def test_group_file_with_reused_key_lists_every_record_once_and_loads(
    tmp_path: Path, cert: x509.Certificate
) -> None:
    # Given a roll under -r: next has the same key, so the same records as curr, including
    # multi-line ones (the records upstream's line-based de-dup broke)
    web = web_records(cert, entry(443, "tcp", 3, 1, 1), entry(443, "tcp", 3, 0, 2))
    mail, _ = service_records(
        cert, [entry(25, "tcp", 3, 1, 0)], ttl=1800, apex=ZONE, sans=[], mx_hosts=[f"mx.{ZONE}"]
    )
    assert any("\n" in r.zone_line() for r in web)
    # When the group file is built
    text = group_file_text(ZONE, {"web": [("curr", web), ("next", web)], "mail": [("curr", mail)]})
    # Then every record is written once, all its lines intact
    for record in [*web, *mail]:
        assert text.count(record.zone_line()) == 1
    assert f";; TLSA {ZONE} : phase = roll next to curr" in text
    assert text.index(";; mail curr") < text.index(";; web curr") < text.index(";; web next")
    assert "; 4 record(s) already listed above" in text
    # And BIND loads it with exactly those records
    include = tmp_path / f"tlsa.{ZONE}"
    include.write_text(text)
    assert served_tlsa(tmp_path, include) == as_served([*web, *mail])


def test_group_file_during_a_key_roll_holds_curr_and_next(
    tmp_path: Path, cert: x509.Certificate, new_cert: x509.Certificate
) -> None:
    curr = web_records(cert, entry(443, "tcp", 3, 1, 2))
    following = web_records(new_cert, entry(443, "tcp", 3, 1, 2))
    include = tmp_path / f"tlsa.{ZONE}"
    include.write_text(group_file_text(ZONE, {"web": [("curr", curr), ("next", following)]}))
    served = served_tlsa(tmp_path, include)
    assert served == as_served([*curr, *following]) and len(served) == 4
    # After the roll only curr remains and the phase says so
    normal = group_file_text(ZONE, {"web": [("curr", following)]})
    assert f";; TLSA {ZONE} : phase = normal" in normal


def test_listed_services_are_the_sections_of_the_group_file(
    tmp_path: Path, cert: x509.Certificate, new_cert: x509.Certificate
) -> None:
    path = tmp_path / f"tlsa.{ZONE}"
    # No file lists nobody
    assert listed_services(path) == set()
    # A file lists every service with a section, in any phase
    curr = web_records(cert, entry(443, "tcp", 3, 1, 1))
    following = web_records(new_cert, entry(443, "tcp", 3, 1, 1))
    versions = {"web": [("curr", curr), ("next", following)], "mail-ec": [("curr", curr)]}
    path.write_text(group_file_text(ZONE, versions))
    assert listed_services(path) == {"web", "mail-ec"}


def test_digest_counts_records_not_comments_wrapping_or_order(cert: x509.Certificate) -> None:
    records = web_records(cert, entry(443, "tcp", 3, 1, 1), entry(443, "tcp", 3, 1, 2))
    text = group_file_text(ZONE, {"web": [("curr", records)]})
    digest = records_digest(text)
    # Comments and layout do not count
    relabelled = text.replace("phase = normal", "phase = roll next to curr").replace(
        " IN ", "\tIN "
    )
    assert records_digest(relabelled) == digest
    # Nor do wrapping, letter case or order: one line per record, upper case, reversed
    one_line = [f"{r.owner} 1800 IN TLSA 3 1 {r.matching} {r.data}" for r in reversed(records)]
    assert "\n" in records[-1].zone_line()
    assert records_digest("\n".join(one_line).upper() + "\n; note\n") == digest
    # Any change in a record does: a TTL, a record less
    assert records_digest(text.replace(" 1800 IN", " 60 IN", 1)) != digest
    assert records_digest(group_file_text(ZONE, {"web": [("curr", records[1:])]})) != digest


def test_publish_writes_every_copy_only_when_records_change(
    tmp_path: Path, cert: x509.Certificate, new_cert: x509.Certificate
) -> None:
    # Given the store's group dir and two DNS include dirs
    store = tmp_path / "certs" / ZONE / f"tlsa.{ZONE}"
    dirs = [tmp_path / "ns1", tmp_path / "ns2"]
    for directory in [store.parent, *dirs]:
        directory.mkdir(parents=True)
    copies = [store, *(d / f"tlsa.{ZONE}" for d in dirs)]
    text = group_file_text(ZONE, {"web": [("curr", web_records(cert, entry(443, "tcp", 3, 1, 1)))]})

    def publish(content: str) -> bool:
        return publish_group_file(content, apex=ZONE, store_path=store, tlsa_dirs=dirs)

    # When published first: every copy is written, 0644, same bytes
    assert publish(text) is True
    assert {c.read_text() for c in copies} == {text}
    assert {stat.S_IMODE(c.stat().st_mode) for c in copies} == {0o644}
    # Publishing it again, or with only a comment changed, writes nothing
    assert publish(text) is False
    assert publish(text.replace("phase = normal", "phase = something else")) is False
    assert {c.read_text() for c in copies} == {text}
    # A lost copy is restored by the next publish
    copies[2].unlink()
    assert publish(text) is True
    assert copies[2].read_text() == text
    # New records replace every copy
    rolled = group_file_text(
        ZONE, {"web": [("curr", web_records(new_cert, entry(443, "tcp", 3, 1, 1)))]}
    )
    assert publish(rolled) is True
    assert {c.read_text() for c in copies} == {rolled}
