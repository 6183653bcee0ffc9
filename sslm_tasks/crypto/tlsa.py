"""TLSA record data (RFC 6698 §2.1) for a certificate, or for a bare public key.

Only the certificate-association data lives here; owner names, TTLs and zone files belong to
the DNS layer. A public key alone (a standby key, which has no certificate yet) can only give
selector 1 data: selector 0 hashes a certificate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sslm_tasks.crypto.keys import PublicKey, public_key_der
from sslm_tasks.errors import CryptoError

#: A certificate, or the public key a certificate will carry.
TlsaSubject = x509.Certificate | PublicKey


def _full_certificate(subject: TlsaSubject) -> bytes:
    if not isinstance(subject, x509.Certificate):
        raise CryptoError("TLSA selector 0 needs a certificate, and a bare public key has none")
    return subject.public_bytes(serialization.Encoding.DER)


def _spki(subject: TlsaSubject) -> bytes:
    key = subject.public_key() if isinstance(subject, x509.Certificate) else subject
    return public_key_der(key)


#: RFC 6698 selector: 0 = the full certificate, 1 = its SubjectPublicKeyInfo.
_SELECTORS: dict[int, Callable[[TlsaSubject], bytes]] = {0: _full_certificate, 1: _spki}
#: RFC 6698 matching type: 0 = exact bytes, 1 = SHA-256, 2 = SHA-512.
_MATCHINGS: dict[int, Callable[[bytes], bytes]] = {
    0: lambda data: data,
    1: lambda data: hashlib.sha256(data).digest(),
    2: lambda data: hashlib.sha512(data).digest(),
}


def tlsa_data(subject: TlsaSubject, selector: int, matching: int) -> str:
    """Certificate-association data for ``subject`` as lower-case hex.

    The usage field does not change the data, so it is not a parameter.

    Raises:
      CryptoError: selector not 0/1, matching type not 0/1/2, or selector 0 for a bare key.
    """
    select = _SELECTORS.get(selector)
    match = _MATCHINGS.get(matching)
    if select is None or match is None:
        raise CryptoError(f"unsupported TLSA selector/matching type {selector} {matching}")
    return match(select(subject)).hex()
