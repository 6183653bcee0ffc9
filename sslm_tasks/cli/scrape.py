"""What ``sslm-metrics`` exports, in the Prometheus text format: every configured service's
certificates, health, failures and deploys, and the deploys and verifications of every server.

It reads what ``sslm-mgr -s`` reads (:mod:`sslm_tasks.lifecycle.status`), so both say the same,
for cron users and workers alike: the configuration, each service's record and links, the
deploy ledger; but the certificates come from the production tree, which a reader in the
store's group may read, while the store's version directories (0700, they hold the private
keys) stay closed to it. The exporter never needs to be able to read a private key.

prometheus_client renders every sample. It takes about 20 µs a sample, 2.5 s for 10,000
services, so the rendered lines of each service are kept, and a service is rendered again only
when something it is rendered from has changed: its record, its links, its production folder,
the ledger entries of its servers, the configuration; or when the clock alone changes its
health (its renew point or its expiry has come). A scrape of a tree where nothing changed
costs four system calls per service.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from prometheus_client import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sslm_tasks.config.load import Config, find_conf_dir, load_config
from sslm_tasks.config.models import CA_GROUP
from sslm_tasks.errors import ConfigError, SslmError
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.deployment import ServerOutcome, read_ledger, server_key, servers_using
from sslm_tasks.lifecycle.health import ORDER
from sslm_tasks.lifecycle.status import (
    NameserverCount,
    ReadingWorkspace,
    ServiceStatus,
    published_cert,
    service_status,
)
from sslm_tasks.lifecycle.workspace import Workspace, utc_now
from sslm_tasks.store.layout import CERT, LinkName, ServiceRef

log = logging.getLogger("sslm")

#: (name, what it says, its labels).
Family = tuple[str, str, tuple[str, ...]]
_SERVICE: Final = ("group", "service")
_FAILURE: Final = (*_SERVICE, "step", "where")

EXPIRATION: Final = (
    "sslm_certificate_expiration_timestamp_seconds",
    "When the certificate expires (its notAfter), for version curr and, while it waits, next.",
    (*_SERVICE, "version"),
)
NOT_BEFORE: Final = (
    "sslm_certificate_not_before_timestamp_seconds",
    "When the certificate became valid (its notBefore), for version curr and next.",
    (*_SERVICE, "version"),
)
RENEWAL: Final = (
    "sslm_certificate_renewal_timestamp_seconds",
    "When curr becomes due for renewal: the time drawn in the CA's window (ARI), else the "
    "renew target of its lifetime.",
    _SERVICE,
)
READY: Final = (
    "sslm_certificate_ready_status",
    "1 for the certificate's condition: True (a valid curr, not past its renew point), False, "
    "or Unknown (the service's files could not be read); 0 for the others.",
    (*_SERVICE, "condition"),
)
HEALTH: Final = (
    "sslm_service_health",
    "1 for the service's health (ok, pending, expiring, failing), 0 for the others.",
    (*_SERVICE, "health"),
)
DEPLOY_STATUS: Final = (
    "sslm_deploy_status",
    "1 when the server holds the service's curr (a successful deploy began after production "
    "got it), else 0.",
    ("server", *_SERVICE),
)
FAILURE_ATTEMPTS: Final = (
    "sslm_failure_attempts",
    "Attempts in a row of a step that is failing for the service (build, roll, production, "
    "dns, clean; deploy and verify where the server says).",
    _FAILURE,
)
FAILURE_SINCE: Final = (
    "sslm_failure_since_timestamp_seconds",
    "Since when the step has been failing.",
    _FAILURE,
)
FAILURE_RETRY: Final = (
    "sslm_failure_retry_timestamp_seconds",
    "When the failing step is tried again (absent: with the next run).",
    _FAILURE,
)
ACME_FAILURES: Final = (
    "sslm_acme_consecutive_failures",
    "ACME: builds that failed in a row; the next waits (backoff or the CA's Retry-After).",
    _SERVICE,
)
ACME_NEXT: Final = (
    "sslm_acme_next_attempt_timestamp_seconds",
    "ACME: no new build attempt before this time.",
    _SERVICE,
)
BUILD_STARTED: Final = (
    "sslm_build_started_timestamp_seconds",
    "When the build in progress began (its version's stamp); absent without one.",
    _SERVICE,
)
ROLL_DUE: Final = (
    "sslm_roll_due_timestamp_seconds",
    "When the waiting next may roll.",
    _SERVICE,
)
#: The families each service renders, in the order of the output.
PER_SERVICE: Final[tuple[Family, ...]] = (
    EXPIRATION,
    NOT_BEFORE,
    RENEWAL,
    READY,
    HEALTH,
    DEPLOY_STATUS,
    FAILURE_ATTEMPTS,
    FAILURE_SINCE,
    FAILURE_RETRY,
    ACME_FAILURES,
    ACME_NEXT,
    BUILD_STARTED,
    ROLL_DUE,
)
_CONDITIONS: Final = ("True", "False", "Unknown")
#: Services rendered together: prometheus_client renders a batch in one pass, and the
#: samples of one batch at a time are held (10,000 services' would take 100 MB).
_BATCH: Final = 500
#: The steps a service fails in itself; deploy and verify are counted by server.
_SERVER_STEPS: Final = ("deploy", "verify")


@dataclass(frozen=True)
class _Service:
    """A configured service and the files its rendering depends on (paths as strings: they
    are looked at on every scrape)."""

    ref: ServiceRef
    record: str
    curr: str
    next: str
    #: The service's production folder: a new ``curr`` or ``next`` there is swapped in whole
    #: (``store.confined``), which changes the folder itself.
    production: str
    servers: tuple[str, ...]

    def inputs(
        self, ledger: dict[str, ServerOutcome], carrying: frozenset[str]
    ) -> tuple[object, ...]:
        """What the service's lines depend on, as of now; equal inputs, equal lines.

        ``carrying``: the servers that held the service's ``curr`` at its last rendering. A
        later successful deploy to one of them changes nothing the service shows (only a new
        record, which a new ``curr`` brings, could), so the ledger's times of such a server
        are left out: a routine deploy does not render every service it carries anew.
        """
        deploys = tuple([_deploy_key(ledger.get(key), key in carrying) for key in self.servers])
        return (
            _file_key(self.record),
            _link(self.curr),
            _link(self.next),
            _file_key(self.production),
            deploys,
        )


def _deploy_key(outcome: ServerOutcome | None, carrying: bool) -> object:
    if outcome is not None and outcome.ok and carrying:
        return True
    return outcome


@dataclass(frozen=True)
class _Rendered:
    """A service's rendered lines, by family, and what the server-wide families need of it."""

    inputs: tuple[object, ...]
    #: When the clock alone changes what the lines say (the renew point, the expiry).
    until: datetime | None
    lines: dict[str, str]
    carrying: frozenset[str]
    failing: tuple[str, ...]
    apex: str | None
    tlsa: NameserverCount | None


def _file_key(path: str) -> tuple[int, ...] | None:
    """The identity of the file's content: a replaced or rewritten file has another."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        # Not readable: the service's status says why; its inputs never match.
        return (err.errno or -1, time.monotonic_ns())
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _conf_fingerprint(conf_dir: Path) -> tuple[int, int]:
    """A digest of every file of the configuration tree with its size and time, and their
    count: it changes when a file or a service is added, removed or edited. (A sum of hashes:
    10,000 service files need no sorted list at every scrape.)"""
    digest = count = 0
    pending = [str(conf_dir)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    pending.append(entry.path)
                else:
                    info = entry.stat(follow_symlinks=True)
                    digest += hash((entry.path, info.st_size, info.st_mtime_ns))
                    count += 1
    return digest, count


class _Families(Collector):
    """A fixed list of families, for prometheus_client to render."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def gauge(family: Family) -> GaugeMetricFamily:
    name, documentation, labels = family
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def render(families: Sequence[Metric]) -> str:
    """The text prometheus_client renders for ``families``."""
    return generate_latest(_Families(families)).decode()


def _split(text: str) -> dict[str, list[str]]:
    """The sample lines of each family of rendered ``text``, without HELP and TYPE."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("# TYPE "):
            current = found.setdefault(line.split(" ", 3)[2], [])
        elif not line.startswith("#"):
            current.append(line)
    return found


def _seconds(moment: datetime) -> float:
    return moment.timestamp()


def _add_service(families: dict[Family, GaugeMetricFamily], status: ServiceStatus) -> None:
    """Add the samples of one service to ``families``."""
    names = [status.ref.group, status.ref.service]
    for version, found in (("curr", status.curr), ("next", status.next)):
        if found is not None:
            families[EXPIRATION].add_metric([*names, version], _seconds(found.not_after))
            families[NOT_BEFORE].add_metric([*names, version], _seconds(found.not_before))
    if status.curr is not None and status.renew_at is not None:
        families[RENEWAL].add_metric(names, _seconds(status.renew_at))
    curr, word = status.curr, status.health.word
    ready = curr is not None and curr.not_after > status.read_at and word != "expiring"
    for condition in _CONDITIONS:
        families[READY].add_metric([*names, condition], float(condition == str(ready)))
    for each in ORDER:
        families[HEALTH].add_metric([*names, each], float(each == word))
    for server in status.servers:
        families[DEPLOY_STATUS].add_metric([server.server, *names], float(server.has_curr))
    for problem in status.health.problems:
        labels = [*names, problem.what, problem.where]
        families[FAILURE_ATTEMPTS].add_metric(labels, problem.attempts)
        if problem.since is not None:
            families[FAILURE_SINCE].add_metric(labels, _seconds(problem.since))
        if problem.retry_at is not None:
            families[FAILURE_RETRY].add_metric(labels, _seconds(problem.retry_at))
    if status.backoff is not None:
        families[ACME_FAILURES].add_metric(names, status.backoff.failures)
        families[ACME_NEXT].add_metric(names, _seconds(status.backoff.retry_at))
    if status.build_started is not None:
        families[BUILD_STARTED].add_metric(names, _seconds(status.build_started))
    if status.next is not None and status.roll_due is not None:
        families[ROLL_DUE].add_metric(names, _seconds(status.roll_due))


def render_services(statuses: Sequence[ServiceStatus]) -> list[dict[str, str]]:
    """Each service's sample lines, by family name, rendered by prometheus_client in one pass
    (a pass per service would render every family's HELP and TYPE again each time)."""
    families = {family: gauge(family) for family in PER_SERVICE}
    counts: list[list[int]] = []
    for status in statuses:
        before = [len(metric.samples) for metric in families.values()]
        _add_service(families, status)
        counts.append([len(m.samples) - n for m, n in zip(families.values(), before, strict=True)])
    rendered = _split(render(list(families.values())))
    lines = [rendered[name] for name, _, _ in PER_SERVICE]
    offsets = [0] * len(PER_SERVICE)
    found: list[dict[str, str]] = []
    for added in counts:
        mine: dict[str, str] = {}
        for index, count in enumerate(added):
            if count:
                start = offsets[index]
                mine[PER_SERVICE[index][0]] = "".join(lines[index][start : start + count])
                offsets[index] = start + count
        found.append(mine)
    return found


def _until(status: ServiceStatus) -> datetime | None:
    """The next moment the clock alone changes the service's lines."""
    curr = status.curr
    moments = [] if curr is None else [curr.not_after, status.renew.renew_at]
    later = [m for m in moments if m is not None and m > status.read_at]
    return min(later, default=None)


class _ProductionCertificates:
    """:func:`published_cert`, remembered by the identity of each file, across scrapes."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[int, ...], x509.Certificate | None]] = {}

    def __call__(self, ctx: ServiceContext, which: LinkName) -> x509.Certificate | None:
        if which == "prev":
            return None
        path = str(ctx.layout.prod_version_dir(ctx.ref, which) / CERT)
        key = _file_key(path)
        known = self._known.get(path)
        if key is not None and known is not None and known[0] == key:
            return known[1]
        cert = published_cert(ctx, which)
        if key is not None:
            self._known[path] = (key, cert)
        return cert

    def forget(self) -> None:
        self._known.clear()


def _rendered(
    service: _Service,
    status: ServiceStatus,
    lines: dict[str, str],
    ledger: dict[str, ServerOutcome],
) -> _Rendered:
    carrying = frozenset(server.server for server in status.servers if server.has_curr)
    group = service.ref.group
    return _Rendered(
        inputs=service.inputs(ledger, carrying),
        until=_until(status),
        lines=lines,
        carrying=carrying,
        failing=tuple(p.what for p in status.health.problems if p.what not in _SERVER_STEPS),
        apex=None if group == CA_GROUP else group,
        tlsa=status.tlsa_next_ns,
    )


def _unknown_lines(ref: ServiceRef) -> str:
    ready = gauge(READY)
    for condition in _CONDITIONS:
        ready.add_metric([ref.group, ref.service, condition], float(condition == "Unknown"))
    return "".join(_split(render([ready]))[READY[0]])


class Survey:
    """The exporter's memory: the configuration (read again when a file of it changes) and
    each service's rendered lines. :meth:`collect` is safe to call from several threads.

    Parameters:
      clock: the time a scrape judges by.

    Raises:
      ConfigError: at the first :meth:`collect`, the configuration is bad (later, a bad edit
        keeps the last good configuration, and says so in a metric and a log line).
    """

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._config: Config | None = None
        self._fingerprint = (0, 0)
        self._reload_ok = True
        self._reloaded_at = 0.0
        self._services: list[_Service] = []
        self._servers: list[tuple[str, bool]] = []
        self._rendered: dict[ServiceRef, _Rendered] = {}
        self._errors: dict[str, str] = {}
        self._certificates = _ProductionCertificates()
        #: The services' part of the last output: it stands while no service changed.
        self._services_text: str | None = None
        self._headers = {
            name: render([gauge((name, doc, labels))]) for name, doc, labels in PER_SERVICE
        }

    # -- configuration ------------------------------------------------------------------

    def _read_config(self) -> None:
        conf_dir = find_conf_dir()
        try:
            fingerprint = _conf_fingerprint(conf_dir)
        except OSError as err:
            raise ConfigError(conf_dir, "(files)", None, f"unreadable: {err}") from None
        if self._config is not None and fingerprint == self._fingerprint:
            return
        self._fingerprint = fingerprint
        try:
            # It shows certificates and never signs a request: the keys stay closed to it.
            config, refs = load_config(conf_dir=conf_dir, read_secrets=False)
        except ConfigError as err:
            if self._config is None:
                raise
            self._reload_ok = False
            log.warning("configuration not reloaded, the last good one stays: %s", err)
            return
        self._config, self._reload_ok, self._reloaded_at = config, True, time.time()
        layout, main = config.layout(), config.main
        self._services = [
            _Service(
                ref,
                record=str(layout.state_file(ref)),
                curr=str(layout.link(ref, "curr")),
                next=str(layout.link(ref, "next")),
                production=str(layout.prod_version_dir(ref, "curr").parent),
                servers=tuple(servers_using(main, ref)),
            )
            for ref in refs
        ]
        self._servers = [
            (server_key(name, host), bool(section.verify))
            for name, section in main.server_sections()
            for host in section.servers
        ]
        self._rendered.clear()
        self._certificates.forget()
        self._services_text = None

    # -- one scrape ---------------------------------------------------------------------

    def collect(self) -> bytes:
        """The whole exposition, as of now."""
        with self._lock:
            started = time.perf_counter()
            self._read_config()
            assert self._config is not None
            ws = ReadingWorkspace(config=self._config, clock=self._clock)
            ledger, ledger_ok = self._ledger(ws)
            now = self._clock()
            batch: list[tuple[_Service, ServiceStatus]] = []
            unknown: list[str] = []
            fresh = 0
            for service in self._services:
                found = self._rendered.get(service.ref)
                carrying = frozenset() if found is None else found.carrying
                inputs = service.inputs(ledger, carrying)
                expired = found is not None and found.until is not None and now >= found.until
                if found is not None and found.inputs == inputs and not expired:
                    continue
                try:
                    batch.append((service, self._status(ws, service, ledger)))
                except SslmError as err:
                    self._failed(str(service.ref), str(err))
                    self._rendered.pop(service.ref, None)
                    unknown.append(_unknown_lines(service.ref))
                if len(batch) == _BATCH:
                    fresh += self._keep(batch, ledger)
                    batch = []
            fresh += self._keep(batch, ledger)
            kept = [self._rendered[s.ref] for s in self._services if s.ref in self._rendered]
            if fresh or unknown or self._services_text is None:
                self._services_text = self._assemble(kept, unknown)
            summary = _Summary(kept, ledger, ledger_ok, len(unknown), fresh, now, started)
            server_text = render(list(self._server_families(summary)))
            return (self._services_text + server_text).encode()

    def _keep(
        self, batch: list[tuple[_Service, ServiceStatus]], ledger: dict[str, ServerOutcome]
    ) -> int:
        """Render ``batch`` and keep each service's lines; returns how many."""
        rendered = render_services([status for _, status in batch])
        for (service, status), lines in zip(batch, rendered, strict=True):
            self._rendered[service.ref] = _rendered(service, status, lines, ledger)
        return len(batch)

    def _assemble(self, kept: list[_Rendered], unknown: list[str]) -> str:
        """Every service's lines, family by family, each family under its HELP and TYPE."""
        parts = []
        for name, _, _ in PER_SERVICE:
            text = "".join(entry.lines.get(name, "") for entry in kept)
            if name == READY[0]:
                text += "".join(unknown)
            if text:
                parts.append(self._headers[name] + text)
        return "".join(parts)

    def _ledger(self, ws: Workspace) -> tuple[dict[str, ServerOutcome], bool]:
        try:
            ledger = read_ledger(ws)
        except SslmError as err:
            self._failed("deploy ledger", str(err))
            return {}, False
        self._errors.pop("deploy ledger", None)
        return ledger, True

    def _failed(self, where: str, message: str) -> None:
        """Log what could not be read, once until it changes."""
        if self._errors.get(where) != message:
            self._errors[where] = message
            log.warning("%s: cannot be read: %s", where, message)

    def _status(
        self, ws: Workspace, service: _Service, ledger: dict[str, ServerOutcome]
    ) -> ServiceStatus:
        ctx = ServiceContext(ws, service.ref, repair=False)
        status = service_status(ctx, ledger, details=False, load=self._certificates)
        self._errors.pop(str(service.ref), None)
        return status

    def _server_families(self, summary: _Summary) -> Iterator[GaugeMetricFamily]:
        """The families of the whole tree: failures by step, DNS, servers, the exporter."""
        failures = gauge(
            (
                "sslm_failures",
                "Failing now, by step: services (build, roll, "
                "production, dns, clean; revoked: a revoked curr nothing replaces) and "
                "servers (deploy, verify).",
                ("step",),
            )
        )
        counts: dict[str, int] = dict.fromkeys(
            ("build", "roll", "production", "dns", "clean", "revoked", *_SERVER_STEPS), 0
        )
        for entry in summary.kept:
            for step in entry.failing:
                counts[step] = counts.get(step, 0) + 1
        for key, _ in self._servers:
            outcome = summary.ledger.get(key)
            if outcome is not None and not outcome.ok:
                step = outcome.failed_step or "deploy"
                counts[step] = counts.get(step, 0) + 1
        for step, count in counts.items():
            failures.add_metric([step], count)
        yield failures
        yield from _tlsa_families(summary.kept)
        yield from self._deploy_families(summary.ledger)
        yield from self._exporter_families(summary)

    def _deploy_families(self, ledger: dict[str, ServerOutcome]) -> Iterator[GaugeMetricFamily]:
        last = gauge(
            (
                "sslm_deploy_last_timestamp_seconds",
                "When the last deploy of the server ended.",
                ("server",),
            )
        )
        failures = gauge(
            (
                "sslm_deploy_consecutive_failures",
                "Deploys of the server that failed in a row (0 after a success).",
                ("server",),
            )
        )
        retry = gauge(
            (
                "sslm_deploy_retry_timestamp_seconds",
                "When the failed deploy of the server is tried again.",
                ("server",),
            )
        )
        verify = gauge(
            (
                "sslm_verify_status",
                "1 when the server's verify probes passed at its last deploy, 0 when "
                "one failed; absent when none ran.",
                ("server",),
            )
        )
        for key, probes in self._servers:
            outcome = ledger.get(key)
            if outcome is None:
                continue
            last.add_metric([key], _seconds(outcome.at))
            failures.add_metric([key], outcome.failures)
            if outcome.retry_at is not None and not outcome.ok:
                retry.add_metric([key], _seconds(outcome.retry_at))
            if probes and (outcome.ok or outcome.failed_step == "verify"):
                verify.add_metric([key], float(outcome.ok))
        yield from (last, failures, retry, verify)

    def _exporter_families(self, summary: _Summary) -> Iterator[GaugeMetricFamily]:
        def one(name: str, documentation: str, value: float) -> GaugeMetricFamily:
            family = gauge((name, documentation, ()))
            family.add_metric([], value)
            return family

        yield one(
            "sslm_deploy_ledger_readable",
            "1 when the deploy ledger could be read.",
            float(summary.ledger_ok),
        )
        yield one(
            "sslm_services_unreadable",
            "Configured services whose files could not be read (their condition is "
            "Unknown; the exporter's log says why).",
            summary.unreadable,
        )
        yield one(
            "sslm_config_last_reload_successful",
            "1 when the configuration as it is now could be read; 0 while a bad edit "
            "keeps the last good one in use.",
            float(self._reload_ok),
        )
        yield one(
            "sslm_config_last_reload_success_timestamp_seconds",
            "When the configuration in use was read.",
            self._reloaded_at,
        )
        yield one(
            "sslm_metrics_services_rendered",
            "Services rendered anew for this scrape (the others had not changed).",
            summary.fresh,
        )
        yield one(
            "sslm_metrics_read_timestamp_seconds",
            "When these metrics were read (a scrape that cannot wait for a long reading gets "
            "the one before).",
            _seconds(summary.read_at),
        )
        yield one(
            "sslm_metrics_collect_duration_seconds",
            "How long reading and rendering these metrics took.",
            time.perf_counter() - summary.started,
        )


@dataclass(frozen=True)
class _Summary:
    kept: list[_Rendered]
    ledger: dict[str, ServerOutcome]
    ledger_ok: bool
    unreadable: int
    fresh: int
    read_at: datetime
    started: float


def _tlsa_families(kept: list[_Rendered]) -> Iterator[GaugeMetricFamily]:
    """Per zone, during a DANE roll: the fewest nameservers serving every next TLSA record of
    one of its services, and how many were asked."""
    published = gauge(
        (
            "sslm_tlsa_published_nameservers",
            "During a DANE roll: authoritative nameservers of the zone seen serving "
            "every next TLSA record (the fewest over its rolling services), at the "
            "last look.",
            ("apex",),
        )
    )
    asked = gauge(
        (
            "sslm_tlsa_nameservers",
            "During a DANE roll: authoritative nameservers of the zone asked.",
            ("apex",),
        )
    )
    by_apex: dict[str, list[NameserverCount]] = {}
    for entry in kept:
        if entry.apex is not None and entry.tlsa is not None:
            by_apex.setdefault(entry.apex, []).append(entry.tlsa)
    for apex, counts in sorted(by_apex.items()):
        published.add_metric([apex], min(count.serving for count in counts))
        asked.add_metric([apex], max(count.asked for count in counts))
    yield from (published, asked)
