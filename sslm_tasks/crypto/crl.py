"""Certificate revocation lists of the local CAs (RFC 5280 §5), built with ``cryptography``.

A CRL is re-issued whole each time: the entries of the one before, plus any new one, a
``crlNumber`` one higher, and a new ``nextUpdate``. The previous CRL is therefore the list of
what the CA revoked; nothing else needs to remember it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from sslm_tasks.crypto.inspect import extension_value, key_matches_cert
from sslm_tasks.crypto.keys import PrivateKey
from sslm_tasks.crypto.signing import DIGESTS
from sslm_tasks.errors import CryptoError

#: The reasons ``sslm-mgr revoke --reason`` accepts (RFC 5280 §5.3.1 names), and the flag
#: each stands for. The others (``cACompromise``, ``removeFromCRL``, ...) concern CAs and delta
#: CRLs, which sslm does not make.
REASONS: Mapping[str, x509.ReasonFlags] = MappingProxyType(
    {
        "unspecified": x509.ReasonFlags.unspecified,
        "keyCompromise": x509.ReasonFlags.key_compromise,
        "affiliationChanged": x509.ReasonFlags.affiliation_changed,
        "superseded": x509.ReasonFlags.superseded,
        "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    }
)

#: RFC 5280 §5.3.1's code of each reason, as ACME's ``revokeCert`` sends it (RFC 8555 §7.6).
REASON_CODES: Mapping[str, int] = MappingProxyType(
    {
        "unspecified": 0,
        "keyCompromise": 1,
        "affiliationChanged": 3,
        "superseded": 4,
        "cessationOfOperation": 5,
    }
)


#: Public keys that can sign a CRL (``CertificateRevocationList.is_signature_valid`` takes these).
SigningPublicKey = (
    dsa.DSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed448.Ed448PublicKey,
    ed25519.Ed25519PublicKey,
    rsa.RSAPublicKey,
)


@dataclass(frozen=True)
class Revoked:
    """One entry of a CRL: the certificate's serial, when it was revoked, and why."""

    serial: int
    at: datetime
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified


def load_crl(pem: bytes, *, source: str) -> x509.CertificateRevocationList:
    """Parse a PEM CRL.

    Raises:
      CryptoError: it is no PEM CRL (``source`` names where it came from).
    """
    try:
        return x509.load_pem_x509_crl(pem)
    except ValueError as err:
        raise CryptoError(f"{source}: not a PEM certificate revocation list ({err})") from None


def entries(crl: x509.CertificateRevocationList) -> list[Revoked]:
    """The CRL's entries, in its order; an entry without a reason is ``unspecified``."""
    found = []
    for entry in crl:
        reason = extension_value(entry.extensions, x509.CRLReason)
        found.append(
            Revoked(
                serial=entry.serial_number,
                at=entry.revocation_date_utc,
                reason=x509.ReasonFlags.unspecified if reason is None else reason.reason,
            )
        )
    return found


def number(crl: x509.CertificateRevocationList) -> int:
    """The CRL's ``crlNumber``; 0 for a CRL without one."""
    found = extension_value(crl.extensions, x509.CRLNumber)
    return 0 if found is None else found.crl_number


def build_crl(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[Revoked],
    *,
    crl_number: int,
    now: datetime,
    validity: timedelta,
    digest: str = "sha384",
) -> x509.CertificateRevocationList:
    """A CRL of ``ca_cert``'s CA listing ``revoked``, valid from ``now`` for ``validity``.

    Parameters:
      ca_key(PrivateKey): the CA's private key; must belong to ``ca_cert``.
      ca_cert(Certificate): the CA certificate; its subject is the CRL's issuer.
      revoked(Iterable[Revoked]): the entries; a serial listed twice is kept once (the first).
      crl_number(int): the ``crlNumber`` (RFC 5280 §5.2.3: grows with every CRL issued).
      now(datetime): timezone-aware ``thisUpdate``.
      validity(timedelta): ``nextUpdate`` is ``now`` plus this.
      digest(str): a key of :data:`~sslm_tasks.crypto.signing.DIGESTS`; ignored for Ed25519.

    Returns:
      The signed CRL, with the authority key identifier, the number and a reason per entry
      (RFC 5280 §5.3.1 asks to leave ``unspecified`` out: such entries have none).

    Raises:
      CryptoError: the key is not the certificate's, the digest is unknown, or ``validity`` is
        not positive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if validity <= timedelta(0):
        raise CryptoError(f"CRL validity must be positive, got {validity}")
    if digest not in DIGESTS:
        raise CryptoError(f"unknown digest {digest!r}; known: {', '.join(DIGESTS)}")
    ca_name = ca_cert.subject.rfc4514_string()
    if not key_matches_cert(ca_key, ca_cert):
        raise CryptoError(f"CA key does not belong to CA certificate {ca_name}")
    this_update = now.replace(microsecond=0)
    ca_ski = extension_value(ca_cert.extensions, x509.SubjectKeyIdentifier)
    aki = (
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
        if ca_ski is None
        else x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    )
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(this_update)
        .next_update(this_update + validity)
        .add_extension(aki, critical=False)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
    )
    seen: set[int] = set()
    for entry in revoked:
        if entry.serial in seen:
            continue
        seen.add(entry.serial)
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.at.replace(microsecond=0))
        )
        if entry.reason is not x509.ReasonFlags.unspecified:
            item = item.add_extension(x509.CRLReason(entry.reason), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    algorithm = None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else DIGESTS[digest]()
    return builder.sign(ca_key, algorithm)


def signed_by(crl: x509.CertificateRevocationList, ca_cert: x509.Certificate) -> bool:
    """Whether ``ca_cert`` issued ``crl``: its subject is the CRL's issuer and its key made the
    signature. False for a certificate whose key cannot sign (X25519, X448)."""
    key = ca_cert.public_key()
    if not isinstance(key, SigningPublicKey):
        return False
    return crl.issuer == ca_cert.subject and crl.is_signature_valid(key)


def is_stale(crl: x509.CertificateRevocationList, *, now: datetime, margin: timedelta) -> bool:
    """Whether the CRL is due for re-issue: less than ``margin`` before its ``nextUpdate`` (or
    past it, or without one)."""
    next_update = crl.next_update_utc
    return next_update is None or next_update - now < margin
