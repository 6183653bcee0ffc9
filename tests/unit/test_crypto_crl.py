"""The CRL builder (``crypto/crl.py``) and ``[CA] crl_url``, judged by cryptography and by the
openssl binary: what a client checking revocation runs."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import ValidationError

from sslm_tasks.config.models import CAOpts
from sslm_tasks.crypto import crl as crls
from sslm_tasks.crypto.csr import SubjectSpec, build_csr
from sslm_tasks.crypto.keys import KeySpec, PrivateKey, generate_private_key
from sslm_tasks.crypto.signing import SigningPolicy, self_sign, sign_with_ca
from sslm_tasks.errors import CryptoError

# openssl checks a CRL's times against the wall clock.
NOW = datetime.now(UTC).replace(microsecond=0)
P256 = KeySpec("ec", ec_curve="secp256r1")
WEEK = timedelta(days=7)


def _ca(cn: str = "my-int") -> tuple[PrivateKey, x509.Certificate]:
    key = generate_private_key(P256)
    csr = build_csr(key, SubjectSpec(CN=cn, O="Example Certs", C="US"), [], is_ca=True)
    return key, self_sign(csr, key, SigningPolicy(days=30, is_ca=True), now=NOW)


def _leaf(ca: tuple[PrivateKey, x509.Certificate], *, crl_url: str | None) -> x509.Certificate:
    key = generate_private_key(P256)
    csr = build_csr(
        key, SubjectSpec(CN="example.com", O="Ex", C="US"), ["example.com"], is_ca=False
    )
    return sign_with_ca(csr, *ca, SigningPolicy(days=10, crl_url=crl_url), now=NOW)


def test_a_crl_lists_each_serial_once_with_its_reason_number_and_next_update() -> None:
    # Given a CA and three revocations, one serial given twice
    key, cert = _ca()
    revoked = [
        crls.Revoked(11, NOW - timedelta(hours=1), x509.ReasonFlags.key_compromise),
        crls.Revoked(12, NOW, x509.ReasonFlags.unspecified),
        crls.Revoked(11, NOW, x509.ReasonFlags.superseded),
    ]
    # When the CRL is built
    crl = crls.build_crl(key, cert, revoked, crl_number=5, now=NOW, validity=WEEK)
    # Then it is signed by the CA, numbered, valid for the week, and lists 11 (first reason) and 12
    assert crls.signed_by(crl, cert) and not crls.signed_by(crl, _ca()[1])
    assert crls.number(crl) == 5
    assert crl.last_update_utc == NOW and crl.next_update_utc == NOW + WEEK
    assert crls.entries(crl) == [
        crls.Revoked(11, NOW - timedelta(hours=1), x509.ReasonFlags.key_compromise),
        crls.Revoked(12, NOW, x509.ReasonFlags.unspecified),
    ]
    # and an unspecified reason is left out of the entry (RFC 5280 §5.3.1)
    entry = crl.get_revoked_certificate_by_serial_number(12)
    assert entry is not None and len(entry.extensions) == 0
    # and the PEM reads back
    assert crls.entries(crls.load_crl(crl.public_bytes(Encoding.PEM), source="x")) == crls.entries(
        crl
    )


def test_a_crl_is_stale_within_the_margin_of_its_next_update() -> None:
    key, cert = _ca()
    crl = crls.build_crl(key, cert, [], crl_number=1, now=NOW, validity=WEEK)
    margin = WEEK / 2
    assert not crls.is_stale(crl, now=NOW, margin=margin)
    assert not crls.is_stale(crl, now=NOW + timedelta(days=3), margin=margin)
    assert crls.is_stale(crl, now=NOW + timedelta(days=4), margin=margin)
    assert crls.is_stale(crl, now=NOW + timedelta(days=8), margin=margin)


def test_bad_input_is_refused() -> None:
    key, cert = _ca()
    other_key, _ = _ca("other")
    with pytest.raises(CryptoError, match="does not belong"):
        crls.build_crl(other_key, cert, [], crl_number=1, now=NOW, validity=WEEK)
    with pytest.raises(CryptoError, match="must be positive"):
        crls.build_crl(key, cert, [], crl_number=1, now=NOW, validity=timedelta(0))
    with pytest.raises(CryptoError, match="unknown digest"):
        crls.build_crl(key, cert, [], crl_number=1, now=NOW, validity=WEEK, digest="md5")
    with pytest.raises(CryptoError, match="/etc/x: not a PEM certificate revocation list"):
        crls.load_crl(b"garbage", source="/etc/x")


def test_every_reason_has_its_rfc5280_code() -> None:
    assert set(crls.REASONS) == set(crls.REASON_CODES)
    assert crls.REASON_CODES["keyCompromise"] == 1 and crls.REASON_CODES["superseded"] == 4


def _pem(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_openssl_fails_the_revoked_leaf_and_passes_another(tmp_path: Path) -> None:
    # Given a CA, two leaves it signed naming its CRL, and a CRL listing the first
    ca = _ca()
    revoked, fresh = (_leaf(ca, crl_url="http://crl.example.com/my-int.crl") for _ in range(2))
    crl = crls.build_crl(
        ca[0],
        ca[1],
        [crls.Revoked(revoked.serial_number, NOW, x509.ReasonFlags.key_compromise)],
        crl_number=1,
        now=NOW,
        validity=WEEK,
    )
    ca_pem = _pem(tmp_path / "ca.pem", ca[1].public_bytes(Encoding.PEM))
    crl_pem = _pem(tmp_path / "crl.pem", crl.public_bytes(Encoding.PEM))

    def verify(cert: x509.Certificate) -> subprocess.CompletedProcess[str]:
        leaf = _pem(tmp_path / "leaf.pem", cert.public_bytes(Encoding.PEM))
        return subprocess.run(
            ["openssl", "verify", "-crl_check", "-CAfile", ca_pem, "-CRLfile", crl_pem, leaf],
            capture_output=True,
            text=True,
            check=False,
        )

    # Then openssl refuses the revoked one and accepts the other
    refused = verify(revoked)
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
    assert verify(fresh).returncode == 0
    # and each names the CRL as its distribution point
    points = revoked.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [name.value for name in points[0].full_name or []] == [
        "http://crl.example.com/my-int.crl"
    ]


def test_a_leaf_names_no_distribution_point_without_crl_url() -> None:
    leaf = _leaf(_ca(), crl_url=None)
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints)


@pytest.mark.parametrize(
    "url", ["ftp://crl.example.com/x", "http:///x", "crl.example.com", "http://ex.com/a b"]
)
def test_crl_url_must_be_an_http_url_with_a_host(url: str) -> None:
    with pytest.raises(ValidationError, match="crl_url"):
        CAOpts(crl_url=url)
    assert CAOpts(crl_url="https://pki.example.com/int.crl").crl_url is not None
