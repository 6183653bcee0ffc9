"""When to renew an ACME certificate: the CA's ARI window (RFC 9773), else the lifetime rule,
and how long to wait after a failed order.

ARI lets the CA suggest a renewal window per certificate, move it earlier when it must revoke,
and spread its load. A client renews at a random time inside the window (so a fleet does not
arrive at once), asks again when ``Retry-After`` says (kept between 1 minute and 1 day,
RFC 9773 §4.3.1), and sends the certificate's ID as ``replaces`` with the renewal order: Let's
Encrypt exempts such orders from its rate limits.

When the directory has no ``renewalInfo`` (Pebble 2.4, other CAs), when the answer cannot be
used, or when the server fails, the caller's lifetime rule (``sslm_tasks.renewal.decide``)
decides instead; failures never leave a certificate without a renewal time.

Pure apart from one GET: the clock and the random generator are parameters.
"""

from __future__ import annotations

import base64
import logging
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

import acme.client
import acme.messages
from cryptography import x509

from sslm_tasks.acme.directory import has_resource
from sslm_tasks.acme.network import (
    AcmePermanentError,
    AcmeRateLimited,
    AcmeTransientError,
    parse_retry_after,
    suggested_retry,
    translate,
)
from sslm_tasks.acme.timing import RenewalWindow
from sslm_tasks.errors import CryptoError, SslmError, TransientError

log = logging.getLogger(__name__)

#: Re-check interval when the server gives no usable Retry-After or answers unusably
#: (RFC 9773 §4.3.3 "long-term errors").
LONG_TERM_RECHECK: Final = timedelta(hours=6)
#: Re-check interval after a temporary failure (timeout, 5xx) without a Retry-After.
TEMPORARY_RECHECK: Final = timedelta(hours=1)
#: RFC 9773 §4.3.1's "reasonable limits" on Retry-After.
MIN_RECHECK: Final = timedelta(minutes=1)
MAX_RECHECK: Final = timedelta(days=1)

PlanSource = Literal["ari", "lifetime", "expired"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def cert_id(cert: x509.Certificate) -> str:
    """The RFC 9773 §4.1 certificate ID: ``base64url(AKI keyIdentifier).base64url(serial)``.

    The serial is its DER INTEGER content: big-endian two's complement, with a leading zero
    byte when the high bit is set (so ``0x87654321`` encodes as ``00 87 65 43 21``).

    Raises:
      CryptoError: the certificate has no Authority Key Identifier with a key identifier
        (every publicly trusted certificate has one).
    """
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound as err:
        raise CryptoError("certificate has no Authority Key Identifier: no ARI for it") from err
    if aki.key_identifier is None:
        raise CryptoError("certificate's Authority Key Identifier has no key identifier")
    serial = cert.serial_number
    serial_der = serial.to_bytes(math.ceil((serial.bit_length() + 1) / 8), "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_der)}"


@dataclass(frozen=True)
class RenewalInfo:
    """One ARI answer: the window, when to ask again, and the CA's explanation if it gave one."""

    window: RenewalWindow
    next_check: datetime
    explanation_url: str | None


@dataclass(frozen=True)
class RenewalPlan:
    """When to renew one certificate, and when to look again.

    Attributes:
      renew_at: renew at or after this time (``now`` or earlier: renew now).
      next_check: ask the CA again at this time; None once the certificate has expired.
      source: ``ari`` (inside the CA's window), ``lifetime`` (the caller's rule), or
        ``expired`` (renew now, never ask about this certificate again).
      replaces: the certificate ID to send as ``replaces`` with the renewal order; set only
        when the CA offers ARI.
      window: the CA's window, when ``source`` is ``ari``.
      explanation_url: the CA's explanation of the window (often a revocation notice).
    """

    renew_at: datetime
    next_check: datetime | None
    source: PlanSource
    replaces: str | None = None
    window: RenewalWindow | None = None
    explanation_url: str | None = None


def _clamp_recheck(retry_after: datetime | None, *, now: datetime, default: timedelta) -> datetime:
    if retry_after is None:
        return now + default
    return now + min(max(retry_after - now, MIN_RECHECK), MAX_RECHECK)


def fetch_renewal_info(
    client: acme.client.ClientV2, cert: x509.Certificate, *, now: datetime
) -> RenewalInfo | None:
    """GET ``<renewalInfo>/<cert ID>`` (unauthenticated); None when the CA has no ARI.

    Read-only, one request.

    Raises:
      AcmeTransientError: timeout, connection failure, 5xx (with ``retry_after`` when sent).
      AcmeRateLimited: ``rateLimited`` (with ``retry_after``).
      AcmePermanentError: any other error answer, or a body that is no valid RenewalInfo
        (RFC 9773 §4.2: a window whose end is not after its start counts as no answer).
      CryptoError: the certificate has no Authority Key Identifier.
    """
    if not has_resource(client.directory, "renewalInfo"):
        return None
    url = f"{str(client.directory['renewalInfo']).rstrip('/')}/{cert_id(cert)}"
    with translate(f"fetching renewal info {url}", client.net):
        response = client.net.get(url)
        document = response.json()
        window = acme.messages.RenewalInfo.from_json(document).suggested_window
    start, end = window.start, window.end
    if start is None or end is None or end <= start:
        raise AcmePermanentError(f"renewal info {url}: unusable window {start} .. {end}")
    explanation = document.get("explanationURL") if isinstance(document, dict) else None
    return RenewalInfo(
        window=RenewalWindow(start=start, end=end),
        next_check=_clamp_recheck(
            parse_retry_after(response.headers.get("Retry-After"), now=now),
            now=now,
            default=LONG_TERM_RECHECK,
        ),
        explanation_url=explanation if isinstance(explanation, str) else None,
    )


def random_time_in(window: RenewalWindow, *, now: datetime, rng: random.Random) -> datetime:
    """A uniformly random time inside ``window``; ``now`` if that time has passed already.

    RFC 9773 §4.2: a time in the past means "renew now", which also covers a window the CA
    moved into the past to ask for immediate renewal.
    """
    chosen = window.start + (window.end - window.start) * rng.random()
    return max(chosen, now)


def fallback_plan(err: SslmError, *, now: datetime, lifetime_renew_at: datetime) -> RenewalPlan:
    """The lifetime rule's plan when the CA could not tell its window (``err`` says why).

    A temporary failure (timeout, 5xx, ``rateLimited``) asks again after the server's
    Retry-After, else within the hour; anything else (an unusable answer, a directory that is
    no ACME directory) in 6 hours. Also for a failed directory fetch before any ARI request,
    so the caller treats every way of not getting an answer alike.
    """
    if isinstance(err, TransientError | AcmeRateLimited):
        log.warning("no renewal info, using the lifetime rule: %s", err)
        recheck = _clamp_recheck(suggested_retry(err), now=now, default=TEMPORARY_RECHECK)
    else:
        log.warning("unusable renewal info, using the lifetime rule: %s", err)
        recheck = now + LONG_TERM_RECHECK
    return RenewalPlan(renew_at=lifetime_renew_at, next_check=recheck, source="lifetime")


def plan_renewal(
    client: acme.client.ClientV2,
    cert_pem: bytes,
    *,
    now: datetime,
    rng: random.Random,
    lifetime_renew_at: datetime,
) -> RenewalPlan:
    """Decide when to renew the certificate in ``cert_pem`` (its first certificate).

    Parameters:
      client(ClientV2): a client of the CA that issued the certificate (no account needed).
      cert_pem(bytes): the current certificate.
      now(datetime): the clock, timezone-aware.
      rng(random.Random): the draw inside the window.
      lifetime_renew_at(datetime): the caller's lifetime rule (``renewal.decide(...).renew_at``),
        used whenever ARI cannot answer.

    Never raises for server trouble: a temporary failure falls back to ``lifetime_renew_at``
    and asks again after the server's Retry-After, else within the hour; an unusable answer
    falls back and asks again in 6 hours. An expired certificate is never asked about
    (RFC 9773 §4.3.3): renew now.

    Raises:
      ValueError: ``now`` is naive.
      CryptoError: ``cert_pem`` holds no readable certificate.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as err:
        raise CryptoError("not a readable PEM certificate") from err
    if cert.not_valid_after_utc <= now:
        return RenewalPlan(renew_at=now, next_check=None, source="expired")
    try:
        info = fetch_renewal_info(client, cert, now=now)
    except (AcmeTransientError, AcmePermanentError, CryptoError) as err:
        return fallback_plan(err, now=now, lifetime_renew_at=lifetime_renew_at)
    if info is None:
        return RenewalPlan(
            renew_at=lifetime_renew_at, next_check=now + LONG_TERM_RECHECK, source="lifetime"
        )
    return RenewalPlan(
        renew_at=random_time_in(info.window, now=now, rng=rng),
        next_check=info.next_check,
        source="ari",
        replaces=cert_id(cert),
        window=info.window,
        explanation_url=info.explanation_url,
    )
