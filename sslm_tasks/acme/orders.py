"""An ACME order as single requests that a task can make, record, and make again.

The steps follow RFC 8555 §7 top to bottom, one function each, none of them sleeping:

1. :func:`resume_or_create` (or :func:`create_order`): the order, with a profile and
   ``replaces`` when the server supports them.
2. :func:`challenges_for`: what to publish (TXT values, or token files) for each pending
   authorization. Pure: no request.
3. :func:`answer`: tell the CA one challenge is ready.
4. :func:`authorization_states`: one poll of each authorization that is not valid yet.
5. :func:`finalize`: send the CSR once the order is ready (begin only).
6. :func:`fetch_certificate`: download the chain once the order is valid.

Between the steps the caller keeps an :class:`OrderState`, a small JSON-serialisable record
(order URL, status, authorizations and their challenges), and retries a step later when it
raises :class:`~sslm_tasks.acme.network.AcmeTransientError` or reports work still pending.
Waiting is the caller's business (Celery countdowns): the library's ``poll_and_finalize``,
``poll_authorizations`` and ``poll_finalization`` sleep in a loop and are never used here.

Every step is safe to repeat. A redelivered step finds the work done (the challenge no longer
pending, the order already processing) and returns the current state; none of them ever
creates a second order for a stored one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Final

import acme.challenges
import acme.client
import acme.crypto_util
import acme.errors
import acme.messages
import requests
from cryptography import x509
from josepy import b64
from josepy.json_util import field
from josepy.jwk import JWK
from requests.utils import parse_header_links

from sslm_tasks.acme.directory import has_resource, offered_profiles
from sslm_tasks.acme.network import (
    AcmePermanentError,
    AcmeTransientError,
    describe_problem,
    problem_code,
    retry_after_of,
    translate,
)
from sslm_tasks.acme.order_state import (
    INVALID,
    PENDING,
    PROCESSING,
    READY,
    VALID,
    AuthorizationState,
    ChallengeState,
    ChallengeToPublish,
    OrderState,
)
from sslm_tasks.config.models import ChallengeKind
from sslm_tasks.crypto.inspect import load_certs, split_pem_blocks
from sslm_tasks.errors import CryptoError

log = logging.getLogger(__name__)

_CHALLENGE_TYPES: Final[dict[str, type[acme.challenges.KeyAuthorizationChallenge]]] = {
    "dns-01": acme.challenges.DNS01,
    "http-01": acme.challenges.HTTP01,
}


class OrderFailed(AcmePermanentError):
    """The CA declared the order, or one of its authorizations, invalid.

    The order cannot be continued: record the failure, back off, and start a new order.

    Attributes:
      problems(tuple[str, ...]): the CA's reasons, ``"<name>: <code>: <detail>"`` each (for a
        wrong TXT value, Pebble's "Correct value not found for DNS challenge").
    """

    def __init__(self, message: str, *, problems: tuple[str, ...]) -> None:
        super().__init__(message)
        self.problems = problems


# --------------------------------------------------------------------------- reading the CA


def _post_as_get(client: acme.client.ClientV2, url: str) -> requests.Response:
    """RFC 8555 §6.3 POST-as-GET: an authenticated read of one resource."""
    return client.net.post(url, None, new_nonce_url=client.directory["newNonce"])


def _status(value: acme.messages.Status | None) -> str:
    return PENDING if value is None else str(value.name)


def _authorization_state(authzr: acme.messages.AuthorizationResource) -> AuthorizationState:
    body = authzr.body
    challenges = []
    errors = []
    for challb in body.challenges or ():
        if challb.error is not None:
            errors.append(describe_problem(challb.error))
        if isinstance(challb.chall, acme.challenges.KeyAuthorizationChallenge):
            challenges.append(
                ChallengeState(
                    type=challb.chall.typ,
                    url=challb.uri,
                    token=challb.chall.encode("token"),
                    status=_status(challb.status),
                )
            )
    identifier = body.identifier.value if body.identifier is not None else ""
    reason = "; ".join(errors) or None
    if reason is not None and not reason.startswith(f"{identifier}:"):
        reason = f"{identifier}: {reason}"
    return AuthorizationState(
        url=authzr.uri,
        identifier=identifier,
        wildcard=bool(body.wildcard),
        status=_status(body.status),
        challenges=tuple(sorted(challenges, key=lambda chall: chall.type)),
        error=reason,
    )


def _poll_authorization(client: acme.client.ClientV2, url: str) -> AuthorizationState:
    """One POST-as-GET of an authorization through the library's ``poll``."""
    blank = acme.messages.AuthorizationResource(body=acme.messages.Authorization(), uri=url)
    authzr, _ = client.poll(blank)
    return _authorization_state(authzr)


def _read_order(client: acme.client.ClientV2, url: str) -> acme.messages.Order:
    body: acme.messages.Order = acme.messages.Order.from_json(_post_as_get(client, url).json())
    return body


def _order_state(
    body: acme.messages.Order, url: str, authorizations: Iterable[AuthorizationState]
) -> OrderState:
    # Sorted, like the challenges: a CA may list both in any order (Pebble does), and a
    # re-read of an unchanged order should compare equal to the record.
    return OrderState(
        url=url,
        status=_status(body.status),
        identifiers=tuple(sorted(ident.value for ident in body.identifiers or ())),
        authorizations=tuple(
            sorted(authorizations, key=lambda authz: (authz.identifier, authz.wildcard, authz.url))
        ),
        certificate_url=body.certificate,
        profile=body.profile or None,
        error=None if body.error is None else describe_problem(body.error),
    )


def _with_body(order: OrderState, body: acme.messages.Order) -> OrderState:
    """``order`` with the status, certificate URL and error of a freshly read order body."""
    return dataclasses.replace(
        order,
        status=_status(body.status),
        certificate_url=body.certificate,
        error=None if body.error is None else describe_problem(body.error),
    )


def _failed(order: OrderState, what: str) -> OrderFailed:
    """The error for an order that cannot go on, with every reason the CA gave."""
    problems = tuple(
        authz.error or f"{authz.identifier}: authorization {authz.status}"
        for authz in order.authorizations
        if authz.status not in (PENDING, VALID)
    )
    if order.error and not any(order.error in problem for problem in problems):
        problems += (order.error,)
    reasons = "; ".join(problems) or "the CA gave no reason"
    return OrderFailed(f"{what}: order {order.url} failed: {reasons}", problems=problems)


def _failed_authorization(order: OrderState) -> bool:
    """An authorization can no longer become valid (invalid, expired, deactivated, revoked)."""
    return any(authz.status not in (PENDING, VALID) for authz in order.authorizations)


# --------------------------------------------------------------------------- 1. the order


def choose_profile(directory: acme.messages.Directory, wanted: str | None) -> str | None:
    """The profile to request: ``wanted`` when the server offers it, else None (its default).

    Falling back instead of failing keeps one ``ca_preferred_acme_profile`` usable with servers
    that have no profiles (Pebble 2.4, older CAs) or name them differently.
    """
    if not wanted:
        return None
    offered = offered_profiles(directory)
    if wanted in offered:
        return wanted
    if offered:
        log.warning(
            "ACME profile %r is not offered (offered: %s); using the server's default",
            wanted,
            ", ".join(sorted(offered)),
        )
    else:
        log.info("the ACME server has no profiles; %r falls back to its default", wanted)
    return None


class _NewOrder(acme.messages.NewOrder):
    """newOrder with RFC 9773 §5 ``replaces``, which acme 5.9's ``ClientV2.new_order`` lacks."""

    replaces: str | None = field("replaces", omitempty=True)


def _csr_identifiers(csr_pem: bytes) -> list[acme.messages.Identifier]:
    """The identifiers to order: the CSR's DNS names and IP addresses, as the library reads them.

    Raises:
      CryptoError: ``csr_pem`` is not a PEM CSR.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as err:
        raise CryptoError("not a readable PEM certificate signing request") from err
    names, addresses = acme.crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
    return [
        *(acme.messages.Identifier(typ=acme.messages.IDENTIFIER_FQDN, value=n) for n in names),
        *(
            acme.messages.Identifier(typ=acme.messages.IDENTIFIER_IP, value=str(a))
            for a in addresses
        ),
    ]


def _post_new_order(
    client: acme.client.ClientV2,
    identifiers: list[acme.messages.Identifier],
    profile: str | None,
    replaces: str | None,
) -> tuple[acme.messages.Order, str]:
    """POST newOrder, with ``replaces`` when given; (order body, order URL). The one request
    that creates something: the library's ``new_order`` also reads the authorizations, and a
    failure there would lose the URL of the order it created."""
    request = _NewOrder(identifiers=identifiers, profile=profile, replaces=replaces)
    response = client.net.post(
        client.directory["newOrder"], request, new_nonce_url=client.directory["newNonce"]
    )
    return acme.messages.Order.from_json(response.json()), response.headers["Location"]


def _refuses_replaces(err: acme.errors.ConflictError | acme.messages.Error) -> bool:
    """The CA will not let this order replace that certificate (RFC 9773 §5).

    Let's Encrypt answers 409 ``alreadyReplaced`` when another order already replaced it; the
    library raises every 409 as ``ConflictError`` before reading the problem, and no other 409
    can come from newOrder. Ordering without ``replaces`` is then the right next step: the
    renewal is still needed, it only loses the rate-limit exemption.
    """
    return isinstance(err, acme.errors.ConflictError) or problem_code(err) == "alreadyReplaced"


def create_order(
    client: acme.client.ClientV2,
    csr_pem: bytes,
    *,
    profile: str | None,
    replaces: str | None,
    record: Callable[[OrderState], None] | None = None,
) -> OrderState:
    """Create a new order for the CSR's names and read its authorizations.

    NOT idempotent on its own: every call is a new order (and counts against the CA's new-order
    limit). Record the result before anything else and use :func:`resume_or_create`.

    Parameters:
      client(ClientV2): signed in as the service's account.
      csr_pem(bytes): the CSR; its DNS and IP SANs become the order's identifiers.
      profile(str | None): the wanted profile (``ca_preferred_acme_profile``); see
        :func:`choose_profile` for the fallback.
      replaces(str | None): the ARI certificate ID of the certificate this one renews
        (``renewal_info.cert_id``); sent only when the directory has ``renewalInfo``. If the CA
        refuses it (already replaced), the order is created without it.
      record(Callable | None): called with the order as soon as the CA created it, before its
        authorizations are read (their tuple is still empty): a caller that keeps it resumes
        this order when a read fails (a badNonce storm, the CA briefly away), where ordering
        again would leave an order behind at the CA for every failed read.

    Raises:
      AcmeTransientError: badNonce storms, server trouble.
      AcmeRateLimited: the CA's rate limit (with ``retry_after``).
      AcmePermanentError: the CA refuses the names (``rejectedIdentifier``, ``caa``,
        ``malformed``...).
      CryptoError: ``csr_pem`` is not a PEM CSR (checked before any request).
    """
    identifiers = _csr_identifiers(csr_pem)
    chosen = choose_profile(client.directory, profile)
    if replaces is not None and not has_resource(client.directory, "renewalInfo"):
        log.info("the ACME server has no renewalInfo; ordering without 'replaces'")
        replaces = None
    with translate("creating the order", client.net):
        try:
            body, url = _post_new_order(client, identifiers, chosen, replaces)
        except (acme.errors.ConflictError, acme.messages.Error) as err:
            if replaces is None or not _refuses_replaces(err):
                raise
            log.warning("the CA refused 'replaces' %s; ordering without it", replaces)
            replaces = None
            body, url = _post_new_order(client, identifiers, chosen, None)
    replacing = f", replacing {replaces}" if replaces is not None else ""
    log.info("created order %s (profile %s%s)", url, chosen or "default", replacing)
    if record is not None:
        record(_order_state(body, url, ()))
    with translate(f"reading the authorizations of order {url}", client.net):
        authorizations = [_poll_authorization(client, u) for u in body.authorizations]
    return _order_state(body, url, authorizations)


def fetch_order(client: acme.client.ClientV2, url: str) -> OrderState:
    """Read the order and each of its authorizations (1 + N POST-as-GETs). Read-only.

    Raises:
      AcmeTransientError: the server is unreachable or failing.
      AcmePermanentError: the order is gone (expired and purged, or another account's).
    """
    with translate(f"reading order {url}", client.net):
        body = _read_order(client, url)
        authorizations = [_poll_authorization(client, u) for u in body.authorizations]
    return _order_state(body, url, authorizations)


def _same_names(order: OrderState, csr_pem: bytes) -> bool:
    wanted = sorted(ident.value for ident in _csr_identifiers(csr_pem))
    return sorted(order.identifiers) == wanted


def resume_or_create(
    client: acme.client.ClientV2,
    stored: OrderState | None,
    csr_pem: bytes,
    *,
    profile: str | None,
    replaces: str | None,
    record: Callable[[OrderState], None] | None = None,
) -> OrderState:
    """Continue the stored order, or create one when nothing is stored. Idempotent.

    With ``stored`` this never creates an order: it reads the stored one back (its current
    status, authorizations and challenges). Only ``stored=None`` creates one, so a caller that
    records the new order through ``record`` (see :func:`create_order`) and the returned state
    before going on can be killed, or fail, at any point without ordering twice.

    Raises:
      OrderFailed: the stored order is invalid (or one of its authorizations is); clear the
        record and, after backoff, call again with ``stored=None``.
      AcmePermanentError: the stored order is for other names than the CSR (a stale record),
        or the CA no longer knows it; or, when creating, as :func:`create_order`.
      AcmeTransientError: as :func:`create_order` / :func:`fetch_order`.
    """
    if stored is None:
        return create_order(client, csr_pem, profile=profile, replaces=replaces, record=record)
    current = fetch_order(client, stored.url)
    if not _same_names(current, csr_pem):
        raise AcmePermanentError(
            f"stored order {stored.url} is for {', '.join(current.identifiers)}, "
            "not for the CSR's names: the record is stale"
        )
    if current.status == INVALID or _failed_authorization(current):
        raise _failed(current, "resuming the order")
    log.info("resumed order %s (%s)", current.url, current.status)
    return current


# --------------------------------------------------------------------------- 2. challenges


def challenges_for(
    order: OrderState, kind: ChallengeKind, account_key: JWK
) -> list[ChallengeToPublish]:
    """What to publish for every authorization that is still pending. Pure: no request.

    Valid authorizations (reused by the CA) need nothing and are skipped. ``*.example.test``
    and ``example.test`` both give ``_acme-challenge.example.test`` with different values:
    publish them side by side.

    Raises:
      OrderFailed: an authorization can no longer become valid.
      AcmePermanentError: the CA offers no ``kind`` challenge for a name (http-01 is never
        offered for a wildcard).
    """
    published: list[ChallengeToPublish] = []
    for authz in order.authorizations:
        if authz.status == VALID:
            continue
        if authz.status != PENDING:
            raise _failed(order, f"publishing {kind} challenges")
        state = authz.challenge(kind)
        if state is None:
            offered = ", ".join(chall.type for chall in authz.challenges) or "none"
            raise AcmePermanentError(
                f"{authz.identifier}: the CA offers no {kind} challenge (offers: {offered})",
            )
        chall = _CHALLENGE_TYPES[kind](token=b64.b64decode(state.token))
        if isinstance(chall, acme.challenges.DNS01):
            name = chall.validation_domain_name(authz.identifier)
        else:
            name = f"/{chall.path.lstrip('/')}"
        published.append(
            ChallengeToPublish(
                kind=kind,
                identifier=authz.identifier,
                wildcard=authz.wildcard,
                url=state.url,
                token=state.token,
                name=name,
                value=chall.validation(account_key),
            )
        )
    return published


# --------------------------------------------------------------------------- 3. answer


def _read_challenge(client: acme.client.ClientV2, url: str) -> acme.messages.ChallengeBody:
    challb: acme.messages.ChallengeBody = acme.messages.ChallengeBody.from_json(
        _post_as_get(client, url).json()
    )
    return challb


def answer(client: acme.client.ClientV2, challenge_url: str) -> None:
    """Tell the CA the challenge at ``challenge_url`` is published (RFC 8555 §7.5.1).

    Idempotent: a challenge that is no longer pending (answered before, being validated, valid
    or invalid) is left alone, so a redelivered step never asks twice. The challenge is read
    first; if it moves on between that read and the answer (the CA may still show "pending"
    while it validates an earlier answer), the CA's refusal is read as "answered already".
    Answer only after the publication is visible everywhere: a CA validates at once.

    Raises:
      AcmeTransientError: the server is unreachable or failing.
      AcmePermanentError: the URL is no challenge of this account, or of a kind sslm cannot
        answer.
    """
    key = client.net.key
    if key is None:
        raise ValueError("answering a challenge needs a client with the account key")
    with translate(f"answering challenge {challenge_url}", client.net):
        challb = _read_challenge(client, challenge_url)
        if challb.status == acme.messages.STATUS_PENDING:
            if not isinstance(challb.chall, acme.challenges.KeyAuthorizationChallenge):
                raise AcmePermanentError(f"challenge {challenge_url} is not one sslm can answer")
            try:
                client.answer_challenge(challb, challb.chall.response(key))
                log.info("answered challenge %s", challenge_url)
                return
            except acme.messages.Error:
                challb = _read_challenge(client, challenge_url)
                if challb.status == acme.messages.STATUS_PENDING:
                    raise
        log.info(
            "challenge %s is %s already; not answering again", challenge_url, challb.status.name
        )


# --------------------------------------------------------------------------- 4. poll


def authorization_states(client: acme.client.ClientV2, order: OrderState) -> OrderState:
    """Poll every authorization that is not valid yet, once each; never sleeps.

    Returns ``order`` with those authorizations updated; the order's own status is refreshed by
    :func:`finalize`. Call again later while any is pending (``all_valid`` is False).

    Raises:
      OrderFailed: an authorization became invalid (or expired, or was deactivated);
        ``problems`` holds the CA's reasons (Pebble: "Correct value not found for DNS
        challenge", a DNS or connection failure).
      AcmeTransientError: the server is unreachable or failing.
    """
    polled = []
    with translate(f"polling the authorizations of {order.url}", client.net):
        for authz in order.authorizations:
            polled.append(
                authz if authz.status == VALID else _poll_authorization(client, authz.url)
            )
    updated = dataclasses.replace(order, authorizations=tuple(polled))
    if _failed_authorization(updated):
        raise _failed(updated, "validating")
    return updated


# --------------------------------------------------------------------------- 5. finalize


def finalize(client: acme.client.ClientV2, order: OrderState, csr_pem: bytes) -> OrderState:
    """Send the CSR if the order is ready (RFC 8555 §7.4); begin only, never wait for issuance.

    Idempotent: the order is read first, and one that is processing or valid already was
    finalized before and is returned as it is.

    Returns:
      The order with its new status: ``processing`` (call :func:`fetch_certificate` later) or
      ``valid``.

    Raises:
      AcmeTransientError: authorizations are still being validated (code ``orderNotReady``,
        with the CA's ``Retry-After``), or the server is unreachable or failing.
      OrderFailed: the order is invalid.
      AcmePermanentError: the CA rejects the CSR (``badCSR``).
    """
    with translate(f"finalizing order {order.url}", client.net):
        body = _read_order(client, order.url)
        if _status(body.status) == READY:
            # "ready": the server agrees the requirements are fulfilled and awaits the CSR.
            orderr = acme.messages.OrderResource(
                body=body, uri=order.url, csr_pem=csr_pem, authorizations=()
            )
            body = client.begin_finalization(orderr).body
            log.info("finalized order %s", order.url)
    current = _with_body(order, body)
    if current.status == INVALID:
        raise _failed(current, "finalizing")
    if current.status == PENDING:
        raise AcmeTransientError(
            f"finalizing order {order.url}: authorizations are not all valid yet",
            code="orderNotReady",
            retry_after=retry_after_of(client.net),
        )
    return current


# --------------------------------------------------------------------------- 6. certificate


def _issuer_common_name(fullchain: str) -> str | None:
    """The issuer CN of the topmost certificate: the root the chain leads to."""
    top = load_certs(fullchain.encode())[-1]
    names = top.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def pick_chain(fullchains: list[str], preferred_chain: str | None) -> str:
    """certbot's ``--preferred-chain``: the first chain whose top issuer CN matches, else the
    CA's default (the first)."""
    if preferred_chain:
        for chain in fullchains:
            if _issuer_common_name(chain) == preferred_chain:
                return chain
        log.warning("no chain leads to %r; using the CA's default chain", preferred_chain)
    return fullchains[0]


def fetch_certificate(
    client: acme.client.ClientV2, order: OrderState, *, preferred_chain: str | None
) -> tuple[bytes, bytes]:
    """Download the issued certificate: ``(cert_pem, chain_pem)``. Read-only; safe to repeat.

    The order is read first, unless ``order`` already says it is valid and where its
    certificate is (:func:`finalize` has just read it). The default chain and every alternate
    one (RFC 8555 §7.4.2 ``Link: rel="alternate"``) are fetched when a preferred chain is
    configured, and :func:`pick_chain` chooses.

    Raises:
      AcmeTransientError: the order is still processing (``retry_after`` from the CA), or the
        server is unreachable or failing.
      OrderFailed: the order is invalid.
      AcmePermanentError: the order was never finalized, or the download is no PEM chain.
    """
    with translate(f"downloading the certificate of {order.url}", client.net):
        current = order
        if current.status != VALID or current.certificate_url is None:
            current = _with_body(order, _read_order(client, order.url))
        if current.status == PROCESSING:
            raise AcmeTransientError(
                f"order {order.url} is still being issued", retry_after=retry_after_of(client.net)
            )
        if current.status == INVALID:
            raise _failed(current, "downloading the certificate")
        if current.status != VALID or current.certificate_url is None:
            raise AcmePermanentError(f"order {order.url} is {current.status}, not finalized")
        response = _post_as_get(client, current.certificate_url)
        fullchains = [response.text]
        if preferred_chain:
            alternates = [
                link["url"]
                for link in parse_header_links(response.headers.get("Link", ""))
                if link.get("rel") == "alternate" and "url" in link
            ]
            fullchains += [_post_as_get(client, url).text for url in alternates]
    blocks = [
        block
        for label, block in split_pem_blocks(pick_chain(fullchains, preferred_chain))
        if label == "CERTIFICATE"
    ]
    if len(blocks) < 2:
        raise AcmePermanentError(f"certificate of {order.url}: expected a leaf and its chain")
    return blocks[0].encode(), "".join(blocks[1:]).encode()
