"""Every per-service step of the lifecycle, as one function of a :class:`ServiceContext`.

These are the functions the pipeline statement (:mod:`sslm_tasks.lifecycle.pipeline`) names;
the in-process runner and the Celery tasks call exactly these, in the order the statement
gives. Each returns a :class:`Verdict`: whether the walk goes on (a decision or a wait may say
no) and one line for the report and the log. They hold no policy of their own: that lives in
the modules they call (:mod:`.build`, :mod:`.acme_sign`, :mod:`.roll`, ...).
"""

from __future__ import annotations

from sslm_tasks.errors import StoreError
from sslm_tasks.lifecycle import acme_sign, build, dane, failures, production, revoke
from sslm_tasks.lifecycle import roll as rolling
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.record import in_flight
from sslm_tasks.lifecycle.verdict import Verdict
from sslm_tasks.store.clean import clean_service
from sslm_tasks.store.layout import PRIVKEY

DONE = Verdict()
#: How the clean step's line starts, before the stamps it deleted.
CLEANED = "cleaned "
#: What the production step says when it rewrote the service's production copy.
PRODUCTION_UPDATED = "production updated"


# --------------------------------------------------------------------------- renew


def _said(*parts: str | None) -> str:
    return "; ".join(part for part in parts if part)


def check(ctx: ServiceContext) -> Verdict:
    """Is a new version needed? If so, start the build (or resume the one in progress).
    A local CA first re-issues its CRL if it is due (missing, or near its nextUpdate)."""
    crl = revoke.keep_crl_current(ctx)
    found = build.check_renew(ctx)
    if not found.build:
        if found.stamp is None:  # nothing to build, nothing waiting to be resumed
            failures.clear(ctx, failures.BUILD)
        return Verdict(False, _said(crl, found.reason))
    if found.stamp is None:
        if build.in_progress(ctx) is not None and ctx.record.order is not None:
            acme_sign.withdraw(ctx)  # the abandoned build's order must not linger in DNS
        build.start_build(ctx)
    return Verdict(True, _said(crl, f"renewing: {found.reason}"))


def keygen(ctx: ServiceContext) -> Verdict:
    build.make_key(ctx)
    return DONE


def csr(ctx: ServiceContext) -> Verdict:
    build.make_csr(ctx)
    return DONE


def sign(ctx: ServiceContext) -> Verdict:
    build.sign(ctx)
    return DONE


def acme_order(ctx: ServiceContext) -> Verdict:
    acme_sign.order(ctx)
    return DONE


def acme_publish(ctx: ServiceContext) -> Verdict:
    acme_sign.publish(ctx)
    return DONE


def acme_propagated(ctx: ServiceContext) -> Verdict:
    return Verdict(*acme_sign.propagated(ctx))


def acme_answer(ctx: ServiceContext) -> Verdict:
    acme_sign.answer(ctx)
    return DONE


def acme_validated(ctx: ServiceContext) -> Verdict:
    ready, detail, retry_after = acme_sign.validated(ctx)
    return Verdict(ready, detail, retry_after)


def acme_finalize(ctx: ServiceContext) -> Verdict:
    return Verdict(*acme_sign.finalize(ctx))


def store(ctx: ServiceContext) -> Verdict:
    stamp = build.store(ctx)
    failures.clear(ctx, failures.BUILD)
    return Verdict(True, f"next is {stamp}")


# --------------------------------------------------------------------------- roll


def first_roll_gate(ctx: ServiceContext) -> Verdict:
    """Without ``-roll``: only a first certificate becomes ``curr`` at once (nothing is served
    yet, so no cache can hold an old record); any other ``next`` waits for its roll."""
    if ctx.link("curr") is not None:
        return Verdict(False)
    if ctx.link("next") is None:
        return Verdict(False)
    return Verdict(True, "no current certificate")


def roll_gate(ctx: ServiceContext) -> Verdict:
    """May ``next`` become ``curr`` now? Its age, and for DANE what every NS serves."""
    options = ctx.ws.options
    result = rolling.check_roll(ctx, force=options.force or options.dev.ntoc)
    if ctx.link("next") is None:  # nothing (left) to roll
        failures.clear(ctx, "roll")
    return Verdict(result.rolled, result.reason)


def roll(ctx: ServiceContext) -> Verdict:
    """Make ``next`` the new ``curr`` (the gate just let it)."""
    stamp = rolling.flip(ctx)
    failures.clear(ctx, "roll")
    # A CA's new curr signs its CRL from now on (after a new key, the old CRL no longer verifies).
    return Verdict(True, _said(f"rolled {stamp} to curr", revoke.keep_crl_current(ctx)))


# --------------------------------------------------------------------------- upkeep


def to_production(ctx: ServiceContext) -> Verdict:
    """Bring the service's production copy in line; also when nothing changed: that repairs
    drift, the integrity check upstream ran on every start."""
    changed = production.sync_service(ctx)
    failures.clear(ctx, "production")
    return Verdict(True, PRODUCTION_UPDATED if changed else "")


def tlsa(ctx: ServiceContext) -> Verdict:
    """Bring the zone's TLSA file in line, and its production copy: also when nothing was due,
    so a ``dane_tls`` edit takes effect without waiting for a renewal."""
    dane.publish_for_service(ctx)
    production.sync_group_tlsa(ctx.ws, ctx.ref.group)
    failures.clear(ctx, "dns")
    return DONE


def clean(ctx: ServiceContext) -> Verdict:
    """Delete old unlinked versions beyond ``clean_keep``."""
    removed = clean_service(
        ctx.layout, ctx.ref, keep=ctx.ws.clean_keep, in_flight=in_flight(ctx.record)
    )
    failures.clear(ctx, "clean")
    return Verdict(True, f"{CLEANED}{', '.join(removed)}" if removed else "")


# --------------------------------------------------------------------------- dev


def dev_key(ctx: ServiceContext) -> Verdict:
    """``sslm-mgr dev``: the key of the build in progress, starting one when needed.

    Every switch works alone and in any combination: ``-keys`` always makes a new key (in a new
    build); ``-copy`` takes the key of ``curr``; ``-csr`` or ``-cert`` without a key in the
    build carry the key of ``next`` (else ``curr``) over, and make a new one only when the
    service has none.
    """
    steps = ctx.ws.options.dev
    if steps.keys and not (ctx.started_here() and build.in_progress(ctx) is not None):
        stamp = build.start_build(ctx)
        build.write_new_key(ctx, stamp)
        return Verdict(True, f"new key in build {stamp}")
    found = build.check_renew(ctx)
    stamp = found.stamp if found.stamp is not None else build.start_build(ctx)
    said = ""
    if steps.copy:
        if not build.carry_key(ctx, stamp, ("curr",)):
            raise StoreError(f"{ctx.ref}: -copy needs a key in curr, and there is none")
        said = f"key of curr copied into build {stamp}"
    elif not (ctx.layout.version_dir(ctx.ref, stamp) / PRIVKEY).is_file() and build.carry_key(
        ctx, stamp, ("next", "curr")
    ):
        said = f"key carried over into build {stamp}"
    build.make_key(ctx)
    return Verdict(True, said)
