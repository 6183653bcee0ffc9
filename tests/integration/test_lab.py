"""The ACME and DANE test lab works: BIND serves, signs, propagates and refuses bad includes;
the refresh script is a usable ``[dns] restart_cmd``; delv and ldns-dane validate against the
zone's own key; Pebble issues a real certificate over dns-01 that ``openssl verify`` accepts.

These prove the fixtures the ACME (issue 4) and DANE (issue 5) tests stand on, so a failure
here points at the lab, not at sslm.
"""

from __future__ import annotations

import datetime
import hashlib
import subprocess
import time
from pathlib import Path

import dns.exception
import pytest
import requests
from acme import challenges, client, crypto_util, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC
from lab_dns import SECONDARY, DnsLab
from lab_pebble import Pebble
from services import Services, free_port, require_binary, wait_for

pytestmark = pytest.mark.integration

CHALLENGE = "_acme-challenge.example.test"
#: Longer than a change takes to reach the secondary (about 0.2 s), to show one that never came.
LAG_OBSERVATION_S = 1.5


def _publish_txt(lab: DnsLab, values: list[str], apex: str = "example.test") -> int:
    """Write ``values`` as ``_acme-challenge`` TXT records into the include, run the refresh
    script, wait until the primary serves them; return the primary's new serial."""
    lab.acme_file(apex).write_text(
        "".join(f'_acme-challenge.{apex}. 60 IN TXT "{value}"\n' for value in values)
    )
    done = lab.refresh(apex)
    assert done.returncode == 0, done.stderr
    wait_for(
        f"{lab.primary} serves the new TXT of {apex}",
        lambda: set(values) <= lab.txt(f"_acme-challenge.{apex}"),
        timeout_s=10,
    )
    return lab.serial(apex=apex)


def test_zone_answers_on_both_servers(dns_lab: DnsLab) -> None:
    for server in dns_lab.servers:
        for apex in dns_lab.apexes:
            assert dns_lab.serial(server, apex) == dns_lab.serial(dns_lab.primary, apex)
            ns = {record.to_text() for record in dns_lab.query(apex, "NS", server)}
            assert ns == {f"ns1.{apex}.", f"ns2.{apex}."}
            mx = {record.to_text() for record in dns_lab.query(apex, "MX", server)}
            assert mx == {"10 mx1.example.test.", "20 mx2.example.test."}
            assert dns_lab.query(apex, "DNSKEY", server), "the zone is not signed"
        assert [r.to_text() for r in dns_lab.query("ns2.example.test", "A", server)] == [SECONDARY]
        assert [r.to_text() for r in dns_lab.query("mx1.example.test", "A", server)] == [
            "127.0.0.1"
        ]
        assert [r.to_text() for r in dns_lab.query("www.other.test", "A", server)] == ["127.0.0.1"]
        assert dns_lab.query("nothing.example.test", "A", server) == []


def test_challenge_reaches_the_secondary_through_the_refresh_script(dns_lab: DnsLab) -> None:
    before = dns_lab.serial()
    # An apex and its wildcard share one name: their TXT records stand side by side.
    serial = _publish_txt(dns_lab, ["apex-token", "wildcard-token"])
    assert serial > before
    took = dns_lab.wait_until_secondary_has(serial, timeout_s=5)
    assert dns_lab.txt(CHALLENGE, dns_lab.secondary) == {"apex-token", "wildcard-token"}
    assert dns_lab.refresh_calls() == [["--serial_bump", "example.test"]]
    print(f"TXT on the secondary {took:.2f} s after the primary served it")

    # Several apexes in one call, as sslm passes them.
    done = dns_lab.refresh("example.test", "other.test")
    assert done.returncode == 0, done.stderr
    assert dns_lab.refresh_calls()[-1] == ["--serial_bump", "example.test", "other.test"]


def test_broken_include_fails_the_refresh_and_the_old_zone_keeps_serving(
    dns_lab: DnsLab,
) -> None:
    serial = _publish_txt(dns_lab, ["good-token"])
    zone_texts = {apex: dns_lab.zone_file(apex).read_text() for apex in dns_lab.apexes}
    dns_lab.acme_file().write_text('_acme-challenge.example.test. 60 IN TXT "unterminated\n')

    done = dns_lab.refresh("other.test", "example.test")

    assert done.returncode != 0
    assert "example.test" in done.stderr
    # Every zone is checked before any is replaced: other.test, listed first, is unchanged too.
    for apex, text in zone_texts.items():
        assert dns_lab.zone_file(apex).read_text() == text, f"zone file of {apex} changed"
    time.sleep(LAG_OBSERVATION_S)
    for server in dns_lab.servers:
        assert dns_lab.serial(server) == serial
        assert dns_lab.txt(CHALLENGE, server) == {"good-token"}


def test_lagging_secondary_answers_with_the_old_serial(dns_lab: DnsLab) -> None:
    dns_lab.start_secondary(lagging=True)
    old = dns_lab.serial(dns_lab.secondary)

    new = _publish_txt(dns_lab, ["late-token"])
    time.sleep(LAG_OBSERVATION_S)

    assert dns_lab.serial(dns_lab.secondary) == old < new
    assert dns_lab.txt(CHALLENGE, dns_lab.secondary) == set()
    dns_lab.stop_secondary()
    with pytest.raises(dns.exception.Timeout):
        dns_lab.serial(dns_lab.secondary)
    dns_lab.start_secondary()
    assert dns_lab.serial(dns_lab.secondary) >= new
    assert dns_lab.txt(CHALLENGE, dns_lab.secondary) == {"late-token"}


def test_delv_validates_against_the_zones_own_key(dns_lab: DnsLab) -> None:
    delv = require_binary("delv")
    anchors = dns_lab.trust_anchor_file()
    for server in dns_lab.servers:
        for apex in dns_lab.apexes:
            done = subprocess.run(
                [delv, f"@{server}", "-a", str(anchors), f"+root={apex}", f"www.{apex}", "A"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            assert "; fully validated" in done.stdout, done.stdout + done.stderr
            assert "127.0.0.1" in done.stdout


def _self_signed(directory: Path, name: str) -> tuple[Path, Path, bytes]:
    """A throwaway certificate for ``name``: its file, its key's file and its SPKI (DER)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            require_binary("openssl"),
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    spki = (
        x509.load_pem_x509_certificate(cert.read_bytes())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return cert, key, spki


def test_ldns_dane_validates_a_tlsa_record_from_the_include(
    dns_lab: DnsLab, services: Services, tmp_path: Path
) -> None:
    ldns_dane = require_binary("ldns-dane")
    host = "mx1.example.test"
    cert, key, spki = _self_signed(tmp_path, host)
    port = free_port()
    listener = services.spawn(
        "tls-listener",
        [
            require_binary("openssl"),
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-cert",
            str(cert),
            "-key",
            str(key),
            "-www",  # answers without reading stdin; plain s_server quits at stdin's EOF
        ],
    )
    wait_for(
        "openssl s_server listens",
        lambda: "ACCEPT" in listener.log_text(),
        timeout_s=10,
        log=listener.log,
        alive=lambda: listener.alive,
    )
    digest = hashlib.sha256(spki).hexdigest()
    dns_lab.tlsa_file().write_text(f"_{port}._tcp.{host}. 300 IN TLSA 3 1 1 {digest}\n")
    done = dns_lab.refresh()
    assert done.returncode == 0, done.stderr
    wait_for(
        "both servers serve the TLSA record",
        lambda: all(dns_lab.query(f"_{port}._tcp.{host}", "TLSA", s) for s in dns_lab.servers),
        timeout_s=10,
    )

    checked = subprocess.run(
        [
            ldns_dane,
            "-S",  # chase signatures to the -k key; without it, it wants a resolver's AD bit
            "-r",
            dns_lab.primary,
            "-a",
            "127.0.0.1",
            "-k",
            str(dns_lab.dnskey_file()),
            "verify",
            host,
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "dane-validated successfully" in checked.stdout


def test_pebble_directory_and_roots(pebble: Pebble) -> None:
    directory = requests.get(pebble.directory_url, verify=str(pebble.ca_bundle), timeout=5).json()
    assert {"newAccount", "newNonce", "newOrder"} <= set(directory)
    root = x509.load_pem_x509_certificate(pebble.roots_pem())
    intermediate = x509.load_pem_x509_certificate(pebble.intermediates_pem())
    assert intermediate.issuer == root.subject
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(pebble.directory_url, timeout=5)  # the system's CAs do not trust Pebble


def test_dns01_issuance_through_pebble_verifies_with_openssl(
    dns_lab: DnsLab, pebble: Pebble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    account_key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    # acme's ClientNetwork asks requests to verify; requests then trusts this bundle.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pebble.ca_bundle))
    net = client.ClientNetwork(account_key, alg=ES256, user_agent="sslm-lab-test")
    acme = client.ClientV2(client.ClientV2.get_directory(pebble.directory_url, net), net)
    acme.new_account(
        messages.NewRegistration.from_data(email="lab@example.test", terms_of_service_agreed=True)
    )
    cert_key = ec.generate_private_key(ec.SECP256R1())
    key_pem = cert_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    order = acme.new_order(crypto_util.make_csr(key_pem, ["example.test", "*.example.test"]))

    answers = []
    for authz in order.authorizations:
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01))
        response, validation = challb.response_and_validation(account_key)
        answers.append((challb, response, validation))
    values = [validation for _, _, validation in answers]
    assert len(values) == 2  # the apex and the wildcard: two records for one name
    serial = _publish_txt(dns_lab, values)
    dns_lab.wait_until_secondary_has(serial)
    assert all(dns_lab.txt(CHALLENGE, server) == set(values) for server in dns_lab.servers)
    for challb, response, _ in answers:
        acme.answer_challenge(challb, response)
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=30)
    order = acme.poll_and_finalize(order, deadline)

    pem = order.fullchain_pem.encode()
    leaf = x509.load_pem_x509_certificates(pem)[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"example.test", "*.example.test"}
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "root.pem").write_bytes(pebble.roots_pem())
    (tmp_path / "intermediate.pem").write_bytes(pebble.intermediates_pem())
    verified = subprocess.run(
        [
            require_binary("openssl"),
            "verify",
            "-CAfile",
            str(tmp_path / "root.pem"),
            "-untrusted",
            str(tmp_path / "intermediate.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")
    print(f"dns-01 issuance for 2 names: {time.monotonic() - started:.2f} s")
