"""The ``sign`` of a build whose CA speaks ACME, as one-shot steps over one order (RFC 8555).

The steps, in the order the pipeline (:mod:`sslm_tasks.lifecycle.pipeline`) states them:

1. :func:`order`: the service's account (``cb/``, registered on first use), then the order for
   the build's CSR, created once and recorded at once.
2. :func:`publish`: what the CA will look for, through the service's challenge publisher
   (:mod:`sslm_tasks.lifecycle.challenges`: dns-01 TXT records, or http-01 token files).
3. :func:`propagated`: one look: is it served where the CA will look? Asked again until so.
4. :func:`answer`: tell the CA every pending challenge is published.
5. :func:`validated`: one poll of the authorizations; asked again until all are valid.
6. :func:`finalize`: send the CSR; once issued, write ``cert.pem`` and ``chain.pem`` into the
   build (what the local sign writes), then withdraw what was published.

No step waits or loops: the in-process runner asks the waiting ones again with short sleeps,
the Celery tasks with countdowns. Every step starts from the recorded order and is safe to
repeat: a killed run resumes the same order (``orders.resume_or_create`` never orders twice for a
recorded one), and once ``cert.pem`` is in the build every step has nothing left to do.

A failed order (an invalid authorization) withdraws what it published and drops its record, so
the next run orders anew.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import acme.client

from sslm_tasks.acme import orders
from sslm_tasks.acme.accounts import Account, connect_as, ensure_account
from sslm_tasks.acme.directory import AcmeServer, server_for
from sslm_tasks.acme.network import AcmePermanentError, retry_after_of
from sslm_tasks.acme.order_state import VALID, ChallengeToPublish, OrderState
from sslm_tasks.acme.orders import OrderFailed
from sslm_tasks.config.load import account_binding, acme_ca_of
from sslm_tasks.config.models import CaInfo
from sslm_tasks.errors import PermanentError, SslmError, StoreError
from sslm_tasks.lifecycle import acme_timing
from sslm_tasks.lifecycle.build import building_stamp, has_cert, write_version
from sslm_tasks.lifecycle.challenges import ChallengePublisher, publisher_for, withdraw_everything
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.current import version_file
from sslm_tasks.lifecycle.record import OrderRecord
from sslm_tasks.store import layout as files
from sslm_tasks.store.atomic import ensure_dir

log = logging.getLogger("sslm")

#: The profile asked for when the CA sets none; servers without it use their default.
DEFAULT_PROFILE: Final = "tlsserver"


def is_acme(ctx: ServiceContext) -> bool:
    return acme_ca_of(ctx.ws.config, ctx.ref) is not None


def validates_over_dns(ctx: ServiceContext) -> bool:
    """Whether the service's CA validates its names over DNS (dns-01); False for http-01 and
    for a service no ACME CA signs."""
    ca = acme_ca_of(ctx.ws.config, ctx.ref)
    return ca is not None and ca.challenge_kind == "dns-01"


@dataclass
class Order:
    """One step's view of the build's order, made once per step: the CA, the build, the
    account, and (on first use) a client signing as the account."""

    ctx: ServiceContext
    ca: CaInfo
    stamp: str
    server: AcmeServer
    account: Account
    _client: acme.client.ClientV2 | None = field(default=None, repr=False)

    @property
    def client(self) -> acme.client.ClientV2:
        """A client signing as the account (one directory fetch, cached per process)."""
        if self._client is None:
            self._client = connect_as(self.server, self.account)
        return self._client

    @property
    def publisher(self) -> ChallengePublisher:
        return publisher_for(self.ctx, self.ca.challenge_kind)

    @property
    def recorded(self) -> OrderState | None:
        """The recorded order of this build; an order of another build is never resumed."""
        record = self.ctx.record.order
        return record.order if record is not None and record.stamp == self.stamp else None

    def current(self) -> OrderState:
        found = self.recorded
        if found is None:
            raise StoreError(f"{self.ctx.ref}: build {self.stamp} has no ACME order recorded")
        return found

    def challenges(self, order: OrderState) -> list[ChallengeToPublish]:
        return orders.challenges_for(order, self.ca.challenge_kind, self.account.key)

    def keep(self, order: OrderState) -> None:
        """Record ``order`` for this build; a record that says so already is not rewritten.

        The first record of an order is made durable (its directory synced): lost to a power
        cut, it would leave an order at the CA that no build knows. A later state of the same
        order is not: lost, it is a crash just before it, and the next step polls the order
        again from the state before.
        """
        record = self.ctx.record
        if record.order is not None and record.order.stamp == self.stamp:
            if record.order.order == order:
                return
            record.order.order = order
            self.ctx.save(sync_dir=False)
            return
        record.order = OrderRecord(self.stamp, order)
        self.ctx.save()

    def csr_pem(self) -> bytes:
        path = version_file(self.ctx, self.stamp, files.CSR)
        if not path.is_file():
            raise StoreError(f"{self.ctx.ref}: build {self.stamp} has no CSR yet")
        return path.read_bytes()


def _begin(ctx: ServiceContext) -> Order | None:
    """The step's order view; None once the build holds its certificate (nothing left to do).

    Raises:
      PermanentError: the service's CA is not an ACME CA.
      AcmeTransientError / AcmePermanentError: registering the account on first use failed.
    """
    stamp = building_stamp(ctx)
    if has_cert(ctx, stamp):
        return None
    ca = acme_ca_of(ctx.ws.config, ctx.ref)
    if ca is None:
        raise PermanentError(f"{ctx.ref}: signing_ca {ctx.service.signing_ca!r} is not an ACME CA")
    server = server_for(ca, test=ctx.ws.options.acme_test_server)
    email = ctx.service.x509.email.strip() or None
    cb_dir = ensure_dir(ctx.layout.cb_dir(ctx.ref), mode=0o700)
    name = ctx.service.signing_ca
    account = ensure_account(
        cb_dir,
        server,
        ca=name,
        email=email,
        binding=account_binding(ctx.ws.config, name),
        now=ctx.now(),
    )
    return Order(ctx, ca, stamp, server, account)


def _abandon(ctx: ServiceContext, order: OrderState | None, err: SslmError) -> None:
    """The order failed for good: withdraw what it published (best effort), drop its record."""
    log.warning("%s: ACME order failed: %s", ctx.ref, err)
    try:
        withdraw_everything(ctx, order, refresh=True)
    except SslmError as cleanup:
        log.warning("%s: withdrawing the failed order's challenges: %s", ctx.ref, cleanup)
    ctx.record.order = None
    ctx.save()


def order(ctx: ServiceContext) -> None:
    """Step 1: the order for the build's CSR, recorded as soon as the CA created it.

    Raises:
      OrderFailed: the recorded order is invalid (what it published is withdrawn and the record
        dropped, so the next run orders anew); likewise an AcmePermanentError for a recorded
        order the CA no longer knows.
      AcmeTransientError / AcmePermanentError: see ``orders.resume_or_create``.
    """
    step = _begin(ctx)
    if step is None:
        return
    stored = step.recorded
    try:
        current = orders.resume_or_create(
            step.client,
            stored,
            step.csr_pem(),
            profile=step.ca.ca_preferred_acme_profile or DEFAULT_PROFILE,
            replaces=acme_timing.remembered_replaces(ctx),
            record=step.keep,
        )
    except AcmePermanentError as err:
        # An invalid order, or one the CA no longer knows (expired, purged) or that is for
        # other names: it can never finish, so the next run must order anew.
        if stored is not None:
            _abandon(ctx, stored, err)
        raise
    step.keep(current)
    log.info("%s: ACME order %s is %s", ctx.ref, current.url, current.status)


def publish(ctx: ServiceContext) -> None:
    """Step 2: publish what the CA will look for (see the service's challenge publisher)."""
    step = _begin(ctx)
    if step is not None:
        current = step.current()
        step.publisher.publish(current, step.challenges(current))


def propagated(ctx: ServiceContext) -> tuple[bool, str]:
    """Step 3, one look: is every challenge served where the CA will look? The text names what
    lags.

    Raises:
      TransientError: a server did not answer; ask again.
      PermanentError / ConfigError: a server refused, or no ``[[dns_primary]]`` fits.
    """
    step = _begin(ctx)
    if step is None:
        return True, "certificate already issued"
    current = step.current()
    return step.publisher.served(current, step.challenges(current))


def answer(ctx: ServiceContext) -> None:
    """Step 4: tell the CA every pending challenge is published. Idempotent."""
    step = _begin(ctx)
    if step is not None:
        for chall in step.challenges(step.current()):
            orders.answer(step.client, chall.url)


def validated(ctx: ServiceContext) -> tuple[bool, str, datetime | None]:
    """Step 5, one poll of the authorizations that are not valid yet: whether all are, what is
    pending, and the ``Retry-After`` the CA sent with the last poll (when to poll again).

    Raises:
      OrderFailed: an authorization is invalid; what was published is withdrawn first.
      AcmeTransientError: the CA is unreachable or failing.
    """
    step = _begin(ctx)
    if step is None:
        return True, "certificate already issued", None
    current = step.current()
    try:
        polled = orders.authorization_states(step.client, current)
    except OrderFailed as err:
        _abandon(ctx, current, err)
        raise
    step.keep(polled)
    valid = sum(1 for authz in polled.authorizations if authz.status == VALID)
    pending = [authz.identifier for authz in polled.authorizations if authz.status != VALID]
    detail = f"{valid} of {len(polled.authorizations)} authorizations valid"
    if pending:
        detail += f"; pending: {', '.join(pending)}"
    return polled.all_valid, detail, None if polled.all_valid else retry_after_of(step.client.net)


def finalize(ctx: ServiceContext) -> tuple[bool, str]:
    """Step 6: finalize, and once issued write ``cert.pem`` and ``chain.pem`` into the build,
    then withdraw what was published. Idempotent: a finalized order is not finalized again; a
    build that holds its certificate only finishes the withdrawal.

    The withdrawal's zone refresh waits: records nobody asks for any more do no harm for a few
    seconds, and the refresh after the run (the in-process run's end, the workers' debounced
    refresh) covers them together with the TLSA change of the same renewal.

    Raises:
      OrderFailed: the order became invalid (what was published is withdrawn first).
      AcmeTransientError: the CA is unreachable, or the order is not ready yet, or still
        being issued.
      AcmePermanentError: the CA rejected the CSR.
    """
    step = _begin(ctx)
    if step is None:
        _finish(ctx)
        return True, "certificate already issued"
    current = step.current()
    try:
        current = orders.finalize(step.client, current, step.csr_pem())
        step.keep(current)
        # Straight on, even when the CA said "processing": one that issues within a round trip
        # (Pebble) then needs no retry, and "still being issued" is a not-yet like any other.
        cert_pem, chain_pem = orders.fetch_certificate(
            step.client, current, preferred_chain=step.ca.ca_preferred_chain or None
        )
    except OrderFailed as err:
        _abandon(ctx, current, err)
        raise
    # The chain before the certificate, as a local sign writes them (has_cert).
    write_version(
        ctx,
        step.stamp,
        {files.CHAIN: (chain_pem, files.PUBLIC_MODE), files.CERT: (cert_pem, files.PUBLIC_MODE)},
    )
    log.info("%s: certificate of order %s is in build %s", ctx.ref, current.url, step.stamp)
    _finish(ctx)
    return True, f"issued by order {current.url}"


def _finish(ctx: ServiceContext) -> None:
    """The certificate is in the build: take down what the order published, drop its record."""
    record = ctx.record.order
    if record is None and not ctx.record.web_tokens and not ctx.record.dns_updates.records:
        return
    withdraw_everything(ctx, None if record is None else record.order, refresh=False)
    ctx.record.order = None
    ctx.save()


def withdraw(ctx: ServiceContext) -> None:
    """Take down whatever the service's recorded order published, with a refresh, and drop the
    record: the end of a dry run, which never reaches :func:`finalize`."""
    record = ctx.record.order
    withdraw_everything(ctx, None if record is None else record.order, refresh=True)
    ctx.record.order = None
    ctx.save()
