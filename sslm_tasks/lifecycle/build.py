"""Building a new version of a service: decide, then key → CSR → signed cert → stored ``next``.

A build lives in its own ``db/<stamp>`` directory and is recorded in the service state
(phase ``renewing`` with that stamp) until it is complete; only then does ``next`` point at it.
So ``next`` always names a complete version, a crash leaves ``curr`` and ``next`` as they were,
and a rerun finds the recorded build and finishes it instead of starting again.

Each step is idempotent: it looks at what the version directory already holds, does its part
only if it is missing, and writes through the atomic writer. A Celery task redelivered after
its worker died therefore repeats nothing that was finished. Each file is fsynced before its
rename, but the version directory only once, when ``next`` is pointed at it
(``versions.point``): a name a power cut takes back is simply made again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sslm_tasks.config.load import signer_of
from sslm_tasks.config.models import CA_GROUP, ServiceConfig
from sslm_tasks.crypto.bundle import compose_outputs
from sslm_tasks.crypto.csr import SubjectSpec, build_csr, csr_to_pem, load_csr
from sslm_tasks.crypto.inspect import extension_value, key_matches_cert, load_certs, verify_chain
from sslm_tasks.crypto.keys import (
    PrivateKey,
    generate_private_key,
    load_private_key,
    private_key_to_pem,
    public_key_der,
)
from sslm_tasks.crypto.signing import SigningPolicy, self_sign, sign_with_ca
from sslm_tasks.errors import PermanentError, StoreError
from sslm_tasks.lifecycle import acme_timing, standby
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.current import (
    CertLoader,
    load_version_cert,
    once_each,
    renew_decision,
    version_file,
)
from sslm_tasks.lifecycle.record import Phase
from sslm_tasks.lifecycle.workspace import SignerMaterial
from sslm_tasks.renewal import RenewDecision
from sslm_tasks.store import layout as files
from sslm_tasks.store.atomic import ensure_dir, write_files_atomic
from sslm_tasks.store.layout import ServiceRef
from sslm_tasks.store.read import read_bytes
from sslm_tasks.store.versions import is_complete, new_version, point, read_link

#: Days a certificate lives when its signer's ``[CA]`` table does not say.
DEFAULT_SIGN_DAYS = 90.0


@dataclass(frozen=True)
class RenewCheck:
    """The outcome of the renew check: start (or resume) a build, or leave the service alone.

    ``stamp`` is the build to resume; None with ``build`` means a fresh build (and any build
    in progress is abandoned first: ``-f``, or its signing CA changed).
    """

    build: bool
    reason: str
    decision: RenewDecision | None = None
    stamp: str | None = None


def write_version(ctx: ServiceContext, stamp: str, contents: dict[str, tuple[bytes, int]]) -> None:
    """Write files of build ``stamp`` in one batch, each fsynced, renamed in ``contents``'s
    order; the directory is synced by ``point``, before ``next`` may lead there."""
    write_files_atomic(
        {version_file(ctx, stamp, name): data for name, data in contents.items()}, sync_dir=False
    )


def _signer_cert(ctx: ServiceContext, signer: ServiceRef) -> x509.Certificate | None:
    """The signing CA's ``curr`` certificate, parsed once per run for all the leaves it signs
    (a CA renewed in the run has a new stamp, so a new entry)."""
    stamp = read_link(ctx.layout, signer, "curr")
    if stamp is None:
        return None
    known = ctx.ws.ca_certs
    if (signer, stamp) not in known:
        known[signer, stamp] = load_version_cert(ctx.of(signer), "curr")
    return known[signer, stamp]


def _signer_changed(ctx: ServiceContext, load: CertLoader) -> str | None:
    """Why ``curr`` no longer chains to the local CA that signs the service, or None.

    The CA may have a new key (its subject key id is not ``curr``'s authority key id: only
    ``sslm-mgr dev -keys`` re-keys a CA) or a new subject (``curr``'s issuer name is not the
    CA's subject: a CA that upstream made gets sslm's subject at its first re-issue, and a
    certificate names its issuer by subject). Either way ``curr`` is due at once, so a CA
    renewal never orphans its leaves.
    """
    signer = signer_of(ctx.ws.config, ctx.ref)
    curr = load(ctx, "curr")
    if signer is None or curr is None:
        return None
    ca_cert = _signer_cert(ctx, signer)
    if ca_cert is None:
        return None
    if curr.issuer != ca_cert.subject:
        return "signing CA has a new subject"
    try:
        aki = curr.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if aki.key_identifier != ski.digest:
        return "signing CA has a new key (curr's authority key id is not its key id)"
    return None


def compromised(ctx: ServiceContext, which: files.LinkName) -> bool:
    """Whether the version ``which`` points at was revoked for ``keyCompromise``
    (``sslm-mgr revoke``): its key must never be used again."""
    found = ctx.record.revoked(ctx.link(which))
    return found is not None and found.reason == "keyCompromise"


def _key_compromised(ctx: ServiceContext) -> str | None:
    """Why a version with a compromised key must be replaced now, or None.

    A ``next`` that was revoked is replaced; a revoked ``curr`` too, unless a ``next`` with
    another key is waiting: that one replaces it at its roll, which follows the usual gate
    (for DANE, its TLSA records must be served first).
    """
    if compromised(ctx, "next"):
        return "next was revoked for keyCompromise: a new key"
    if not compromised(ctx, "curr"):
        return None
    curr, pending = load_version_cert(ctx, "curr"), load_version_cert(ctx, "next")
    if (
        curr is not None
        and pending is not None
        and public_key_der(pending.public_key()) != public_key_der(curr.public_key())
    ):
        return None
    return "curr was revoked for keyCompromise: a new key"


def in_progress(ctx: ServiceContext) -> str | None:
    """The stamp of the build in progress (renewing, or failed and to be resumed), if any."""
    record = ctx.record
    stamp = record.stamp
    building = record.phase in (Phase.RENEWING, Phase.FAILED) and stamp is not None
    if building and stamp is not None and ctx.layout.version_dir(ctx.ref, stamp).is_dir():
        return stamp
    return None


def _signer_stamp(ctx: ServiceContext) -> str | None:
    signer = signer_of(ctx.ws.config, ctx.ref)
    return None if signer is None else read_link(ctx.layout, signer, "curr")


def check_renew(ctx: ServiceContext, *, record: bool = True) -> RenewCheck:
    """Decide whether the service needs a new version.

    A build in progress is resumed, unless ``force`` asks for a fresh one or the local CA
    that signs it has a new ``curr`` since it started (its chain would be stale). A complete
    ``next`` waiting for its roll is kept unless ``force``: throwing it away (as upstream did)
    would spend a CA order and restart the DANE roll clock for nothing.

    For a service of an ACME CA (``acme_timing``), the CA's ARI window decides when it offers
    one, and after failed builds neither a new nor a resumed build starts before the backoff
    time (the CA's Retry-After first); ``force`` skips both. The only write is the ARI plan
    asked of the CA, and not with ``record=False`` (``-d``, the dry run).
    """
    stamp = in_progress(ctx)
    force = ctx.ws.options.force and not ctx.started_here()
    waiting = None if force else acme_timing.waiting(ctx)
    if ctx.started_here() and stamp is None:
        return RenewCheck(False, f"build {ctx.record.stamp} of this run is done")
    if stamp is not None:
        if force:
            return RenewCheck(True, f"forced: build {stamp} is replaced by a fresh one")
        if ctx.record.build_signer != _signer_stamp(ctx):
            return RenewCheck(True, f"signing CA changed since build {stamp} began: a fresh one")
        if waiting is not None:
            return RenewCheck(False, f"build {stamp} waits: {waiting}", stamp=stamp)
        return RenewCheck(True, f"resuming build {stamp}", stamp=stamp)
    load = once_each(load_version_cert)
    decision = renew_decision(ctx, load=load)
    _for_the_status(ctx, load(ctx, "curr"))
    if force:
        return RenewCheck(True, "forced", decision)
    due, reason = acme_timing.due(ctx, decision, record=record)
    key_compromised = _key_compromised(ctx)
    urgent = key_compromised or _signer_changed(ctx, load) or standby.switch_due(ctx)
    if not due and urgent is None:
        return RenewCheck(False, reason, decision)
    pending = ctx.link("next")
    if (
        key_compromised is None
        and pending is not None
        and is_complete(ctx.layout, ctx.ref, pending)
    ):
        return RenewCheck(False, f"next {pending} is waiting to be rolled", decision)
    if waiting is not None:
        return RenewCheck(False, waiting, decision)
    return RenewCheck(True, urgent or reason, decision)


def _for_the_status(ctx: ServiceContext, cert: x509.Certificate | None) -> None:
    """Keep ``cert``'s details for ``-s`` (:mod:`.cert_book`), when the run keeps a book: a
    certificate this step parsed anyway, a new ``next`` or a ``curr`` checked for renewal."""
    if ctx.ws.cert_book is not None and cert is not None:
        ctx.ws.cert_book.details(cert)


def signing_ca_curr(ctx: ServiceContext) -> tuple[ServiceRef, str] | None:
    """The local CA that signs the service and its ``curr`` stamp; None for a self-signed
    service or one signed by an ACME CA (whose sign is the ACME steps).

    Called before a build writes anything, so a service that cannot be signed leaves no trace.

    Raises:
      PermanentError: the local CA has no current certificate.
    """
    svc = ctx.service
    if svc.self_signed:
        return None
    signer = signer_of(ctx.ws.config, ctx.ref)
    if signer is None:
        return None
    stamp = read_link(ctx.layout, signer, "curr")
    if stamp is None or not is_complete(ctx.layout, signer, stamp):
        raise PermanentError(
            f"{ctx.ws.config.service_file(ctx.ref)}: signing_ca = {svc.signing_ca!r}: the CA has "
            f"no current certificate ({ctx.layout.link(signer, 'curr')}); renew and roll {signer} "
            "first"
        )
    return signer, stamp


def start_build(ctx: ServiceContext) -> str:
    """Create the version directory for a new build and record it; returns its stamp."""
    signing = signing_ca_curr(ctx)
    layout, ref = ctx.layout, ctx.ref
    ensure_dir(layout.group_dir(ref.group), mode=files.DIR_MODE_GROUP)
    ensure_dir(layout.service_dir(ref), mode=files.DIR_MODE_GROUP)
    ensure_dir(layout.db_dir(ref), mode=files.DIR_MODE_PRIVATE)
    stamp = new_version(layout, ref, now=ctx.now())
    record = ctx.record
    record.phase = Phase.RENEWING
    record.stamp = stamp
    record.build_signer = None if signing is None else signing[1]
    record.build_workflow = ctx.workflow or None
    record.last_error = None
    # Undone by a power cut, the build is only not resumed: its directory is left to clean.
    # Not held for the segment's end: a step delivered again after a kill resumes this build.
    ctx.save(sync_dir=False)
    return stamp


def is_building(ctx: ServiceContext, stamp: str) -> bool:
    """Whether ``stamp`` is still the build in progress (not finished, not replaced)."""
    return in_progress(ctx) == stamp


def building_stamp(ctx: ServiceContext) -> str:
    """The stamp of the build in progress; every step after :func:`start_build` needs one."""
    stamp = in_progress(ctx)
    if stamp is None:
        raise StoreError(
            f"{ctx.ref}: no build in progress (state {ctx.layout.state_file(ctx.ref)})"
        )
    return stamp


def _load_key(path: Path) -> PrivateKey:
    return load_private_key(read_bytes(path))


def make_key(ctx: ServiceContext) -> None:
    """The private key (0600 from its first byte).

    With ``reuse``, and always for a local CA that already has a key, the key of ``curr`` is
    carried over: re-keying a CA would silently orphan every certificate it signed, so a CA
    gets a new key only through ``sslm-mgr dev -keys`` (``-f`` renews it, with the same key),
    or after ``sslm-mgr revoke --reason keyCompromise``: a compromised key is never carried.
    A service with ``key_standby`` keeps ``curr``'s key too, until the standby key takes over
    (:mod:`.standby`: on schedule, or at once when ``curr``'s key was compromised).
    """
    stamp = building_stamp(ctx)
    if version_file(ctx, stamp, files.PRIVKEY).is_file():
        return
    curr_compromised = compromised(ctx, "curr")
    if ctx.ws.options.reuse:
        if curr_compromised:
            raise PermanentError(
                f"{ctx.ref}: --reuse asked for the key of curr, which was revoked for "
                "keyCompromise: renew without --reuse"
            )
        if not carry_key(ctx, stamp, ("curr",)):
            raise StoreError(f"{ctx.ref}: --reuse asked for the key of curr, but there is none")
        return
    if ctx.ref.group == CA_GROUP and not curr_compromised and carry_key(ctx, stamp, ("curr",)):
        return
    if ctx.service.key_standby:
        switch_to = standby.key_for_build(ctx, curr_compromised=curr_compromised)
        if switch_to is not None:
            write_version(
                ctx, stamp, {files.PRIVKEY: (private_key_to_pem(switch_to), files.KEY_MODE)}
            )
            return
        if not curr_compromised and carry_key(ctx, stamp, ("curr",)):
            return
    write_new_key(ctx, stamp)


def carry_key(ctx: ServiceContext, stamp: str, sources: tuple[files.LinkName, ...]) -> bool:
    """Copy the private key of the first of ``sources`` that has one into build ``stamp``.

    Returns False when none has a key. The copy is written 0600 like a new key (upstream's
    reuse copied it at the umask mode).
    """
    for which in sources:
        source_stamp = ctx.link(which)
        source = None if source_stamp is None else version_file(ctx, source_stamp, files.PRIVKEY)
        if source is not None and source.is_file():
            pem = private_key_to_pem(_load_key(source))
            write_version(ctx, stamp, {files.PRIVKEY: (pem, files.KEY_MODE)})
            return True
    return False


def write_new_key(ctx: ServiceContext, stamp: str) -> None:
    key = generate_private_key(ctx.service.keyopts.spec())
    write_version(ctx, stamp, {files.PRIVKEY: (private_key_to_pem(key), files.KEY_MODE)})


def _subject(svc: ServiceConfig) -> SubjectSpec:
    x = svc.x509
    return SubjectSpec(CN=x.cn, O=x.o, OU=x.ou, L=x.l, ST=x.st, C=x.c)


def make_csr(ctx: ServiceContext) -> None:
    """The CSR from the version's key and the service's X509 table."""
    stamp = building_stamp(ctx)
    target = version_file(ctx, stamp, files.CSR)
    key_path = version_file(ctx, stamp, files.PRIVKEY)
    if not key_path.is_file():
        raise StoreError(f"{ctx.ref}: build {stamp} has no private key yet")
    key = _load_key(key_path)
    if target.is_file() and load_csr(read_bytes(target)).public_key() == key.public_key():
        return
    svc = ctx.service
    csr = build_csr(key, _subject(svc), svc.x509.sans, is_ca=svc.is_ca)
    write_version(ctx, stamp, {files.CSR: (csr_to_pem(csr), files.PUBLIC_MODE)})


def _policy(signer: ServiceConfig, *, is_ca: bool, with_crl: bool) -> SigningPolicy:
    """The signer's ``[CA]`` policy; its ``crl_url`` only ``with_crl`` (a self-signed
    certificate names no CRL: no CRL can revoke its own issuer)."""
    ca_opts = signer.ca
    if ca_opts is None:
        return SigningPolicy(days=DEFAULT_SIGN_DAYS, is_ca=is_ca)
    return SigningPolicy(
        days=ca_opts.sign_end_days,
        digest=ca_opts.digest,
        is_ca=is_ca,
        crl_url=ca_opts.crl_url if with_crl else None,
    )


def has_cert(ctx: ServiceContext, stamp: str) -> bool:
    """Whether build ``stamp`` already holds its signed certificate, for its own key."""
    cert = version_file(ctx, stamp, files.CERT)
    if not cert.is_file():
        return False
    key = _load_key(version_file(ctx, stamp, files.PRIVKEY))
    return key_matches_cert(key, load_certs(read_bytes(cert))[0])


#: Extensions of a CA's path that bind the leaves below it (their names, purposes, policies):
#: such a leaf's path is judged whole, never against its CA alone (:func:`_problems`).
_LEAF_CONSTRAINTS: Final = (
    x509.NameConstraints,
    x509.ExtendedKeyUsage,
    x509.PolicyConstraints,
    x509.InhibitAnyPolicy,
)


def signer_material(ca: ServiceContext, stamp: str) -> SignerMaterial:
    """The key, certificate and fullchain of local CA version ``stamp``, read once per
    workspace: a version's files do not change once a link leads to it (a new key is a new
    version), and every leaf the CA signs in the run needs them."""
    found = ca.ws.signers.get((ca.ref, stamp))
    if found is None:
        cert = load_certs(read_bytes(version_file(ca, stamp, files.CERT)))[0]
        fullchain_pem = read_bytes(version_file(ca, stamp, files.FULLCHAIN))
        path = load_certs(fullchain_pem)
        found = SignerMaterial(
            key=_load_key(version_file(ca, stamp, files.PRIVKEY)),
            cert=cert,
            fullchain_pem=fullchain_pem,
            problems=tuple(verify_chain(cert, path, now=ca.now())),
            constrained=any(
                extension_value(link.extensions, kind) is not None
                for link in path
                for kind in _LEAF_CONSTRAINTS
            ),
        )
        ca.ws.signers[(ca.ref, stamp)] = found
    return found


def sign(ctx: ServiceContext) -> None:
    """The signed certificate and its chain, by a local CA or the service itself.

    Self-signed services sign with their own key and ``[CA]`` policy; local-CA services with the
    CA's ``curr`` key and the CA's policy (validity, digest).
    """
    stamp = building_stamp(ctx)
    if has_cert(ctx, stamp):
        return
    csr_path = version_file(ctx, stamp, files.CSR)
    if not csr_path.is_file():
        raise StoreError(f"{ctx.ref}: build {stamp} has no CSR yet")
    csr = load_csr(read_bytes(csr_path))
    svc = ctx.service
    now = ctx.now()
    chain_pem: bytes | None = None
    signing = signing_ca_curr(ctx)
    if signing is None and not svc.self_signed:
        raise PermanentError(
            f"{ctx.ref}: signing_ca = {svc.signing_ca!r} is an ACME CA: its certificate comes "
            "from the ACME steps, not from a local sign"
        )
    if signing is None:
        key = _load_key(version_file(ctx, stamp, files.PRIVKEY))
        cert = self_sign(csr, key, _policy(svc, is_ca=svc.is_ca, with_crl=False), now=now)
    else:
        ca = ctx.of(signing[0])
        material = signer_material(ca, signing[1])
        policy = _policy(ca.service, is_ca=svc.is_ca, with_crl=True)
        cert = sign_with_ca(csr, material.key, material.cert, policy, now=now)
        chain_pem = material.fullchain_pem
    cert_pem = cert.public_bytes(Encoding.PEM)
    # The chain before the certificate (dicts keep their order, and so do the renames): a
    # certificate present means its build has signed (has_cert).
    write_version(
        ctx,
        stamp,
        {
            files.CHAIN: (cert_pem if chain_pem is None else chain_pem, files.PUBLIC_MODE),
            files.CERT: (cert_pem, files.PUBLIC_MODE),
        },
    )


def store(ctx: ServiceContext) -> str:
    """Fullchain and bundle, a last verification, then ``next`` → the new version.

    Returns the stamp now in ``next``. The chain is path-validated before it is published, so
    a broken chain (upstream's AKI bug) can never reach ``next``.
    """
    stamp = building_stamp(ctx)
    key_pem = read_bytes(version_file(ctx, stamp, files.PRIVKEY))
    cert_pem = read_bytes(version_file(ctx, stamp, files.CERT))
    chain_pem = read_bytes(version_file(ctx, stamp, files.CHAIN))
    svc = ctx.service
    outputs = compose_outputs(
        cert_pem=cert_pem, chain_pem=None if svc.self_signed else chain_pem, key_pem=key_pem
    )
    cert = load_certs(cert_pem)[0]
    # An ACME CA sends its chain without the root (RFC 8555 §7.4.2: the root is in the
    # clients' trust stores, not in the chain), so that chain ends in an intermediate whose
    # issuer we do not have. Everything in it is still checked (names, key ids, signatures,
    # validity, CA flags); only the last link, to a root we were never given, cannot be.
    # Local CAs keep the full check up to their self-signed root.
    acme_signed = not svc.self_signed and signer_of(ctx.ws.config, ctx.ref) is None
    problems = _problems(ctx, cert, chain_pem, outputs.chain, open_top=acme_signed)
    if problems:
        raise PermanentError(
            f"{ctx.ref}: new certificate does not verify: {'; '.join(problems)}"
            + _signer_advice(ctx)
        )
    write_version(
        ctx,
        stamp,
        {
            files.FULLCHAIN: (outputs.fullchain, files.PUBLIC_MODE),
            files.BUNDLE: (outputs.bundle, files.KEY_MODE),
        },
    )
    point(ctx.layout, ctx.ref, "next", stamp)
    _for_the_status(ctx, cert)
    record = ctx.record
    record.phase = Phase.ISSUED
    record.stamp = stamp
    record.build_signer = None
    # Only a -roll-mins given to this renew is kept; else the roll goes by min_roll_mins as set
    # when it is tried, so a changed setting moves a waiting next too (lifecycle.roll).
    given = ctx.ws.options.min_roll_mins
    record.roll_due = None if given is None else roll_due(cert.not_valid_before_utc, given)
    record.last_error = None
    record.backoff = None
    # Undone by a power cut, or by a kill before the segment's end (held: a local CA's roll
    # follows in the same segment and writes it), the record still says renewing this stamp:
    # the rerun resumes it, finds every file there and only points next again.
    ctx.save(hold=True)
    return stamp


def _problems(
    ctx: ServiceContext, cert: x509.Certificate, chain_pem: bytes, chain: bytes, *, open_top: bool
) -> list[str]:
    """What is wrong with the new certificate's path through ``chain``.

    A leaf whose chain is its local CA's fullchain as the CA signed it is judged against the
    CA's certificate as the end of its path (one signature, its names, validity and usages),
    and the CA's own path by the verdict the run made once for all its leaves
    (:func:`signer_material`): on this machine each whole-path check of a P-384 chain costs
    about 1.4 ms, 0.6-0.9 ms of it the CA's own link, the same for every leaf. Constraints on
    the CA's path that bind the leaf (names, key purposes, policies) make its path judged whole.
    """
    try:
        signing = None if ctx.service.is_ca else signing_ca_curr(ctx)
    except PermanentError:  # the CA lost its curr since it signed: the whole path, below
        signing = None
    if signing is not None:
        ca = signer_material(ctx.of(signing[0]), signing[1])
        if chain_pem == ca.fullchain_pem and not ca.constrained:
            if ca.problems:
                return [f"its signing CA {signing[0]}: {problem}" for problem in ca.problems]
            return verify_chain(cert, [ca.cert], now=ctx.now(), open_top=True)
    return verify_chain(cert, load_certs(chain), now=ctx.now(), open_top=open_top)


def _signer_advice(ctx: ServiceContext) -> str:
    """What to do when the local CA that signed a new certificate does not verify itself (a CA
    that ssl-mgr made carries its own key id as authority key id): re-issue it first; this
    build then starts afresh (``check_renew``). Empty when the CA is not the problem."""
    signing = signing_ca_curr(ctx)
    if signing is None:
        return ""
    signer, stamp = signing
    ca = ctx.of(signer)
    ca_cert = load_certs(read_bytes(version_file(ca, stamp, files.CERT)))[0]
    ca_chain = load_certs(read_bytes(version_file(ca, stamp, files.CHAIN)))
    if not verify_chain(ca_cert, ca_chain, now=ctx.now()):
        return ""
    return (
        f"; its signing CA {signer} does not verify itself: re-issue it first "
        f"(sslm-mgr -f -renew -roll {signer}), then this build starts afresh"
    )


def roll_due(not_before: datetime, min_roll_mins: float) -> datetime:
    return not_before + timedelta(minutes=min_roll_mins)
