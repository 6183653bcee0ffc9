"""Issue certificates from CSRs: self-signed roots and leaves, and local-CA signing.

Upstream copied every CSR extension into the certificate, AuthorityKeyIdentifier included, so
each locally signed certificate claimed to be issued by its own key and ``openssl verify``
rejected every chain. Here the issuer decides: only the SAN list is taken from the CSR, and
key identifiers, constraints and usages come from :class:`SigningPolicy` and the issuer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from sslm_tasks.crypto.inspect import extension_value, key_matches_cert
from sslm_tasks.crypto.keys import PrivateKey, public_key_der
from sslm_tasks.errors import CryptoError

#: The hashes certificate signing accepts (what ``CertificateBuilder.sign`` is typed for).
SigningHash: TypeAlias = (
    hashes.SHA224
    | hashes.SHA256
    | hashes.SHA384
    | hashes.SHA512
    | hashes.SHA3_224
    | hashes.SHA3_256
    | hashes.SHA3_384
    | hashes.SHA3_512
)

#: Digest names accepted in ``[CA] digest`` and the hash each stands for. Caution: OpenSSL
#: 3.0.x cannot verify ECDSA signatures made with the sha3_* digests (it lacks the
#: ecdsa_with_SHA3 signature mappings, so ``openssl verify`` fails); RSA and SHA-2 are fine.
DIGESTS: Mapping[str, type[SigningHash]] = MappingProxyType(
    {
        "sha224": hashes.SHA224,
        "sha256": hashes.SHA256,
        "sha384": hashes.SHA384,
        "sha512": hashes.SHA512,
        "sha3_224": hashes.SHA3_224,
        "sha3_256": hashes.SHA3_256,
        "sha3_384": hashes.SHA3_384,
        "sha3_512": hashes.SHA3_512,
    }
)


@dataclass(frozen=True)
class SigningPolicy:
    """What the issuer puts into a certificate besides the subject's name and key.

    ``days`` may be fractional (short-lived certificates) and must be positive; ``digest`` is
    a key of :data:`DIGESTS` and is ignored when the signing key is Ed25519.
    """

    days: float
    digest: str = "sha384"
    is_ca: bool = False
    #: The issuer's CRL, named as the certificate's CRL distribution point; None: none.
    crl_url: str | None = None

    def __post_init__(self) -> None:
        if not self.days > 0:
            raise CryptoError(f"certificate lifetime must be positive, got {self.days} days")
        if self.digest not in DIGESTS:
            raise CryptoError(f"unknown digest {self.digest!r}; known: {', '.join(DIGESTS)}")


def _key_usage(subject_key: CertificatePublicKeyTypes, *, is_ca: bool) -> x509.KeyUsage:
    """KeyUsage by role and key type.

    A CA signs certificates and CRLs (digitalSignature too, for OCSP-style responses). A leaf
    gets what its key can do in TLS: RSA may be used for key transport (keyEncipherment), EC
    for ECDH (keyAgreement), Ed25519 only signs.
    """
    if is_ca:
        sign, encipher, agree, cert_sign = True, False, False, True
    elif isinstance(subject_key, rsa.RSAPublicKey):
        sign, encipher, agree, cert_sign = True, True, False, False
    elif isinstance(subject_key, ec.EllipticCurvePublicKey):
        sign, encipher, agree, cert_sign = True, False, True, False
    elif isinstance(subject_key, ed25519.Ed25519PublicKey):
        sign, encipher, agree, cert_sign = True, False, False, False
    else:
        raise CryptoError(f"unsupported subject key type {type(subject_key).__name__}")
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=encipher,
        data_encipherment=False,
        key_agreement=agree,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _check_csr_signature(csr: x509.CertificateSigningRequest) -> None:
    # Proof that the requester holds the key; without it anyone could get a certificate
    # for a public key they merely copied.
    if not csr.is_signature_valid:
        raise CryptoError(f"CSR for {csr.subject.rfc4514_string()} has an invalid signature")


def _whole_seconds(now: datetime) -> datetime:
    # X.509 times have one-second resolution; truncating here keeps notBefore equal to what
    # gets encoded, so the roll timer and the certificate agree.
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.replace(microsecond=0)


def _issue(
    csr: x509.CertificateSigningRequest,
    *,
    issuer_name: x509.Name,
    issuer_key: PrivateKey,
    aki: x509.AuthorityKeyIdentifier,
    not_after_cap: datetime | None,
    policy: SigningPolicy,
    now: datetime,
) -> x509.Certificate:
    """Common body of :func:`self_sign` and :func:`sign_with_ca` (CSR already checked)."""
    subject_key = csr.public_key()
    not_before = _whole_seconds(now)
    not_after = not_before + timedelta(days=policy.days)
    if not_after_cap is not None and not_after > not_after_cap:
        not_after = not_after_cap
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(issuer_name)
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after.replace(microsecond=0))
        .add_extension(x509.BasicConstraints(ca=policy.is_ca, path_length=None), critical=True)
        .add_extension(_key_usage(subject_key, is_ca=policy.is_ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
        .add_extension(aki, critical=False)
    )
    if not policy.is_ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    # The SAN list is the one thing the subject decides. A CA whose CN is no host name
    # asked for none (see build_csr).
    sans = extension_value(csr.extensions, x509.SubjectAlternativeName)
    if sans is not None:
        builder = builder.add_extension(sans, critical=False)
    if policy.crl_url is not None:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(policy.crl_url)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    algorithm = (
        None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else DIGESTS[policy.digest]()
    )
    return builder.sign(issuer_key, algorithm)


def self_sign(
    csr: x509.CertificateSigningRequest, key: PrivateKey, policy: SigningPolicy, *, now: datetime
) -> x509.Certificate:
    """Issue a certificate for ``csr`` signed by its own ``key`` (a root CA or a lone leaf).

    Parameters:
      csr(CertificateSigningRequest): request signed by ``key``.
      key(PrivateKey): the subject's private key.
      policy(SigningPolicy): lifetime, digest and CA flag.
      now(datetime): timezone-aware notBefore; never backdated.

    Returns:
      The certificate; issuer = subject, AKI = SKI. Not idempotent (random serial).

    Raises:
      CryptoError: bad CSR signature, or ``key`` is not the CSR's key.
    """
    _check_csr_signature(csr)
    if public_key_der(key.public_key()) != public_key_der(csr.public_key()):
        raise CryptoError(f"key does not match the CSR for {csr.subject.rfc4514_string()}")
    return _issue(
        csr,
        issuer_name=csr.subject,
        issuer_key=key,
        aki=x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
        not_after_cap=None,
        policy=policy,
        now=now,
    )


def sign_with_ca(
    csr: x509.CertificateSigningRequest,
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    policy: SigningPolicy,
    *,
    now: datetime,
) -> x509.Certificate:
    """Issue a certificate for ``csr`` signed by a local CA.

    Parameters:
      csr(CertificateSigningRequest): the subject's request.
      ca_key(PrivateKey): the CA's private key; must belong to ``ca_cert``.
      ca_cert(Certificate): the CA certificate (BasicConstraints CA:TRUE, and keyCertSign
        when it has a KeyUsage), valid at ``now``.
      policy(SigningPolicy): lifetime, digest and CA flag of the *new* certificate.
      now(datetime): timezone-aware notBefore; never backdated.

    Returns:
      The certificate; notAfter is capped at the CA's notAfter. Not idempotent (random serial).

    Raises:
      CryptoError: bad CSR signature, CA key/cert mismatch, issuer not a CA, or CA expired.
    """
    _check_csr_signature(csr)
    ca_name = ca_cert.subject.rfc4514_string()
    if not key_matches_cert(ca_key, ca_cert):
        raise CryptoError(f"CA key does not belong to CA certificate {ca_name}")
    constraints = extension_value(ca_cert.extensions, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise CryptoError(f"issuer {ca_name} is not a CA (BasicConstraints CA:TRUE missing)")
    usage = extension_value(ca_cert.extensions, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise CryptoError(f"issuer {ca_name} may not sign certificates (no keyCertSign)")
    ca_not_after = ca_cert.not_valid_after_utc
    if ca_not_after <= _whole_seconds(now):
        raise CryptoError(f"issuer {ca_name} expired at {ca_not_after:%Y-%m-%d %H:%M:%S} UTC")
    ca_ski = extension_value(ca_cert.extensions, x509.SubjectKeyIdentifier)
    aki = (
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
        if ca_ski is None
        else x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    )
    return _issue(
        csr,
        issuer_name=ca_cert.subject,
        issuer_key=ca_key,
        aki=aki,
        # A leaf must not outlive its issuer: past the CA's notAfter every validator rejects
        # the chain, and a longer leaf lifetime would only hide that from the renew timer.
        not_after_cap=ca_not_after,
        policy=policy,
        now=now,
    )
