"""The one place that turns group, service and version names into paths.

The tree is upstream ssl-mgr's, unchanged, so an existing ``<topdir>`` keeps working::

    <topdir>/certs/.sslm.lock                          run lock (inside the tree it protects)
    <topdir>/certs/<group>/tlsa.<group>                merged TLSA records of the group
    <topdir>/certs/<group>/<svc>/{curr,next,prev}      relative links to db/<stamp>
    <topdir>/certs/<group>/<svc>/db/<stamp>/           one key + certificate per version
    <topdir>/certs/<group>/<svc>/cb/                   ACME account and challenge scratch
    <topdir>/certs/<group>/<svc>/state.json            sslm's per-service step record
    <topdir>/certs/ca/<ca>/crl.pem                     a local CA's revocation list (sslm's)
    <prod_dir>/<group>/<svc>/{curr,next}/              real directories, copies for the servers
    <prod_dir>/ca/<ca>/crl.pem                         the copy of a local CA's CRL

Names reach this module from config files, the command line and task messages, so every name
is checked before it becomes a path component: nothing here can build a path outside the tree
(certmagic's ``KeyBuilder.Safe`` does the same job). Checks reject rather than rewrite, so two
different names can never map to one directory. The rules live here, once: a group is a DNS
name (it is the zone apex of its services), checked by :func:`host_name_problem`, which also
checks every SAN and service CN; a service is any printable file name.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import quote

from sslm_tasks.errors import StoreError

#: Names of the version links in a service directory.
LinkName = Literal["curr", "next", "prev"]
#: The links that have a copy in the production tree (``prev`` never leaves the store).
ProdLinkName = Literal["curr", "next"]

PRIVKEY: Final = "privkey.pem"
CSR: Final = "csr.pem"
CERT: Final = "cert.pem"
CHAIN: Final = "chain.pem"
FULLCHAIN: Final = "fullchain.pem"
BUNDLE: Final = "bundle.pem"
TLSA_RR: Final = "tlsa.rr"
#: A local CA's certificate revocation list, in its service directory (not in a version: it
#: lists what every version of the CA signed).
CRL: Final = "crl.pem"
INFO: Final = "info"
#: A version may become ``curr`` only when all of these exist and are non-empty.
COMPLETE_FILES: Final = (PRIVKEY, CSR, CERT, CHAIN, FULLCHAIN, BUNDLE)

#: db dirs and version dirs hold private keys: owner only.
DIR_MODE_PRIVATE: Final = 0o700
#: certs/<group> and the service dir hold links and public data; the group may read them.
DIR_MODE_GROUP: Final = 0o750
#: privkey.pem and bundle.pem.
KEY_MODE: Final = 0o600
#: state.json: no secret (it refuses anything like a key), and the group may read it, as the
#: metrics exporter does without being able to read a private key.
RECORD_MODE: Final = 0o640
PUBLIC_MODE: Final = 0o644

#: A version directory name: ``YYYYmmdd-HH:MM:SS``, upstream's shape (sslm writes it in UTC).
#: Matched whole (``fullmatch``), ASCII digits only: ``\d`` would take any Unicode digit.
STAMP_RE: Final = re.compile(r"[0-9]{8}-[0-9]{2}:[0-9]{2}:[0-9]{2}")

#: Name of the whole-tree run lock: a :class:`~sslm_tasks.locks.file.FileLocker` opened on
#: :attr:`Layout.certs_dir` takes exactly :meth:`Layout.lock_file` for it.
RUN_LOCK: Final = "sslm"
#: The store's directory in the topdir.
CERTS_DIR: Final = "certs"

# Room for the ".lock" suffix and the leading dot under the usual 255-byte NAME_MAX.
_LOCK_NAME_MAX: Final = 200
#: The usual NAME_MAX: the longest file name, in bytes.
_NAME_MAX: Final = 255
#: The longest host name in text form (RFC 1035's 255 octets on the wire).
MAX_HOST_NAME: Final = 253
#: One LDH label (RFC 1123): ASCII letters and digits, inner hyphens, 1 to 63 characters.
_LDH_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

_DB: Final = "db"
_CB: Final = "cb"
_STATE: Final = "state.json"
_STANDBY: Final = "standby"


def host_name_problem(name: str, *, wildcard: bool = False) -> str | None:
    """Say why ``name`` is not an LDH host name (RFC 1123), or return None when it is one.

    A host name is dot-separated labels of ASCII letters, digits and inner hyphens, 1 to 63
    characters each, at most 253 in all, with no empty label (so no trailing dot) and a last
    label that is not all digits (``1.2.3.4.`` is not a name). Non-ASCII letters are refused
    rather than case-folded: the long s (U+017F) and the dotted capital I (U+0130) would
    otherwise pass as ``s`` and ``i``. An
    internationalized name is written in its ``xn--`` form.

    Parameters:
      name(str): the name to check.
      wildcard(bool): allow one leading ``*.`` label (a SAN; never a group).

    Returns:
      None for a host name, else the problem as a phrase ("has an empty label").
    """
    labels = (name.removeprefix("*.") if wildcard else name).split(".")
    if not name:
        return "is empty"
    if not name.isascii():
        return "has non-ASCII characters (write an internationalized name in its xn-- form)"
    if len(name) > MAX_HOST_NAME:
        return f"is longer than {MAX_HOST_NAME} characters"
    if "" in labels:
        return "ends with a dot" if name.endswith(".") else "has an empty label"
    bad = next((label for label in labels if not _LDH_LABEL.fullmatch(label)), None)
    if bad is not None:
        return f"has the label {bad!r}: letters, digits and inner hyphens only, at most 63"
    if labels[-1].isdigit():
        return "ends with an all-numeric label (an IP address is written without a dot)"
    return None


def group_problem(name: str) -> str | None:
    """Say why ``name`` cannot be a group, or return None when it can.

    A group is the apex domain its services' names live in (DNS-01 and TLSA records are written
    to its zone) or ``ca``: a lower-case host name (:func:`host_name_problem`). Lower case so
    that one zone is one directory, one lock and one include file.
    """
    problem = host_name_problem(name)
    if problem is None and name != name.lower():
        problem = "has upper-case letters"
    return None if problem is None else f"not a lower-case domain name: it {problem}"


def check_group(name: str) -> str:
    """Return ``name`` if it can be a group, else raise.

    Raises:
      StoreError: ``name`` is not a lower-case domain name (see :func:`group_problem`).
    """
    problem = group_problem(name)
    if problem is not None:
        raise StoreError(f"bad group name {name!r}: {problem}")
    return name


def name_problem(name: str) -> str | None:
    """Say why ``name`` is unsafe as one path component (a service), or return None.

    It must be 1 to 255 bytes, contain no ``/``, ``..``, NUL or any other character that does
    not print (a control character, an undecodable byte of the command line), and must not
    start with ``.`` (hidden names are reserved for the tree's own files, such as the run lock).
    """
    if (
        not name
        or "/" in name
        or ".." in name
        or name.startswith(".")
        or not name.isprintable()
        or len(name.encode()) > _NAME_MAX
    ):
        return (
            f"must be 1 to {_NAME_MAX} bytes of printable characters, without '/' or '..', "
            "and must not start with '.'"
        )
    return None


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is safe as one path component, else raise.

    Parameters:
      kind(str): what the name is ("service", "group"), for the error message.
      name(str): the name to check.

    Raises:
      StoreError: the name is unsafe (see :func:`name_problem`).
    """
    problem = name_problem(name)
    if problem is not None:
        raise StoreError(f"unsafe {kind} name {name!r}: {problem}")
    return name


def check_stamp(stamp: str) -> str:
    """Return ``stamp`` if it names a version directory, else raise :class:`StoreError`."""
    if not STAMP_RE.fullmatch(stamp):
        raise StoreError(f"bad version stamp {stamp!r}: expected YYYYmmdd-HH:MM:SS")
    return stamp


def lock_file_name(name: str) -> str:
    """The file name that holds the lock called ``name`` (any string, e.g. ``renew:ex.com:mail``).

    The name is percent-encoded, so different lock names never share a file and no name can
    leave the directory. The result starts with ``.``, which no group name may, so lock files can
    sit in ``certs/`` beside the groups. Very long names are cut and made unique by a hash.

    Raises:
      ValueError: ``name`` is empty (a caller bug: lock names are built by code).
    """
    if not name:
        raise ValueError("empty lock name")
    quoted = quote(name, safe=":@+=,")
    if len(quoted) > _LOCK_NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        quoted = f"{quoted[: _LOCK_NAME_MAX - 33]}~{digest}"
    return f".{quoted}.lock"


@dataclass(frozen=True)
class ServiceRef:
    """One service of one group; both names are checked on construction.

    Raises:
      StoreError: the group is not a domain name (see :func:`check_group`) or the service
        name is unsafe (see :func:`check_name`).
    """

    group: str
    service: str

    def __post_init__(self) -> None:
        check_group(self.group)
        check_name("service", self.service)

    def __str__(self) -> str:
        return f"{self.group}:{self.service}"


@dataclass(frozen=True)
class Layout:
    """Paths of one sslm tree. Builds paths only: it never touches the disk.

    Parameters:
      topdir(Path): the tree's top (holds ``certs/``).
      prod_dir(Path): the production tree that deploys copy from.
    """

    topdir: Path
    prod_dir: Path
    # A run looks at each service's paths dozens of times; building a Path is most of what a
    # no-op run over thousands of services costs, so each is built once per layout.
    _group_dirs: dict[str, Path] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _service_dirs: dict[ServiceRef, Path] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _version_dirs: dict[tuple[ServiceRef, str], Path] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _links: dict[tuple[ServiceRef, str], Path] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @functools.cached_property
    def certs_dir(self) -> Path:
        return self.topdir / CERTS_DIR

    def group_dir(self, group: str) -> Path:
        found = self._group_dirs.get(group)
        if found is None:
            found = self._group_dirs[group] = self.certs_dir / check_group(group)
        return found

    def service_dir(self, ref: ServiceRef) -> Path:
        found = self._service_dirs.get(ref)
        if found is None:
            # One join of both names: pathlib parses each operand of ``/`` anew, and neither
            # name may hold a ``/`` (:class:`ServiceRef` checks), so this is the same path.
            found = self._service_dirs[ref] = self.certs_dir / f"{ref.group}/{ref.service}"
        return found

    def db_dir(self, ref: ServiceRef) -> Path:
        return self.service_dir(ref) / _DB

    def version_dir(self, ref: ServiceRef, stamp: str) -> Path:
        found = self._version_dirs.get((ref, stamp))
        if found is None:
            found = self._version_dirs[ref, stamp] = (
                self.service_dir(ref) / f"{_DB}/{check_stamp(stamp)}"
            )
        return found

    def link(self, ref: ServiceRef, which: LinkName) -> Path:
        found = self._links.get((ref, which))
        if found is None:
            found = self._links[ref, which] = self.service_dir(ref) / which
        return found

    def link_target(self, stamp: str) -> str:
        """The relative target a link in the service dir stores for ``stamp`` (``db/<stamp>``).

        Relative, like upstream's, so the tree can be moved or restored elsewhere.
        """
        return f"{_DB}/{check_stamp(stamp)}"

    def stamp_of_target(self, target: str) -> str | None:
        """Inverse of :meth:`link_target`: the stamp, or None if ``target`` is not of that form."""
        head, _, stamp = target.partition("/")
        return stamp if head == _DB and STAMP_RE.fullmatch(stamp) else None

    def cb_dir(self, ref: ServiceRef) -> Path:
        return self.service_dir(ref) / _CB

    def standby_dir(self, ref: ServiceRef) -> Path:
        """Where the service's standby key waits (``key_standby``): 0700, beside ``db``, since
        it belongs to no version until a renewal takes it."""
        return self.service_dir(ref) / _STANDBY

    def standby_key(self, ref: ServiceRef) -> Path:
        return self.standby_dir(ref) / PRIVKEY

    def state_file(self, ref: ServiceRef) -> Path:
        return self.service_dir(ref) / _STATE

    def crl_file(self, ref: ServiceRef) -> Path:
        return self.service_dir(ref) / CRL

    def group_tlsa(self, group: str) -> Path:
        return self.group_dir(group) / f"tlsa.{group}"

    def group_tlsa_published(self, group: str) -> Path:
        """What sslm last published of ``tlsa.<group>`` by RFC 2136 update (``dns.tlsa_update``)."""
        return self.group_dir(group) / f"tlsa.{group}.published"

    def prod_group_dir(self, group: str) -> Path:
        return self.prod_dir / check_group(group)

    def prod_version_dir(self, ref: ServiceRef, which: ProdLinkName) -> Path:
        return self.prod_dir / f"{ref.group}/{ref.service}/{which}"

    def lock_file(self) -> Path:
        """The run lock: inside the tree, so every path spelling of one tree meets one file.

        Upstream keyed its lock on a hash of the config path *string* under ``/tmp``, so
        ``./conf.d`` and ``/abs/conf.d`` did not exclude each other (behaviour §7, bug 11).
        """
        return self.certs_dir / lock_file_name(RUN_LOCK)
