"""Keys and CSRs, judged by the openssl binary."""

from __future__ import annotations

import ipaddress
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sslm_tasks.crypto.csr import (
    SubjectSpec,
    build_csr,
    csr_to_pem,
    load_csr,
    san_entries,
)
from sslm_tasks.crypto.keys import (
    KeySpec,
    PrivateKey,
    ec_curve_names,
    generate_private_key,
    load_private_key,
    private_key_to_pem,
    public_key_label,
)
from sslm_tasks.errors import CryptoError

OPENSSL = "/usr/bin/openssl"


def openssl(*args: str, stdin: bytes = b"") -> str:
    """Run openssl and return stdout; fail the test with its stderr when it fails."""
    done = subprocess.run([OPENSSL, *args], input=stdin, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


@pytest.fixture(scope="module")
def p256() -> PrivateKey:
    return generate_private_key(KeySpec("ec", ec_curve="secp256r1"))


# --------------------------------------------------------------------------- keys


def test_curve_names_are_lower_case_and_cover_the_usual_curves() -> None:
    # When I ask which curves config may name
    names = ec_curve_names()
    # Then the NIST, secp256k1 and brainpool curves are there, all lower case
    assert {"secp256r1", "secp384r1", "secp521r1", "secp256k1", "brainpoolp256r1"} <= names
    assert all(name == name.lower() for name in names)


@pytest.mark.parametrize(
    ("spec", "label", "openssl_says"),
    [
        (KeySpec("ec", ec_curve="secp256r1"), "secp256r1", "ASN1 OID: prime256v1"),
        (KeySpec("ec", ec_curve="SECP384R1"), "secp384r1", "ASN1 OID: secp384r1"),
        (KeySpec("ec", ec_curve="brainpoolP256r1"), "brainpoolp256r1", "brainpoolP256r1"),
        (KeySpec("rsa", rsa_bits=2048), "rsa-2048", "publicExponent: 65537"),
        (KeySpec("ed25519"), "ed25519", "ED25519 Private-Key"),
    ],
)
def test_generated_keys_are_pkcs8_pem_that_openssl_reads(
    spec: KeySpec, label: str, openssl_says: str
) -> None:
    # Given a key spec
    # When I generate a key and serialise it
    key = generate_private_key(spec)
    pem = private_key_to_pem(key)
    # Then it is unencrypted PKCS#8, openssl sees the right type, and the label matches
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert openssl_says in openssl("pkey", "-noout", "-text", stdin=pem)
    assert public_key_label(key.public_key()) == label
    assert private_key_to_pem(load_private_key(pem)) == pem


@pytest.mark.parametrize(
    "spec",
    [
        KeySpec("rsa", rsa_bits=1024),
        KeySpec("rsa", rsa_bits=16385),
        KeySpec("ec", ec_curve="secp999r1"),
    ],
)
def test_out_of_range_key_specs_are_refused(spec: KeySpec) -> None:
    # When I ask for a weak, absurd or unknown key / Then it is refused before any keygen
    with pytest.raises(CryptoError):
        generate_private_key(spec)


def test_a_failed_key_load_never_echoes_the_input(p256: PrivateKey) -> None:
    # Given a key PEM whose body was damaged in the middle
    pem = private_key_to_pem(p256)
    lines = pem.splitlines()
    secret_line = lines[1]
    lines[1] = secret_line[::-1]
    damaged = b"\n".join(lines) + b"\n"
    # When I load it
    with pytest.raises(CryptoError) as caught:
        load_private_key(damaged)
    # Then the error names the problem but contains none of the key material
    message = str(caught.value)
    assert "private key" in message
    for line in lines[1:-1]:
        assert line.decode() not in message


def test_encrypted_keys_are_refused_not_prompted_for(p256: PrivateKey) -> None:
    # Given a passphrase-protected key
    pem = p256.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    # When / Then loading it fails cleanly
    with pytest.raises(CryptoError):
        load_private_key(pem)


def test_traditional_ec_key_files_still_load(p256: PrivateKey) -> None:
    # Given an "EC PRIVATE KEY" file, as older tools and upstream wrote them
    pem = p256.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    # When I load it / Then it is the same key
    loaded = load_private_key(pem)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert isinstance(p256, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == p256.private_numbers()


# --------------------------------------------------------------------------- SANs


def test_san_entries_put_cn_first_dedupe_and_type_ip_literals() -> None:
    # Given a CN missing from the sans, a duplicate in another case, and IP literals
    sans = ["*.Example.com", "www.example.com", "192.0.2.1", "WWW.example.com", "2001:db8::1"]
    # When I build the SAN list
    entries = san_entries("example.com", [*sans, "2001:db8:0::1"])
    # Then the CN leads, duplicates are gone and IPs are IPAddress entries
    assert entries == [
        x509.DNSName("example.com"),
        x509.DNSName("*.example.com"),
        x509.DNSName("www.example.com"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ]


def test_san_entries_keep_order_when_cn_is_already_listed() -> None:
    entries = san_entries("b.example.com", ["a.example.com", "b.example.com"])
    assert entries == [x509.DNSName("a.example.com"), x509.DNSName("b.example.com")]


@pytest.mark.parametrize(
    "bad", ["exa mple.com", "-bad.example.com", "a..b", "foo.*.example.com", "bücher.de", ""]
)
def test_san_entries_refuse_names_that_slipped_past_config(bad: str) -> None:
    with pytest.raises(CryptoError):
        san_entries("example.com", [bad])


# --------------------------------------------------------------------------- CSRs


def test_csr_subject_is_in_conventional_order_without_empty_attributes(
    p256: PrivateKey,
) -> None:
    # Given a full subject, and a sparse one
    full = SubjectSpec(CN="web.example.com", O="Example", OU="IT", L="Town", ST="State", C="US")
    sparse = SubjectSpec(CN="web.example.com", O="Example")
    # When I build CSRs for both
    full_pem = csr_to_pem(build_csr(p256, full, [], is_ca=False))
    sparse_pem = csr_to_pem(build_csr(p256, sparse, [], is_ca=False))
    # Then openssl shows the RDNs in C, ST, L, O, OU, CN order (CA/B BR 7.1.4.2)
    assert openssl("req", "-noout", "-subject", "-nameopt", "oneline", stdin=full_pem) == (
        "subject=C = US, ST = State, L = Town, O = Example, OU = IT, CN = web.example.com\n"
    )
    full_text = openssl("req", "-noout", "-text", stdin=full_pem)
    assert "DNS:web.example.com\n" in full_text
    # And empty attributes are left out rather than written empty
    assert openssl("req", "-noout", "-subject", "-nameopt", "oneline", stdin=sparse_pem) == (
        "subject=O = Example, CN = web.example.com\n"
    )


def test_csr_requests_sans_and_basic_constraints_signed_with_sha384(p256: PrivateKey) -> None:
    # When I build a leaf CSR with DNS and IP sans
    csr = build_csr(
        p256, SubjectSpec(CN="example.com"), ["www.example.com", "10.1.1.10"], is_ca=False
    )
    pem = csr_to_pem(csr)
    # Then openssl verifies its self-signature and shows the requested extensions
    text = openssl("req", "-noout", "-text", "-verify", stdin=pem)
    assert "Signature Algorithm: ecdsa-with-SHA384" in text
    assert "DNS:example.com, DNS:www.example.com, IP Address:10.1.1.10" in text
    assert "CA:FALSE" in text
    # And it survives a PEM round trip
    assert load_csr(pem) == csr


def test_ed25519_csr_is_signed_without_a_digest() -> None:
    key = generate_private_key(KeySpec("ed25519"))
    pem = csr_to_pem(build_csr(key, SubjectSpec(CN="example.com"), [], is_ca=False))
    assert "Signature Algorithm: ED25519" in openssl("req", "-noout", "-text", "-verify", stdin=pem)


def test_ca_csr_without_sans_asks_for_no_san(p256: PrivateKey) -> None:
    # Given a CA named like a host, as in upstream's example (upstream made it DNS:my-root)
    csr = build_csr(p256, SubjectSpec(CN="my-root"), [], is_ca=True)
    # Then the request carries CA:TRUE and no subjectAltName at all
    text = openssl("req", "-noout", "-text", stdin=csr_to_pem(csr))
    assert "CA:TRUE" in text
    assert "Subject Alternative Name" not in text
    assert "my-root" in text  # the CN is still there, in the subject


@pytest.mark.parametrize("cn", ["Example Root CA", "ca.example.com"])
def test_ca_csr_sans_are_the_configured_ones_only(p256: PrivateKey, cn: str) -> None:
    # Given a CA whose CN is a description, or a host name
    subject = SubjectSpec(CN=cn)
    # When I build its CSR with and without sans
    bare = build_csr(p256, subject, [], is_ca=True)
    named = build_csr(p256, subject, ["pki.example.com"], is_ca=True)
    # Then it is built rather than refused, and the CN never becomes a SAN
    with pytest.raises(x509.ExtensionNotFound):
        bare.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    sans = named.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(sans) == [x509.DNSName("pki.example.com")]


def test_leaf_csr_with_a_descriptive_cn_is_refused(p256: PrivateKey) -> None:
    with pytest.raises(CryptoError):
        build_csr(p256, SubjectSpec(CN="Example Web Server"), [], is_ca=False)


def test_invalid_country_code_is_a_crypto_error(p256: PrivateKey) -> None:
    with pytest.raises(CryptoError, match=r"CN='example\.com'"):
        build_csr(p256, SubjectSpec(CN="example.com", C="USA"), [], is_ca=False)


def test_load_csr_refuses_garbage() -> None:
    with pytest.raises(CryptoError):
        load_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
