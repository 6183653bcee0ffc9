"""What every lifecycle step needs: the validated config, the on-disk layout and a clock.

Steps take a :class:`Workspace` plus a :class:`ServiceRef` and read everything else from disk,
so the same step can run in-process or inside a Celery task that was handed only names.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from cryptography import x509

from sslm_tasks.config.load import Config, load_service
from sslm_tasks.config.models import ServiceConfig
from sslm_tasks.crypto.keys import PrivateKey
from sslm_tasks.dns.refresh import ZoneRefresher
from sslm_tasks.lifecycle.cert_book import CertBook
from sslm_tasks.locks import Locker
from sslm_tasks.locks.file import FileLocker
from sslm_tasks.renewal import DEFAULT_TABLE, RenewTable
from sslm_tasks.store.atomic import ensure_dir
from sslm_tasks.store.confined import overlaps
from sslm_tasks.store.layout import DIR_MODE_GROUP, Layout, ServiceRef

#: A shared-file lock outlives a holder that died by this long; writers hold it for seconds.
LOCK_TTL_S = 60.0
#: How long a writer waits for another writer of the same file.
LOCK_WAIT_S = 30.0


def service_lock(ref: ServiceRef) -> str:
    """The lock a worker holds while it runs a step of ``ref`` (and anything else that writes
    the service's record beside the workers, as ``sslm-mgr revoke`` does)."""
    return f"svc:{ref}"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DevSteps:
    """``sslm-mgr dev`` switches; each works on its own (upstream's only worked combined)."""

    keys: bool = False
    csr: bool = False
    cert: bool = False
    copy: bool = False
    ntoc: bool = False
    certs_prod: bool = False
    #: ``-fsr``: restart every server that has a restart command, and refresh DNS.
    force_restarts: bool = False

    def any_build_step(self) -> bool:
        return self.keys or self.csr or self.cert or self.copy

    def any(self) -> bool:
        return self.any_build_step() or self.ntoc or self.certs_prod or self.force_restarts

    def to_json(self) -> dict[str, bool]:
        return {name: bool(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: object) -> DevSteps:
        given = data if isinstance(data, dict) else {}
        return cls(**{name: bool(given.get(name)) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class RunOptions:
    """The command-line switches that change what a step does.

    Plain JSON-friendly values, because a Celery message carries them to the worker.
    """

    force: bool = False
    reuse: bool = False
    test: bool = False
    min_roll_mins: float | None = None
    clean_keep: int | None = None
    #: ``-n``: exercise an ACME order without asking for the certificate (``lifecycle.dry_run``).
    dry_run: bool = False
    dev: DevSteps = field(default_factory=DevSteps)

    @property
    def acme_test_server(self) -> bool:
        """Talk to the CA's test server: ``-t``, and ``-n`` as certbot's ``--dry-run`` does."""
        return self.test or self.dry_run

    def to_json(self) -> dict[str, object]:
        return {
            "force": self.force,
            "reuse": self.reuse,
            "test": self.test,
            "dry_run": self.dry_run,
            "min_roll_mins": self.min_roll_mins,
            "clean_keep": self.clean_keep,
            "dev": self.dev.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> RunOptions:
        def number(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, int | float) else None

        keep = number("clean_keep")
        return cls(
            force=bool(data.get("force")),
            reuse=bool(data.get("reuse")),
            test=bool(data.get("test")),
            dry_run=bool(data.get("dry_run")),
            min_roll_mins=number("min_roll_mins"),
            clean_keep=None if keep is None else int(keep),
            dev=DevSteps.from_json(data.get("dev")),
        )


@dataclass(frozen=True)
class SignerMaterial:
    """What a local CA version signs with: its key, its certificate, its fullchain (PEM), and
    the verdict on its own path to its root, judged once when the material is read
    (``build.signer_material``): every leaf it signs in the run shares that part of the path.
    ``constrained``: a certificate of that path has constraints that bind every leaf below
    (names, key purposes, policies), so each leaf's whole path is judged again."""

    key: PrivateKey
    cert: x509.Certificate
    fullchain_pem: bytes
    problems: tuple[str, ...] = ()
    constrained: bool = False


@dataclass
class Workspace:
    config: Config
    options: RunOptions = field(default_factory=RunOptions)
    clock: Callable[[], datetime] = utc_now
    rng: random.Random = field(default_factory=random.Random)
    #: Locks shared with other writers (workers use Redis); None: this process is the only
    #: writer (the in-process run holds the whole tree's lock).
    locker: Locker | None = None
    #: Local CA versions read to sign with, by CA and stamp (``build.signer_material``): the
    #: workspace lives for one run or one task, in which every leaf of a CA needs them.
    signers: dict[tuple[ServiceRef, str], SignerMaterial] = field(default_factory=dict, repr=False)
    #: Local CA certificates by CA and stamp, for the renew check of every leaf a CA signs
    #: (``build.check_renew``): parsed once per run, not once per leaf.
    ca_certs: dict[tuple[ServiceRef, str], x509.Certificate | None] = field(
        default_factory=dict, repr=False
    )
    #: The certificates' details for ``-s`` (:mod:`.cert_book`): read by a status, filled and
    #: saved by a run that works on the tree (in-process, beat's renew scan); None elsewhere.
    cert_book: CertBook | None = field(default=None, repr=False)

    def lock(self, name: str) -> AbstractContextManager[object]:
        """Hold the named lock (e.g. one apex's TLSA file) while writing, when others may write."""
        if self.locker is None:
            return nullcontext()
        return self.locker.acquire(name, ttl_s=LOCK_TTL_S, blocking_s=LOCK_WAIT_S)

    def store_locker(self) -> Locker:
        """Locks for files that several orders or zones share: the workers' locker, or
        (in-process, where the run lock already excludes other runs) ``flock`` files in the
        store, so the same code guards both."""
        if self.locker is not None:
            return self.locker
        return FileLocker(ensure_dir(self.layout.certs_dir, mode=DIR_MODE_GROUP))

    def zone_refresher(self) -> ZoneRefresher:
        """The DNS refresh that runs once for many changes of a zone (``dns.refresh``)."""
        return ZoneRefresher(self.config, self.layout, self.store_locker())

    @cached_property
    def layout(self) -> Layout:
        return self.config.layout(test=self.options.test)

    @cached_property
    def production_overlaps_store(self) -> bool:
        """Whether the production tree and the store lie one inside the other (links
        resolved), looked at once per run or task rather than once per service mirrored."""
        return overlaps(self.layout.prod_dir, self.layout.certs_dir)

    def service(self, ref: ServiceRef) -> ServiceConfig:
        """A service's configuration: validated up front when selected, else read now (the
        other services of a zone, for its TLSA file; the services a server class uses)."""
        if ref in self.config.services:
            return self.config.services[ref]
        return load_service(self.config.conf_dir, ref)

    @property
    def min_roll_mins(self) -> float:
        given = self.options.min_roll_mins
        return self.config.main.globals.min_roll_mins if given is None else given

    @property
    def clean_keep(self) -> int:
        given = self.options.clean_keep
        return max(1, self.config.main.globals.clean_keep if given is None else given)

    @cached_property
    def renew_table(self) -> RenewTable:
        """The renew rule's table: made once per workspace (a run's configuration does not
        change under it), not once per service checked."""
        info = self.config.main.renew_info
        spreads = dict(info.spreads)
        legacy_spread = self.config.main.globals.renew_expire_days_spread
        if legacy_spread is not None and 90.0 not in spreads:
            # ssl-mgr mapped the deprecated spread setting onto the 90-day point.
            spreads[90.0] = legacy_spread
        return DEFAULT_TABLE.with_overrides(info.targets, spreads)
