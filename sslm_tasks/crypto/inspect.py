"""Read certificates back: PEM splitting, summaries, and real chain validation.

Shared by the status report, ``sslm-info``, ``sslm-verify`` and the renew policy, so that
"when does this expire" and "is this chain valid" have one answer everywhere.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import SignatureAlgorithmOID

from sslm_tasks.crypto.keys import PrivateKey, public_key_der, public_key_label
from sslm_tasks.errors import CryptoError

_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
#: Longer paths than this are a loop or a hostile input, not a real PKI.
_MAX_PATH = 10

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


def _sig_names() -> dict[x509.ObjectIdentifier, str]:
    """OpenSSL's names for signature algorithms, so our output reads like ``openssl x509``."""
    oid = SignatureAlgorithmOID
    names = {
        oid.RSA_WITH_SHA1: "sha1WithRSAEncryption",
        oid.RSASSA_PSS: "rsassaPss",
        oid.ECDSA_WITH_SHA1: "ecdsa-with-SHA1",
        oid.ED25519: "ed25519",
        oid.ED448: "ed448",
    }
    for bits in (224, 256, 384, 512):
        names[getattr(oid, f"RSA_WITH_SHA{bits}")] = f"sha{bits}WithRSAEncryption"
        names[getattr(oid, f"ECDSA_WITH_SHA{bits}")] = f"ecdsa-with-SHA{bits}"
        names[getattr(oid, f"RSA_WITH_SHA3_{bits}")] = f"RSA-SHA3-{bits}"
        names[getattr(oid, f"ECDSA_WITH_SHA3_{bits}")] = f"ecdsa_with_SHA3-{bits}"
    return names


_SIG_NAMES = _sig_names()


def signature_algorithm_name(oid: x509.ObjectIdentifier) -> str:
    """``ecdsa-with-SHA384``, ``sha256WithRSAEncryption``, ``ed25519``; else the dotted OID."""
    return _SIG_NAMES.get(oid, oid.dotted_string)


def extension_value(extensions: x509.Extensions, kind: type[_Ext]) -> _Ext | None:
    """The value of the extension of type ``kind``, or None when absent."""
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def split_pem_blocks(text: str) -> list[tuple[str, str]]:
    """Split ``text`` into ``(label, block)`` pairs in input order.

    ``label`` is the BEGIN line's label (``CERTIFICATE``, ``PRIVATE KEY``, ...); ``block`` is
    the whole block from BEGIN to END with surrounding whitespace stripped from each line and
    exactly one trailing newline. Lines starting with ``#`` and text between blocks are
    ignored.

    Raises:
      CryptoError: a block has no matching END line.
    """
    blocks: list[tuple[str, str]] = []
    label: str | None = None
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        if label is None:
            begin = _BEGIN.fullmatch(line)
            if begin:
                label, lines = begin.group(1), [line]
            continue
        lines.append(line)
        if line == f"-----END {label}-----":
            blocks.append((label, "\n".join(lines) + "\n"))
            label = None
    if label is not None:
        raise CryptoError(f"PEM block {label!r} has no END line")
    return blocks


def _pem_body(block: str) -> bytes:
    """Base64-decoded payload of one PEM block (RFC 7468 allows no headers for certs)."""
    body = "".join(line for line in block.splitlines()[1:-1] if ":" not in line)
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error as err:
        raise CryptoError(f"PEM block is not valid base64: {err}") from err


def _first_der_element(der: bytes) -> bytes:
    """The leading DER SEQUENCE of ``der``.

    ``openssl x509 -trustout`` writes TRUSTED CERTIFICATE blocks as the certificate followed by
    its trust settings (the "ExtraData" upstream 4.2.0 strips); the certificate is the first
    element.
    """
    if len(der) < 2 or der[0] != 0x30:
        raise CryptoError("TRUSTED CERTIFICATE block does not start with a DER SEQUENCE")
    first = der[1]
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        if not 0 < count <= 4 or len(der) < 2 + count:
            raise CryptoError("TRUSTED CERTIFICATE block has a malformed DER length")
        header, length = 2 + count, int.from_bytes(der[2 : 2 + count], "big")
    if len(der) < header + length:
        raise CryptoError("TRUSTED CERTIFICATE block is truncated")
    return der[: header + length]


def _load_block(label: str, block: str) -> x509.Certificate:
    try:
        if label == "TRUSTED CERTIFICATE":
            return x509.load_der_x509_certificate(_first_der_element(_pem_body(block)))
        return x509.load_pem_x509_certificate(block.encode("ascii"))
    except ValueError as err:
        raise CryptoError(f"unreadable {label} block: {err}") from err


def load_certs(pem: bytes) -> list[x509.Certificate]:
    """All certificates in ``pem``, in order (CERTIFICATE and TRUSTED CERTIFICATE blocks).

    Other blocks (keys, CSRs) are skipped.

    Raises:
      CryptoError: no certificate block, or a certificate block that does not parse.
    """
    text = pem.decode("utf-8", errors="replace")
    certs = [
        _load_block(label, block)
        for label, block in split_pem_blocks(text)
        if label in ("CERTIFICATE", "TRUSTED CERTIFICATE")
    ]
    if not certs:
        raise CryptoError("no CERTIFICATE block found")
    return certs


def _general_name_text(name: x509.GeneralName) -> str:
    """A SAN entry as text: host name, IP address, e-mail, URI, directory name or OID."""
    value = name.value
    if isinstance(value, x509.Name):
        return value.rfc4514_string()
    if isinstance(value, x509.ObjectIdentifier):
        return value.dotted_string
    if isinstance(value, bytes):  # otherName: opaque DER, shown as hex
        return value.hex()
    return str(value)


def san_strings(extensions: x509.Extensions) -> list[str]:
    """The subjectAltName entries of a certificate or CSR as text, in order."""
    sans = extension_value(extensions, x509.SubjectAlternativeName)
    return [] if sans is None else [_general_name_text(name) for name in sans]


@dataclass(frozen=True)
class CertInfo:
    """What the tools and the renew policy need to know about one certificate.

    Datetimes are UTC-aware. ``ski``/``aki`` are the raw key identifiers, None when absent.
    """

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    lifetime_days: float
    sans: list[str]
    pubkey: str
    sig_algo: str
    serial: int
    ski: bytes | None
    aki: bytes | None
    is_ca: bool


def cert_info(cert: x509.Certificate) -> CertInfo:
    """Summarise ``cert``; names are RFC 4514 strings (last RDN first, as OpenSSL prints)."""
    ski = extension_value(cert.extensions, x509.SubjectKeyIdentifier)
    aki = extension_value(cert.extensions, x509.AuthorityKeyIdentifier)
    constraints = extension_value(cert.extensions, x509.BasicConstraints)
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=not_before,
        not_after=not_after,
        lifetime_days=(not_after - not_before).total_seconds() / 86400,
        sans=san_strings(cert.extensions),
        pubkey=public_key_label(cert.public_key()),
        sig_algo=signature_algorithm_name(cert.signature_algorithm_oid),
        serial=cert.serial_number,
        ski=None if ski is None else ski.digest,
        aki=None if aki is None else aki.key_identifier,
        is_ca=constraints is not None and constraints.ca,
    )


def spki_der(cert: x509.Certificate) -> bytes:
    """DER SubjectPublicKeyInfo of ``cert`` (TLSA selector 1, key comparisons)."""
    return public_key_der(cert.public_key())


def key_matches_cert(key: PrivateKey, cert: x509.Certificate) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    return public_key_der(key.public_key()) == spki_der(cert)


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "<empty subject>"


def _hex(key_id: bytes) -> str:
    return key_id.hex(":")


def _key_ids(child: x509.Certificate, parent: x509.Certificate) -> tuple[bytes, bytes] | None:
    """(child AKI, parent SKI) when both exist, else None (nothing to compare)."""
    aki = extension_value(child.extensions, x509.AuthorityKeyIdentifier)
    ski = extension_value(parent.extensions, x509.SubjectKeyIdentifier)
    if aki is None or aki.key_identifier is None or ski is None:
        return None
    return aki.key_identifier, ski.digest


def _signature_problem(child: x509.Certificate, parent: x509.Certificate) -> str | None:
    """Why ``parent``'s key does not verify ``child``'s signature, or None when it does."""
    try:
        child.verify_directly_issued_by(parent)
    except InvalidSignature:
        return f"signature on {_name(child)} does not verify with the key of {_name(parent)}"
    except (ValueError, TypeError) as err:
        return f"cannot check the signature on {_name(child)} with {_name(parent)}: {err}"
    return None


def _build_path(
    cert: x509.Certificate, pool: Sequence[x509.Certificate]
) -> tuple[list[x509.Certificate], list[str]]:
    """Walk from ``cert`` up through ``pool`` to a self-issued certificate.

    An issuer must match by name *and*, when both sides carry key identifiers, by AKI = SKI:
    a name match alone is how upstream's broken chains looked valid.
    """
    path = [cert]
    current = cert
    while current.subject != current.issuer:
        if len(path) >= _MAX_PATH:
            return path, [f"chain is longer than {_MAX_PATH} certificates"]
        named = [c for c in pool if c.subject == current.issuer and c not in path]
        if not named:
            return path, [
                f"no issuer certificate for {_name(current)} "
                f"(issuer {current.issuer.rfc4514_string()})"
            ]
        keyed = [c for c in named if (ids := _key_ids(current, c)) is None or ids[0] == ids[1]]
        if not keyed:
            aki, ski = _key_ids(current, named[0]) or (b"", b"")
            return path, [
                f"authority key id {_hex(aki)} of {_name(current)} does not match "
                f"subject key id {_hex(ski)} of issuer {_name(named[0])}"
            ]
        current = next((c for c in keyed if _signature_problem(current, c) is None), keyed[0])
        path.append(current)
    return path, []


def _validity_problem(cert: x509.Certificate, now: datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return (
            f"{_name(cert)} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    if now > cert.not_valid_after_utc:
        return f"{_name(cert)} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    return None


def _issuer_problems(issuer: x509.Certificate, below: int) -> list[str]:
    """CA checks for a certificate that signed others; ``below`` = intermediates under it."""
    problems: list[str] = []
    constraints = extension_value(issuer.extensions, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        problems.append(f"issuer {_name(issuer)} is not a CA (no BasicConstraints CA:TRUE)")
    elif constraints.path_length is not None and below > constraints.path_length:
        problems.append(
            f"issuer {_name(issuer)} allows {constraints.path_length} intermediates, has {below}"
        )
    usage = extension_value(issuer.extensions, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        problems.append(f"issuer {_name(issuer)} lacks the keyCertSign key usage")
    return problems


def verify_chain(
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    now: datetime,
    trust: Sequence[x509.Certificate] | None = None,
    open_top: bool = False,
) -> list[str]:
    """Validate the path from ``cert`` through ``chain`` to a trusted self-signed root.

    Checks every link's issuer name, AKI/SKI and signature, every certificate's validity at
    ``now``, CA flag / keyCertSign / pathLen of every issuer, and that the path ends in a
    self-signed certificate from ``trust``. No hostname or EKU checks: callers know the
    purpose, this function only knows the chain.

    Parameters:
      cert(Certificate): the end-entity certificate.
      chain(Sequence[Certificate]): candidate issuers, any order (a root may be included).
      now(datetime): timezone-aware time to check validity at.
      trust(Sequence[Certificate] | None): trust anchors; default: the self-signed
        certificates in ``chain`` (the "is this chain internally consistent" question).
      open_top(bool): accept a path that ends, after at least one issuer, in a certificate
        whose issuer is not in ``chain`` (an ACME chain sent without its root); the links that
        are there are checked all the same.

    Returns:
      Human-readable problems, empty when the chain is valid. Pure; never raises for a bad
      chain.
    """
    anchors = list(trust) if trust is not None else [c for c in chain if c.subject == c.issuer]
    pool = [*chain, *anchors]
    path, problems = _build_path(cert, pool)
    top = path[-1]
    if (
        open_top
        and len(path) >= 2
        and top.subject != top.issuer
        and not any(c.subject == top.issuer for c in pool)
    ):
        problems = []  # the one problem was "no issuer certificate" for the top
    for link in path:
        if (problem := _validity_problem(link, now)) is not None:
            problems.append(problem)
    for child, parent in itertools.pairwise(path):
        if (problem := _signature_problem(child, parent)) is not None:
            problems.append(problem)
    for below, issuer in enumerate(path[1:]):
        problems.extend(_issuer_problems(issuer, below))
    root = path[-1]
    if root.subject == root.issuer:
        if (problem := _signature_problem(root, root)) is not None:
            problems.append(problem)
        if root not in anchors:
            problems.append(f"root {_name(root)} is not a trusted certificate")
    return problems
