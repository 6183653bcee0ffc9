"""Find, parse and validate a configuration tree before anything touches the disk.

Every problem becomes one :class:`~sslm_tasks.errors.ConfigError` naming the file, the key and
the value, so a run with bad input stops before it writes a byte: also a file that is not UTF-8,
nests too deeply for the parser, or cannot be read.
"""

from __future__ import annotations

import os
import time
import tomllib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from sslm_tasks.config import remembered
from sslm_tasks.config.eab import KEY_FILE_KEY, KID_KEY, AccountBinding
from sslm_tasks.config.files import CA_FILE, MAIN_FILE, SEARCH_DIRS
from sslm_tasks.config.models import (
    ALL_SERVICES,
    CA_GROUP,
    DEFAULT_DOMAINS,
    CaInfo,
    DnsUpdate,
    MainConfig,
    ServiceConfig,
)
from sslm_tasks.crypto.csr import san_problem
from sslm_tasks.errors import ConfigError
from sslm_tasks.store.confined import overlaps
from sslm_tasks.store.layout import CERTS_DIR, Layout, ServiceRef, group_problem, name_problem
from sslm_tasks.store.read import read_bytes

if TYPE_CHECKING:
    from sslm_tasks.config.tsig import TsigKey

#: Keys that mark a file as a service for ``ALL``/``*`` expansion (upstream's test).
_SERVICE_MARKERS = ("name=", "group=", "service=", "[keyopts]", "[x509]")
_LINE_MARKERS = tuple(f"\n{marker}" for marker in _SERVICE_MARKERS)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Config:
    """A validated configuration tree.

    ``services`` holds every service the run may touch: the selected ones plus the local CAs
    they are signed by, so signing never has to read a file that was not validated.
    """

    topdir: Path
    conf_dir: Path
    main: MainConfig
    cas: Mapping[str, CaInfo]
    services: Mapping[ServiceRef, ServiceConfig] = field(default_factory=dict)
    #: Services a wildcard found whose files do not load: each fails alone, the run goes on.
    broken: Mapping[ServiceRef, ConfigError] = field(default_factory=dict)
    #: One line for each file of a group directory that looks like a service but is none.
    strays: tuple[str, ...] = ()
    #: For a load of the whole tree read from its files, when the reading began: what
    #: :func:`remember_config` needs to keep it. None for a selection and for a remembered load
    #: (nothing to keep).
    read_since_ns: int | None = field(default=None, compare=False)

    def resolve(self, path: str) -> Path:
        """Relative paths in the config are relative to the topdir, as upstream."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.topdir / candidate

    def layout(self, *, test: bool = False) -> Layout:
        prod = str(self.resolve(self.main.globals.prod_cert_dir))
        return Layout(topdir=self.topdir, prod_dir=Path(prod + ".test" if test else prod))

    def service_file(self, ref: ServiceRef) -> Path:
        return self.conf_dir / ref.group / ref.service

    @cached_property
    def zones(self) -> frozenset[str]:
        """The zones named in ``ssl-mgr.conf`` (:func:`zone_of`): the groups, the
        ``[[dns_primary]]`` domains but ``default``, the ``[[dns_update]]`` zones; never ``ca``."""
        main = self.main
        zones = {g.domain.strip().rstrip(".").lower() for g in main.groups}
        zones |= {
            p.domain.strip().rstrip(".").lower()
            for p in main.dns_primary
            if p.domain.strip().lower() not in DEFAULT_DOMAINS
        }
        zones |= {entry.domain for entry in main.dns_update}
        return frozenset(zones - {CA_GROUP, ""})

    def log_dir(self) -> Path:
        """Where the log goes: ``logdir`` as set, or the default only if it exists.

        sslm never creates the default ``/var/log/ssl-mgr`` by itself: a topdir whose
        ``ssl-mgr.conf`` does not name a ``logdir`` must not write outside itself unasked.

        Raises:
          ConfigError: ``logdir`` is not set and the default directory does not exist.
        """
        globals_ = self.main.globals
        path = self.resolve(globals_.logdir)
        if "logdir" not in globals_.model_fields_set and not path.is_dir():
            raise ConfigError(
                self.conf_dir / MAIN_FILE,
                "globals.logdir",
                None,
                f"not set, and the default {path} does not exist: set logdir, or create {path}",
            )
        return path


def find_conf_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The first existing of ``$SSL_MGR_TOPDIR/conf.d``, ``./conf.d``, ``/etc/ssl-mgr/conf.d``.

    Upstream fell back silently to the last candidate; we say which places were searched.
    """
    env = os.environ if environ is None else environ
    candidates = list(SEARCH_DIRS)
    if env.get("SSL_MGR_TOPDIR"):
        candidates.insert(0, Path(env["SSL_MGR_TOPDIR"]) / "conf.d")
    for candidate in candidates:
        if candidate.is_dir():
            # absolute, not resolved: a conf.d reached through a symlink keeps its topdir
            return candidate.absolute()
    searched = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        "conf.d",
        "SSL_MGR_TOPDIR",
        env.get("SSL_MGR_TOPDIR"),
        f"no conf.d found (searched {searched})",
    )


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one config file.

    Raises:
      ConfigError: the file is missing or unreadable, is not UTF-8 (naming the first bad bytes
        and where they are), is not TOML, or nests deeper than the parser can follow.
    """
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        raise ConfigError(path, "(file)", None, "missing") from None
    except OSError as err:
        raise ConfigError(path, "(file)", None, f"unreadable: {err.strerror}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        bad = data[err.start : err.end]
        raise ConfigError(
            path, "(encoding)", bad, f"not UTF-8 text (line {line}, column {column})"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(path, "(toml)", None, f"malformed TOML: {err}") from None
    except RecursionError:
        raise ConfigError(path, "(toml)", None, "malformed TOML: nested too deeply") from None


def _validate(model: type[M], raw: Any, path: Path, prefix: str = "") -> M:
    """Validate ``raw`` and turn the first pydantic error into a ConfigError."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        # "[key]": the error is about a table's key itself, which the key path already names.
        about_key = "[key]" in first["loc"]
        loc = [str(part) for part in first["loc"] if part not in ("__root__", "[key]")]
        key = ".".join(filter(None, [prefix, *loc])) or prefix or "(file)"
        problem = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            problem = "unknown key"
        value = None if first["type"] == "missing" or about_key else first.get("input")
        if isinstance(value, dict):
            value = None
        raise ConfigError(path, key, value, problem) from None


@dataclass
class _Found:
    """What a selection's wildcards found: the services (each fails alone if its file does
    not load) and the files that look like a service but are none."""

    services: set[ServiceRef] = field(default_factory=set)
    strays: list[str] = field(default_factory=list)
    #: The TOML of the service files the scan parsed, so each file is parsed once per load.
    parsed: dict[ServiceRef, dict[str, Any]] = field(default_factory=dict)


def _expand_wildcard(
    conf_dir: Path, group: str, services: Iterable[str], found: _Found
) -> list[str]:
    names = list(services)
    if not any(name in ALL_SERVICES for name in names):
        return names
    files = scan_group(conf_dir / group)
    refs = [ServiceRef(group, name) for name in files.services]  # each checks both names
    found.services.update(refs)
    found.strays += files.strays
    found.parsed |= {ref: files.parsed[ref.service] for ref in refs if ref.service in files.parsed}
    return files.services


@dataclass(frozen=True)
class GroupFiles:
    """A group directory: its service files, and one line for each file that looks like a
    service file but is not one (ignored)."""

    services: list[str]
    strays: list[str]
    #: The TOML of each service file that parses (a file that does not is read again by
    #: :func:`load_service`, whose error names the problem).
    parsed: dict[str, dict[str, Any]] = field(default_factory=dict)


def list_services(group_dir: Path) -> list[str]:
    """Service files of a group directory (see :func:`scan_group`)."""
    return scan_group(group_dir).services


def scan_group(group_dir: Path) -> GroupFiles:
    """Service files of a group directory, recognised the way upstream recognises them (the
    five markers ``name=``, ``group=``, ``service=``, ``[KeyOpts]``, ``[X509]``), with two
    exceptions: a hidden file is never a service (hidden names are the tree's own), and a file
    whose ``service`` names another file is a copy (``web-ec.bak``, ``web-ec.orig``) and is
    ignored with a warning line, rather than stopping every group as a service that does not
    load would.

    Raises:
      ConfigError: a service file's name cannot be a service name (a control character, say).
    """
    services: list[str] = []
    strays: list[str] = []
    parsed: dict[str, dict[str, Any]] = {}
    for path in sorted(group_dir.iterdir()) if group_dir.is_dir() else []:
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            data = read_bytes(path)
        except OSError:
            continue
        try:
            text, exact = data.decode(), True
        except UnicodeDecodeError:
            text, exact = data.decode(errors="replace"), False
        squeezed = [
            "".join(line.split()).lower()
            for line in text.splitlines()
            if not line.lstrip().startswith("#")
        ]
        # A marker begins a line when it follows a newline here (a squeezed line has none).
        lines = "\n" + "\n".join(squeezed)
        if not all(marker in lines for marker in _LINE_MARKERS):
            continue
        problem = name_problem(path.name)
        if problem is not None:
            raise ConfigError(path, "(file name)", path.name, f"not a service name: {problem}")
        raw = _toml_or_none(text)
        declared = None if raw is None else raw.get("service")
        if isinstance(declared, str) and declared != path.name:
            strays.append(
                f"{path}: says service = {declared!r}, so it is no service file of its own "
                "(a copy?): ignored"
            )
            continue
        services.append(path.name)
        if raw is not None and exact:
            parsed[path.name] = raw
    return GroupFiles(services, strays, parsed)


def _toml_or_none(text: str) -> dict[str, Any] | None:
    """The TOML of a file; None when it is none (its load fails, with the reason)."""
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        return None


def load_main(conf_dir: Path, *, read_secrets: bool = True) -> MainConfig:
    """``ssl-mgr.conf``; ``read_secrets`` as :func:`load_config`."""
    path = conf_dir / MAIN_FILE
    if not path.exists():
        raise ConfigError(path, "(file)", None, "missing")
    main = _validate(MainConfig, read_toml(path), path)
    _check_surroundings(path, main, topdir=conf_dir.parent, read_secrets=read_secrets)
    for index, group in enumerate(main.groups):
        if group.active and (not group.domain or not group.services):
            raise ConfigError(
                path, f"groups[{index}]", group.domain, "active group needs a domain and services"
            )
    return main


def _check_surroundings(path: Path, main: MainConfig, *, topdir: Path, read_secrets: bool) -> None:
    """What ``ssl-mgr.conf`` names outside the configuration tree: the trees sslm writes, the
    TSIG key files, the notification URLs. Checked at every load, also of a remembered
    configuration (:mod:`~sslm_tasks.config.remembered`): they change without the file."""
    _check_trees(path, main, topdir=topdir)
    _check_dns_update(path, main, topdir=topdir, read_secrets=read_secrets)
    _check_notify(path, main)


def _check_trees(path: Path, main: MainConfig, *, topdir: Path) -> None:
    """The trees sslm writes outside the store are apart from it, are not ``/``, and are (or
    can be made) directories.

    A production tree inside the store would mirror the store onto itself (and its clean-up
    would reach the CA keys); one around the store would ship every key to every server. A
    tree at or under a file would fail at its first write, after other work was done.
    """
    store = topdir / "certs"
    dns = main.dns
    trees = [
        ("globals.prod_cert_dir", main.globals.prod_cert_dir),
        ("globals.logdir", main.globals.logdir),
        *((f"dns.tlsa_dirs[{i}]", d) for i, d in enumerate(dns.tlsa_dirs if dns else [])),
        *((f"dns.acme_dir[{i}]", d) for i, d in enumerate(dns.acme_dir if dns else [])),
    ]
    for key, value in trees:
        resolved = Path(value) if Path(value).is_absolute() else topdir / value
        if os.path.realpath(resolved) == "/":
            raise ConfigError(path, key, value, "must not be the root directory")
        if overlaps(resolved, store):
            raise ConfigError(
                path, key, value, f"must not be inside the store {store} or contain it"
            )
        blocker = _first_existing(resolved)
        if not blocker.is_dir():
            raise ConfigError(path, key, value, f"{blocker} exists and is not a directory")


def _check_dns_update(path: Path, main: MainConfig, *, topdir: Path, read_secrets: bool) -> None:
    """One ``[[dns_update]]`` entry per zone, each with a key file that is the owner's only
    and holds a key (read now, so a bad one stops the run before anything is published;
    unless ``read_secrets`` is False)."""
    seen: set[str] = set()
    for index, entry in enumerate(main.dns_update):
        if entry.domain in seen:
            raise ConfigError(
                path, f"dns_update[{index}].domain", entry.domain, "a second entry for this zone"
            )
        seen.add(entry.domain)
        if read_secrets:
            _read_key(path, f"dns_update[{index}].key_file", entry.key_file, topdir=topdir)


def _read_key(path: Path, key: str, key_file: str, *, topdir: Path) -> TsigKey:
    # Imported here, not at the top: dnspython (~25 ms) is for a TSIG key only, which a load
    # that reads no [[dns_update]] entry, or a remembered one, never reads.
    from sslm_tasks.config.tsig import read_tsig_key

    resolved = Path(key_file) if Path(key_file).is_absolute() else topdir / key_file
    try:
        return read_tsig_key(resolved)
    except ValueError as err:
        raise ConfigError(path, key, key_file, f"TSIG key file {err}") from None


def update_key(config: Config, key_file: str) -> TsigKey:
    """The TSIG key in ``key_file`` (as configured or recorded: relative to the topdir), read
    now: a worker reads its own copy, which may differ from the one checked at load time.

    Raises:
      ConfigError: the file is missing, readable by others than its owner, or holds no key;
        it names the ``[[dns_update]]`` entry of the file when there is one.
    """
    index = next(
        (i for i, entry in enumerate(config.main.dns_update) if entry.key_file == key_file), None
    )
    key = "dns_update.key_file" if index is None else f"dns_update[{index}].key_file"
    return _read_key(config.conf_dir / MAIN_FILE, key, key_file, topdir=config.topdir)


def zone_of(config: Config, group: str, name: str) -> str | None:
    """The zone the DNS records of ``name`` (a wildcard counts as its base name) go into: the
    longest suffix among the configured groups, the ``[[dns_primary]]`` domains but ``default``,
    the ``[[dns_update]]`` zones and ``group`` (the service's own); None when none is one.

    Each of the name's suffixes is looked up, longest first, so the cost is its number of
    labels, not the number of zones (every service of 100 groups would otherwise walk all 100).
    """
    host = name.rstrip(".").lower().removeprefix("*.")
    labels = host.split(".")
    for start in range(len(labels)):
        suffix = ".".join(labels[start:])
        if suffix and (suffix == group or suffix in config.zones):
            return suffix
    return None


def update_of(config: Config, group: str, name: str) -> DnsUpdate | None:
    """The ``[[dns_update]]`` entry whose zone holds ``name``'s records; None when that zone
    takes them from include files (or there is no zone)."""
    zone = zone_of(config, group, name)
    return None if zone is None else config.main.update_of(zone)


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (links followed, as a write would)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_notify(path: Path, main: MainConfig) -> None:
    """Every ``[notify] urls`` entry is one apprise knows, so a typo stops the run here rather
    than when the first failure should have been announced."""
    if main.notify is None or not main.notify.urls:
        return
    # apprise takes half a second to import: only configurations that notify pay for it.
    import apprise

    for index, url in enumerate(main.notify.urls):
        if not apprise.Apprise().add(url):
            shown = url.split("://", 1)[0] + "://..."  # the rest may hold a password
            raise ConfigError(path, f"notify.urls[{index}]", shown, "not a URL apprise knows")


def load_cas(conf_dir: Path, main: MainConfig, *, read_secrets: bool = True) -> dict[str, CaInfo]:
    """``ca-info.conf``; ``read_secrets`` as :func:`load_config`."""
    path = conf_dir / CA_FILE
    if not path.exists():
        return {}
    cas: dict[str, CaInfo] = {}
    for name, table in read_toml(path).items():
        if not isinstance(table, dict):
            raise ConfigError(path, name, table, "expected a [table] per CA")
        cas[name] = _validate(CaInfo, table, path, prefix=name)
        _binding(path, name, cas[name], topdir=conf_dir.parent)
    if read_secrets:
        _check_account_keys(path, cas, topdir=conf_dir.parent)
    if main.globals.preferred_acme_profile:
        cas = {
            name: ca
            if ca.ca_preferred_acme_profile is not None or ca.is_local
            else ca.model_copy(
                update={"ca_preferred_acme_profile": main.globals.preferred_acme_profile}
            )
            for name, ca in cas.items()
        }
    return cas


def _check_account_keys(path: Path, cas: Mapping[str, CaInfo], *, topdir: Path) -> None:
    """Read each External Account Binding's HMAC key: a bad one stops the run now, not at the
    first registration (checked at every load, as :func:`_check_surroundings`)."""
    for name, ca in cas.items():
        binding = _binding(path, name, ca, topdir=topdir)
        if binding is not None:
            binding.hmac_key()


def _binding(path: Path, name: str, ca: CaInfo, *, topdir: Path) -> AccountBinding | None:
    """The External Account Binding of CA ``name`` (its key not read); None without one.

    Raises:
      ConfigError: only one of the two keys is set, or they are set for a local CA.
    """
    kid, key_file = ca.ca_eab_kid, ca.ca_eab_hmac_key_file
    if kid is None and key_file is None:
        return None
    if ca.is_local:
        raise ConfigError(
            path,
            f"{name}.{KID_KEY if kid is not None else KEY_FILE_KEY}",
            kid if kid is not None else key_file,
            f"External Account Binding is for ACME CAs, and ca_type = {ca.ca_type!r} is local",
        )
    if kid is None or key_file is None:
        missing, present = (KID_KEY, KEY_FILE_KEY) if kid is None else (KEY_FILE_KEY, KID_KEY)
        raise ConfigError(
            path,
            f"{name}.{missing}",
            None,
            f"missing: External Account Binding needs both {KID_KEY} and {KEY_FILE_KEY}, "
            f"and {present} is set",
        )
    resolved = Path(key_file) if Path(key_file).is_absolute() else topdir / key_file
    return AccountBinding(ca=name, kid=kid, key_file=resolved, conf_file=path)


def account_binding(config: Config, ca: str) -> AccountBinding | None:
    """The External Account Binding ``ca-info.conf`` configures for CA ``ca``; None when it
    configures none (or has no such CA). The HMAC key is not read here: only registering an
    account needs it (:meth:`~sslm_tasks.config.eab.AccountBinding.hmac_key`).

    Raises:
      ConfigError: as at load time, for only one of the two keys or a local CA.
    """
    info = config.cas.get(ca)
    if info is None:
        return None
    return _binding(config.conf_dir / CA_FILE, ca, info, topdir=config.topdir)


def load_service(
    conf_dir: Path, ref: ServiceRef, *, parsed: dict[str, Any] | None = None
) -> ServiceConfig:
    """The service file of ``ref``, validated; ``parsed``: its TOML, when a group's scan has
    already read it (:class:`GroupFiles`).

    Raises:
      ConfigError: the file is missing, is no TOML, or says something invalid.
    """
    path = conf_dir / ref.group / ref.service
    if parsed is None:
        if not path.is_file():
            raise ConfigError(path, "(file)", None, f"no service file for {ref}")
        parsed = read_toml(path)
    svc = _validate(ServiceConfig, parsed, path)
    if svc.group != ref.group:
        raise ConfigError(path, "group", svc.group, f"expected {ref.group!r} (the directory name)")
    if svc.service != ref.service:
        raise ConfigError(path, "service", svc.service, f"expected {ref.service!r} (the file name)")
    problem = None if svc.is_ca else san_problem(svc.x509.cn)
    if problem is not None:
        # A CA's CN is a label; a service's CN goes into its SANs, so it must be a name.
        raise ConfigError(path, "X509.CN", svc.x509.cn, problem)
    return svc


def configured_refs(conf_dir: Path, main: MainConfig, found: _Found) -> list[ServiceRef]:
    """Services of the active groups in ``ssl-mgr.conf``; a later duplicate domain wins."""
    by_domain: dict[str, list[str]] = {}
    for group in main.groups:
        if group.active and group.domain:
            by_domain[group.domain] = _expand_wildcard(
                conf_dir, group.domain, group.services, found
            )
    return [ServiceRef(domain, svc) for domain, services in by_domain.items() for svc in services]


def parse_selection(conf_dir: Path, specs: Iterable[str], found: _Found) -> list[ServiceRef]:
    """``group:svc1,svc2`` and ``group:ALL`` from the command line.

    A bare ``group`` means ``group:ALL``. Upstream silently ignored it, so that
    ``sslm-mgr -renew example.com`` did nothing at all.
    """
    refs: list[ServiceRef] = []
    for spec in specs:
        group, _, services = spec.partition(":")
        names = [s.strip() for s in services.split(",") if s.strip()] or ["ALL"]
        problem = _selection_problem(group, names)
        if problem is not None:
            raise ConfigError("command line", "grps_svcs", spec, problem)
        expanded = _expand_wildcard(conf_dir, group, names, found)
        if not expanded:
            raise ConfigError(conf_dir / group, "(command line)", spec, "no service files found")
        refs.extend(ServiceRef(group, svc) for svc in expanded)
    return list(dict.fromkeys(refs))


def _selection_problem(group: str, services: Iterable[str]) -> str | None:
    problem = group_problem(group)
    if problem is not None:
        return f"group {group!r}: {problem}"
    for name in services:
        problem = name_problem(name)
        if problem is not None:
            return f"service {name!r}: {problem}"
    return None


def load_settings_only(conf_dir: Path | None = None) -> Config:
    """``ssl-mgr.conf`` and ``ca-info.conf`` without any service file: what a task that works on
    zones or servers, not on services, needs (a service it meets is read on demand,
    ``Workspace.service``).

    Raises:
      ConfigError: as :func:`load_config`.
    """
    conf_dir = (conf_dir or find_conf_dir()).absolute()
    main = load_main(conf_dir)
    return Config(
        topdir=conf_dir.parent, conf_dir=conf_dir, main=main, cas=load_cas(conf_dir, main)
    )


@dataclass(frozen=True)
class _Loaded:
    """A load of the whole tree, as :mod:`~sslm_tasks.config.remembered` keeps it."""

    config: Config
    ordered: list[ServiceRef]


def load_config(
    selection: Iterable[str] = (),
    *,
    conf_dir: Path | None = None,
    read_secrets: bool = True,
) -> tuple[Config, list[ServiceRef]]:
    """Load and validate everything a run over ``selection`` needs.

    Returns the config and the selected services in dependency order: local CAs first, each
    after the CA that signs it, then the other groups in config order. A service that a
    wildcard (``*``, ``ALL``, a bare group) found, and whose file does not load, is not
    selected: it is in ``Config.broken`` and fails alone; a service named explicitly must load.

    The secrets the configuration names (TSIG keys, EAB HMAC keys) are read to check them,
    unless ``read_secrets`` is False: for a reader that uses none and may not read them (the
    metrics exporter runs as a user that owns nothing of the tree, so their 0600 files are
    closed to it). The keys naming them are checked either way.

    A load of the whole tree (no ``selection``) takes the configuration the last run kept in
    the store (:func:`remember_config`), when no file of the configuration tree and no code
    changed since (:mod:`~sslm_tasks.config.remembered`); what lies outside the tree is checked
    again either way.

    Raises:
      ConfigError: the main files, or a service named explicitly (or a CA one needs), do not
        load.
    """
    conf_dir = (conf_dir or find_conf_dir()).absolute()
    selection = list(selection)
    certs_dir = conf_dir.parent / CERTS_DIR
    if not selection:
        recalled = remembered.recall(certs_dir, conf_dir)
        if isinstance(recalled, _Loaded):
            _check_surroundings(
                conf_dir / MAIN_FILE,
                recalled.config.main,
                topdir=conf_dir.parent,
                read_secrets=read_secrets,
            )
            if read_secrets:
                _check_account_keys(conf_dir / CA_FILE, recalled.config.cas, topdir=conf_dir.parent)
            return recalled.config, list(recalled.ordered)
    started_ns = time.time_ns()
    main = load_main(conf_dir, read_secrets=read_secrets)
    cas = load_cas(conf_dir, main, read_secrets=read_secrets)
    found = _Found()
    selected = (
        parse_selection(conf_dir, selection, found)
        if selection
        else configured_refs(conf_dir, main, found)
    )
    services: dict[ServiceRef, ServiceConfig] = {}
    signers: dict[ServiceRef, ServiceRef] = {}
    broken: dict[ServiceRef, ConfigError] = {}
    # Looked for once: thousands of services name the same few CAs.
    ca_files = {name for name in cas if (conf_dir / CA_GROUP / name).is_file()}
    pending = deque(selected)
    while pending:
        ref = pending.popleft()
        if ref in services or ref in broken:
            continue
        try:
            svc = load_service(conf_dir, ref, parsed=found.parsed.pop(ref, None))
            signer = _signing_ca_ref(conf_dir, ref, svc, cas, ca_files)
        except ConfigError as err:
            if ref not in found.services:
                raise
            broken[ref] = err
            continue
        services[ref] = svc
        if signer is not None:
            signers[ref] = signer
            pending.append(signer)
    _break_dependents(conf_dir, services, signers, broken, found.services)
    config = Config(
        topdir=conf_dir.parent,
        conf_dir=conf_dir,
        main=main,
        cas=cas,
        services=services,
        broken=broken,
        strays=tuple(found.strays),
        read_since_ns=None if selection else started_ns,
    )
    for ref in list(services):
        try:
            _check_acme(config, ref)
        except ConfigError as err:
            if ref not in found.services:
                raise
            broken[ref] = err
            del services[ref]
    chosen = [ref for ref in selected if ref in services]
    return config, order_by_signer(config, chosen)


def remember_config(config: Config, ordered: Sequence[ServiceRef]) -> None:
    """Keep a load of the whole tree (``config`` and its ``ordered`` services, as
    :func:`load_config` returned them) for the next loads; nothing for a selection or a load
    that was itself remembered.

    Only a run that writes the tree anyway calls this, and only once it is sure to go on (its
    log open, its lock held): a run stopped before it writes leaves the disk as it was."""
    if config.read_since_ns is None:
        return
    conf_dir = config.conf_dir
    remembered.keep(
        conf_dir.parent / CERTS_DIR,
        conf_dir,
        _read_places(conf_dir, config.main),
        _Loaded(replace(config, read_since_ns=None), list(ordered)),
        read_since_ns=config.read_since_ns,
    )


def _read_places(conf_dir: Path, main: MainConfig) -> list[tuple[str, list[str]]]:
    """Every directory and file a load of the whole tree reads or looks for: the main files,
    every name in ``ca/`` (the local CAs' service files), and each active group's service files,
    or every name in its directory when a wildcard scans it (any file may become a service)."""
    places = [(str(conf_dir), [MAIN_FILE, CA_FILE, CA_GROUP]), _listed(conf_dir / CA_GROUP)]
    for group in main.groups:
        if group.active and group.domain:
            group_dir = conf_dir / group.domain
            if any(name in ALL_SERVICES for name in group.services):
                places.append(_listed(group_dir))
            else:
                places.append((str(group_dir), list(group.services)))
    return places


def _listed(directory: Path) -> tuple[str, list[str]]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:  # absent, or not a directory: its identity says so
        names = []
    return str(directory), names


def _break_dependents(
    conf_dir: Path,
    services: dict[ServiceRef, ServiceConfig],
    signers: Mapping[ServiceRef, ServiceRef],
    broken: dict[ServiceRef, ConfigError],
    found: set[ServiceRef],
) -> None:
    """A service whose local CA does not load fails with it (its own error when a wildcard
    found it; the CA's, stopping the run, when it was named)."""
    while failing := [ref for ref in services if signers.get(ref) in broken]:
        for ref in failing:
            ca = signers[ref]
            if ref not in found:
                raise broken[ca]
            broken[ref] = ConfigError(
                conf_dir / ref.group / ref.service,
                "signing_ca",
                ca.service,
                f"the CA's service file does not load: {broken[ca]}",
            )
            del services[ref]


def _signing_ca_ref(
    conf_dir: Path,
    ref: ServiceRef,
    svc: ServiceConfig,
    cas: Mapping[str, CaInfo],
    ca_files: set[str],
) -> ServiceRef | None:
    """The local CA service that signs ``ref``; None for a self-signed or ACME one.
    ``ca_files``: the CAs that have a service file in ``conf_dir/ca``."""
    if svc.self_signed:
        return None
    path = conf_dir / ref.group / ref.service
    ca = cas.get(svc.signing_ca)
    if ca is None:
        known = ", ".join(sorted(cas)) or f"none: {conf_dir / CA_FILE} has no CAs"
        raise ConfigError(path, "signing_ca", svc.signing_ca, f"unknown CA (known: {known})")
    if not ca.is_local:
        return None
    signer = ServiceRef(CA_GROUP, svc.signing_ca)
    if svc.signing_ca not in ca_files:
        raise ConfigError(
            path,
            "signing_ca",
            svc.signing_ca,
            f"local CA needs the service file {conf_dir / CA_GROUP / svc.signing_ca}",
        )
    if signer == ref:
        raise ConfigError(
            path, "signing_ca", svc.signing_ca, "a CA cannot sign itself by name; use 'self'"
        )
    return signer


def signer_of(config: Config, ref: ServiceRef) -> ServiceRef | None:
    """The local CA service that signs ``ref``, or None (self-signed or ACME)."""
    svc = config.services[ref]
    ca = config.cas.get(svc.signing_ca)
    if svc.self_signed or ca is None or not ca.is_local:
        return None
    return ServiceRef(CA_GROUP, svc.signing_ca)


def acme_ca_of(config: Config, ref: ServiceRef) -> CaInfo | None:
    """The ACME CA that signs ``ref``; None for self-signed and local-CA services."""
    svc = config.services[ref]
    if svc.self_signed:
        return None
    ca = config.cas.get(svc.signing_ca)
    return None if ca is None or ca.is_local else ca


def _check_acme(config: Config, ref: ServiceRef) -> None:
    """What a service's ACME CA needs of the configuration, checked before anything is ordered
    (a failed authorization counts against the CA's rate limits): for dns-01 a ``[dns]
    acme_dir`` unless every name is in a ``[[dns_update]]`` zone; for http-01 the web servers'
    document root, and no wildcard name.

    Raises:
      ConfigError: naming the file, key and value that must change.
    """
    ca = acme_ca_of(config, ref)
    if ca is None:
        return
    where = config.conf_dir / MAIN_FILE
    if ca.challenge_kind == "dns-01":
        dns = config.main.dns
        x509 = config.services[ref].x509
        by_update = all(update_of(config, ref.group, name) for name in [x509.cn, *x509.sans])
        if not by_update and (dns is None or not dns.acme_dir):
            raise ConfigError(
                where,
                "dns.acme_dir",
                None,
                f"dns-01 (the CA of {ref}) needs the directories the zones include challenges from",
            )
        return
    web_roots(config, ref)
    x509 = config.services[ref].x509
    for key, names in (("X509.CN", [x509.cn]), ("X509.sans", x509.sans)):
        wild = next((name for name in names if name.startswith("*.")), None)
        if wild is not None:
            # The Baseline Requirements forbid proving a wildcard over http-01, so CAs offer
            # only dns-01 for one: refused here rather than as a failed order.
            raise ConfigError(
                config.service_file(ref),
                key,
                wild,
                f"a wildcard needs dns-01, but signing_ca {config.services[ref].signing_ca!r} "
                "validates with http-01",
            )


def web_roots(config: Config, ref: ServiceRef) -> tuple[str, list[str]]:
    """``[web] server_dir`` and ``servers``: where the http-01 tokens of ``ref`` go.

    Upstream wrote nothing, without a word, when ``servers`` was empty; here both are required.

    Raises:
      ConfigError: ``server_dir`` is missing or not absolute (every server gets the tokens at
        the same path, so it cannot be relative to this host's topdir), or ``servers`` is empty.
    """
    where = config.conf_dir / MAIN_FILE
    web = config.main.web
    server_dir = (web.server_dir or "").strip() if web is not None else ""
    if web is None or not server_dir:
        raise ConfigError(
            where,
            "web.server_dir",
            None,
            f"http-01 (the CA of {ref}) needs the web servers' document root for ACME tokens",
        )
    if not server_dir.startswith("/"):
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
    return server_dir, list(web.servers)


def order_by_signer(config: Config, refs: Iterable[ServiceRef]) -> list[ServiceRef]:
    """Put every selected signer before what it signs, keeping config order otherwise.

    A CA and its leaves renewed in one run then sign with the fresh CA certificate.
    """
    ordered: list[ServiceRef] = []
    placed: set[ServiceRef] = set()
    wanted = dict.fromkeys(refs)

    def visit(ref: ServiceRef, trail: tuple[ServiceRef, ...]) -> None:
        if ref in placed:
            return
        if ref in trail:
            raise ConfigError(
                config.service_file(ref),
                "signing_ca",
                config.services[ref].signing_ca,
                "signing loop",
            )
        signer = signer_of(config, ref)
        if signer is not None and signer in wanted:
            visit(signer, (*trail, ref))
        ordered.append(ref)
        placed.add(ref)

    for ref in sorted(wanted, key=lambda r: r.group != CA_GROUP):
        visit(ref, ())
    return ordered
