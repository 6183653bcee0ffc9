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
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from sslm_tasks.crypto.keys import PrivateKey
from sslm_tasks.errors import CryptoError
from sslm_tasks.store.layout import host_name_problem

#: The subject attributes a service's ``[X509]`` table sets, by their names there, in the RDN
#: order of the subject.
SUBJECT_ATTRIBUTES: Final = (
    # The conventional order, most general first (CA/B Forum BR 7.1.4.2); upstream put CN
    # first. No emailAddress: see SubjectSpec.
    ("C", NameOID.COUNTRY_NAME),
    ("ST", NameOID.STATE_OR_PROVINCE_NAME),
    ("L", NameOID.LOCALITY_NAME),
    ("O", NameOID.ORGANIZATION_NAME),
    ("OU", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("CN", NameOID.COMMON_NAME),
)
#: A country is two ASCII letters (ISO 3166); anything else cannot be a PrintableString code.
_COUNTRY = re.compile(r"[A-Za-z]{2}")


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


def _ip_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if ":" not in name and not name.replace(".", "").isdigit():
        # No IPv6 without a colon, no IPv4 but of digits and dots: a host name, known without
        # the two exceptions ipaddress raises for it (every SAN of every service, at load).
        return None
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def san_problem(name: str) -> str | None:
    """Say why ``name`` cannot be a SAN entry, or return None when it can.

    A SAN entry is an IP literal or an LDH host name, ``*.`` allowed in front (see
    :func:`~sslm_tasks.store.layout.host_name_problem`). An IPv6 address with a zone index
    (``fe80::1%eth0``) is refused: the zone means something on one host only, and a
    certificate cannot carry it.
    """
    address = _ip_address(name)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return "is an IPv6 address with a zone index (%...), which a certificate cannot carry"
    if address is not None:
        return None
    problem = host_name_problem(name, wildcard=True)
    return None if problem is None else f"is neither an IP address nor a DNS name: it {problem}"


def _general_name(name: str) -> x509.GeneralName:
    """One SAN entry: an IP literal becomes IPAddress, a host name (``*.`` allowed) DNSName."""
    problem = san_problem(name)
    if problem is not None:
        raise CryptoError(f"{name!r} {problem}")
    address = _ip_address(name)
    return x509.DNSName(name.lower()) if address is None else x509.IPAddress(address)


def subject_value_problem(attribute: str, value: str) -> str | None:
    """Say why ``value`` cannot be the subject attribute ``attribute``, or return None.

    The check is the one that builds the subject, run early: the configuration is checked with
    it, so a value the CSR would refuse stops the run before anything is written.

    Parameters:
      attribute(str): a name of :data:`SUBJECT_ATTRIBUTES` (``CN``, ``C``, ...).
      value(str): the value; ``''`` (the attribute left out) is always fine.
    """
    if not value:
        return None
    if attribute == "C" and not _COUNTRY.fullmatch(value):
        return "a country code is two letters"
    oid = dict(SUBJECT_ATTRIBUTES)[attribute]
    try:
        x509.NameAttribute(oid, value)
    except ValueError as err:
        return str(err)
    return None


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
    # shows up as "OU=, L=" in every tool, so we omit empty attributes instead.
    for attribute, _ in SUBJECT_ATTRIBUTES:
        problem = subject_value_problem(attribute, getattr(subject, attribute))
        if problem is not None:
            raise CryptoError(f"invalid subject for CN={subject.CN!r}: {attribute}: {problem}")
    return x509.Name(
        [
            x509.NameAttribute(oid, getattr(subject, attribute))
            for attribute, oid in SUBJECT_ATTRIBUTES
            if getattr(subject, attribute)
        ]
    )


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
