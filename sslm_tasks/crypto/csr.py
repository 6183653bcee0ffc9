"""Certificate signing requests built from a service's X.509 options.

The CSR carries only what the *subject* may ask for: its name, its SANs and whether it wants
to be a CA. Everything an issuer controls (key usages, key identifiers, validity) is decided at
signing time from policy (see :mod:`sslm_tasks.crypto.signing`), which is the fix for upstream
copying CSR extensions into certificates.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from sslm_tasks.crypto.keys import PrivateKey
from sslm_tasks.errors import CryptoError

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
_MAX_DNS_NAME = 253


@dataclass(frozen=True)
class SubjectSpec:
    """Subject attributes of a request; empty strings mean "leave the attribute out".

    The service's ``[X509] email`` is not among them: it is the ACME account contact and goes
    into no request or certificate (RFC 5280 §4.1.2.6 deprecates emailAddress in subjects; see
    docs/decisions.md).
    """

    CN: str
    O: str = ""  # noqa: E741 - the X.509 attribute is called O
    OU: str = ""
    L: str = ""
    ST: str = ""
    C: str = ""


def _general_name(name: str) -> x509.GeneralName:
    """One SAN entry: an IP literal becomes IPAddress, a host name (``*.`` allowed) DNSName."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    host = name.rstrip(".")
    labels = host.removeprefix("*.").split(".")
    if not host or len(host) > _MAX_DNS_NAME or not all(_LABEL.match(lbl) for lbl in labels):
        raise CryptoError(f"{name!r} is neither an IP address nor a DNS name")
    return x509.DNSName(host.lower())


def is_san_value(name: str) -> bool:
    """Whether ``name`` can be a SAN entry: an IP literal or an LDH host name."""
    try:
        _general_name(name)
    except CryptoError:
        return False
    return True


def _unique(entries: Iterable[x509.GeneralName]) -> list[x509.GeneralName]:
    """First occurrence of each entry; GeneralName objects compare by value."""
    return list(dict.fromkeys(entries))


def san_entries(cn: str, sans: Sequence[str]) -> list[x509.GeneralName]:
    """The subjectAltName list for ``cn`` and ``sans``.

    ``cn`` comes first unless ``sans`` already names it (clients ignore the CN, so it must be
    in the SANs to be usable). Duplicates are dropped, first occurrence wins; DNS names compare
    case-insensitively and IPs by value (``::1`` equals ``0:0::1``).

    Raises:
      CryptoError: an entry is neither an IP literal nor an LDH host name.
    """
    entries = [_general_name(name) for name in sans]
    cn_entry = _general_name(cn)
    return _unique(entries if cn_entry in entries else [cn_entry, *entries])


def _subject_name(subject: SubjectSpec) -> x509.Name:
    # Upstream wrote all seven attributes, empty ones as empty strings; an empty RDN is
    # invalid for most of these types (RFC 5280 asks for at least one character) and
    # shows up as "OU=, L=" in every tool, so we omit empty attributes instead. The order is
    # the conventional one, most general first (CA/B Forum BR 7.1.4.2); upstream put CN first.
    ordered = (
        (NameOID.COUNTRY_NAME, subject.C),
        (NameOID.STATE_OR_PROVINCE_NAME, subject.ST),
        (NameOID.LOCALITY_NAME, subject.L),
        (NameOID.ORGANIZATION_NAME, subject.O),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, subject.OU),
        (NameOID.COMMON_NAME, subject.CN),
    )
    try:
        return x509.Name([x509.NameAttribute(oid, value) for oid, value in ordered if value])
    except ValueError as err:
        raise CryptoError(f"invalid subject for CN={subject.CN!r}: {err}") from err


def build_csr(
    key: PrivateKey, subject: SubjectSpec, sans: Sequence[str], *, is_ca: bool
) -> x509.CertificateSigningRequest:
    """Build and sign a CSR with ``key``.

    Parameters:
      key(PrivateKey): the subject's key; signs the request (SHA-384, none for Ed25519).
      subject(SubjectSpec): subject attributes, RDN order C, ST, L, O, OU, CN.
      sans(Sequence[str]): host names and IP literals; see :func:`san_entries`.
      is_ca(bool): requested BasicConstraints CA flag.

    Returns:
      A CSR with the SAN and BasicConstraints extensions only. A leaf's SANs are the CN and
      ``sans``; a CA's are ``sans`` alone, so a CA configured without SANs asks for none.

    Raises:
      CryptoError: a SAN or subject attribute is invalid.
    """
    if is_ca:
        # Upstream put the CN into every SAN list, so its CAs claimed DNS:<CN> ("my-root"): a
        # host name nobody asked for, and an invalid one when the CN is a description.
        general_names = _unique(_general_name(name) for name in sans)
    else:
        general_names = san_entries(subject.CN, sans)
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject_name(subject))
    if general_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    builder = builder.add_extension(
        x509.BasicConstraints(ca=is_ca, path_length=None), critical=True
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA384()
    return builder.sign(key, algorithm)


def csr_to_pem(csr: x509.CertificateSigningRequest) -> bytes:
    """PEM encoding of ``csr``."""
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """Read one PEM CSR.

    Raises:
      CryptoError: the input is not a PEM certificate request.
    """
    try:
        return x509.load_pem_x509_csr(pem)
    except ValueError as err:
        raise CryptoError(f"not a readable PEM certificate request: {err}") from err
