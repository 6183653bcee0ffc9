"""What the authoritative name servers of a zone serve, as DANE's gates need to know it:
whether every NS serves a set of TLSA records, and how long caches may still hold what they
served before those records were published.

Shared by the roll gate (:mod:`.dane`) and the standby key (:mod:`.standby`): both wait until
every NS has served a key's records for twice the largest TTL a cache may hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sslm_tasks.config.files import MAIN_FILE
from sslm_tasks.config.load import Config
from sslm_tasks.dns.lookup import DnsNoAnswer, primary_for
from sslm_tasks.dns.propagation import cached_ttls, check_records
from sslm_tasks.dns.tlsa import TlsaRecord
from sslm_tasks.errors import ConfigError
from sslm_tasks.lifecycle.context import ServiceContext


@dataclass(frozen=True)
class Gate:
    """A DNS gate's answer: may the key change go on, and why (one line)."""

    open: bool
    reason: str


@dataclass(frozen=True)
class Sighting:
    """One pass over every authoritative NS for a set of records."""

    lagging: list[str]
    ttl: int
    counts: str


def publishes(config: Config, group: str) -> bool:
    """Whether sslm puts the group's TLSA records into its zone: through ``[dns]`` include
    files, or by RFC 2136 update (``[[dns_update]]``)."""
    return config.main.dns is not None or config.main.update_of(group) is not None


def look(ctx: ServiceContext, records: Iterable[TlsaRecord]) -> Sighting:
    """Does every authoritative NS of the service's apex serve every one of ``records``? The
    largest TTL served (observed: with ``dane_tls_ttl = 0`` it is the zone's default).

    Raises:
      ConfigError: ``dane_tls`` without a ``[dns]`` section, or no ``[[dns_primary]]`` fits.
      DnsNoAnswer (transient): the primary did not answer.
    """
    ref, config = ctx.ref, ctx.ws.config
    if not publishes(config, ref.group):
        where = config.conf_dir / MAIN_FILE
        raise ConfigError(
            where, "dns", None, "dane_tls needs a [dns] section with tlsa_dirs, or [[dns_update]]"
        )
    primary = primary_for(config, ref.group)
    by_owner: dict[str, list[str]] = {}
    for record in records:
        text = f"{record.usage} {record.selector} {record.matching} {record.data}"
        by_owner.setdefault(record.owner, []).append(text)
    lagging = []
    ttl = 0
    serving_all: set[str] | None = None  # servers that serve every owner's records
    asked: set[str] = set()
    for owner, expected in by_owner.items():
        result = check_records(ref.group, primary, "TLSA", owner, expected)
        ttl = max(ttl, result.ttl or 0)
        serving = set(result.caught_up)
        asked |= serving | {line.split(": ", 1)[0] for line in result.lagging}
        serving_all = serving if serving_all is None else serving_all & serving
        if not result.ok:
            lagging.append(result.summary())
    return Sighting(lagging, ttl, f"{len(serving_all or ())} of {len(asked)}")


def cacheable_before(ctx: ServiceContext, records: Iterable[TlsaRecord]) -> int:
    """How long a resolver may cache what every authoritative NS serves now at the owners of
    ``records`` (the RRset's TTL, or the negative-caching TTL where there is none): asked
    before they are published, since a resolver holding the old RRset knows nothing of them
    until it expires, however short their own TTL.

    Raises:
      DnsNoAnswer (transient): no NS answered.
      DnsAnswerError / ConfigError: the primary refused, or no ``[[dns_primary]]`` fits.
    """
    ref = ctx.ref
    owners = {record.owner for record in records}
    found = cached_ttls(ref.group, primary_for(ctx.ws.config, ref.group), "TLSA", owners)
    if found.ttl is None:
        raise DnsNoAnswer(f"{ref}: what caches may hold: no NS answered: {found.summary()}")
    return found.ttl
