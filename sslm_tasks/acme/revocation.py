"""Revoking a certificate at its ACME CA with the account that ordered it (RFC 8555 §7.6)."""

from __future__ import annotations

from typing import Final

import acme.client
from cryptography import x509

from sslm_tasks.acme.network import AcmePermanentError, translate

#: The problem a CA answers for a certificate it revoked before (RFC 8555 §6.7).
ALREADY_REVOKED: Final = "alreadyRevoked"


class AlreadyRevoked(AcmePermanentError):
    """The CA had revoked the certificate already: nothing changed, and asking again will not."""


def revoke(client: acme.client.ClientV2, cert: x509.Certificate, *, reason_code: int) -> None:
    """Ask the CA to revoke ``cert`` (one ``revokeCert`` request signed by the account key).

    Parameters:
      client(ClientV2): a client signing as the account that ordered ``cert``.
      cert(Certificate): the certificate to revoke.
      reason_code(int): its RFC 5280 §5.3.1 reason code.

    Raises:
      AlreadyRevoked: the CA says it is revoked already.
      AcmeTransientError: the CA could not be reached, or asked to try later.
      AcmePermanentError: the CA refused (``unauthorized``: not this account's certificate,
        ``badRevocationReason``, ...).
    """
    try:
        with translate("revoking the certificate", client.net):
            client.revoke(cert, reason_code)
    except AcmePermanentError as err:
        if err.code == ALREADY_REVOKED:
            raise AlreadyRevoked(str(err), code=err.code) from err
        raise
