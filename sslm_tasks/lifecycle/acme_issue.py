"""The ``sign`` of a build whose CA speaks ACME (dns-01), as one-shot steps over one order.

The steps follow RFC 8555 in order; the order they run in is stated once, in
:data:`sslm_tasks.workflows.ACME_SIGN_STEPS`:

1. :func:`order`: the service's account (``cb/``, created on first use), then the order for the
   build's CSR, created once and recorded in ``ServiceState.extra["acme_order"]`` at once.
2. :func:`publish`: the dns-01 TXT records in ``acme-challenge.<apex>`` of every apex the
   names fall in, then one ``[dns] restart_cmd --serial_bump`` for the apexes that changed.
3. :func:`propagated`: one pass: does the primary serve every TXT value, and every NS (and
   ``dns_xtra_ns``) the primary's serial? A "ready?" predicate: the caller asks again.
4. :func:`answer`: tell the CA every pending challenge is published.
5. :func:`validated`: one poll of the authorizations; a predicate like 3.
6. :func:`finalize`: send the CSR, download the chain into ``cert.pem``/``chain.pem`` of the
   build (what the local-CA sign writes), then withdraw this order's records.

No step waits or loops: the in-process runner polls the predicates with short sleeps, the
Celery tasks retry with countdowns. Every step reloads the recorded order and is safe to repeat:
a killed run resumes the same order (``orders.resume_or_create`` never orders twice for a
recorded one), and once ``cert.pem`` is in the build every step has nothing left to do.

The record holds URLs, names and statuses only (never key material). A failed order (an
invalid authorization) withdraws its records and drops the record, so the next run orders anew.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from pathlib import Path
from typing import Final

import acme.client

from sslm_tasks.acme import orders
from sslm_tasks.acme.accounts import Account, connect_as, ensure_account
from sslm_tasks.acme.directory import server_for
from sslm_tasks.acme.network import AcmePermanentError
from sslm_tasks.acme.orders import ChallengeToPublish, OrderFailed, OrderState
from sslm_tasks.config.load import MAIN_FILE, Config
from sslm_tasks.config.models import CA_GROUP, CaInfo
from sslm_tasks.crypto.inspect import key_matches_cert, load_certs
from sslm_tasks.crypto.keys import load_private_key
from sslm_tasks.dns.challenges import ChallengeFile
from sslm_tasks.dns.lookup import DEFAULT_DOMAINS, extra_nameservers, primary_for
from sslm_tasks.dns.propagation import check_serial, check_txt
from sslm_tasks.dns.refresh import refresh_zones
from sslm_tasks.errors import ConfigError, PermanentError, SslmError, StoreError
from sslm_tasks.lifecycle.build import building_stamp, version_file
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.locks import Locker
from sslm_tasks.locks.file import FileLocker
from sslm_tasks.store import layout as files
from sslm_tasks.store.atomic import ensure_dir, write_atomic
from sslm_tasks.store.layout import ServiceRef
from sslm_tasks.store.state import load_state, save_state

log = logging.getLogger(__name__)

#: State keys (``ServiceState.extra``) this module owns.
ORDER_KEY: Final = "acme_order"
#: The build stamp the recorded order is for: an order left by another build is not resumed.
ORDER_STAMP_KEY: Final = "acme_order_stamp"
#: Apexes this order published records in (recorded before writing, for the cleanup).
APEXES_KEY: Final = "acme_apexes"
#: Apexes whose include changed and whose refresh has not succeeded yet.
REFRESH_KEY: Final = "acme_refresh"

#: The profile asked for when the CA sets none (issue 4); servers without it use their default.
DEFAULT_PROFILE: Final = "tlsserver"
DNS_01: Final = "dns-01"


# --------------------------------------------------------------------------- which CA


def acme_ca_of(config: Config, ref: ServiceRef) -> CaInfo | None:
    """The ACME CA that signs ``ref``; None for self-signed and local-CA services."""
    svc = config.services[ref]
    if svc.self_signed:
        return None
    ca = config.cas.get(svc.signing_ca)
    return None if ca is None or ca.is_local else ca


def acme_ca(ws: Workspace, ref: ServiceRef) -> CaInfo | None:
    return acme_ca_of(ws.config, ref)


def is_acme(ws: Workspace, ref: ServiceRef) -> bool:
    return acme_ca(ws, ref) is not None


def require_issued(ws: Workspace, ref: ServiceRef) -> None:
    """For the worker's ``sign`` step of an ACME service: the ACME tasks before it must have
    put the certificate into the build.

    Raises:
      PermanentError: they did not (the chain was built when the CA was not an ACME CA).
    """
    stamp = building_stamp(ws, ref)
    if not _has_cert(ws, ref, stamp):
        raise PermanentError(
            f"{ref}: build {stamp} has no certificate, and an ACME CA signs only through the "
            "ACME steps; this renew chain has none (was signing_ca changed?): renew again"
        )


def _ca(ws: Workspace, ref: ServiceRef) -> CaInfo:
    """The service's ACME CA, checked to be one sslm can use.

    Raises:
      PermanentError: not an ACME service, or its ``ca_validation`` is not dns-01.
    """
    ca = acme_ca(ws, ref)
    svc = ws.service(ref)
    if ca is None:
        raise PermanentError(f"{ref}: signing_ca {svc.signing_ca!r} is not an ACME CA")
    validation = ca.ca_validation.strip().lower() or DNS_01
    if validation != DNS_01:
        raise PermanentError(
            f"ca-info.conf: [{svc.signing_ca}] ca_validation = {ca.ca_validation!r}: only "
            "dns-01 is supported by this version"
        )
    return ca


# --------------------------------------------------------------------------- helpers


def _has_cert(ws: Workspace, ref: ServiceRef, stamp: str) -> bool:
    """The build already holds its signed certificate: every ACME step is done."""
    cert = version_file(ws, ref, stamp, files.CERT)
    if not cert.is_file():
        return False
    key = load_private_key(version_file(ws, ref, stamp, files.PRIVKEY).read_bytes())
    return key_matches_cert(key, load_certs(cert.read_bytes())[0])


def _csr_pem(ws: Workspace, ref: ServiceRef, stamp: str) -> bytes:
    path = version_file(ws, ref, stamp, files.CSR)
    if not path.is_file():
        raise StoreError(f"{ref}: build {stamp} has no CSR yet")
    return path.read_bytes()


def _account_only(ws: Workspace, ref: ServiceRef, ca: CaInfo) -> Account:
    """The service's account under ``cb/``, registered on first use (no request after that)."""
    server = server_for(ca, test=ws.options.test)
    email = ws.service(ref).x509.email.strip() or None
    cb_dir = ensure_dir(ws.layout.cb_dir(ref), mode=0o700)
    return ensure_account(cb_dir, server, email=email, now=ws.clock())


def _account(ws: Workspace, ref: ServiceRef, ca: CaInfo) -> tuple[Account, acme.client.ClientV2]:
    """The service's account and a client that signs as it (one directory fetch)."""
    account = _account_only(ws, ref, ca)
    return account, connect_as(server_for(ca, test=ws.options.test), account)


def _recorded(ws: Workspace, ref: ServiceRef, stamp: str) -> OrderState | None:
    state = load_state(ws.layout, ref)
    raw = state.extra.get(ORDER_KEY)
    if raw is None or state.extra.get(ORDER_STAMP_KEY) != stamp:
        return None
    return OrderState.from_json(raw)


def _current(ws: Workspace, ref: ServiceRef, stamp: str) -> OrderState:
    order = _recorded(ws, ref, stamp)
    if order is None:
        raise StoreError(f"{ref}: build {stamp} has no ACME order recorded (run the order step)")
    return order


def _save(ws: Workspace, ref: ServiceRef, stamp: str, order: OrderState) -> None:
    state = load_state(ws.layout, ref)
    state.extra[ORDER_KEY] = order.to_json()
    state.extra[ORDER_STAMP_KEY] = stamp
    save_state(ws.layout, ref, state, now=ws.clock())


def order_id(order: OrderState) -> str:
    """The owner tag of this order's TXT records: a short hash of the order URL."""
    return hashlib.sha256(order.url.encode()).hexdigest()[:16]


def apex_of(ws: Workspace, ref: ServiceRef, name: str) -> str:
    """The zone a name's challenge record goes into: the longest suffix among the configured
    groups, the non-default ``[[dns_primary]]`` domains and the service's group.

    Raises:
      ConfigError: the name is in none of them (its record would be out of every zone).
    """
    host = name.rstrip(".").lower().removeprefix("*.")
    zones = {g.domain.strip().rstrip(".").lower() for g in ws.config.main.groups}
    zones |= {
        p.domain.strip().rstrip(".").lower()
        for p in ws.config.main.dns_primary
        if p.domain.strip().lower() not in DEFAULT_DOMAINS
    }
    zones.discard(CA_GROUP)
    zones.add(ref.group)
    found = [z for z in zones if z and (host == z or host.endswith(f".{z}"))]
    if not found:
        where = ws.config.conf_dir / MAIN_FILE
        raise ConfigError(
            where,
            "dns_primary",
            None,
            f"no zone for {name!r} (of {ref}): add a [[dns_primary]] entry with its domain",
        )
    return max(found, key=len)


def _challenges(
    ws: Workspace, ref: ServiceRef, order: OrderState, account: Account
) -> dict[str, list[ChallengeToPublish]]:
    """The dns-01 records still needed, by apex."""
    by_apex: dict[str, list[ChallengeToPublish]] = defaultdict(list)
    for chall in orders.challenges_for(order, DNS_01, account.key):
        by_apex[apex_of(ws, ref, chall.identifier)].append(chall)
    return dict(by_apex)


def _locker(ws: Workspace) -> Locker:
    """The workers' shared locker, or (in-process) file locks in the store."""
    if ws.locker is not None:
        return ws.locker
    return FileLocker(ensure_dir(ws.layout.certs_dir, mode=files.DIR_MODE_GROUP))


def _challenge_file(ws: Workspace) -> ChallengeFile:
    dns = ws.config.main.dns
    if dns is None or not dns.acme_dir:
        where = ws.config.conf_dir / MAIN_FILE
        raise ConfigError(where, "dns.acme_dir", None, "dns-01 needs a [dns] acme_dir")
    dirs: list[Path] = [ws.config.resolve(d) for d in dns.acme_dir]
    return ChallengeFile(layout=ws.layout, acme_dirs=dirs, locker=_locker(ws))


def _refresh_recorded(ws: Workspace, ref: ServiceRef, changed: list[str]) -> None:
    """Refresh ``changed`` plus any apex whose earlier refresh failed; then clear the mark."""
    state = load_state(ws.layout, ref)
    pending = sorted(set(state.extra.get(REFRESH_KEY, [])) | set(changed))
    if not pending:
        return
    state.extra[REFRESH_KEY] = pending
    save_state(ws.layout, ref, state, now=ws.clock())
    refresh_zones(ws.config, pending)
    log.info("%s: DNS refreshed for %s", ref, ", ".join(pending))
    state = load_state(ws.layout, ref)
    state.extra.pop(REFRESH_KEY, None)
    save_state(ws.layout, ref, state, now=ws.clock())


def _withdraw(ws: Workspace, ref: ServiceRef, order: OrderState | None) -> None:
    """Remove this order's records from every apex it published in, refresh, drop the record."""
    state = load_state(ws.layout, ref)
    apexes = list(state.extra.get(APEXES_KEY, []))
    changed: list[str] = []
    if order is not None and apexes:
        challenge_file = _challenge_file(ws)
        tag = order_id(order)
        changed = [apex for apex in apexes if challenge_file.remove(apex, order_id=tag)]
    _refresh_recorded(ws, ref, changed)
    state = load_state(ws.layout, ref)
    for key in (ORDER_KEY, ORDER_STAMP_KEY, APEXES_KEY):
        state.extra.pop(key, None)
    save_state(ws.layout, ref, state, now=ws.clock())


def _abandon(ws: Workspace, ref: ServiceRef, order: OrderState | None, err: SslmError) -> None:
    """The order failed: withdraw its records (best effort) before the error goes on."""
    log.warning("%s: ACME order failed: %s", ref, err)
    try:
        _withdraw(ws, ref, order)
    except SslmError as cleanup:
        log.warning("%s: withdrawing the failed order's records: %s", ref, cleanup)


# --------------------------------------------------------------------------- the steps


def order(ws: Workspace, ref: ServiceRef) -> None:
    """Step (a): the account, then the order for the build's CSR, recorded at once.

    Idempotent: a recorded order of this build is resumed (read back), never ordered again.

    Raises:
      OrderFailed: the recorded order is invalid (its records are withdrawn and the record
        dropped, so the next run orders anew); likewise an AcmePermanentError for a recorded
        order the CA no longer knows.
      AcmeTransientError / AcmePermanentError: see ``orders.resume_or_create``.
    """
    stamp = building_stamp(ws, ref)
    if _has_cert(ws, ref, stamp):
        return
    ca = _ca(ws, ref)
    _, client = _account(ws, ref, ca)
    stored = _recorded(ws, ref, stamp)
    profile = ca.ca_preferred_acme_profile or DEFAULT_PROFILE
    try:
        current = orders.resume_or_create(
            client, stored, _csr_pem(ws, ref, stamp), profile=profile, replaces=None
        )
    except AcmePermanentError as err:
        # An invalid order, or one the CA no longer knows (expired, purged) or that is for
        # other names: it can never finish, so the next run must order anew.
        if stored is not None:
            _abandon(ws, ref, stored, err)
        raise
    _save(ws, ref, stamp, current)
    log.info("%s: ACME order %s is %s", ref, current.url, current.status)


def publish(ws: Workspace, ref: ServiceRef) -> None:
    """Step (b): this order's TXT records into each apex's include, then one refresh of the
    apexes that changed. Idempotent: records present are not added again."""
    stamp = building_stamp(ws, ref)
    if _has_cert(ws, ref, stamp):
        return
    ca = _ca(ws, ref)
    current = _current(ws, ref, stamp)
    account = _account_only(ws, ref, ca)
    by_apex = _challenges(ws, ref, current, account)
    state = load_state(ws.layout, ref)
    state.extra[APEXES_KEY] = sorted(set(state.extra.get(APEXES_KEY, [])) | set(by_apex))
    save_state(ws.layout, ref, state, now=ws.clock())
    challenge_file = _challenge_file(ws)
    tag = order_id(current)
    changed = [
        apex
        for apex, challs in sorted(by_apex.items())
        if challenge_file.add(apex, [(c.identifier, c.value) for c in challs], order_id=tag)
    ]
    log.info("%s: dns-01 records published in %s", ref, ", ".join(sorted(by_apex)) or "none")
    _refresh_recorded(ws, ref, changed)


def propagated(ws: Workspace, ref: ServiceRef) -> tuple[bool, str]:
    """Step (c), a predicate: one pass over the name servers of every apex.

    True when each apex's primary serves every TXT value and every NS of the apex (and each
    ``dns_xtra_ns``) serves the primary's serial or newer. The text names the laggards.

    Raises:
      DnsNoAnswer (transient): a primary did not answer.
      DnsAnswerError / ConfigError (permanent): a primary refused, or no ``[[dns_primary]]``.
    """
    stamp = building_stamp(ws, ref)
    if _has_cert(ws, ref, stamp):
        return True, "certificate already issued"
    account = _account_only(ws, ref, _ca(ws, ref))
    by_apex = _challenges(ws, ref, _current(ws, ref, stamp), account)
    extra = extra_nameservers(ws.config)
    lagging: list[str] = []
    served: list[str] = []
    for apex, challs in sorted(by_apex.items()):
        primary = primary_for(ws.config, apex)
        for result in (
            check_txt(primary, [(c.name, c.value) for c in challs]),
            check_serial(apex, primary, extra=extra),
        ):
            (served if result.ok else lagging).append(result.summary())
    if lagging:
        return False, "; ".join(lagging)
    return True, "; ".join(served) or "nothing to publish"


def answer(ws: Workspace, ref: ServiceRef) -> None:
    """Step (d): tell the CA every pending challenge is published. Idempotent."""
    stamp = building_stamp(ws, ref)
    if _has_cert(ws, ref, stamp):
        return
    account, client = _account(ws, ref, _ca(ws, ref))
    for challs in _challenges(ws, ref, _current(ws, ref, stamp), account).values():
        for chall in challs:
            orders.answer(client, chall.url)


def validated(ws: Workspace, ref: ServiceRef) -> tuple[bool, str]:
    """Step (e), a predicate: one poll of the authorizations that are not valid yet.

    Raises:
      OrderFailed: an authorization is invalid; this order's records are withdrawn first.
      AcmeTransientError: the CA is unreachable or failing.
    """
    stamp = building_stamp(ws, ref)
    if _has_cert(ws, ref, stamp):
        return True, "certificate already issued"
    _, client = _account(ws, ref, _ca(ws, ref))
    current = _current(ws, ref, stamp)
    try:
        polled = orders.authorization_states(client, current)
    except OrderFailed as err:
        _abandon(ws, ref, current, err)
        raise
    _save(ws, ref, stamp, polled)
    valid = sum(1 for authz in polled.authorizations if authz.status == orders.VALID)
    pending = [authz.identifier for authz in polled.authorizations if authz.status != orders.VALID]
    detail = f"{valid} of {len(polled.authorizations)} authorizations valid"
    return polled.all_valid, detail + (f"; pending: {', '.join(pending)}" if pending else "")


def finalize(ws: Workspace, ref: ServiceRef) -> tuple[bool, str]:
    """Step (f), a predicate: finalize, and once issued write ``cert.pem`` and ``chain.pem``
    into the build (as the local-CA sign does), then withdraw this order's records.

    Idempotent: a finalized order is not finalized again; a build that holds its certificate
    only finishes the cleanup.

    Raises:
      OrderFailed: the order became invalid (records withdrawn first).
      AcmeTransientError: the CA is unreachable, or the order is not ready yet.
      AcmePermanentError: the CA rejected the CSR.
    """
    stamp = building_stamp(ws, ref)
    if _has_cert(ws, ref, stamp):
        _withdraw(ws, ref, _recorded(ws, ref, stamp))
        return True, "certificate already issued"
    ca = _ca(ws, ref)
    _, client = _account(ws, ref, ca)
    current = _current(ws, ref, stamp)
    try:
        current = orders.finalize(client, current, _csr_pem(ws, ref, stamp))
        _save(ws, ref, stamp, current)
        if current.status == orders.PROCESSING:
            return False, f"order {current.url} is being issued"
        cert_pem, chain_pem = orders.fetch_certificate(
            client, current, preferred_chain=ca.ca_preferred_chain or None
        )
    except OrderFailed as err:
        _abandon(ws, ref, current, err)
        raise
    write_atomic(version_file(ws, ref, stamp, files.CHAIN), chain_pem, mode=files.PUBLIC_MODE)
    write_atomic(version_file(ws, ref, stamp, files.CERT), cert_pem, mode=files.PUBLIC_MODE)
    log.info("%s: certificate of order %s is in build %s", ref, current.url, stamp)
    _withdraw(ws, ref, current)
    return True, f"issued by order {current.url}"
