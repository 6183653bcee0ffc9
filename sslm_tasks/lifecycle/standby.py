"""Standby keys (``key_standby``): renew as often as the CA wants without touching DNS, and
change keys on a schedule of their own without ever waiting for it.

With a new key at every renewal, a DANE service changes its TLSA records at every renewal and
every roll waits out the DNS gate; with 45-day (or 6-day) certificates that is most of the
time. The DANE operators' practice ("3 1 1 + 3 1 1") decouples the two, and this module
automates it:

* renewals keep the key of ``curr`` (new CSR, new certificate, the same records: no wait);
* a standby key is made ahead of time and its records are published beside ``curr``'s, after
  asking every NS what caches may hold at their owners (as for any new record), and watched
  until every NS serves them;
* once the key is ``key_rollover_days`` old, and every NS has served the standby's records for
  twice the largest TTL a cache may hold, the next renewal takes the standby key; the roll
  finds its records long served and does not wait; the old key's records go after the deploys
  as after any roll, and a new standby is made and published.

Only selector 1 records can be known before a certificate exists, so the configuration refuses
``key_standby`` with a selector 0 entry. The standby key is a private key like any other:
0600 in a 0700 directory (``<service>/standby/privkey.pem``), never copied to production, never
in a message or a log line; the record holds only its public key's SHA-256.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from sslm_tasks.crypto.keys import (
    PrivateKey,
    PublicKey,
    generate_private_key,
    load_private_key,
    private_key_to_pem,
    public_key_der,
)
from sslm_tasks.dns.tlsa import TlsaRecord
from sslm_tasks.errors import StoreError
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.current import load_version_cert
from sslm_tasks.lifecycle.record import KeyPlan
from sslm_tasks.lifecycle.tlsa_records import key_records, record_keys, version_records
from sslm_tasks.lifecycle.tlsa_sightings import Gate, cacheable_before, look, publishes
from sslm_tasks.store.atomic import ensure_dir, write_atomic
from sslm_tasks.store.layout import DIR_MODE_PRIVATE, KEY_MODE
from sslm_tasks.store.read import read_bytes


def key_id(key: PublicKey | PublicKeyTypes) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo, hex: the name the record and ``-s`` use
    (the data of its ``3 1 1`` record)."""
    return hashlib.sha256(public_key_der(key)).hexdigest()


def _load(ctx: ServiceContext) -> PrivateKey | None:
    path = ctx.layout.standby_key(ctx.ref)
    try:
        return load_private_key(read_bytes(path))
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreError(f"{ctx.ref}: reading the standby key {path}: {err}") from err


def _write(ctx: ServiceContext, key: PrivateKey) -> None:
    """The key into ``standby/`` (0700; tightened if it exists wider), 0600 from its first
    byte, synced before the record names it."""
    directory = ensure_dir(ctx.layout.standby_dir(ctx.ref), mode=DIR_MODE_PRIVATE)
    if directory.stat().st_mode & 0o077:
        os.chmod(directory, DIR_MODE_PRIVATE)
    write_atomic(ctx.layout.standby_key(ctx.ref), private_key_to_pem(key), mode=KEY_MODE)


def _drop(ctx: ServiceContext) -> None:
    """Remove the standby key file once ``curr`` holds that key: it lives on in the version.
    A power cut that brings the name back only makes the next run remove it again."""
    ctx.layout.standby_key(ctx.ref).unlink(missing_ok=True)


def _note_curr_key(ctx: ServiceContext) -> bool:
    """Record since when ``curr`` holds its key; returns whether the record changed. A key
    first seen here is dated by ``curr``'s notBefore: it served at least since then."""
    cert = load_version_cert(ctx, "curr")
    keys = ctx.record.keys
    if cert is None:
        return False
    held = key_id(cert.public_key())
    if keys.curr_key == held:
        return False
    keys.curr_key, keys.curr_key_since = held, min(ctx.now(), cert.not_valid_before_utc)
    return True


def _standby(ctx: ServiceContext) -> PrivateKey | None:
    """The standby key, when the record names the key the file holds."""
    key = _load(ctx)
    if key is None or key_id(key.public_key()) != ctx.record.keys.standby_key:
        return None
    return key


def published_records(ctx: ServiceContext) -> list[TlsaRecord]:
    """The standby key's records, as the zone is to list them: none without ``key_standby``,
    without a standby key, or until what caches may hold at their owners is known."""
    if not ctx.service.key_standby:
        return []
    keys = ctx.record.keys
    if keys.standby_ttl_before is None and publishes(ctx.ws.config, ctx.ref.group):
        return []
    key = _standby(ctx)
    return [] if key is None else key_records(ctx, key.public_key())


def prepare(ctx: ServiceContext) -> None:
    """Before the zone's TLSA file is rebuilt (the ``tlsa`` step): note ``curr``'s key; drop
    the standby once ``curr`` holds it; make one when there is none (after the first
    certificate: its records take ``curr``'s owners); and, before its records are first
    published, ask every NS what caches may hold there now.

    Raises:
      DnsNoAnswer (transient): no NS said what caches may hold: the records wait.
      StoreError: the key could not be written.
    """
    if not ctx.service.key_standby or not ctx.repair:
        return
    changed = _note_curr_key(ctx)
    keys = ctx.record.keys
    if keys.curr_key is None:
        if changed:
            ctx.save()
        return
    key = _load(ctx)
    if key is not None and key_id(key.public_key()) == keys.curr_key:
        _drop(ctx)
        key = None
    if key is None:
        key = generate_private_key(ctx.service.keyopts.spec())
        _write(ctx, key)
    made = key_id(key.public_key())
    if keys.standby_key != made:  # new, or written by a run that stopped before recording it
        ctx.record.keys = keys = KeyPlan(
            curr_key=keys.curr_key,
            curr_key_since=keys.curr_key_since,
            standby_key=made,
            standby_created=ctx.now(),
        )
        changed = True
    if publishes(ctx.ws.config, ctx.ref.group):
        changed |= _ask_before_publishing(ctx, key_records(ctx, key.public_key()))
    if changed:
        ctx.save()


def _ask_before_publishing(ctx: ServiceContext, records: list[TlsaRecord]) -> bool:
    """Before the standby's records go out at an owner they were not at (all of them the
    first time; later, an owner a renewal added, such as a new SAN): ask what caches may hold
    there now, keep the larger TTL, and have the standby seen again with them all. Returns
    whether the record changed."""
    keys = ctx.record.keys
    owners = sorted({record.owner for record in records})
    asked = set(keys.standby_owners) if keys.standby_ttl_before is not None else set()
    new = [record for record in records if record.owner not in asked]
    if not new:
        if owners == keys.standby_owners:
            return False
        keys.standby_owners = owners  # an owner went: nothing to ask
        return True
    ttl = cacheable_before(ctx, new)
    keys.standby_ttl_before = max(ttl, keys.standby_ttl_before or 0)
    keys.standby_owners = owners
    keys.standby_seen, keys.standby_ns, keys.standby_ttl_served = None, None, None
    return True


def watch(ctx: ServiceContext) -> None:
    """After the zone's file was rebuilt: until every NS has been seen serving the standby's
    records, one look per run, keeping how many do and the first time all did.

    Raises:
      ConfigError: no ``[dns]`` or ``[[dns_update]]`` to publish through.
      DnsNoAnswer (transient): the primary did not answer.
    """
    if not ctx.service.key_standby or not ctx.repair or ctx.record.keys.standby_seen is not None:
        return
    records = published_records(ctx)
    if not records:
        return
    sighting = look(ctx, records)
    keys = ctx.record.keys
    keys.standby_ns = sighting.counts
    if not sighting.lagging:
        keys.standby_seen, keys.standby_ttl_served = ctx.now(), sighting.ttl
    ctx.save()


def key_age(ctx: ServiceContext) -> timedelta | None:
    since = ctx.record.keys.curr_key_since
    return None if since is None else ctx.now() - since


def switch_due(ctx: ServiceContext) -> str | None:
    """Why the key changes now, or None: ``curr``'s key reached ``key_rollover_days`` and the
    standby is ready. A standby not ready yet (just made, or a name server lagging) defers the
    switch, never a renewal: those go on with the current key."""
    svc = ctx.service
    age = key_age(ctx)
    if not svc.key_standby or age is None or age < timedelta(days=svc.rollover_days):
        return None
    ready = ctx.record.keys.standby_ready_at
    if ready is None or ctx.now() < ready or _standby(ctx) is None:
        return None
    return (
        f"the key is {age.total_seconds() / 86400:.1f} days old (key_rollover_days = "
        f"{svc.rollover_days:g}): switching to the standby key"
    )


def key_for_build(ctx: ServiceContext, *, curr_compromised: bool) -> PrivateKey | None:
    """The standby key, when a new build takes it: the switch is due, or ``curr``'s key was
    compromised (the standby's records are out already, so the roll waits least). None: the
    caller keeps ``curr``'s key, or makes a new one when there is none to keep."""
    if not ctx.service.key_standby:
        return None
    if curr_compromised or switch_due(ctx) is not None:
        return _standby(ctx)
    return None


def roll_gate(ctx: ServiceContext, upcoming: list[TlsaRecord]) -> Gate | None:
    """The roll gate when ``next``'s new records are the standby's: open once every NS has
    served them for twice the largest TTL a cache may hold, which after a scheduled switch was
    long ago. None when ``next`` brings records the standby did not publish: the usual gate.

    Raises:
      ConfigError, DnsNoAnswer: as :func:`watch`.
    """
    standby = published_records(ctx)
    if not standby:
        return None
    known = record_keys(standby) | record_keys(version_records(ctx, "curr"))
    if not record_keys(upcoming) <= known:
        return None
    sighting = look(ctx, upcoming)
    keys = ctx.record.keys
    if sighting.lagging:
        return Gate(False, "waiting for DNS (the standby key): " + "; ".join(sighting.lagging))
    seen = keys.standby_seen
    if seen is None:
        seen = keys.standby_seen = ctx.now()
        keys.standby_ttl_served, keys.standby_ns = sighting.ttl, sighting.counts
        if ctx.repair:
            ctx.save()
    ready = seen + timedelta(seconds=2 * keys.standby_cache_ttl)
    if ctx.now() < ready:
        return Gate(
            False,
            f"next holds the standby key; every NS serves its TLSA records, waiting until "
            f"{ready:%H:%M:%S} (2 x {keys.standby_cache_ttl} s)",
        )
    return Gate(
        True,
        "next holds the standby key, whose TLSA records every NS has served since "
        f"{seen.isoformat()}",
    )


def sighting_of_curr(ctx: ServiceContext) -> tuple[datetime, int] | None:
    """When every NS first served ``curr``'s key as the standby, and the TTL caches may hold:
    after a switch, what the old key's retirement counts from. None for any other ``curr``."""
    keys = ctx.record.keys
    cert = load_version_cert(ctx, "curr")
    if (
        not ctx.service.key_standby
        or cert is None
        or keys.standby_seen is None
        or key_id(cert.public_key()) != keys.standby_key
    ):
        return None
    return keys.standby_seen, keys.standby_cache_ttl
