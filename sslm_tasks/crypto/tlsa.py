"""TLSA record data (RFC 6698 §2.1) for a certificate.

Only the certificate-association data lives here; owner names, TTLs and zone files belong to
the DNS layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sslm_tasks.crypto.inspect import spki_der
from sslm_tasks.errors import CryptoError

#: RFC 6698 selector: 0 = the full certificate, 1 = its SubjectPublicKeyInfo.
_SELECTORS: dict[int, Callable[[x509.Certificate], bytes]] = {
    0: lambda cert: cert.public_bytes(serialization.Encoding.DER),
    1: spki_der,
}
#: RFC 6698 matching type: 0 = exact bytes, 1 = SHA-256, 2 = SHA-512.
_MATCHINGS: dict[int, Callable[[bytes], bytes]] = {
    0: lambda data: data,
    1: lambda data: hashlib.sha256(data).digest(),
    2: lambda data: hashlib.sha512(data).digest(),
}


def tlsa_data(cert: x509.Certificate, selector: int, matching: int) -> str:
    """Certificate-association data for ``cert`` as lower-case hex.

    The usage field does not change the data, so it is not a parameter.

    Raises:
      CryptoError: selector not 0/1 or matching type not 0/1/2.
    """
    select = _SELECTORS.get(selector)
    match = _MATCHINGS.get(matching)
    if select is None or match is None:
        raise CryptoError(f"unsupported TLSA selector/matching type {selector} {matching}")
    return match(select(cert)).hex()
