"""Revoking a service's certificate, and the local CAs' revocation lists.

A certificate an ACME CA issued is revoked at that CA with the service's account (RFC 8555
§7.6); one a local CA signed is listed in that CA's CRL (``certs/ca/<ca>/crl.pem``), which is
re-issued at once. Either way the service's record keeps the revocation, and a ``keyCompromise``
makes the renew check build a new version with a new key (:func:`.build.compromised`).

Each local CA keeps its CRL current by itself: the renew check and the roll of a CA re-issue it
when it is missing, signed by another key than ``curr``'s, or within :data:`CRL_REFRESH` of its
``nextUpdate`` (:func:`keep_crl_current`). The production step copies it to
``<prod_cert_dir>/ca/<ca>/crl.pem``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sslm_tasks.acme import revocation
from sslm_tasks.acme.accounts import connect_as, find_account
from sslm_tasks.acme.directory import server_for
from sslm_tasks.config.load import acme_ca_of, signer_of
from sslm_tasks.config.models import CA_GROUP, CaInfo
from sslm_tasks.crypto import crl as crls
from sslm_tasks.crypto.inspect import extension_value, load_certs
from sslm_tasks.crypto.keys import load_private_key
from sslm_tasks.errors import PermanentError
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.current import version_file
from sslm_tasks.lifecycle.record import Revocation
from sslm_tasks.store import layout as files
from sslm_tasks.store.atomic import write_atomic
from sslm_tasks.store.read import read_bytes
from sslm_tasks.store.versions import is_complete

log = logging.getLogger("sslm")

#: How long a CRL is valid (``nextUpdate`` - ``thisUpdate``). A week: long enough that a
#: daily renew check missing a few days leaves clients a valid CRL, short enough that a CRL
#: an attacker keeps from a client ages out soon (see docs/decisions.md).
CRL_VALIDITY: Final = timedelta(days=7)
#: Re-issue a CRL once less than this is left of its validity: half of it, so a renew
#: check that runs daily re-issues it days before any client could find it stale.
CRL_REFRESH: Final = CRL_VALIDITY / 2

#: The ``by`` of a revocation the ACME CA accepted.
BY_ACME: Final = "acme"


class AlreadyRevoked(PermanentError):
    """The certificate was revoked before (by the CA, or in the local CA's CRL)."""


# --------------------------------------------------------------------------- the CRL


def _ca_material(ctx: ServiceContext) -> tuple[x509.Certificate, bytes] | None:
    """The local CA's ``curr`` certificate and its key (PEM); None before its first roll."""
    stamp = ctx.link("curr")
    if stamp is None or not is_complete(ctx.layout, ctx.ref, stamp):
        return None
    cert = load_certs(read_bytes(version_file(ctx, stamp, files.CERT)))[0]
    return cert, read_bytes(version_file(ctx, stamp, files.PRIVKEY))


def _current_crl(ctx: ServiceContext) -> x509.CertificateRevocationList | None:
    path = ctx.layout.crl_file(ctx.ref)
    if not path.is_file():
        return None
    return crls.load_crl(read_bytes(path), source=str(path))


def _issue(
    ctx: ServiceContext,
    ca_cert: x509.Certificate,
    key_pem: bytes,
    previous: x509.CertificateRevocationList | None,
    add: crls.Revoked | None,
) -> None:
    """Write the CA's CRL: the previous one's entries (plus ``add``), numbered one higher."""
    listed = [] if previous is None else crls.entries(previous)
    digest = "sha384" if ctx.service.ca is None else ctx.service.ca.digest
    crl = crls.build_crl(
        load_private_key(key_pem),
        ca_cert,
        [*listed, *([] if add is None else [add])],
        crl_number=1 if previous is None else crls.number(previous) + 1,
        now=ctx.now(),
        validity=CRL_VALIDITY,
        digest=digest,
    )
    write_atomic(
        ctx.layout.crl_file(ctx.ref), crl.public_bytes(Encoding.PEM), mode=files.PUBLIC_MODE
    )


def crl_due(ctx: ServiceContext) -> str | None:
    """Why the local CA ``ctx`` should re-issue its CRL now, or None (also for a service that
    is no local CA, and for a CA without a ``curr`` to sign with). Reads only."""
    if ctx.ref.group != CA_GROUP:
        return None
    material = _ca_material(ctx)
    if material is None:
        return None
    current = _current_crl(ctx)
    if current is None:
        return "no CRL yet"
    if not crls.signed_by(current, material[0]):
        return "the CRL is not signed by the CA's current certificate"
    if crls.is_stale(current, now=ctx.now(), margin=CRL_REFRESH):
        return f"the CRL's nextUpdate {current.next_update_utc:%Y-%m-%d %H:%M} UTC is near"
    return None


def keep_crl_current(ctx: ServiceContext) -> str | None:
    """Re-issue the local CA's CRL when :func:`crl_due` says so; what was done, or None.

    Holds the CA's ``crl:<ca>`` lock, which a revocation holds too, so no entry is lost to a
    re-issue running beside it. Idempotent.
    """
    if crl_due(ctx) is None:
        return None
    with ctx.ws.lock(f"crl:{ctx.ref.service}"):
        reason = crl_due(ctx)  # again, under the lock: another may have just done it
        material = _ca_material(ctx)
        if reason is None or material is None:
            return None
        _issue(ctx, material[0], material[1], _current_crl(ctx), None)
    log.info("%s: CRL re-issued: %s", ctx.ref, reason)
    return f"CRL re-issued ({reason})"


# --------------------------------------------------------------------------- revoking


def _serial_hex(cert: x509.Certificate) -> str:
    """Upper-case hex in whole bytes, as ``openssl x509 -serial`` and ``openssl crl`` show it."""
    digits = f"{cert.serial_number:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


def _revoked_cert(ctx: ServiceContext, which: files.LinkName) -> tuple[str, x509.Certificate]:
    stamp = ctx.link(which)
    if stamp is None or not version_file(ctx, stamp, files.CERT).is_file():
        raise PermanentError(f"{ctx.ref}: {which} holds no certificate to revoke")
    return stamp, load_certs(read_bytes(version_file(ctx, stamp, files.CERT)))[0]


def _issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ``cert`` names ``ca_cert`` as its issuer, by subject and key identifier."""
    aki = extension_value(cert.extensions, x509.AuthorityKeyIdentifier)
    ski = extension_value(ca_cert.extensions, x509.SubjectKeyIdentifier)
    same_key = aki is None or ski is None or aki.key_identifier == ski.digest
    return cert.issuer == ca_cert.subject and same_key


def _by_local_ca(
    ctx: ServiceContext, ca: ServiceContext, cert: x509.Certificate, entry: crls.Revoked
) -> None:
    """List ``cert`` in the CRL of local CA ``ca``, re-issued at once."""
    with ctx.ws.lock(f"crl:{ca.ref.service}"):
        material = _ca_material(ca)
        if material is None:
            raise PermanentError(f"{ctx.ref}: its CA {ca.ref} has no current certificate")
        ca_cert, key_pem = material
        if not _issued_by(cert, ca_cert):
            raise PermanentError(
                f"{ctx.ref}: the certificate's issuer {cert.issuer.rfc4514_string()} is not "
                f"the current certificate of its CA {ca.ref}: its CRL cannot list it"
            )
        previous = _current_crl(ca)
        if previous is not None and any(
            listed.serial == entry.serial for listed in crls.entries(previous)
        ):
            raise AlreadyRevoked(
                f"{ctx.ref}: serial {_serial_hex(cert)} is already revoked in "
                f"{ca.layout.crl_file(ca.ref)}"
            )
        _issue(ca, ca_cert, key_pem, previous, entry)


def _by_acme(ctx: ServiceContext, ca: CaInfo, cert: x509.Certificate, reason: str) -> None:
    """Ask the ACME CA ``ca`` to revoke ``cert``, signed by the account that ordered it."""
    server = server_for(ca, test=ctx.ws.options.acme_test_server)
    account = find_account(ctx.layout.cb_dir(ctx.ref), server.directory_url)
    if account is None:
        raise PermanentError(
            f"{ctx.ref}: no ACME account for {server.directory_url} under "
            f"{ctx.layout.cb_dir(ctx.ref)}: only the account that ordered a certificate "
            "revokes it"
        )
    try:
        revocation.revoke(connect_as(server, account), cert, reason_code=crls.REASON_CODES[reason])
    except revocation.AlreadyRevoked as err:
        raise AlreadyRevoked(f"{ctx.ref}: the CA says it is already revoked ({err})") from err


def revoke(ctx: ServiceContext, which: files.LinkName, reason: str) -> Revocation:
    """Revoke the certificate of version ``which`` of the service, for ``reason``.

    Its local CA lists it in a re-issued CRL, or its ACME CA revokes it; then the service's
    record keeps the revocation. Not idempotent by design: a second revocation of one
    certificate is refused (:class:`AlreadyRevoked`), by the CRL or by the ACME CA.

    Parameters:
      ctx(ServiceContext): the service.
      which(LinkName): ``curr``, ``next`` or ``prev``.
      reason(str): a key of :data:`~sslm_tasks.crypto.crl.REASONS`.

    Returns:
      The revocation, as recorded.

    Raises:
      AlreadyRevoked: revoked before; nothing changed.
      PermanentError: no such version, a self-signed service (nothing above it can revoke
        it), its CA no longer the certificate's issuer, no ACME account, or the CA refused.
      AcmeTransientError: the ACME CA could not be reached; nothing changed.
    """
    stamp, cert = _revoked_cert(ctx, which)
    signer = signer_of(ctx.ws.config, ctx.ref)
    acme_ca = acme_ca_of(ctx.ws.config, ctx.ref)
    if signer is not None:
        by = f"crl:{signer.service}"
        entry = crls.Revoked(cert.serial_number, ctx.now(), crls.REASONS[reason])
        _by_local_ca(ctx, ctx.of(signer), cert, entry)
    elif acme_ca is not None:
        by = BY_ACME
        _by_acme(ctx, acme_ca, cert, reason)
    else:
        raise PermanentError(
            f"{ctx.ref}: self-signed ({ctx.ws.config.service_file(ctx.ref)}: signing_ca = "
            f"{ctx.service.signing_ca!r}): no CA above it can revoke it; replace it instead"
        )
    done = Revocation(stamp=stamp, serial=_serial_hex(cert), reason=reason, at=ctx.now(), by=by)
    ctx.record.revocations.append(done)
    ctx.save()
    log.warning("%s: %s (%s, serial %s) revoked: %s", ctx.ref, which, stamp, done.serial, reason)
    return done
