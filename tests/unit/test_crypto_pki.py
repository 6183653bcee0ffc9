"""Signing, bundling, inspecting and TLSA data on a real root → intermediate → leaf PKI.

The openssl binary is the judge: whatever sslm says about a chain, ``openssl verify`` must
agree, because that is what the servers and their clients run.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from sslm_tasks.crypto.bundle import compose_outputs
from sslm_tasks.crypto.csr import (
    SubjectSpec,
    build_csr,
    san_entries,
    san_problem,
    subject_value_problem,
)
from sslm_tasks.crypto.inspect import (
    cert_info,
    key_matches_cert,
    load_certs,
    plain_cert_fingerprint,
    spki_der,
    split_pem_blocks,
    verify_chain,
)
from sslm_tasks.crypto.keys import KeySpec, PrivateKey, generate_private_key, private_key_to_pem
from sslm_tasks.crypto.signing import DIGESTS, SigningPolicy, self_sign, sign_with_ca
from sslm_tasks.crypto.tlsa import tlsa_data
from sslm_tasks.errors import CryptoError

OPENSSL = "/usr/bin/openssl"
# openssl verify checks against the wall clock, so the PKI is issued "now".
NOW = datetime.now(UTC).replace(microsecond=0)
P256 = KeySpec("ec", ec_curve="secp256r1")
P384 = KeySpec("ec", ec_curve="secp384r1")
SANS = ["www.example.com", "*.example.com", "192.0.2.10", "2001:db8::10"]
_KEY_ID = re.compile(r"(?:[0-9A-F]{2}:){19}[0-9A-F]{2}")
LEAF_NAME = "CN=example.com,O=Example Certs,C=US"
INT_NAME = "CN=my-int,O=Example Certs,C=US"


@dataclass(frozen=True)
class Issued:
    key: PrivateKey
    cert: x509.Certificate


def issue(
    cn: str,
    sans: list[str],
    *,
    spec: KeySpec,
    issuer: Issued | None,
    days: float = 30,
    is_ca: bool = False,
    digest: str = "sha384",
    now: datetime = NOW,
) -> Issued:
    """A fresh key and a certificate for it, self-signed when ``issuer`` is None."""
    key = generate_private_key(spec)
    csr = build_csr(key, SubjectSpec(CN=cn, O="Example Certs", C="US"), sans, is_ca=is_ca)
    policy = SigningPolicy(days=days, digest=digest, is_ca=is_ca)
    if issuer is None:
        return Issued(key, self_sign(csr, key, policy, now=now))
    return Issued(key, sign_with_ca(csr, issuer.key, issuer.cert, policy, now=now))


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def write(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(pem(*certs))
    return path


def openssl(*args: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([OPENSSL, *map(str, args)], input=stdin, capture_output=True, check=False)


def openssl_text(cert: x509.Certificate) -> str:
    return openssl("x509", "-noout", "-text", stdin=pem(cert)).stdout.decode()


def openssl_verify(tmp_path: Path, leaf: Issued, *chain: Issued, root: Issued) -> str:
    """``openssl verify -CAfile root -untrusted chain leaf``: stdout + stderr."""
    args: list[str | Path] = ["verify", "-CAfile", write(tmp_path / "root.pem", root.cert)]
    if chain:
        args += ["-untrusted", write(tmp_path / "int.pem", *(c.cert for c in chain))]
    done = openssl(*args, write(tmp_path / "leaf.pem", leaf.cert))
    return (done.stdout + done.stderr).decode()


def key_id(cert: x509.Certificate, extension: str) -> str:
    """The key identifier openssl prints for ``extension`` of ``cert``."""
    out = openssl("x509", "-noout", "-ext", extension, stdin=pem(cert)).stdout.decode()
    found = _KEY_ID.search(out)
    assert found, out
    return found.group(0)


@pytest.fixture(scope="module")
def root() -> Issued:
    return issue("my-root", [], spec=P384, issuer=None, days=3650, is_ca=True)


@pytest.fixture(scope="module")
def intermediate(root: Issued) -> Issued:
    return issue("my-int", [], spec=P384, issuer=root, days=1825, is_ca=True)


@pytest.fixture(scope="module")
def leaf(intermediate: Issued) -> Issued:
    return issue("example.com", SANS, spec=P256, issuer=intermediate)


@pytest.fixture(scope="module")
def other_root() -> Issued:
    return issue("other-root", [], spec=P256, issuer=None, days=365, is_ca=True)


# --------------------------------------------------------------------------- signing


@pytest.mark.parametrize(
    ("spec", "key_text", "usage"),
    [
        (P256, "ASN1 OID: prime256v1", "Digital Signature, Key Agreement"),
        (P384, "ASN1 OID: secp384r1", "Digital Signature, Key Agreement"),
        (KeySpec("rsa", rsa_bits=2048), "Public-Key: (2048 bit)", "Digital Signature, Key Enc"),
        (KeySpec("rsa", rsa_bits=3072), "Public-Key: (3072 bit)", "Digital Signature, Key Enc"),
    ],
)
def test_local_ca_leaves_verify_with_openssl(
    tmp_path: Path, root: Issued, intermediate: Issued, spec: KeySpec, key_text: str, usage: str
) -> None:
    # Given a root and an intermediate
    # When the intermediate signs a leaf with DNS, wildcard, IPv4 and IPv6 names
    leaf = issue("example.com", SANS, spec=spec, issuer=intermediate)
    # Then openssl accepts the chain (upstream's chains failed right here)
    assert openssl_verify(tmp_path, leaf, intermediate, root=root) == f"{tmp_path}/leaf.pem: OK\n"
    # And it shows every SAN, IPs as IP Address
    sans = openssl("x509", "-noout", "-ext", "subjectAltName", stdin=pem(leaf.cert))
    assert (
        "DNS:example.com, DNS:www.example.com, DNS:*.example.com, "
        "IP Address:192.0.2.10, IP Address:2001:DB8:0:0:0:0:0:10"
    ) in sans.stdout.decode()
    # And key type, CA flag, usages come from policy, with critical flags
    text = openssl_text(leaf.cert)
    assert key_text in text
    assert "X509v3 Basic Constraints: critical\n                CA:FALSE" in text
    assert f"X509v3 Key Usage: critical\n                {usage}" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    # And the AKI names the issuer's key, not the leaf's own
    assert key_id(leaf.cert, "authorityKeyIdentifier") == key_id(
        intermediate.cert, "subjectKeyIdentifier"
    )
    assert key_id(leaf.cert, "subjectKeyIdentifier") != key_id(
        intermediate.cert, "subjectKeyIdentifier"
    )


def test_ca_certificates_carry_ca_usages_and_no_eku(root: Issued, intermediate: Issued) -> None:
    # When I look at the root and the intermediate
    for ca in (root, intermediate):
        text = openssl_text(ca.cert)
        # Then both are CA:TRUE, may sign certificates and CRLs, and have no EKU
        assert "X509v3 Basic Constraints: critical\n                CA:TRUE" in text
        assert "Digital Signature, Certificate Sign, CRL Sign" in text
        assert "Extended Key Usage" not in text
    # And the root's AKI is its own SKI while the intermediate's is the root's
    root_ski = key_id(root.cert, "subjectKeyIdentifier")
    assert key_id(root.cert, "authorityKeyIdentifier") == root_ski
    assert key_id(intermediate.cert, "authorityKeyIdentifier") == root_ski


def test_ed25519_intermediate_signs_leaves_openssl_accepts(tmp_path: Path, root: Issued) -> None:
    # Given an intermediate with an Ed25519 key under the P-384 root
    ed_int = issue("ed-int", [], spec=KeySpec("ed25519"), issuer=root, days=90, is_ca=True)
    # When it signs a leaf (Ed25519 signs without a digest)
    leaf = issue("example.com", SANS, spec=P256, issuer=ed_int)
    # Then openssl verifies the chain and sees an Ed25519 signature
    assert openssl_verify(tmp_path, leaf, ed_int, root=root).endswith(": OK\n")
    assert "Signature Algorithm: ED25519" in openssl_text(leaf.cert)
    assert "ED25519 Public-Key" in openssl_text(ed_int.cert)


def test_rsa_4096_self_signed_root_with_sha512(tmp_path: Path) -> None:
    # When I make the one slow key of the suite: an RSA 4096 root signed with SHA-512
    rsa_root = issue(
        "rsa-root", [], spec=KeySpec("rsa", rsa_bits=4096), issuer=None, is_ca=True, digest="sha512"
    )
    # Then openssl trusts it as its own anchor and shows size, digest and CA flag
    root_pem = write(tmp_path / "rsa-root.pem", rsa_root.cert)
    assert openssl("verify", "-CAfile", root_pem, root_pem).returncode == 0
    text = openssl_text(rsa_root.cert)
    assert "Public-Key: (4096 bit)" in text
    assert "Signature Algorithm: sha512WithRSAEncryption" in text
    assert "CA:TRUE" in text
    assert cert_info(rsa_root.cert).pubkey == "rsa-4096"


@pytest.fixture(scope="module")
def rsa_key() -> PrivateKey:
    return generate_private_key(KeySpec("rsa", rsa_bits=2048))


@pytest.mark.parametrize("digest", sorted(DIGESTS))
def test_every_configurable_digest_signs_and_is_named_like_openssl(
    tmp_path: Path, rsa_key: PrivateKey, digest: str
) -> None:
    # Given an RSA key (OpenSSL 3.0 cannot verify ECDSA with SHA-3; RSA covers every digest)
    csr = build_csr(rsa_key, SubjectSpec(CN="d.example.com"), [], is_ca=True)
    # When a self-signed CA certificate uses each digest config accepts
    cert = self_sign(csr, rsa_key, SigningPolicy(days=1, digest=digest, is_ca=True), now=NOW)
    # Then openssl verifies it and names its algorithm as cert_info does
    cert_pem = write(tmp_path / "cert.pem", cert)
    assert openssl("verify", "-CAfile", cert_pem, "-check_ss_sig", cert_pem).returncode == 0
    shown = re.search(r"Signature Algorithm: (\S+)", openssl_text(cert))
    assert shown is not None
    assert cert_info(cert).sig_algo == shown.group(1)
    assert isinstance(cert.signature_hash_algorithm, DIGESTS[digest])


def test_leaf_never_outlives_its_issuer(root: Issued) -> None:
    # Given an intermediate that expires in two days
    short_int = issue("short-int", [], spec=P256, issuer=root, days=2, is_ca=True)
    # When it signs a leaf asking for 30 days
    leaf = issue("example.com", SANS, spec=P256, issuer=short_int, days=30)
    # Then notBefore is now (no backdating) and notAfter is the issuer's notAfter
    assert leaf.cert.not_valid_before_utc == NOW
    assert leaf.cert.not_valid_after_utc == short_int.cert.not_valid_after_utc
    end = openssl("x509", "-noout", "-enddate", stdin=pem(leaf.cert)).stdout
    assert end == openssl("x509", "-noout", "-enddate", stdin=pem(short_int.cert)).stdout


def test_fractional_days_make_short_lived_certificates(intermediate: Issued) -> None:
    leaf = issue("example.com", SANS, spec=P256, issuer=intermediate, days=0.25)
    assert cert_info(leaf.cert).lifetime_days == 0.25


def test_sign_with_ca_refuses_an_issuer_that_is_not_a_ca(leaf: Issued) -> None:
    # Given a leaf certificate and its key posing as a CA
    csr = build_csr(generate_private_key(P256), SubjectSpec(CN="x.example.com"), [], is_ca=False)
    # When / Then signing is refused
    with pytest.raises(CryptoError, match="not a CA"):
        sign_with_ca(csr, leaf.key, leaf.cert, SigningPolicy(days=1), now=NOW)


def test_sign_with_ca_refuses_a_key_that_is_not_the_cas(root: Issued, intermediate: Issued) -> None:
    csr = build_csr(generate_private_key(P256), SubjectSpec(CN="x.example.com"), [], is_ca=False)
    with pytest.raises(CryptoError, match="does not belong"):
        sign_with_ca(csr, root.key, intermediate.cert, SigningPolicy(days=1), now=NOW)


def test_sign_with_ca_refuses_an_expired_ca(root: Issued) -> None:
    old_int = issue("old-int", [], spec=P256, issuer=root, days=1, is_ca=True)
    csr = build_csr(generate_private_key(P256), SubjectSpec(CN="x.example.com"), [], is_ca=False)
    with pytest.raises(CryptoError, match="expired"):
        sign_with_ca(csr, old_int.key, old_int.cert, SigningPolicy(1), now=NOW + timedelta(days=2))


def test_signing_refuses_a_tampered_csr(intermediate: Issued) -> None:
    # Given a CSR whose signature no longer matches its content
    key = generate_private_key(P256)
    der = build_csr(key, SubjectSpec(CN="x.example.com"), [], is_ca=False).public_bytes(
        serialization.Encoding.DER
    )
    tampered = x509.load_der_x509_csr(der[:-1] + bytes([der[-1] ^ 0x01]))
    # When / Then neither signing path accepts it
    with pytest.raises(CryptoError, match="invalid signature"):
        sign_with_ca(tampered, intermediate.key, intermediate.cert, SigningPolicy(1), now=NOW)
    with pytest.raises(CryptoError, match="invalid signature"):
        self_sign(tampered, key, SigningPolicy(1), now=NOW)


def test_self_sign_refuses_a_key_that_is_not_the_csrs() -> None:
    csr = build_csr(generate_private_key(P256), SubjectSpec(CN="x.example.com"), [], is_ca=False)
    with pytest.raises(CryptoError, match="does not match"):
        self_sign(csr, generate_private_key(P256), SigningPolicy(1), now=NOW)


@pytest.mark.parametrize(("days", "digest"), [(0, "sha384"), (-1, "sha384"), (1, "md5")])
def test_signing_policy_refuses_nonsense(days: float, digest: str) -> None:
    with pytest.raises(CryptoError):
        SigningPolicy(days=days, digest=digest)


def test_csr_extensions_other_than_san_are_ignored(tmp_path: Path, root: Issued) -> None:
    # Given a CSR that asks for CA:TRUE, certificate signing and its own key as AKI
    # (what upstream's CSRs carried and upstream's signer copied)
    key = generate_private_key(P256)
    own = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=greedy.example.com"))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("greedy.example.com")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(own, False)
        .sign(key, hashes.SHA256())
    )
    # When a leaf policy signs it
    cert = sign_with_ca(csr, root.key, root.cert, SigningPolicy(days=1), now=NOW)
    # Then only the SAN came from the CSR: CA:FALSE, leaf usages, AKI = the root's SKI
    issued = Issued(key, cert)
    assert openssl_verify(tmp_path, issued, root=root).endswith(": OK\n")
    info = cert_info(cert)
    assert not info.is_ca
    assert info.sans == ["greedy.example.com"]
    assert info.aki == cert_info(root.cert).ski
    assert info.aki != own.key_identifier


# --------------------------------------------------------------------------- bundle


def test_self_signed_outputs_use_the_cert_as_chain_and_normalise_newlines(root: Issued) -> None:
    # Given sloppy PEM input: CRLF, blank lines, no final newline
    cert_pem = pem(root.cert).replace(b"\n", b"\r\n").rstrip() + b"\r\n\r\n"
    key_pem = b"\n" + private_key_to_pem(root.key).rstrip()
    # When I compose a self-signed certificate's outputs
    out = compose_outputs(cert_pem=cert_pem, chain_pem=None, key_pem=key_pem)
    # Then chain and fullchain are the cert, the bundle is key + cert, one newline per block
    assert out.cert == pem(root.cert)
    assert out.chain == out.fullchain == out.cert
    assert out.bundle == private_key_to_pem(root.key) + pem(root.cert)
    # And the key never shows in a repr
    assert b"PRIVATE" not in repr(out).encode()


def test_outputs_with_a_chain_verify_and_bundle_the_key(
    tmp_path: Path, root: Issued, intermediate: Issued, leaf: Issued
) -> None:
    # When I compose a CA-signed leaf's outputs from the intermediate's fullchain
    out = compose_outputs(
        cert_pem=pem(leaf.cert),
        chain_pem=pem(intermediate.cert, root.cert),
        key_pem=private_key_to_pem(leaf.key),
    )
    # Then fullchain = cert + chain and openssl verifies the leaf against it
    assert out.fullchain == pem(leaf.cert, intermediate.cert, root.cert)
    (tmp_path / "fullchain.pem").write_bytes(out.fullchain)
    (tmp_path / "chain.pem").write_bytes(out.chain)
    root_pem = write(tmp_path / "root.pem", root.cert)
    chain_pem = tmp_path / "chain.pem"
    done = openssl(
        "verify", "-CAfile", root_pem, "-untrusted", chain_pem, chain_pem.parent / "fullchain.pem"
    )
    assert done.returncode == 0, done.stderr
    # And the bundle is the key followed by the fullchain
    labels = [label for label, _ in split_pem_blocks(out.bundle.decode())]
    assert labels == ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE", "CERTIFICATE"]
    assert openssl("pkey", "-noout", stdin=out.bundle).returncode == 0


def test_compose_outputs_refuses_input_without_pem_blocks(leaf: Issued) -> None:
    key_pem = private_key_to_pem(leaf.key)
    with pytest.raises(CryptoError, match="chain holds no PEM block"):
        compose_outputs(cert_pem=pem(leaf.cert), chain_pem=b"not pem", key_pem=key_pem)


# --------------------------------------------------------------------------- inspect


def test_cert_info_summarises_a_leaf(leaf: Issued, intermediate: Issued) -> None:
    info = cert_info(leaf.cert)
    assert info.subject == "CN=example.com,O=Example Certs,C=US"
    assert info.issuer == "CN=my-int,O=Example Certs,C=US"
    assert info.not_before == NOW
    assert info.not_before.tzinfo is not None
    assert info.lifetime_days == 30
    assert info.sans == ["example.com", *SANS]
    assert info.pubkey == "secp256r1"
    assert info.sig_algo == "ecdsa-with-SHA384"
    assert info.serial == leaf.cert.serial_number
    assert 0 < info.serial < 2**159
    assert info.aki == cert_info(intermediate.cert).ski
    assert info.ski is not None
    assert not info.is_ca
    assert cert_info(intermediate.cert).is_ca


def test_key_matches_cert_and_spki_agree_with_openssl(leaf: Issued, root: Issued) -> None:
    assert key_matches_cert(leaf.key, leaf.cert)
    assert not key_matches_cert(root.key, leaf.cert)
    pubkey = openssl("x509", "-pubkey", "-noout", stdin=pem(leaf.cert)).stdout
    assert spki_der(leaf.cert) == openssl("pkey", "-pubin", "-outform", "der", stdin=pubkey).stdout


def test_load_certs_reads_every_block_and_skips_comments_and_keys(
    root: Issued, intermediate: Issued
) -> None:
    # Given a file with a comment, a key and two certificates
    text = b"# my chain\n" + private_key_to_pem(root.key) + pem(intermediate.cert, root.cert)
    # When / Then the certificates come back in order
    assert load_certs(text) == [intermediate.cert, root.cert]


def test_load_certs_strips_openssl_trust_data(tmp_path: Path, root: Issued) -> None:
    # Given a TRUSTED CERTIFICATE with trust settings appended by openssl
    trusted = openssl("x509", "-trustout", "-addtrust", "serverAuth", stdin=pem(root.cert)).stdout
    assert trusted.startswith(b"-----BEGIN TRUSTED CERTIFICATE-----")
    # When / Then it loads as the plain certificate
    assert load_certs(trusted) == [root.cert]


def test_load_certs_reads_a_plain_chain_as_the_line_by_line_reader_does(
    root: Issued, intermediate: Issued, leaf: Issued
) -> None:
    # Given the plain CERTIFICATE blocks sslm writes, with text around them
    chain = pem(leaf.cert, intermediate.cert, root.cert)
    # When / Then cryptography's one-call reader gives what reading block by block gives
    expected = [leaf.cert, intermediate.cert, root.cert]
    assert load_certs(chain) == expected
    assert load_certs(b"around\n" + chain + b"after") == expected
    assert [label for label, _ in split_pem_blocks(chain.decode())] == ["CERTIFICATE"] * 3


def test_plain_cert_fingerprint_is_the_certificates_from_its_text_alone(
    root: Issued, leaf: Issued
) -> None:
    one = pem(leaf.cert)
    assert plain_cert_fingerprint(one) == leaf.cert.fingerprint(hashes.SHA256()).hex()
    assert plain_cert_fingerprint(one.replace(b"\n", b"\r\n")) == plain_cert_fingerprint(one)
    # Only for one plain block: a chain, a comment or a body that is not strict base64 is parsed
    assert plain_cert_fingerprint(pem(leaf.cert, root.cert)) is None
    assert plain_cert_fingerprint(b"# mine\n" + one) is None
    assert plain_cert_fingerprint(one.replace(b"\n", b"\n*", 1)) is None
    assert plain_cert_fingerprint(b"-----BEGIN CERTIFICATE-----\nMIIB\n") is None


def test_load_certs_refuses_a_chain_cut_short_after_whole_blocks(
    root: Issued, intermediate: Issued
) -> None:
    # Given a torn write: whole blocks, then one without its END line (cryptography alone
    # would return the whole ones and say nothing)
    torn = pem(intermediate.cert, root.cert) + pem(root.cert)[:60]
    # When / Then it is refused, as a file that is not whole
    with pytest.raises(CryptoError, match="no END line"):
        load_certs(torn)


@pytest.mark.parametrize(
    "bad",
    [
        b"no pem here",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n",
        b"-----BEGIN TRUSTED CERTIFICATE-----\nAAAA\n-----END TRUSTED CERTIFICATE-----\n",
    ],
)
def test_load_certs_refuses_what_is_not_a_certificate(bad: bytes) -> None:
    with pytest.raises(CryptoError):
        load_certs(bad)


def test_split_pem_blocks_labels_blocks_and_ignores_comments() -> None:
    text = "#-----BEGIN X-----\nhello\n-----BEGIN A B-----\n  x\n-----END A B-----\n"
    assert split_pem_blocks(text) == [("A B", "-----BEGIN A B-----\nx\n-----END A B-----\n")]


# --------------------------------------------------------------------------- verify_chain


def test_a_good_chain_has_no_problems(root: Issued, intermediate: Issued, leaf: Issued) -> None:
    assert verify_chain(leaf.cert, [intermediate.cert, root.cert], now=NOW) == []
    # the chain order does not matter, and an explicit anchor works without a root in chain
    assert verify_chain(leaf.cert, [root.cert, intermediate.cert], now=NOW) == []
    assert verify_chain(leaf.cert, [intermediate.cert], now=NOW, trust=[root.cert]) == []


def test_a_leaf_with_wildcards_or_addresses_only_is_checked_for_one_of_them(
    root: Issued, intermediate: Issued
) -> None:
    # The web-PKI verifier checks a leaf for one server name; sslm picks one the leaf covers
    for names in (["*.example.com"], ["192.0.2.10"], ["2001:db8::10", "*.example.org"]):
        leaf = issue(names[0], names[1:], spec=P256, issuer=intermediate)
        assert verify_chain(leaf.cert, [intermediate.cert, root.cert], now=NOW) == [], names


def test_a_self_signed_leaf_is_valid_when_trusted() -> None:
    lone = issue("lone.example.com", [], spec=P256, issuer=None).cert
    assert verify_chain(lone, [lone], now=NOW) == []


def test_an_expired_certificate_is_a_problem(
    tmp_path: Path, root: Issued, intermediate: Issued
) -> None:
    # Given a leaf that lived for ten days, forty days ago
    old = issue(
        "example.com", SANS, spec=P256, issuer=intermediate, days=10, now=NOW - timedelta(40)
    )
    # When / Then both sslm and openssl reject it, and sslm says which certificate
    problems = verify_chain(old.cert, [intermediate.cert, root.cert], now=NOW)
    assert problems[:2] == [
        f"rejected by the web-PKI verifier: {LEAF_NAME}: expired or not yet valid",
        f"{LEAF_NAME} expired at {old.cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
    ]
    assert "certificate has expired" in openssl_verify(tmp_path, old, intermediate, root=root)


def test_a_chain_from_another_ca_is_a_problem(
    tmp_path: Path, leaf: Issued, other_root: Issued
) -> None:
    other_int = issue("other-int", [], spec=P256, issuer=other_root, days=30, is_ca=True)
    problems = verify_chain(leaf.cert, [other_int.cert, other_root.cert], now=NOW)
    assert problems == [
        "rejected by the web-PKI verifier: no path to a trusted root",
        f"no issuer certificate for {LEAF_NAME} (issuer CN=my-int,O=Example Certs,C=US)",
        f"path followed: {LEAF_NAME}",
    ]
    assert ": OK" not in openssl_verify(tmp_path, leaf, other_int, root=other_root)


def craft_leaf(issuer: Issued, *, aki_key: PrivateKey | None, signer: PrivateKey) -> Issued:
    """A leaf naming ``issuer`` as issuer, with the AKI of ``aki_key`` (None: its own key)
    and signed by ``signer``: the broken certificates sign_with_ca cannot make."""
    key = generate_private_key(P256)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=crafted.example.com"))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("crafted.example.com")]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key((aki_key or key).public_key()),
            False,
        )
        .sign(signer, hashes.SHA256())
    )
    return Issued(key, cert)


def test_upstreams_aki_equals_own_ski_chain_is_a_problem(
    tmp_path: Path, root: Issued, intermediate: Issued
) -> None:
    # Given a leaf signed by the intermediate but with AKI = its own SKI (upstream's bug)
    issued = craft_leaf(intermediate, aki_key=None, signer=intermediate.key)
    int_ski = key_id(intermediate.cert, "subjectKeyIdentifier").lower()
    # When / Then sslm reports the mismatch, as openssl does (the web-PKI verifier alone
    # would accept it: it only sorts issuers by key id)
    problems = verify_chain(issued.cert, [intermediate.cert, root.cert], now=NOW)
    assert len(problems) == 2
    assert problems[0].startswith("authority key id ")
    assert problems[0].endswith(f"does not match subject key id {int_ski} of issuer {INT_NAME}")
    assert problems[1] == "path followed: CN=crafted.example.com"
    assert ": OK" not in openssl_verify(tmp_path, issued, intermediate, root=root)


def test_a_forged_signature_is_a_problem(
    tmp_path: Path, root: Issued, intermediate: Issued
) -> None:
    # Given a leaf whose name and AKI point at the intermediate but signed by another key
    issued = craft_leaf(intermediate, aki_key=intermediate.key, signer=root.key)
    problems = verify_chain(issued.cert, [intermediate.cert, root.cert], now=NOW)
    assert problems == [
        "rejected by the web-PKI verifier: signature does not match",
        f"signature on CN=crafted.example.com does not verify with the key of {INT_NAME}",
        f"path followed: CN=crafted.example.com < {INT_NAME} < CN=my-root,O=Example Certs,C=US",
    ]
    assert "certificate signature failure" in openssl_verify(
        tmp_path, issued, intermediate, root=root
    )


def test_an_issuer_that_is_not_a_ca_is_a_problem(root: Issued, leaf: Issued) -> None:
    # Given a certificate "issued" by a leaf (sign_with_ca refuses this, so craft it)
    issued = craft_leaf(leaf, aki_key=leaf.key, signer=leaf.key)
    problems = verify_chain(issued.cert, [leaf.cert, root.cert], now=NOW, trust=[root.cert])
    assert any("is not a CA" in problem for problem in problems)


def test_a_root_outside_the_trust_list_is_a_problem(
    root: Issued, intermediate: Issued, leaf: Issued, other_root: Issued
) -> None:
    problems = verify_chain(
        leaf.cert, [intermediate.cert, root.cert], now=NOW, trust=[other_root.cert]
    )
    assert problems[0] == "rejected by the web-PKI verifier: no path to a trusted root"
    assert "root CN=my-root,O=Example Certs,C=US is not a trusted certificate" in problems


# --------------------------------------------------------------------------- TLSA


@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("matching", [0, 1, 2])
def test_tlsa_data_matches_the_openssl_pipeline(leaf: Issued, selector: int, matching: int) -> None:
    # Given the bytes openssl selects: the whole cert, or the SPKI
    if selector == 0:
        der = openssl("x509", "-outform", "der", stdin=pem(leaf.cert)).stdout
    else:
        pubkey = openssl("x509", "-pubkey", "-noout", stdin=pem(leaf.cert)).stdout
        der = openssl("pkey", "-pubin", "-outform", "der", stdin=pubkey).stdout
    # And openssl's digest of them (or the raw bytes for matching type 0)
    if matching == 0:
        expected = der.hex()
    else:
        flag = {1: "-sha256", 2: "-sha512"}[matching]
        expected = openssl("dgst", flag, "-r", stdin=der).stdout.decode().split()[0]
    # When / Then sslm computes the same lower-case hex
    assert tlsa_data(leaf.cert, selector, matching) == expected


@pytest.mark.parametrize(("selector", "matching"), [(2, 1), (1, 3), (-1, 0)])
def test_tlsa_data_refuses_unknown_types(leaf: Issued, selector: int, matching: int) -> None:
    with pytest.raises(CryptoError):
        tlsa_data(leaf.cert, selector, matching)


def test_san_entries_are_lower_case_names_and_addresses_each_once() -> None:
    names = ["*.example.com", "example.com", "2001:db8::1", "::ffff:1"]
    entries = san_entries("Example.COM", names)
    # The CN is in the SANs already (names compare in lower case), so it is not put first
    assert entries == [
        x509.DNSName("*.example.com"),
        x509.DNSName("example.com"),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        x509.IPAddress(ipaddress.ip_address("::ffff:1")),
    ]


@pytest.mark.parametrize(
    "bad",
    ["www.example.com.", "www.example.com\n", "fe80::1%eth0", "1.2.3.4.", "256.1.2.3", "a_b.ex"],
)
def test_a_csr_refuses_what_the_configuration_refuses(bad: str) -> None:
    # The CSR and the configuration check run the same rule: san_problem.
    assert san_problem(bad) is not None
    with pytest.raises(CryptoError, match=re.escape(repr(bad))):
        build_csr(generate_private_key(P256), SubjectSpec(CN="x.example.com"), [bad], is_ca=False)


def test_a_subject_the_certificate_cannot_carry_is_refused() -> None:
    assert subject_value_problem("C", "U1") == "a country code is two letters"
    assert "<= 64" in (subject_value_problem("CN", "c" * 65) or "")
    assert subject_value_problem("O", "") is None
    with pytest.raises(CryptoError, match="C: a country code"):
        subject = SubjectSpec(CN="x.example.com", C="U\n")
        build_csr(generate_private_key(P256), subject, [], is_ca=False)
