"""The ``sign`` of a build whose CA speaks ACME (dns-01 or http-01), as one-shot steps over
one order.

The steps follow RFC 8555 in order; the order they run in is stated once, in
:data:`sslm_tasks.workflows.ACME_SIGN_STEPS`:

1. :func:`order`: the service's account (``cb/``, created on first use), then the order for the
   build's CSR, created once and recorded in ``ServiceState.extra["acme_order"]`` at once.
2. :func:`publish`: dns-01: the TXT records in ``acme-challenge.<apex>`` of every apex the
   names fall in, counted as changes of those zones (the refresh is :func:`propagated`'s).
   http-01: the token files on every host of ``[web] servers`` (:mod:`sslm_tasks.deploy.webroot`).
3. :func:`propagated`: dns-01: ``[dns] restart_cmd --serial_bump`` for the zones no refresh
   has carried the records into yet, then one pass: does the primary serve every TXT value,
   and every NS (and ``dns_xtra_ns``) the serial the primary served with them? http-01: does
   every web server hold every token file? A "ready?" predicate: the caller asks again.
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
The challenge type comes from ``ca_validation``, by its prefix as upstream: ``http…`` is
http-01, ``dns…`` (or nothing) dns-01. What was published is recorded before it is written
(:data:`APEXES_KEY`, :data:`WEB_TOKENS_KEY`), and the cleanup removes what the record says, so
a killed run's tokens and records are still found after the configuration changed.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Final

import acme.client

from sslm_tasks.acme import orders
from sslm_tasks.acme.accounts import Account, connect_as, ensure_account
from sslm_tasks.acme.directory import server_for
from sslm_tasks.acme.network import AcmePermanentError
from sslm_tasks.acme.orders import ChallengeKind, ChallengeToPublish, OrderFailed, OrderState
from sslm_tasks.config.load import CA_FILE, MAIN_FILE, acme_ca_of
from sslm_tasks.config.models import CA_GROUP, CaInfo
from sslm_tasks.config.settings import load_settings
from sslm_tasks.crypto.inspect import key_matches_cert, load_certs
from sslm_tasks.crypto.keys import load_private_key
from sslm_tasks.deploy.transport import transport_for
from sslm_tasks.deploy.webroot import TokenFile, WebRoot
from sslm_tasks.dns.challenges import ChallengeFile
from sslm_tasks.dns.lookup import DEFAULT_DOMAINS, extra_nameservers, primary_for
from sslm_tasks.dns.propagation import SerialTarget, check_serial, check_txt, serial_target
from sslm_tasks.errors import ConfigError, LockBusy, PermanentError, SslmError, StoreError
from sslm_tasks.lifecycle import acme_timing
from sslm_tasks.lifecycle.build import building_stamp, version_file
from sslm_tasks.lifecycle.workspace import Workspace
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
#: When this order's records were last counted as changes of their zones (ISO time): the
#: re-push clock.
PUSHED_KEY: Final = "acme_pushed"
#: A primary that still lacks this order's records this long after they were pushed gets the
#: zone refreshed again: a reload the name server dropped (one that came while it was still loading
#: or signing the previous one, seen with BIND's inline signing under bursts) would otherwise
#: leave the order waiting for a refresh nobody sends, until its bound.
REPUSH_AFTER_S: Final = 10.0
#: Per apex, the SOA serial (and NS set) the primary served once it served this order's
#: records: what every NS must reach (``dns.propagation.SerialTarget``).
SERIALS_KEY: Final = "acme_serials"
#: Per apex, the zone's change count once this order's records were counted
#: (``ZoneRefresher.note_change``): a refresh that covered it carried them, whatever other
#: changes came after.
TICKETS_KEY: Final = "acme_tickets"
#: http-01 token files this service wrote, ``{host: [path, ...]}`` (recorded before writing).
WEB_TOKENS_KEY: Final = "acme_web_tokens"

#: The profile asked for when the CA sets none (issue 4); servers without it use their default.
DEFAULT_PROFILE: Final = "tlsserver"
DNS_01: Final = "dns-01"
HTTP_01: Final = "http-01"


# --------------------------------------------------------------------------- which CA


def acme_ca(ws: Workspace, ref: ServiceRef) -> CaInfo | None:
    return acme_ca_of(ws.config, ref)


def is_acme(ws: Workspace, ref: ServiceRef) -> bool:
    return acme_ca(ws, ref) is not None


def validates_over_dns(ws: Workspace, ref: ServiceRef) -> bool:
    """Whether the service's CA validates its names over DNS (dns-01); False for http-01 and
    for a service no ACME CA signs.

    Raises:
      ConfigError: the CA's ``ca_validation`` names no known type.
    """
    ca = acme_ca(ws, ref)
    return ca is not None and _kind(ws, ref, ca) == DNS_01


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


def challenge_kind(ca_name: str, ca: CaInfo, *, source: Path) -> ChallengeKind:
    """The challenge type a CA's ``ca_validation`` asks for.

    Only the prefix counts, as upstream: ``http…`` is http-01, ``dns…`` dns-01, and an empty
    value dns-01 (what sslm did before http-01 existed). So a future ``dns-persist-01`` would
    be taken for dns-01, exactly as upstream would take it.

    Raises:
      ConfigError: the value starts with neither (``source`` is the ca-info.conf it is in).
    """
    value = ca.ca_validation.strip().lower()
    if value.startswith("http"):
        return HTTP_01
    if not value or value.startswith("dns"):
        return DNS_01
    raise ConfigError(
        source,
        f"{ca_name}.ca_validation",
        ca.ca_validation,
        "must start with 'http' (http-01) or 'dns' (dns-01)",
    )


def _ca(ws: Workspace, ref: ServiceRef) -> CaInfo:
    """The service's ACME CA, checked to be one sslm can use for this service.

    Every step starts here, the order included, so a setup that cannot validate fails before
    anything is ordered (a failed authorization counts against the CA's rate limits).

    Raises:
      PermanentError: not an ACME service.
      ConfigError: ``ca_validation`` names no known type; or http-01 without ``[web]
        server_dir`` or ``servers``, or for a wildcard name (see :func:`_web_roots`).
    """
    ca = acme_ca(ws, ref)
    svc = ws.service(ref)
    if ca is None:
        raise PermanentError(f"{ref}: signing_ca {svc.signing_ca!r} is not an ACME CA")
    if _kind(ws, ref, ca) == HTTP_01:
        _web_roots(ws, ref)
        _refuse_wildcards(ws, ref)
    return ca


def _kind(ws: Workspace, ref: ServiceRef, ca: CaInfo) -> ChallengeKind:
    name = ws.service(ref).signing_ca
    return challenge_kind(name, ca, source=ws.config.conf_dir / CA_FILE)


def _web_roots(ws: Workspace, ref: ServiceRef) -> tuple[PurePosixPath, list[str]]:
    """``[web] server_dir`` and ``servers``: where the http-01 tokens of ``ref`` go.

    Upstream wrote nothing, without a word, when ``servers`` was empty; here both are required.

    Raises:
      ConfigError: ``server_dir`` is missing or not absolute (every server gets the tokens at
        the same path, so it cannot be relative to this host's topdir), or ``servers`` is empty.
    """
    where = ws.config.conf_dir / MAIN_FILE
    web = ws.config.main.web
    server_dir = (web.server_dir or "").strip() if web is not None else ""
    if web is None or not server_dir:
        raise ConfigError(
            where,
            "web.server_dir",
            None,
            f"http-01 (the CA of {ref}) needs the web servers' document root for ACME tokens",
        )
    if not PurePosixPath(server_dir).is_absolute():
        raise ConfigError(
            where,
            "web.server_dir",
            server_dir,
            "must be an absolute path: every web server gets the http-01 tokens at this path",
        )
    if not web.servers:
        raise ConfigError(
            where,
            "web.servers",
            web.servers,
            f"http-01 (the CA of {ref}) needs at least one web server to put the tokens on",
        )
    return PurePosixPath(server_dir), list(web.servers)


def _refuse_wildcards(ws: Workspace, ref: ServiceRef) -> None:
    """http-01 cannot prove a wildcard: the Baseline Requirements forbid it, so CAs (Let's
    Encrypt, Pebble) offer only dns-01 for one; refused here rather than as a failed order.

    Raises:
      ConfigError: the service names ``*.<domain>``.
    """
    x509 = ws.service(ref).x509
    for key, names in (("X509.CN", [x509.cn]), ("X509.sans", x509.sans)):
        wild = next((name for name in names if name.startswith("*.")), None)
        if wild is not None:
            raise ConfigError(
                ws.config.service_file(ref),
                key,
                wild,
                f"a wildcard needs dns-01, but signing_ca {ws.service(ref).signing_ca!r} "
                "validates with http-01",
            )


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
    server = server_for(ca, test=ws.options.acme_test_server)
    email = ws.service(ref).x509.email.strip() or None
    cb_dir = ensure_dir(ws.layout.cb_dir(ref), mode=0o700)
    return ensure_account(cb_dir, server, email=email, now=ws.clock())


def _account(ws: Workspace, ref: ServiceRef, ca: CaInfo) -> tuple[Account, acme.client.ClientV2]:
    """The service's account and a client that signs as it (one directory fetch)."""
    account = _account_only(ws, ref, ca)
    return account, connect_as(server_for(ca, test=ws.options.acme_test_server), account)


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
    """Record ``order`` for build ``stamp``; a record that says so already is not rewritten."""
    state = load_state(ws.layout, ref)
    record = order.to_json()
    if state.extra.get(ORDER_KEY) == record and state.extra.get(ORDER_STAMP_KEY) == stamp:
        return
    state.extra[ORDER_KEY] = record
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


def _challenge_file(ws: Workspace) -> ChallengeFile:
    dns = ws.config.main.dns
    if dns is None or not dns.acme_dir:
        where = ws.config.conf_dir / MAIN_FILE
        raise ConfigError(where, "dns.acme_dir", None, "dns-01 needs a [dns] acme_dir")
    dirs: list[Path] = [ws.config.resolve(d) for d in dns.acme_dir]
    return ChallengeFile(layout=ws.layout, acme_dirs=dirs, locker=ws.store_locker())


def _refresh_changed(
    ws: Workspace, ref: ServiceRef, changed: list[str], zones: list[str], *, wait: bool = True
) -> None:
    """Count the changes to the zones ``changed``, then refresh those of ``zones`` still
    pending: orders of one zone running at once share a refresh (see ``dns.refresh``). A failed
    refresh leaves its zones pending, so a later refresh, this order's retry included, covers
    it. Without ``wait``, a refresh already running leaves the zones pending for
    :func:`propagated`, which refreshes what is still pending before it looks."""
    refresher = ws.zone_refresher()
    for apex in changed:
        refresher.note_change(apex)
    try:
        refreshed = refresher.refresh(zones, wait=wait)
    except LockBusy:
        if wait:
            raise
        log.info("%s: a refresh of %s is running; left for the next look", ref, ", ".join(zones))
        return
    if refreshed:
        log.info("%s: DNS refreshed for %s", ref, ", ".join(refreshed))


def _withdraw(
    ws: Workspace, ref: ServiceRef, order: OrderState | None, *, refresh: bool = True
) -> None:
    """Remove this order's token files from the web servers and its records from every apex
    it published in, refresh (unless ``refresh`` is False), drop the record.

    After an issued certificate the refresh waits (``refresh=False``): records nobody asks for
    any more do no harm for a few seconds, and the refresh that follows the run (the
    in-process run's end, the workers' debounced ``dns_refresh_pending``) covers them together
    with the TLSA changes of the same renewal, instead of one more refresh per order."""
    _remove_tokens(ws, ref)
    state = load_state(ws.layout, ref)
    apexes = list(state.extra.get(APEXES_KEY, []))
    changed: list[str] = []
    if order is not None and apexes:
        challenge_file = _challenge_file(ws)
        tag = order_id(order)
        changed = [apex for apex in apexes if challenge_file.remove(apex, order_id=tag)]
    _refresh_changed(ws, ref, changed, apexes if refresh else [])
    state = load_state(ws.layout, ref)
    for key in (ORDER_KEY, ORDER_STAMP_KEY, APEXES_KEY, PUSHED_KEY, SERIALS_KEY, TICKETS_KEY):
        state.extra.pop(key, None)
    save_state(ws.layout, ref, state, now=ws.clock())


def _token_files(
    ws: Workspace, ref: ServiceRef, challenges: list[ChallengeToPublish]
) -> list[TokenFile]:
    """The http-01 token files for ``challenges``, all under the group's (the apex's) web root
    whatever the name, as upstream.

    Raises:
      ConfigError: see :func:`_web_roots`.
      PermanentError: the CA sent a token that is not base64url.
    """
    server_dir, _ = _web_roots(ws, ref)
    try:
        return [TokenFile(server_dir, ref.group.lower(), c.token, c.value) for c in challenges]
    except ValueError as err:
        raise PermanentError(f"{ref}: {err}") from err


def _web_root(host: str) -> WebRoot:
    """One web server, through the deploy's transport: local for this host, ssh otherwise."""
    return WebRoot(host, transport_for(host, load_settings()))


def _publish_tokens(ws: Workspace, ref: ServiceRef, challenges: list[ChallengeToPublish]) -> None:
    """Record, then write, the token files on every web server. Idempotent."""
    tokens = _token_files(ws, ref, challenges)
    _, hosts = _web_roots(ws, ref)
    if tokens:
        paths = {str(token.path) for token in tokens}
        state = load_state(ws.layout, ref)
        recorded = dict(state.extra.get(WEB_TOKENS_KEY, {}))
        for host in hosts:
            recorded[host] = sorted(set(recorded.get(host, [])) | paths)
        state.extra[WEB_TOKENS_KEY] = recorded
        save_state(ws.layout, ref, state, now=ws.clock())
        for host in hosts:
            _web_root(host).put(tokens)
    names = ", ".join(c.identifier for c in challenges) or "no name"
    log.info("%s: http-01 tokens for %s on %s", ref, names, ", ".join(hosts))


def _tokens_served(
    ws: Workspace, ref: ServiceRef, challenges: list[ChallengeToPublish]
) -> tuple[bool, str]:
    """Whether every web server holds every token file with the right content.

    The files are read back through the transport that wrote them, not fetched over HTTP:
    the names may resolve differently here than for the CA (split horizon, internal hosts),
    and the CA's own fetch is the real test. This catches what the write cannot: a web root
    that another process cleans, or that a server no longer holds.
    """
    tokens = _token_files(ws, ref, challenges)
    if not tokens:
        return True, "nothing to publish"
    _, hosts = _web_roots(ws, ref)
    lagging = [
        f"{host} lacks {', '.join(missing)}"
        for host in hosts
        if (missing := _web_root(host).missing(tokens))
    ]
    if lagging:
        return False, "; ".join(lagging)
    return True, f"{len(tokens)} http-01 token files on {', '.join(hosts)}"


def _remove_tokens(ws: Workspace, ref: ServiceRef) -> None:
    """Remove every recorded token file from the host it was written to (the record, not the
    configuration, says where: a server may have left ``[web] servers`` since). Hosts done are
    dropped from the record, so a retry asks only those that failed.

    Raises:
      SslmError: the first host that failed (the others are logged); see :class:`WebRoot`.
    """
    state = load_state(ws.layout, ref)
    recorded: dict[str, list[str]] = dict(state.extra.get(WEB_TOKENS_KEY, {}))
    if not recorded:
        return
    left: dict[str, list[str]] = {}
    errors: list[SslmError] = []
    for host, paths in sorted(recorded.items()):
        try:
            _web_root(host).remove(paths)
        except SslmError as err:
            log.warning("%s: %s", ref, err)
            left[host] = paths
            errors.append(err)
    state = load_state(ws.layout, ref)
    if left:
        state.extra[WEB_TOKENS_KEY] = left
    else:
        state.extra.pop(WEB_TOKENS_KEY, None)
    save_state(ws.layout, ref, state, now=ws.clock())
    if errors:
        raise errors[0]
    log.info("%s: http-01 tokens removed from %s", ref, ", ".join(sorted(recorded)))


def withdraw(ws: Workspace, ref: ServiceRef) -> None:
    """Withdraw whatever the build in progress published for its order, and drop the record:
    the end of a dry run, which never reaches :func:`finalize`. Nothing to do without a build."""
    state = load_state(ws.layout, ref)
    if state.stamp is not None:
        _withdraw(ws, ref, _recorded(ws, ref, state.stamp))


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
            client,
            stored,
            _csr_pem(ws, ref, stamp),
            profile=profile,
            replaces=acme_timing.remembered_replaces(ws, ref),
            record=lambda created: _save(ws, ref, stamp, created),
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
    """Step (b): this order's TXT records into each apex's include, counted as changes of
    those zones. Idempotent: records present are not added again. http-01: the token files on
    every ``[web] servers`` host instead, recorded (:data:`WEB_TOKENS_KEY`) before they are
    written.

    The refresh is left to the first look of :func:`propagated`, which comes next: on workers
    it queues behind the other orders' steps, so the orders publishing at the same time share
    one refresh. Every extra refresh costs more than its own run: a secondary notified again
    within half a second of a transfer waits out that half second (BIND, measured in the
    test lab), so a burst of refreshes delays every record in it."""
    stamp = building_stamp(ws, ref)
    if _has_cert(ws, ref, stamp):
        return
    ca = _ca(ws, ref)
    current = _current(ws, ref, stamp)
    account = _account_only(ws, ref, ca)
    if _kind(ws, ref, ca) == HTTP_01:
        _publish_tokens(ws, ref, orders.challenges_for(current, HTTP_01, account.key))
        return
    by_apex = _challenges(ws, ref, current, account)
    state = load_state(ws.layout, ref)
    state.extra[APEXES_KEY] = sorted(set(state.extra.get(APEXES_KEY, [])) | set(by_apex))
    save_state(ws.layout, ref, state, now=ws.clock())
    challenge_file = _challenge_file(ws)
    tag = order_id(current)
    for apex, challs in sorted(by_apex.items()):
        challenge_file.add(apex, [(c.identifier, c.value) for c in challs], order_id=tag)
    log.info("%s: dns-01 records published in %s", ref, ", ".join(sorted(by_apex)) or "none")
    # Every apex counts as changed, not only those whose file this call wrote: a run killed
    # between its write and its count would otherwise never get the zone refreshed.
    _push(ws, ref, sorted(by_apex), refresh=False)


def _push(ws: Workspace, ref: ServiceRef, zones: list[str], *, refresh: bool) -> None:
    """Count ``zones`` as changed and keep the tickets (:data:`TICKETS_KEY`) and the time
    (:data:`PUSHED_KEY`); with ``refresh``, refresh them unless a refresh is running."""
    refresher = ws.zone_refresher()
    tickets = {apex: refresher.note_change(apex) for apex in zones}
    if refresh:
        _refresh_changed(ws, ref, [], zones, wait=False)
    state = load_state(ws.layout, ref)
    state.extra[TICKETS_KEY] = {**state.extra.get(TICKETS_KEY, {}), **tickets}
    state.extra[PUSHED_KEY] = ws.clock().isoformat()
    save_state(ws.layout, ref, state, now=ws.clock())


def _repush_due(ws: Workspace, ref: ServiceRef) -> bool:
    raw = load_state(ws.layout, ref).extra.get(PUSHED_KEY)
    if not isinstance(raw, str):
        return True
    return (ws.clock() - datetime.fromisoformat(raw)).total_seconds() >= REPUSH_AFTER_S


def propagated(ws: Workspace, ref: ServiceRef) -> tuple[bool, str]:
    """Step (c), a predicate: one pass over the name servers of every apex.

    True when each apex's primary serves every TXT value and every NS of the apex (and each
    ``dns_xtra_ns``) serves the primary's serial or newer: the serial it served right after
    it was first seen serving the records, kept in :data:`SERIALS_KEY`, so the TXT records are
    asked for only until then. The text names the laggards.
    http-01: one read-back of the token files on every web server (see :func:`_tokens_served`).

    Raises:
      DnsNoAnswer (transient): a primary did not answer.
      DnsAnswerError / ConfigError (permanent): a primary refused, or no ``[[dns_primary]]``.
      TransientError / PermanentError: http-01: a web server was unreachable, or refused.
    """
    stamp = building_stamp(ws, ref)
    if _has_cert(ws, ref, stamp):
        return True, "certificate already issued"
    ca = _ca(ws, ref)
    account = _account_only(ws, ref, ca)
    current = _current(ws, ref, stamp)
    if _kind(ws, ref, ca) == HTTP_01:
        return _tokens_served(ws, ref, orders.challenges_for(current, HTTP_01, account.key))
    by_apex = _challenges(ws, ref, current, account)
    extras = load_state(ws.layout, ref).extra
    recorded, tickets = dict(extras.get(SERIALS_KEY, {})), extras.get(TICKETS_KEY, {})
    targets = dict(recorded)
    # Zones where no refresh has carried these records yet; whatever else is pending there
    # (another order's records, a finished one's withdrawal) is not this order's to refresh.
    refresher = ws.zone_refresher()
    pending = refresher.uncovered({a: tickets.get(a) for a in by_apex if a not in targets})
    if pending:
        # Published (publish only counts the change), or the re-push counted it again.
        try:
            refreshed = refresher.refresh(pending, wait=False)
        except LockBusy:
            return False, f"waiting for the running refresh of {', '.join(pending)}"
        if refreshed:
            log.info("%s: DNS refreshed for %s", ref, ", ".join(refreshed))
    extra = extra_nameservers(ws.config)
    lagging: list[str] = []
    served: list[str] = []
    unserved: list[str] = []
    for apex, challs in sorted(by_apex.items()):
        primary = primary_for(ws.config, apex)
        if apex not in targets:
            txt = check_txt(primary, [(c.name, c.value) for c in challs])
            (served if txt.ok else lagging).append(txt.summary())
            if not txt.ok:
                unserved.append(apex)
                continue
            # Asked after the records were seen, so this serial holds them.
            targets[apex] = serial_target(apex, primary).to_json()
        target = SerialTarget.from_json(targets[apex])
        result = check_serial(apex, primary, target=target, extra=extra)
        (served if result.ok else lagging).append(result.summary())
    if targets != recorded:
        state = load_state(ws.layout, ref)
        state.extra[SERIALS_KEY] = targets
        save_state(ws.layout, ref, state, now=ws.clock())
    if unserved and _repush_due(ws, ref):
        log.warning("%s: the primary lacks the records; refreshing %s again", ref, unserved)
        _push(ws, ref, unserved, refresh=True)
        lagging.append(f"refreshed {', '.join(unserved)} again")
    if lagging:
        return False, "; ".join(lagging)
    return True, "; ".join(served) or "nothing to publish"


def answer(ws: Workspace, ref: ServiceRef) -> None:
    """Step (d): tell the CA every pending challenge is published. Idempotent."""
    stamp = building_stamp(ws, ref)
    if _has_cert(ws, ref, stamp):
        return
    ca = _ca(ws, ref)
    account, client = _account(ws, ref, ca)
    current = _current(ws, ref, stamp)
    for chall in orders.challenges_for(current, _kind(ws, ref, ca), account.key):
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
      AcmeTransientError: the CA is unreachable, or the order is not ready yet, or still
        being issued.
      AcmePermanentError: the CA rejected the CSR.
    """
    stamp = building_stamp(ws, ref)
    if _has_cert(ws, ref, stamp):
        _withdraw(ws, ref, _recorded(ws, ref, stamp), refresh=False)
        return True, "certificate already issued"
    ca = _ca(ws, ref)
    _, client = _account(ws, ref, ca)
    current = _current(ws, ref, stamp)
    try:
        current = orders.finalize(client, current, _csr_pem(ws, ref, stamp))
        _save(ws, ref, stamp, current)
        # Straight on, even when the CA said "processing": one that issues within a round trip
        # (Pebble) then needs no retry, and "still being issued" is a not-yet like any other.
        cert_pem, chain_pem = orders.fetch_certificate(
            client, current, preferred_chain=ca.ca_preferred_chain or None
        )
    except OrderFailed as err:
        _abandon(ws, ref, current, err)
        raise
    write_atomic(version_file(ws, ref, stamp, files.CHAIN), chain_pem, mode=files.PUBLIC_MODE)
    write_atomic(version_file(ws, ref, stamp, files.CERT), cert_pem, mode=files.PUBLIC_MODE)
    log.info("%s: certificate of order %s is in build %s", ref, current.url, stamp)
    _withdraw(ws, ref, current, refresh=False)
    return True, f"issued by order {current.url}"
