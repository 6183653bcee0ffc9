"""Pydantic models of ssl-mgr's three kinds of config file, read unchanged.

The shapes follow the ssl-mgr manual and the latest upstream release. Where upstream silently
ignored a key (``bits``, ``renew_expire_days``, the global ``preferred_acme_profile``,
``renew_target_<X>``) the key now does what its name says; where upstream crashed or guessed
(unknown tables, an unknown ``ktype`` becoming EC, an unknown digest becoming sha256) the models
refuse the value. Every model forbids unknown keys so that a typo is an error naming the key,
not a setting that quietly does nothing. Every value that is used later (a number of days, a
name that becomes a path or a DNS owner) is bounded here, so that it cannot stop a run half-way,
after other certificates were already renewed: no number is infinite or NaN, none is beyond
the bounds of :mod:`sslm_tasks.config.bounds`, and names follow
:mod:`sslm_tasks.store.layout`'s rules.

Paths in these models are kept as written; :mod:`sslm_tasks.config.load` resolves relative ones
against the topdir.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sslm_tasks.config.bounds import (
    MAX_CHECK_DELAY_S,
    MAX_DAYS,
    MAX_ROLL_MINS,
    MAX_TTL,
    MIN_SIGN_DAYS,
)
from sslm_tasks.config.probes import parse_verify
from sslm_tasks.crypto.csr import san_problem, subject_value_problem
from sslm_tasks.crypto.keys import KeySpec, ec_curve_names
from sslm_tasks.crypto.signing import DIGESTS
from sslm_tasks.errors import ConfigError
from sslm_tasks.store.layout import group_problem, name_problem

#: The group that holds the local CAs.
CA_GROUP = "ca"

#: The server classes upstream knows, in restart order.
SERVER_CLASSES = ("smtp", "imap", "web", "other")

#: Tags a server or the DNS section may depend on.
DEPEND_TAGS = frozenset({"cert", "tlsa", "dns"})
#: ``[[dns_primary]]`` domains that match any apex without an entry of its own.
DEFAULT_DOMAINS = frozenset({"default", "*"})
#: ``svc_depends`` domains that match every group.
ANY_DOMAIN = frozenset({"*", "all", "any"})
#: ``[[groups]] services`` entries that mean every service file of the group.
ALL_SERVICES = frozenset({"ALL", "*"})


class _Model(BaseModel):
    # allow_inf_nan: inf or nan in any number would only fail when it is used, mid-run.
    # defer_build: a remembered configuration (config/remembered.py) is unpickled, never
    # validated, so a run that finds one does not pay for building the validators.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        allow_inf_nan=False,
        defer_build=True,
    )


# Strict: a boolean is not a number (pydantic would read ``true`` as 1).
Days = Annotated[float, Field(strict=True, ge=0, le=MAX_DAYS)]
PositiveDays = Annotated[float, Field(strict=True, gt=0, le=MAX_DAYS)]
RollMinutes = Annotated[float, Field(strict=True, ge=0, le=MAX_ROLL_MINS)]


def _checked(problem: str | None) -> None:
    if problem is not None:
        raise ValueError(problem)


def _group_or_any(name: str) -> str:
    if name.lower() not in ANY_DOMAIN:
        _checked(group_problem(name))
    return name


def _san(name: str) -> str:
    _checked(san_problem(name))
    return name


def server_host_problem(host: str) -> str | None:
    """Say why ``host`` cannot be a server ssh connects to, or return None.

    The host is an argument of ssh and rsync: one that starts with ``-`` would be read as an
    option, and one with a space or a control character is no host name nor ssh_config alias.
    """
    if not host or host.startswith("-") or not host.isprintable() or " " in host:
        return "not a host name ssh can connect to"
    return None


def _server_host(host: str) -> str:
    _checked(server_host_problem(host))
    return host


def _service_name(name: str) -> str:
    _checked(name_problem(name))
    return name


def _as_list(value: Any) -> Any:
    """Upstream accepts a bare string wherever a list of strings is expected."""
    if isinstance(value, str):
        return [value] if value else []
    return value


StrList = Annotated[list[str], BeforeValidator(_as_list)]
#: SAN entries: host names (``*.`` allowed) and IP addresses; a bare string is a list of one.
SanList = Annotated[list[Annotated[str, AfterValidator(_san)]], BeforeValidator(_as_list)]
#: A group (a lower-case domain name, see :func:`~sslm_tasks.store.layout.group_problem`), or
#: one of :data:`ANY_DOMAIN`.
GroupOrAny = Annotated[str, AfterValidator(_group_or_any)]
#: Service names, or ``ALL``/``*``; a bare string is a list of one.
ServiceNames = Annotated[
    list[Annotated[str, AfterValidator(_service_name)]], BeforeValidator(_as_list)
]


def _as_commands(value: Any) -> Any:
    """A restart command is a string or a list of strings; each string is one command.

    Upstream split on whitespace; shlex keeps quoted arguments together and the command
    still runs without a shell.
    """
    value = _as_list(value)
    if not isinstance(value, list):
        return value
    commands: list[list[str]] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"command {item!r} is not a string")
        argv = shlex.split(item)
        if argv:
            commands.append(argv)
    return commands


Commands = Annotated[list[list[str]], BeforeValidator(_as_commands)]


# --------------------------------------------------------------------------- ssl-mgr.conf


class Globals(_Model):
    verb: bool = False
    #: Upstream's certbot hook. Accepted so existing files load; sslm speaks ACME itself.
    sslm_auth_hook: str = "/usr/lib/ssl-mgr/sslm-auth-hook"
    prod_cert_dir: str = "/etc/ssl-mgr/prod-certs"
    logdir: str = "/var/log/ssl-mgr"
    clean_keep: int = 10
    min_roll_mins: RollMinutes = 90
    #: Seconds; ``<= 0``: no first wait.
    dns_check_delay: float = Field(
        default=240, strict=True, ge=-MAX_CHECK_DELAY_S, le=MAX_CHECK_DELAY_S
    )
    #: Resolvers that must also show the new serial. Upstream defaulted to four public
    #: resolvers; sslm asks none unless they are named here, so nothing leaves the
    #: operator's own servers by default.
    dns_xtra_ns: StrList = Field(default_factory=list)
    post_copy_cmd: list[tuple[str, str]] = Field(default_factory=list)
    #: Renew when this many days are left (capped at half the lifetime).
    renew_expire_days: PositiveDays | None = None
    renew_expire_days_spread: Days | None = None
    #: Default ACME profile for CAs that do not set ``ca_preferred_acme_profile``.
    preferred_acme_profile: str | None = None

    @field_validator("prod_cert_dir")
    @classmethod
    def _prod_dir_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("clean_keep")
    @classmethod
    def _clean_keep_at_least_one(cls, value: int) -> int:
        return max(1, value)


#: A ``[renew_info]`` key: kind and lifetime. ASCII digits: ``\d`` would take any script's.
_RENEW_POINT = re.compile(r"(?:renew_)?(target|rand_adj)_([0-9]+(?:\.[0-9]+)?)")


def _renew_point_key(key: str) -> str:
    match = _RENEW_POINT.fullmatch(key)
    if match is None:
        raise ValueError("unknown key (expected target_<days> or rand_adj_<days>)")
    if float(match.group(2)) > MAX_DAYS:
        raise ValueError(f"a lifetime of more than {MAX_DAYS} days")
    return key


#: ``[renew_info]`` as written: point name -> days.
_RenewPoints = dict[Annotated[str, AfterValidator(_renew_point_key)], Days]


@dataclass(frozen=True)
class RenewInfo:
    """``[renew_info]``: ``target_<days>`` and ``rand_adj_<days>`` points, in days.

    ``renew_target_<days>``, which upstream's example suggested but never read, is accepted as
    a spelling of ``target_<days>``.

    A dataclass that pydantic validates as the table it wraps, not a ``RootModel``: importing
    ``RootModel`` builds its validator at once, which loads pydantic's plugin loader and with
    it importlib.metadata (~25 ms), also for ``-s``, which validates nothing.
    """

    root: dict[str, float] = field(default_factory=dict)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type[Any], handler: GetCoreSchemaHandler) -> Any:
        # Any: the schema's type is pydantic-core's, which sslm does not import itself.
        return AfterValidator(cls).__get_pydantic_core_schema__(_RenewPoints, handler)

    @property
    def targets(self) -> dict[float, float]:
        """Days left at renewal, by certificate lifetime in days."""
        return self._points("target")

    @property
    def spreads(self) -> dict[float, float]:
        """Random spread in days, by certificate lifetime in days."""
        return self._points("rand_adj")

    def _points(self, kind: str) -> dict[float, float]:
        points: dict[float, float] = {}
        for key, days in self.root.items():
            match = _RENEW_POINT.fullmatch(key)
            if match is not None and match.group(1) == kind:
                points[float(match.group(2))] = days
        return points


class GroupEntry(_Model):
    domain: str
    services: ServiceNames = Field(default_factory=list)
    #: Upstream treats a missing ``active`` as inactive; so do we.
    active: bool = False

    @field_validator("domain")
    @classmethod
    def _domain_name(cls, value: str) -> str:
        # '' is left to load.py, which refuses it for an active group only, as upstream.
        if value:
            _checked(group_problem(value))
        return value


class DnsPrimary(_Model):
    domain: str
    server: str
    port: int = Field(default=53, ge=1, le=65535)


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            "must be an IP address: sslm never asks the system resolver (it may point off this "
            "machine), so it cannot look up a server name"
        ) from None
    return value


def _zone_name(value: str) -> str:
    _checked(group_problem(value))
    return value


class DnsUpdate(_Model):
    """One ``[[dns_update]]`` table: the zone ``domain`` is changed by RFC 2136 updates sent to
    ``server`` (an IP address) and signed with the TSIG key of ``key_file`` (as ``tsig-keygen``
    writes it); the key file is checked when the configuration loads (``config.load``)."""

    domain: Annotated[str, AfterValidator(_zone_name)]
    server: Annotated[str, AfterValidator(_ip_address)]
    port: int = Field(default=53, ge=1, le=65535)
    key_file: str = Field(min_length=1)


class DnsSection(_Model):
    restart_cmd: Commands = Field(default_factory=list)
    acme_dir: StrList = Field(default_factory=list)
    tlsa_dirs: StrList = Field(default_factory=list)
    depends: StrList = Field(default_factory=list)
    skip_prod_copy: bool = False

    @field_validator("depends")
    @classmethod
    def _known_tags(cls, value: list[str]) -> list[str]:
        return _check_tags(value)


def _check_tags(value: list[str]) -> list[str]:
    for tag in value:
        if tag not in DEPEND_TAGS:
            raise ValueError(f"unknown tag {tag!r} (known: {', '.join(sorted(DEPEND_TAGS))})")
    return value


class ServerSection(_Model):
    servers: Annotated[
        list[Annotated[str, AfterValidator(_server_host)]], BeforeValidator(_as_list)
    ] = Field(default_factory=list)
    restart_cmd: Commands = Field(default_factory=list)
    depends: StrList = Field(default_factory=list)
    #: ``[[domain, [svc, ...]], ...]``; every entry counts (upstream kept only the last).
    svc_depends: list[tuple[GroupOrAny, ServiceNames]] = Field(default_factory=list)
    server_dir: str | None = None
    skip_prod_copy: bool = False
    #: Probes after deploy, ``{host}`` being each server: ``smtp://{host}:25``,
    #: ``tls://www.example.com:443?connect=192.0.2.10`` (see :mod:`sslm_tasks.deploy.verify`).
    verify: StrList = Field(default_factory=list)

    @field_validator("depends")
    @classmethod
    def _known_tags(cls, value: list[str]) -> list[str]:
        return _check_tags(value)

    @field_validator("verify")
    @classmethod
    def _verify_probes(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # Each server's expansion of {host}; with no servers, any name checks the syntax.
        for host in info.data.get("servers") or ["server.invalid"]:
            for probe in value:
                try:
                    parse_verify(probe, default_host=host)
                except ConfigError as err:
                    raise ValueError(f"{probe!r}: {err.problem}") from None
        return value


#: A site becomes part of a queue name (``deploy.<site>``) and of worker node names, so it is
#: kept to characters every broker and shell accepts unquoted.
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
#: Where servers that no ``[sites]`` entry names are deployed from.
DEFAULT_SITE = "default"


#: What a notification may be sent for (``[notify] on``).
NotifyEvent = Literal["failure", "recovery", "expiring"]


class NotifySection(_Model):
    """``[notify]``: sslm's addition, messages through apprise when a service's health changes."""

    #: apprise URLs (``mailto://...``, ``json://...``, ``ntfy://...``, ...): checked when the
    #: configuration loads.
    urls: StrList = Field(default_factory=list)
    on: list[NotifyEvent] = Field(default_factory=lambda: list(get_args(NotifyEvent)))
    #: A reminder while a service stays failing or expiring, this often; 0: none.
    remind_hours: float = Field(default=24, ge=0, le=8760, allow_inf_nan=False)


class MainConfig(_Model):
    """``conf.d/ssl-mgr.conf``."""

    globals: Globals = Field(default_factory=Globals)
    renew_info: RenewInfo = Field(default_factory=RenewInfo)
    groups: list[GroupEntry] = Field(default_factory=list)
    dns_primary: list[DnsPrimary] = Field(default_factory=list)
    #: sslm's addition: zones changed by RFC 2136 updates instead of include files.
    dns_update: list[DnsUpdate] = Field(default_factory=list)
    dns: DnsSection | None = None
    smtp: ServerSection | None = None
    imap: ServerSection | None = None
    web: ServerSection | None = None
    other: ServerSection | None = None
    #: sslm's addition: ``site = [host, ...]``. Each site has its own deploy queue and workers.
    sites: dict[str, StrList] = Field(default_factory=dict)
    notify: NotifySection | None = None

    def update_of(self, zone: str) -> DnsUpdate | None:
        """The ``[[dns_update]]`` entry of ``zone``; None when its records go to include files."""
        return next((entry for entry in self.dns_update if entry.domain == zone), None)

    @field_validator("sites")
    @classmethod
    def _site_names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[str, str] = {}
        for site, hosts in value.items():
            if not SITE_NAME.fullmatch(site):
                raise ValueError(f"site {site!r} must be letters, digits, '-' or '_'")
            for host in hosts:
                if host in seen:
                    raise ValueError(f"host {host!r} is in sites {seen[host]!r} and {site!r}")
                seen[host] = site
        return value

    def site_of(self, host: str) -> str:
        """The deploy site of ``host``: the ``[sites]`` entry naming it, else ``default``."""
        return next((site for site, hosts in self.sites.items() if host in hosts), DEFAULT_SITE)

    def server_sections(self) -> list[tuple[str, ServerSection]]:
        """The configured server classes in upstream's restart order."""
        found = ((name, getattr(self, name)) for name in SERVER_CLASSES)
        return [(name, section) for name, section in found if section is not None]


# --------------------------------------------------------------------------- ca-info.conf

CaType = Literal["self", "local", "certbot", "letsencrypt", "acme"]
LOCAL_CA_TYPES = frozenset({"self", "local"})
#: The ACME challenge types sslm can publish.
ChallengeKind = Literal["dns-01", "http-01"]


class CaInfo(_Model):
    """One table of ``conf.d/ca-info.conf``."""

    ca_desc: str = ""
    ca_type: CaType
    ca_validation: str = ""
    ca_preferred_chain: str = ""
    ca_preferred_acme_profile: str | None = None
    ca_acme_directory: str | None = None
    ca_acme_ca_bundle: str | None = None
    #: External Account Binding (:mod:`sslm_tasks.config.eab`): the key identifier and the file
    #: of the HMAC key the CA gave; both or neither, checked by ``config.load``.
    ca_eab_kid: str | None = Field(default=None, min_length=1)
    ca_eab_hmac_key_file: str | None = Field(default=None, min_length=1)

    @field_validator("ca_type", mode="before")
    @classmethod
    def _lower_type(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("ca_validation")
    @classmethod
    def _known_validation(cls, value: str) -> str:
        if not _challenge_prefix(value):
            raise ValueError("must start with 'http' (http-01) or 'dns' (dns-01)")
        return value

    @property
    def is_local(self) -> bool:
        return self.ca_type in LOCAL_CA_TYPES

    @property
    def challenge_kind(self) -> ChallengeKind:
        """The challenge type ``ca_validation`` asks for.

        Only the prefix counts, as upstream: ``http…`` is http-01, ``dns…`` dns-01, and an
        empty value dns-01 (what sslm did before http-01 existed). So a future
        ``dns-persist-01`` would be taken for dns-01, exactly as upstream would take it.
        """
        return "http-01" if _challenge_prefix(self.ca_validation) == "http" else "dns-01"


def _challenge_prefix(value: str) -> str | None:
    """``http`` or ``dns`` (also for an empty value); None for anything else."""
    value = value.strip().lower()
    if value.startswith("http"):
        return "http"
    return "dns" if not value or value.startswith("dns") else None


# --------------------------------------------------------------------------- service files

#: Days a key serves under ``key_standby`` when ``key_rollover_days`` is not set.
DEFAULT_KEY_ROLLOVER_DAYS: Final = 90.0


class KeyOpts(_Model):
    ktype: Literal["ec", "rsa", "ed25519"] = "ec"
    ec_algo: str = "secp384r1"
    rsa_bits: int = 4096

    @model_validator(mode="before")
    @classmethod
    def _bits_alias(cls, raw: Any) -> Any:
        """``bits`` (used by upstream's mail-rsa example, then ignored) means ``rsa_bits``."""
        if isinstance(raw, dict) and "bits" in raw:
            raw = dict(raw)
            bits = raw.pop("bits")
            if "rsa_bits" in raw and raw["rsa_bits"] != bits:
                raise ValueError(f"bits = {bits!r} and rsa_bits = {raw['rsa_bits']!r} disagree")
            raw["rsa_bits"] = bits
        return raw

    @field_validator("ktype", mode="before")
    @classmethod
    def _lower_ktype(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("ec_algo")
    @classmethod
    def _known_curve(cls, value: str) -> str:
        if value.lower() not in ec_curve_names():
            raise ValueError(f"unknown EC curve (known: {', '.join(sorted(ec_curve_names()))})")
        return value.lower()

    @field_validator("rsa_bits")
    @classmethod
    def _rsa_size(cls, value: int) -> int:
        if not 2048 <= value <= 16384:
            raise ValueError("RSA keys must be 2048 to 16384 bits")
        return value

    def spec(self) -> KeySpec:
        """What a new key of the service is made of."""
        return KeySpec(ktype=self.ktype, ec_curve=self.ec_algo, rsa_bits=self.rsa_bits)


class X509Opts(_Model):
    cn: str = Field(alias="CN", min_length=1)
    o: str = Field(alias="O")
    c: str = Field(alias="C")
    ou: str = Field(default="", alias="OU")
    l: str = Field(default="", alias="L")  # noqa: E741 - the X.509 attribute is called L
    st: str = Field(default="", alias="ST")
    email: str = ""
    sans: SanList = Field(default_factory=list)

    @field_validator("cn", "o", "c", "ou", "l", "st")
    @classmethod
    def _subject_value(cls, value: str, info: ValidationInfo) -> str:
        # The check that builds the CSR's subject, so the CSR step cannot refuse it mid-run.
        name = info.field_name or ""
        _checked(subject_value_problem(cls.model_fields[name].alias or name, value))
        return value


class CAOpts(_Model):
    #: Validity of every certificate this CA signs (itself too when self-signed). Upstream's
    #: default of -1 became one day through a floor; 90 days is what an operator expects.
    sign_end_days: float = Field(default=90, strict=True, ge=MIN_SIGN_DAYS, le=MAX_DAYS)
    digest: str = "sha384"
    #: Where this CA's CRL is served (``http://`` or ``https://``); named as the CRL
    #: distribution point of every certificate it signs. None: no distribution point.
    crl_url: str | None = None

    @field_validator("crl_url")
    @classmethod
    def _crl_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        # A URL clients fetch: an http(s) scheme, a host, nothing a certificate cannot carry.
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if not value.isascii() or not value.isprintable() or " " in value:
            raise ValueError("must be printable ASCII without spaces (an IA5String)")
        return value

    @field_validator("digest", mode="before")
    @classmethod
    def _known_digest(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.lower() or "sha384"
            if value not in DIGESTS:
                raise ValueError(f"unknown digest (known: {', '.join(sorted(DIGESTS))})")
        return value


class DaneTls(_Model):
    """One ``dane_tls`` entry: ``[port, proto, usage, selector, match(, 'MX'|'SANS')]``."""

    port: int = Field(ge=1, le=65535)
    proto: Literal["tcp", "udp", "sctp"]
    usage: int = Field(ge=0, le=3)
    selector: int = Field(ge=0, le=1)
    matching: int = Field(ge=0, le=2)
    subtype: Literal["MX", "SANS"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            return raw
        if not isinstance(raw, list | tuple) or len(raw) not in (5, 6):
            raise ValueError(
                "expected [port, proto, usage, selector, match] with an optional 'MX' or 'SANS'"
            )
        names = ("port", "proto", "usage", "selector", "matching", "subtype")
        fields = dict(zip(names, raw, strict=False))
        for key in ("port", "usage", "selector", "matching"):
            if isinstance(fields[key], bool) or not isinstance(fields[key], int):
                raise ValueError(f"{key} {fields[key]!r} is not an integer")
        if isinstance(fields.get("subtype"), str):
            fields["subtype"] = fields["subtype"].upper()
        if isinstance(fields["proto"], str):
            fields["proto"] = fields["proto"].lower()
        return fields


class ServiceConfig(_Model):
    """``conf.d/<group>/<service>``."""

    name: str = Field(min_length=1)
    group: str = Field(min_length=1)
    service: str = Field(min_length=1)
    signing_ca: str = ""
    dane_tls: list[DaneTls] = Field(default_factory=list)
    #: Seconds; 0 leaves the TTL out of the records (the zone's default applies).
    dane_tls_ttl: int = Field(default=1800, strict=True, ge=0, le=MAX_TTL)
    renew_expire_days: PositiveDays | None = None
    renew_expire_days_spread: Days | None = None
    #: sslm addition: renewals keep the key, and a standby key's TLSA records are published
    #: beside the current ones until it replaces the key (``lifecycle.standby``).
    key_standby: bool = Field(default=False, strict=True)
    #: Days a key serves before the standby key replaces it (with ``key_standby`` only).
    key_rollover_days: PositiveDays | None = None
    keyopts: KeyOpts = Field(default_factory=KeyOpts, alias="KeyOpts")
    x509: X509Opts = Field(alias="X509")
    ca: CAOpts | None = Field(default=None, alias="CA")

    @field_validator("key_standby")
    @classmethod
    def _standby_fits(cls, value: bool, info: ValidationInfo) -> bool:
        """A standby key has no certificate until it is used, so its records can only be
        selector 1 (the key); and a local CA never changes its key on a schedule."""
        if not value:
            return value
        if info.data.get("group") == CA_GROUP:
            raise ValueError("a local CA keeps its key; key_standby is for services")
        dane: list[DaneTls] = info.data.get("dane_tls", [])
        if not dane:
            raise ValueError("needs dane_tls: the standby key is there for DANE")
        full = next((entry for entry in dane if entry.selector != 1), None)
        if full is not None:
            raise ValueError(
                f"needs selector 1 in every dane_tls entry, and [{full.port}, '{full.proto}', "
                f"{full.usage}, {full.selector}, {full.matching}] hashes a certificate, which "
                "a standby key does not have yet"
            )
        return value

    @field_validator("key_rollover_days")
    @classmethod
    def _rollover_needs_standby(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and not info.data.get("key_standby"):
            raise ValueError("needs key_standby = true (without it every renewal makes a new key)")
        return value

    @property
    def rollover_days(self) -> float:
        """Days a key serves under ``key_standby``: ``key_rollover_days``, else
        :data:`DEFAULT_KEY_ROLLOVER_DAYS`."""
        return self.key_rollover_days or DEFAULT_KEY_ROLLOVER_DAYS

    @property
    def self_signed(self) -> bool:
        return self.signing_ca in ("", "self")

    @property
    def is_ca(self) -> bool:
        """Only services of the ``ca`` group are CAs, as upstream."""
        return self.group == CA_GROUP
