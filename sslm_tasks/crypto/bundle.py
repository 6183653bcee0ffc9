"""The four PEM outputs of a signed certificate: cert, chain, fullchain and bundle."""

from __future__ import annotations

from dataclasses import dataclass

from sslm_tasks.crypto.inspect import split_pem_blocks
from sslm_tasks.errors import CryptoError


@dataclass(frozen=True, repr=False)
class Outputs:
    """File contents for ``cert.pem``, ``chain.pem``, ``fullchain.pem`` and ``bundle.pem``.

    ``bundle`` holds the private key and must be written 0600.
    """

    cert: bytes
    chain: bytes
    fullchain: bytes
    bundle: bytes

    def __repr__(self) -> str:
        # The default repr would print the private key in any traceback or debug log.
        return f"Outputs(cert={len(self.cert)}B, chain={len(self.chain)}B, bundle=<redacted>)"


def _normalised(pem: bytes, what: str) -> bytes:
    """``pem``'s blocks, each ending in exactly one newline, with nothing between them.

    Text outside the blocks (comments, ``subject=`` lines some tools add) is dropped, so
    concatenating outputs never glues an END line to the next BEGIN line.
    """
    blocks = split_pem_blocks(pem.decode("ascii", errors="replace"))
    if not blocks:
        raise CryptoError(f"{what} holds no PEM block")
    return "".join(block for _label, block in blocks).encode("ascii")


def compose_outputs(*, cert_pem: bytes, chain_pem: bytes | None, key_pem: bytes) -> Outputs:
    """Assemble the outputs of one certificate.

    Parameters:
      cert_pem(bytes): the certificate.
      chain_pem(bytes | None): issuer certificates, nearest first; None for a self-signed
        certificate, whose chain and fullchain are the certificate itself (as upstream).
      key_pem(bytes): the certificate's private key; only ``bundle`` contains it.

    Returns:
      fullchain = cert + chain; bundle = key + fullchain. Pure.

    Raises:
      CryptoError: an input holds no PEM block. The message names the input, not its bytes.
    """
    cert = _normalised(cert_pem, "certificate")
    key = _normalised(key_pem, "private key")
    if chain_pem is None:
        chain = fullchain = cert
    else:
        chain = _normalised(chain_pem, "chain")
        fullchain = cert + chain
    return Outputs(cert=cert, chain=chain, fullchain=fullchain, bundle=key + fullchain)
