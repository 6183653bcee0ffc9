"""Private keys: generation, PEM in and out, and the short labels the tools print.

Key bytes never appear in a message this module produces: a failed load says what was wrong
with the input, never what the input was.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from sslm_tasks.errors import CryptoError

#: The private key types sslm creates and signs with.
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
#: Public halves of :data:`PrivateKey`.
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

RSA_MIN_BITS = 2048
RSA_MAX_BITS = 16384
#: Every CA and TLS stack expects F4; other exponents only buy interoperability bugs.
RSA_PUBLIC_EXPONENT = 65537


@dataclass(frozen=True)
class KeySpec:
    """What kind of key to make.

    ``ec_curve`` is read only for ``ktype == "ec"`` and ``rsa_bits`` only for ``"rsa"``.
    """

    ktype: Literal["ec", "rsa", "ed25519"]
    ec_curve: str = "secp384r1"
    rsa_bits: int = 4096


@functools.cache
def _curves() -> dict[str, type[ec.EllipticCurve]]:
    """Curve classes cryptography exports and the linked OpenSSL can generate keys on.

    The probe generates one throw-away key per curve (milliseconds, once per process) because
    cryptography has no public "is this curve supported" call.
    """
    found: dict[str, type[ec.EllipticCurve]] = {}
    for obj in vars(ec).values():
        is_curve = isinstance(obj, type) and issubclass(obj, ec.EllipticCurve)
        if not is_curve or obj is ec.EllipticCurve:
            continue
        curve = obj()
        try:
            ec.generate_private_key(curve)
        except UnsupportedAlgorithm:
            continue
        found[curve.name.lower()] = obj
    return found


def ec_curve_names() -> frozenset[str]:
    """Lower-case names of the EC curves :func:`generate_private_key` accepts."""
    return frozenset(_curves())


def generate_private_key(spec: KeySpec) -> PrivateKey:
    """Make a fresh private key.

    Parameters:
      spec(KeySpec): key type and size; curve names are matched case-insensitively.

    Returns:
      The new key. Not idempotent: every call returns a different key.

    Raises:
      CryptoError: unknown curve, RSA size outside 2048..16384, or unknown key type.
    """
    if spec.ktype == "ec":
        curve = _curves().get(spec.ec_curve.lower())
        if curve is None:
            raise CryptoError(f"unsupported EC curve {spec.ec_curve!r}")
        return ec.generate_private_key(curve())
    if spec.ktype == "rsa":
        if not RSA_MIN_BITS <= spec.rsa_bits <= RSA_MAX_BITS:
            raise CryptoError(
                f"RSA key size {spec.rsa_bits} outside {RSA_MIN_BITS}..{RSA_MAX_BITS} bits"
            )
        return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=spec.rsa_bits)
    if spec.ktype == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise CryptoError(f"unsupported key type {spec.ktype!r}")


def private_key_to_pem(key: PrivateKey) -> bytes:
    """Serialise ``key`` as unencrypted PKCS#8 PEM.

    Unencrypted because the servers that read ``privkey.pem`` cannot prompt for a passphrase;
    file mode 0600 is what protects it.
    """
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> PrivateKey:
    """Read an unencrypted private key in PEM (PKCS#8 or the traditional EC/RSA forms).

    Raises:
      CryptoError: not a PEM private key, encrypted, or a key type sslm does not sign with.
        The message never contains the input.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        # cryptography's messages describe the failure, not the data, so keeping the cause
        # leaks nothing; we still word our own message without the input.
        raise CryptoError("not a readable unencrypted PEM private key") from err
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise CryptoError(f"unsupported private key type {type(key).__name__}")
    return key


def public_key_der(key: PublicKey | PublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo of ``key``: the form key comparisons and TLSA selector 1 use."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_label(key: PublicKey | PublicKeyTypes) -> str:
    """Short name of a public key: ``secp384r1``, ``rsa-4096``, ``ed25519``.

    Accepts any public key cryptography can load, because ``sslm-info`` shows certificates
    sslm did not make; types outside :data:`PublicKey` get their lower-case class-derived name
    (``ed448``, ``dsa-2048``).
    """
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.name.lower()
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    name = type(key).__name__.removesuffix("PublicKey").lower()
    size = getattr(key, "key_size", None)
    return f"{name}-{size}" if isinstance(size, int) else name
