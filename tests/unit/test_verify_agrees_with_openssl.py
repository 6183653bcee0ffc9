"""sslm-verify against openssl verify on chains built here with cryptography, good and bad.

Each case is a certificate directory (cert.pem, chain.pem) and a trusted root, judged by the
real ``sslm-verify`` process and by ``openssl verify -purpose sslserver`` (sslm-verify checks
a leaf for TLS server use). Where openssl rejects, sslm-verify must too; the good chains show
that a rejection is about the defect, not about everything.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

OPENSSL = "/usr/bin/openssl"
NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
SERVER = [ExtendedKeyUsageOID.SERVER_AUTH]


@dataclass(frozen=True)
class Issued:
    key: Key
    cert: x509.Certificate


def new_key(kind: str = "ec") -> Key:
    return (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Verify Tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def make(
    cn: str,
    *,
    issuer: Issued | None,
    key: Key | None = None,
    ca: bool = False,
    sans: Sequence[str] = (),
    eku: Sequence[x509.ObjectIdentifier] = SERVER,
    start: datetime = NOW - DAY,
    end: datetime = NOW + 30 * DAY,
    permitted: Sequence[str] = (),
    signer: Key | None = None,
) -> Issued:
    """A certificate as a CA or a leaf would have it, signed by ``signer`` (default: the
    issuer's key, or its own key without an issuer); ``permitted`` adds name constraints."""
    key = key or new_key()
    issuer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(issuer.cert.subject if issuer else name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, ca, ca, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([san(s) for s in sans]), False)
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if permitted:
        subtrees = [
            x509.IPAddress(ipaddress.ip_network(p)) if "/" in p else x509.DNSName(p)
            for p in permitted
        ]
        builder = builder.add_extension(x509.NameConstraints(subtrees, None), critical=True)
    signing_key = signer or issuer_key
    digest = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return Issued(key, builder.sign(signing_key, digest))


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


@dataclass(frozen=True)
class Verdicts:
    sslm_rc: int
    sslm_out: str
    openssl_rc: int
    openssl_out: str


def judge(tmp_path: Path, leaf: Issued, chain: Sequence[Issued], root: Issued) -> Verdicts:
    """Write a certificate directory and a root file; run sslm-verify and openssl on them."""
    version = tmp_path / "version"
    version.mkdir()
    (version / "cert.pem").write_bytes(pem(leaf.cert))
    (version / "chain.pem").write_bytes(pem(*(c.cert for c in chain)))
    root_file = tmp_path / "root.pem"
    root_file.write_bytes(pem(root.cert))
    sslm = subprocess.run(
        [sys.executable, "-m", "sslm_tasks.cli.verify", str(version), "--ca-file", str(root_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    argv = [OPENSSL, "verify", "-no-CApath", "-no-CAstore", "-purpose", "sslserver"]
    argv += ["-CAfile", str(root_file), "-untrusted", str(version / "chain.pem")]
    done = subprocess.run(
        [*argv, str(version / "cert.pem")], capture_output=True, text=True, check=False
    )
    return Verdicts(
        sslm.returncode, sslm.stdout + sslm.stderr, done.returncode, done.stdout + done.stderr
    )


def verdict_lines(out: str) -> list[str]:
    """sslm-verify's verdict and the lines under it, before the certificate summaries."""
    lines = out.splitlines()
    return lines[1 : lines.index("Certificate Info:")]


def assert_both_accept(verdicts: Verdicts) -> None:
    assert verdicts.openssl_rc == 0, verdicts.openssl_out
    assert verdicts.sslm_rc == 0, verdicts.sslm_out
    assert verdict_lines(verdicts.sslm_out)[0] == "\tCertificate ** Verified **"


def assert_both_reject(verdicts: Verdicts, openssl_says: str, sslm_says: str) -> None:
    assert verdicts.openssl_rc != 0 and openssl_says in verdicts.openssl_out, verdicts.openssl_out
    assert verdicts.sslm_rc == 1, verdicts.sslm_out
    lines = verdict_lines(verdicts.sslm_out)
    assert lines[0] == "\tCertificate ** Failed **"
    assert any(sslm_says in line for line in lines[1:]), lines


@pytest.fixture(scope="module")
def root() -> Issued:
    return make("Verify Root", issuer=None, ca=True, end=NOW + 3650 * DAY)


@pytest.fixture(scope="module")
def intermediate(root: Issued) -> Issued:
    return make("Verify Intermediate", issuer=root, ca=True, end=NOW + 365 * DAY)


def test_a_good_chain_with_dns_and_ip_names_is_verified_by_both(
    tmp_path: Path, root: Issued, intermediate: Issued
) -> None:
    leaf = make(
        "example.com", issuer=intermediate, sans=["example.com", "192.0.2.1", "2001:db8::1"]
    )
    assert_both_accept(judge(tmp_path, leaf, [intermediate, root], root))


@pytest.mark.parametrize(
    ("permitted", "sans", "allowed"),
    [
        (["example.org"], ["www.example.org"], True),
        # issue 13: upstream and the old sslm-verify said Verified here
        (["example.org"], ["example.com"], False),
        # every SAN must be permitted, not only the first
        (["example.org"], ["www.example.org", "www.example.com"], False),
        (["192.0.2.0/24"], ["192.0.2.7"], True),
        (["192.0.2.0/24"], ["198.51.100.7"], False),
    ],
)
def test_name_constraints_are_enforced_as_openssl_does(
    tmp_path: Path, root: Issued, permitted: list[str], sans: list[str], allowed: bool
) -> None:
    # Given an intermediate whose name constraints permit only ``permitted``
    constrained = make("Constrained CA", issuer=root, ca=True, permitted=permitted)
    # When it signs a leaf for ``sans``
    leaf = make(sans[0], issuer=constrained, sans=sans)
    verdicts = judge(tmp_path, leaf, [constrained], root)
    # Then sslm-verify and openssl agree
    if allowed:
        assert_both_accept(verdicts)
    else:
        assert_both_reject(
            verdicts, "permitted subtree violation", "a SAN is outside the name constraints of a CA"
        )


def test_a_client_only_leaf_is_no_server_certificate(
    tmp_path: Path, root: Issued, intermediate: Issued
) -> None:
    # Given a leaf whose EKU allows client authentication only (plain `openssl verify`
    # checks no purpose; with -purpose sslserver it rejects, as any TLS client does)
    leaf = make(
        "client.example.com",
        issuer=intermediate,
        sans=["client.example.com"],
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    # When / Then both reject it for TLS server use
    assert_both_reject(
        judge(tmp_path, leaf, [intermediate], root),
        "unsuitable certificate purpose",
        "CN=client.example.com,O=Verify Tests: its extended key usage does not include "
        "TLS server (serverAuth)",
    )


def test_an_expired_intermediate_breaks_a_valid_leaf(tmp_path: Path, root: Issued) -> None:
    # Given an intermediate that expired yesterday and a leaf that is still valid
    old = make("Old Intermediate", issuer=root, ca=True, start=NOW - 60 * DAY, end=NOW - DAY)
    leaf = make("example.com", issuer=old, sans=["example.com"], start=NOW - 30 * DAY)
    # When / Then both reject the chain, and sslm-verify names the intermediate
    assert_both_reject(
        judge(tmp_path, leaf, [old, root], root),
        "certificate has expired",
        "CN=Old Intermediate,O=Verify Tests expired at",
    )


def test_a_signature_by_another_key_under_the_issuers_name_is_rejected(
    tmp_path: Path, root: Issued, intermediate: Issued
) -> None:
    # Given a leaf that names the intermediate as issuer but was signed by another key
    leaf = make("example.com", issuer=intermediate, sans=["example.com"], signer=new_key())
    # When / Then both reject it
    assert_both_reject(
        judge(tmp_path, leaf, [intermediate], root),
        "certificate signature failure",
        "signature on CN=example.com,O=Verify Tests does not verify with the key of "
        "CN=Verify Intermediate,O=Verify Tests",
    )


def test_an_intermediate_given_as_trusted_is_no_trust_anchor(
    tmp_path: Path, root: Issued, intermediate: Issued
) -> None:
    # Given a good chain, but only the intermediate named as trusted (--ca-file)
    leaf = make("example.com", issuer=intermediate, sans=["example.com"])
    # When / Then neither takes it for a root (openssl would with -partial_chain)
    assert_both_reject(
        judge(tmp_path, leaf, [intermediate], intermediate),
        "unable to get issuer certificate",
        "no trusted root: no self-signed certificate was given as one",
    )


def test_a_root_renewed_with_the_same_key_still_anchors_old_chains(tmp_path: Path) -> None:
    # Given a root, an intermediate it signed, and a leaf (chain.pem carries the old root)
    key = new_key()
    old_root = make("Renewed Root", issuer=None, key=key, ca=True, end=NOW + 30 * DAY)
    intermediate = make("Renewed Int", issuer=old_root, ca=True)
    leaf = make("example.com", issuer=intermediate, sans=["example.com"])
    # When the root is renewed: same key, same name, new serial and validity
    new_root = make("Renewed Root", issuer=None, key=key, ca=True, end=NOW + 3650 * DAY)
    assert new_root.cert.serial_number != old_root.cert.serial_number
    # Then the old chain verifies against the new root for openssl and for sslm-verify
    # (both look for the issuer by name and key id, and the signature checks with the key)
    assert_both_accept(judge(tmp_path, leaf, [intermediate, old_root], new_root))


def test_a_root_renewed_with_a_new_key_does_not_anchor_old_chains(tmp_path: Path) -> None:
    # Given the same story, but the new root has a new key under the same name
    old_root = make("Rekeyed Root", issuer=None, ca=True)
    intermediate = make("Rekeyed Int", issuer=old_root, ca=True)
    leaf = make("example.com", issuer=intermediate, sans=["example.com"])
    new_root = make("Rekeyed Root", issuer=None, ca=True)
    # When / Then neither accepts the old chain under the new root
    assert_both_reject(
        judge(tmp_path, leaf, [intermediate], new_root),
        "unable to get local issuer certificate",
        "does not match subject key id",
    )


def test_an_ed25519_leaf_under_an_ec_ca_verifies_with_a_warning(
    tmp_path: Path, root: Issued, intermediate: Issued
) -> None:
    leaf = make(
        "ed.example.com", issuer=intermediate, key=new_key("ed25519"), sans=["ed.example.com"]
    )
    verdicts = judge(tmp_path, leaf, [intermediate], root)
    assert_both_accept(verdicts)
    assert verdict_lines(verdicts.sslm_out)[1:] == [
        "\t  note: the certificate's ed25519 key is outside the web PKI (CA/B Forum BR 6.1.5): "
        "browsers do not accept it in TLS, it fits private uses only"
    ]


@pytest.mark.parametrize(
    ("sans", "allowed"), [(["ok.example.org"], True), (["example.com"], False)]
)
def test_an_ed25519_ca_is_judged_by_openssl(
    tmp_path: Path, root: Issued, sans: list[str], allowed: bool
) -> None:
    # Given an Ed25519 intermediate (the web-PKI verifier refuses Ed25519 CA keys) with
    # name constraints, signing an EC leaf
    ed_ca = make("Ed CA", issuer=root, key=new_key("ed25519"), ca=True, permitted=["example.org"])
    leaf = make(sans[0], issuer=ed_ca, sans=sans)
    verdicts = judge(tmp_path, leaf, [ed_ca], root)
    # Then sslm-verify says openssl judged it, and why
    note = (
        "\t  note: checked with openssl verify, since the web PKI (and with it browsers and "
        "cryptography's verifier) refuses this chain: CN=example.com,O=Verify Tests: ed25519 "
        "signature; CN=Ed CA,O=Verify Tests: ed25519 key"
    )
    # And the verdict is openssl's, name constraints included
    if allowed:
        assert_both_accept(verdicts)
        assert note.replace("example.com", "ok.example.org") in verdict_lines(verdicts.sslm_out)
    else:
        assert_both_reject(verdicts, "permitted subtree violation", "permitted subtree violation")
        assert note in verdict_lines(verdicts.sslm_out)
