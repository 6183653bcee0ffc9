"""Read certificates back: PEM splitting, summaries, and real chain validation.

Shared by the status report, ``sslm-info``, ``sslm-verify``, the renew policy and the build's
last check, so that "when does this expire" and "is this chain valid" have one answer
everywhere. Chain validation is cryptography's X.509 verifier, not our own path builder.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from sslm_tasks.crypto.keys import PrivateKey, public_key_der, public_key_label
from sslm_tasks.crypto.openssl_verify import openssl_verify
from sslm_tasks.errors import CryptoError

_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
#: Longer paths than this are a loop or a hostile input, not a real PKI.
_MAX_PATH = 10
#: CA keys and signature algorithms of the web PKI (CA/B Forum BR 6.1.5, 7.1.3): all that
#: cryptography's verifier accepts on an issuer or a signature.
_WEB_PKI_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_WEB_PKI_MIN_RSA_BITS = 2048
_WEB_PKI_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
        SignatureAlgorithmOID.RSASSA_PSS,
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)
#: A CA certificate checked on its own serves no purpose yet, so no EKU is asked of it or of
#: the CAs above it; everything else is the web PKI's CA profile.
_CA_ALONE = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None
)
#: The label a wildcard stands for when a certificate has no other name to be checked for.
_WILDCARD_STAND_IN = "wildcard-check"
#: The verifier's messages that read better in other words.
_VERIFIER_WORDING = {
    "all candidates exhausted with no interior errors": "no path to a trusted root",
    "cert is not valid at validation time": "expired or not yet valid",
    "required EKU not found": "its extended key usage does not include TLS server (serverAuth)",
    "no permitted name constraints matched SAN": "a SAN is outside the name constraints of a CA",
}
#: The verifier names the certificate it was looking at this way, at the end of its message.
_PROCESSING = re.compile(
    r" \(encountered processing <Certificate\(subject=<Name\((.*)\)>, \.\.\.\)>\)$"
)

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


_PLAIN_BEGIN: Final = b"-----BEGIN CERTIFICATE-----"
_PLAIN_END: Final = b"-----END CERTIFICATE-----"


def load_certs(pem: bytes) -> list[x509.Certificate]:
    """All certificates in ``pem``, in order (CERTIFICATE and TRUSTED CERTIFICATE blocks).

    Other blocks (keys, CSRs) are skipped.

    Raises:
      CryptoError: no certificate block, or a certificate block that does not parse.
    """
    begins = pem.count(_PLAIN_BEGIN)
    plain = begins == pem.count(b"-----BEGIN ") == pem.count(_PLAIN_END) > 0
    if plain and b"#" not in pem:
        # Plain CERTIFICATE blocks only, as sslm writes them: cryptography's own reader takes
        # them in one call, without the line-by-line walk below (which cost more than the
        # parse). Anything it refuses is read the long way, for that way's error message.
        try:
            return x509.load_pem_x509_certificates(pem)
        except ValueError:
            pass
    text = pem.decode("utf-8", errors="replace")
    certs = [
        _load_block(label, block)
        for label, block in split_pem_blocks(text)
        if label in ("CERTIFICATE", "TRUSTED CERTIFICATE")
    ]
    if not certs:
        raise CryptoError("no CERTIFICATE block found")
    return certs


def plain_cert_fingerprint(pem: bytes) -> str | None:
    """The SHA-256 fingerprint (hex) of the certificate in ``pem``, taken from the text alone,
    when ``pem`` holds one plain CERTIFICATE block and no other PEM (sslm's ``cert.pem``);
    None for anything else, or for a body that is not strict base64.

    It is ``cert.fingerprint(SHA256())`` without parsing the certificate or encoding it again
    (a tenth of the cost), for looking up what a parse of these bytes gave before. It does not
    say the block is a certificate: only a look-up by it may trust it.
    """
    start, end = pem.find(_PLAIN_BEGIN), pem.find(_PLAIN_END)
    if start < 0 or end < start or b"#" in pem:
        return None
    if pem.count(b"-----BEGIN ") != 1 or pem.count(b"-----END ") != 1:
        return None
    body = b"".join(pem[start + len(_PLAIN_BEGIN) : end].split())
    try:
        der = base64.b64decode(body, validate=True)
    except binascii.Error:
        return None
    return hashlib.sha256(der).hexdigest()


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


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = extension_value(cert.extensions, x509.BasicConstraints)
    return constraints is not None and constraints.ca


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


# --------------------------------------------------------------------------- the web PKI


def _web_pki_key(key: PublicKeyTypes) -> bool:
    """Whether the CA/B Forum profile allows ``key`` (BR 6.1.5, 7.1.3.1)."""
    if isinstance(key, rsa.RSAPublicKey):
        return key.key_size >= _WEB_PKI_MIN_RSA_BITS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.name in _WEB_PKI_CURVES
    return False


def _outside_web_pki(certs: Sequence[x509.Certificate]) -> list[str]:
    """What in ``certs`` cryptography's verifier refuses to judge: CA keys and signatures of
    algorithms outside the CA/B Forum profile (a self-issued certificate's own signature is
    never checked, by it or by openssl)."""
    reasons: list[str] = []
    for cert in certs:
        key = cert.public_key()
        if _is_ca(cert) and not _web_pki_key(key):
            reasons.append(f"{_name(cert)}: {public_key_label(key)} key")
        if not _self_issued(cert) and cert.signature_algorithm_oid not in _WEB_PKI_SIGNATURES:
            algorithm = signature_algorithm_name(cert.signature_algorithm_oid)
            reasons.append(f"{_name(cert)}: {algorithm} signature")
    return list(dict.fromkeys(reasons))


def _key_notes(cert: x509.Certificate) -> list[str]:
    """A warning for an end-entity key the web PKI does not allow (Ed25519, brainpool ...):
    path validation does not look at it, TLS clients do."""
    key = cert.public_key()
    if _is_ca(cert) or _web_pki_key(key):
        return []
    return [
        f"the certificate's {public_key_label(key)} key is outside the web PKI (CA/B Forum BR "
        "6.1.5): browsers do not accept it in TLS, it fits private uses only"
    ]


def _server_name(cert: x509.Certificate) -> x509.DNSName | x509.IPAddress | None:
    """A name the server verifier can check ``cert`` for: its first host name or address.

    Any of them will do, since name constraints apply to every SAN whichever is asked for. A
    certificate with wildcards only is checked for one host the first wildcard covers.
    """
    sans = extension_value(cert.extensions, x509.SubjectAlternativeName)
    addresses = [] if sans is None else [n for n in sans if isinstance(n, x509.IPAddress)]
    hosts = [] if sans is None else sans.get_values_for_type(x509.DNSName)
    exact = [host for host in hosts if not host.startswith("*.")]
    if exact:
        return x509.DNSName(exact[0])
    if addresses:
        return addresses[0]
    if hosts:
        return x509.DNSName(f"{_WILDCARD_STAND_IN}.{hosts[0].removeprefix('*.')}")
    return None


def _verifier_reason(err: VerificationError) -> str:
    """The verifier's message without its framing, naming the certificate when it says which."""
    text = str(err).removeprefix("validation failed: ").removeprefix("candidates exhausted: ")
    subject = ""
    processing = _PROCESSING.search(text)
    if processing is not None:
        subject, text = f"{processing.group(1)}: ", text[: processing.start()]
    return f"rejected by the web-PKI verifier: {subject}{_VERIFIER_WORDING.get(text, text)}"


def _web_pki_problems(
    cert: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchors: list[x509.Certificate],
    now: datetime,
) -> list[str]:
    """cryptography's verdict: a leaf as a TLS server certificate, a CA certificate as a CA.

    The verifier only sorts candidate issuers by key identifier; OpenSSL refuses a link whose
    AKI is not its issuer's SKI (which is how upstream's chains broke), so the path the
    verifier built is held to that too.
    """
    builder = PolicyBuilder().store(Store(anchors)).time(now)
    try:
        if _is_ca(cert):
            builder = builder.extension_policies(ca_policy=_CA_ALONE, ee_policy=_CA_ALONE)
            path = builder.build_client_verifier().verify(cert, intermediates).chain
        else:
            name = _server_name(cert)
            if name is None:
                return [f"{_name(cert)} names no host or address (subjectAltName) to check"]
            path = builder.build_server_verifier(name).verify(cert, intermediates)
    except VerificationError as err:
        return [_verifier_reason(err)]
    except ValueError as err:  # a SAN the verifier cannot take as a server name
        return [f"cannot check {_name(cert)} as a server certificate: {err}"]
    links = itertools.pairwise(path)
    return [p for child, parent in links if (p := _key_id_problem(child, parent)) is not None]


# --------------------------------------------------------------------------- explaining


def _hex(key_id: bytes) -> str:
    return key_id.hex(":")


def _key_id_problem(child: x509.Certificate, parent: x509.Certificate) -> str | None:
    """Why ``child``'s AKI does not name ``parent``'s key (SKI), or None when it does or when
    either is absent (nothing to compare)."""
    aki = extension_value(child.extensions, x509.AuthorityKeyIdentifier)
    ski = extension_value(parent.extensions, x509.SubjectKeyIdentifier)
    if aki is None or aki.key_identifier is None or ski is None:
        return None
    if aki.key_identifier == ski.digest:
        return None
    return (
        f"authority key id {_hex(aki.key_identifier)} of {_name(child)} does not match "
        f"subject key id {_hex(ski.digest)} of issuer {_name(parent)}"
    )


def _signature_problem(child: x509.Certificate, parent: x509.Certificate) -> str | None:
    """Why ``parent``'s key does not verify ``child``'s signature, or None when it does."""
    try:
        child.verify_directly_issued_by(parent)
    except InvalidSignature:
        return f"signature on {_name(child)} does not verify with the key of {_name(parent)}"
    except (ValueError, TypeError) as err:
        return f"cannot check the signature on {_name(child)} with {_name(parent)}: {err}"
    return None


def _walk(
    cert: x509.Certificate, pool: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]
) -> tuple[list[x509.Certificate], list[str]]:
    """Follow issuer names from ``cert`` through ``pool`` to an anchor or a self-issued
    certificate, preferring the issuer whose SKI is the AKI; the problems met on the way."""
    path = [cert]
    current = cert
    while current not in anchors and not _self_issued(current):
        if len(path) >= _MAX_PATH:
            return path, [f"chain is longer than {_MAX_PATH} certificates"]
        named = [c for c in pool if c.subject == current.issuer and c not in path]
        if not named:
            return path, [
                f"no issuer certificate for {_name(current)} "
                f"(issuer {current.issuer.rfc4514_string()})"
            ]
        keyed = [c for c in named if _key_id_problem(current, c) is None]
        if not keyed:
            mismatch = _key_id_problem(current, named[0])
            return path, [] if mismatch is None else [mismatch]
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


def _issuer_problems(issuer: x509.Certificate) -> list[str]:
    problems: list[str] = []
    if not _is_ca(issuer):
        problems.append(f"issuer {_name(issuer)} is not a CA (no BasicConstraints CA:TRUE)")
    usage = extension_value(issuer.extensions, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        problems.append(f"issuer {_name(issuer)} lacks the keyCertSign key usage")
    return problems


def _explain(
    cert: x509.Certificate,
    offered: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: datetime,
) -> list[str]:
    """What a reader following issuer names through every ``offered`` certificate finds wrong,
    and the path it followed: context for the verifier's terse reason, never a verdict."""
    path, problems = _walk(cert, offered, anchors)
    problems += [p for link in path if (p := _validity_problem(link, now)) is not None]
    problems += [
        p for child, parent in itertools.pairwise(path) if (p := _signature_problem(child, parent))
    ]
    problems += [p for issuer in path[1:] for p in _issuer_problems(issuer)]
    top = path[-1]
    if top not in anchors and _self_issued(top):
        problems.append(f"root {_name(top)} is not a trusted certificate")
    problems.append("path followed: " + " < ".join(_name(link) for link in path))
    return problems


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class ChainCheck:
    """The verdict on a certificate's path.

    ``problems`` is empty when the path is valid; ``notes`` say how it was judged when not by
    the web-PKI verifier, and what a valid path still does not promise.
    """

    problems: list[str]
    notes: list[str]


def _trust(
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    trust: Sequence[x509.Certificate] | None,
    *,
    open_top: bool,
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(anchors, intermediates): the self-issued certificates of ``trust`` (default: of
    ``chain``) are anchors, as for ``openssl verify``; with ``open_top`` so is each chain
    certificate above ``cert`` whose issuer is not there. The others are candidates, except
    self-issued ones: a root that is not trusted can only end a path that then fails."""
    offered = [*chain] if trust is None else [*chain, *trust]
    anchors = [c for c in (chain if trust is None else trust) if _self_issued(c)]
    if open_top:
        subjects = {c.subject for c in [cert, *offered]}
        anchors += [
            c
            for c in chain
            if c != cert and not _self_issued(c) and c.issuer not in subjects and c not in anchors
        ]
    return anchors, [c for c in offered if c not in anchors and not _self_issued(c)]


def check_chain(
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    now: datetime,
    trust: Sequence[x509.Certificate] | None = None,
    open_top: bool = False,
) -> ChainCheck:
    """Validate the path from ``cert`` through ``chain`` to a trusted root.

    The judge is cryptography's web-PKI verifier (RFC 5280 path validation under the CA/B
    Forum profile): names and key identifiers, signatures, validity at ``now``, basic
    constraints, key usages, path lengths and name constraints. A leaf is checked as a TLS
    server certificate (EKU serverAuth) for one of its own names; a CA certificate as a CA
    with no purpose. A chain with a CA key or a signature that profile forbids (Ed25519 or
    brainpool CAs, SHA-3 digests) is judged by ``openssl verify`` instead, and a note says so.
    On a rejection, a walk along the issuer names adds which certificate is at fault.

    Parameters:
      cert(Certificate): the certificate to check (leaf or CA).
      chain(Sequence[Certificate]): candidate issuers, any order (a root may be included).
      now(datetime): timezone-aware time to check validity at.
      trust(Sequence[Certificate] | None): trusted roots; default: the self-issued
        certificates in ``chain`` (the "is this chain internally consistent" question). Only
        self-issued ones are anchors, as for ``openssl verify``; others are candidates.
      open_top(bool): accept a path that ends, after at least one issuer, in a certificate
        whose issuer is not in ``chain`` (an ACME chain sent without its root); the links that
        are there are checked all the same.

    Returns:
      The verdict; pure apart from the ``openssl verify`` run. Never raises for a bad chain.
    """
    anchors, intermediates = _trust(cert, chain, trust, open_top=open_top)
    offered = [*chain, *(trust or [])]
    notes = _key_notes(cert)
    if not anchors:
        problems = ["no trusted root: no self-signed certificate was given as one"]
        return ChainCheck([*problems, *_explain(cert, offered, anchors, now)], notes)
    misfits = _outside_web_pki([cert, *intermediates, *anchors])
    if misfits:
        notes.insert(
            0,
            "checked with openssl verify, since the web PKI (and with it browsers and "
            f"cryptography's verifier) refuses this chain: {'; '.join(misfits)}",
        )
        purpose = None if _is_ca(cert) else "sslserver"
        problems = openssl_verify(
            cert, intermediates, anchors, at=now, purpose=purpose, partial_chain=open_top
        )
        return ChainCheck(problems, notes)
    problems = _web_pki_problems(cert, intermediates, anchors, now)
    if problems:
        problems += _explain(cert, offered, anchors, now)
    return ChainCheck(list(dict.fromkeys(problems)), notes)


def verify_chain(
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    now: datetime,
    trust: Sequence[x509.Certificate] | None = None,
    open_top: bool = False,
) -> list[str]:
    """The problems :func:`check_chain` finds, empty when the path is valid."""
    return check_chain(cert, chain, now=now, trust=trust, open_top=open_top).problems
