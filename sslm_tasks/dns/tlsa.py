"""TLSA records (RFC 6698) as zone-file text: owners, records, the per-service and per-apex files.

Everything here is a pure function of its arguments except :func:`publish_group_file`, which
writes through :func:`~sslm_tasks.store.atomic.write_atomic`. The record data itself comes from
:func:`sslm_tasks.crypto.tlsa.tlsa_data`; DNS lookups (the apex's MX hosts) are the caller's.

The files are ``$INCLUDE``d by the operator's zone, so whatever we write must load in BIND for
every record length. Upstream (behaviour §4.e) got three things wrong that we fix on purpose:

* its group file de-duplicated *lines*, so the continuation lines of a multi-line record (any
  SHA-512 or full-data record) were commented out, leaving an unbalanced ``(`` and a zone that
  does not load. We de-duplicate *records* (owner + rdata) and never touch a record's lines;
* it compared SANs with the apex after adding a trailing dot, so the apex owner came out twice;
* it turned IP, wildcard and out-of-zone SANs into owners (``_443._tcp.10.1.1.10.``,
  ``_443._tcp.*.example.com.``, another zone's names). We skip them with a warning.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sslm_tasks.config.models import DaneTls
from sslm_tasks.crypto.tlsa import TlsaSubject, tlsa_data
from sslm_tasks.errors import StoreError
from sslm_tasks.store.atomic import write_atomic
from sslm_tasks.store.layout import PUBLIC_MODE, check_group

#: Hex digits per line of a multi-line record. 64 keeps a SHA-256 record on one line and every
#: line of a longer one under 80 columns with the indent.
HEX_PER_LINE: Final = 64
_INDENT: Final = " " * 8
#: An owner or SAN we can write unquoted: letters, digits, ``-`` and ``_`` labels.
_HOST_RE: Final = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_HEX_RE: Final = re.compile(r"(?:[0-9a-fA-F]{2})+")
#: ``phase`` label in the group file header, as upstream's.
_PHASE_NORMAL: Final = "normal"
_PHASE_ROLL: Final = "roll next to curr"
_NEXT: Final = "next"
#: The versions a group file has sections for (see :func:`group_file_text`).
_SECTION_LABELS: Final = frozenset({"curr", _NEXT, "prev", "standby"})


@dataclass(frozen=True)
class TlsaRecord:
    """One TLSA resource record.

    Parameters:
      owner(str): absolute owner name with its trailing dot, e.g. ``_25._tcp.mx.example.com.``.
      ttl(int | None): seconds; None leaves the TTL out so the zone's ``$TTL`` applies.
      usage(int), selector(int), matching(int): the RFC 6698 fields, 0-255.
      data(str): certificate-association data as hex (see ``crypto.tlsa.tlsa_data``).

    Two records are the same DNS record when :attr:`key` is equal; the TTL is not part of it.

    Raises:
      ValueError: a field could not be written as zone-file text (a caller bug: owners come
        from :func:`tlsa_owners`, data from ``tlsa_data``).
    """

    owner: str
    ttl: int | None
    usage: int
    selector: int
    matching: int
    data: str

    def __post_init__(self) -> None:
        if not self.owner.endswith(".") or not _HOST_RE.fullmatch(self.owner[:-1].lower()):
            raise ValueError(f"TLSA owner {self.owner!r} is not an absolute host name")
        if self.ttl is not None and self.ttl < 0:
            raise ValueError(f"TLSA TTL {self.ttl} is negative; use None to leave it out")
        for field in (self.usage, self.selector, self.matching):
            if not 0 <= field <= 255:
                raise ValueError(f"TLSA field {field} is not an 8-bit value")
        if not _HEX_RE.fullmatch(self.data):
            raise ValueError(f"TLSA data {self.data[:16]!r}... is not whole bytes of hex")

    @property
    def key(self) -> tuple[str, int, int, int, str]:
        """Owner and rdata, case-folded: what makes two records one record in DNS."""
        return (self.owner.lower(), self.usage, self.selector, self.matching, self.data.lower())

    def zone_line(self) -> str:
        """The record in zone-file syntax, without a trailing newline.

        Data of up to :data:`HEX_PER_LINE` digits (SHA-256) stays on one line; longer data
        (SHA-512, or matching type 0, hundreds of bytes) is split into a parenthesised block of
        short lines. RFC 6698 §2.2 allows whitespace inside the hex, so the split lines are one
        record to every zone parser, and no line depends on another being left alone.
        """
        ttl = "" if self.ttl is None else f" {self.ttl}"
        head = f"{self.owner}{ttl} IN TLSA {self.usage} {self.selector} {self.matching}"
        if len(self.data) <= HEX_PER_LINE:
            return f"{head} {self.data}"
        chunks = [self.data[i : i + HEX_PER_LINE] for i in range(0, len(self.data), HEX_PER_LINE)]
        body = "\n".join(f"{_INDENT}{chunk}" for chunk in chunks)
        return f"{head} (\n{body} )"


def _unique(items: Iterable[str]) -> list[str]:
    """``items`` without repeats, first occurrence kept."""
    return list(dict.fromkeys(items))


def _unique_records(records: Iterable[TlsaRecord]) -> list[TlsaRecord]:
    """``records`` with each DNS record (:attr:`TlsaRecord.key`) once, first occurrence kept."""
    first: dict[tuple[str, int, int, int, str], TlsaRecord] = {}
    for record in records:
        first.setdefault(record.key, record)
    return list(first.values())


def tlsa_owners(
    entry: DaneTls, *, apex: str, sans: Sequence[str], mx_hosts: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The owner names one ``dane_tls`` entry publishes records at, and why any name was skipped.

    Port 25, or subtype ``MX``, means mail: SMTP clients look TLSA up at the *MX host* name
    (RFC 7672 §2.2.1), so the owners are ``_<port>._<proto>.<mx host>.`` for each MX host of the
    apex. Otherwise a client looks it up at the name it connects to, so the owners are
    ``_<port>._<proto>.<san>.`` for each DNS SAN of the service.

    The apex is an owner exactly when it is one of those names (a SAN of the service, or an MX
    host), like any other name. Upstream always added an apex owner as well; that published
    ``_25._tcp.<apex>`` records no SMTP client ever asks for, and records for names the
    certificate may not cover, so we do not.

    Skipped, each with a warning: IP addresses (a TLSA owner is a DNS name), wildcards (there
    is no owner for "any name"; publish the concrete names as SANs instead), names outside the
    apex's zone (their records belong in another zone's file), and the null MX ``.``.
    Duplicates (also differing only in case or a trailing dot) are dropped silently.

    Parameters:
      entry(DaneTls): the ``dane_tls`` item.
      apex(str): the zone, with or without a trailing dot.
      sans(Sequence[str]): the service's names as in its certificate (DNS names and IPs).
      mx_hosts(Sequence[str]): the apex's MX hosts, looked up by the caller.

    Returns:
      (owners, warnings): absolute owner names in input order, and one line per skipped name.
    """
    zone = apex.rstrip(".").lower()
    mail = entry.port == 25 or entry.subtype == "MX"
    names, kind = (mx_hosts, "MX host") if mail else (sans, "SAN")
    where = f"dane_tls [{entry.port}, {entry.proto}]"
    owners: list[str] = []
    warnings: list[str] = []
    for raw in names:
        name = raw.strip().rstrip(".").lower()
        problem = None
        if not name:
            problem = "is empty (an MX of '.' is the null MX: the domain takes no mail)"
        elif _is_ip(name):
            problem = "is an IP address; TLSA owners are DNS names"
        elif "*" in name:
            problem = "is a wildcard; list the concrete names as SANs to get their records"
        elif name != zone and not name.endswith(f".{zone}"):
            problem = f"is outside the zone {zone}; publish its records in its own zone"
        elif not _HOST_RE.fullmatch(name):
            problem = "is not a host name"
        if problem:
            warnings.append(f"{where}: skipping {kind} {raw!r}: it {problem}")
            continue
        owners.append(f"_{entry.port}._{entry.proto}.{name}.")
    return _unique(owners), warnings


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def service_records(
    subject: TlsaSubject,
    dane: Sequence[DaneTls],
    *,
    ttl: int,
    apex: str,
    sans: Sequence[str],
    mx_hosts: Sequence[str],
) -> tuple[list[TlsaRecord], list[str]]:
    """Every TLSA record ``subject`` needs under the service's ``dane_tls`` entries.

    Parameters:
      subject(Certificate | PublicKey): the certificate the records describe, or the key of
        one to come (a standby key: selector 1 entries only).
      dane(Sequence[DaneTls]): the service's ``dane_tls`` entries.
      ttl(int): ``dane_tls_ttl``; ``<= 0`` leaves the TTL out (upstream's rule).
      apex, sans, mx_hosts: see :func:`tlsa_owners`.

    Returns:
      (records, warnings): records in entry then owner order, each DNS record once (two
      entries may produce the same one); warnings from :func:`tlsa_owners`, each once.

    Raises:
      CryptoError: an entry's selector or matching type is unsupported, or needs a
        certificate where ``subject`` is a bare key.
    """
    record_ttl = ttl if ttl > 0 else None
    records: list[TlsaRecord] = []
    warnings: list[str] = []
    for entry in dane:
        owners, skipped = tlsa_owners(entry, apex=apex, sans=sans, mx_hosts=mx_hosts)
        warnings.extend(skipped)
        data = tlsa_data(subject, entry.selector, entry.matching)
        records.extend(
            TlsaRecord(owner, record_ttl, entry.usage, entry.selector, entry.matching, data)
            for owner in owners
        )
    return _unique_records(records), _unique(warnings)


def _record_lines(records: Iterable[TlsaRecord]) -> list[str]:
    return [record.zone_line() for record in records]


def service_file_text(records: Sequence[TlsaRecord], *, apex: str, service: str, stamp: str) -> str:
    """The per-service ``tlsa.rr`` of one version: upstream's three-line header, then the records.

    Each record appears once. With no records the file is comments only, still a valid include.
    """
    lines = [";;", f";; tlsa {apex} {service} {stamp}", ";;"]
    lines += _record_lines(_unique_records(records))
    return "\n".join(lines) + "\n"


def group_file_text(
    apex: str, versions: Mapping[str, Sequence[tuple[str, Sequence[TlsaRecord]]]]
) -> str:
    """The per-apex ``tlsa.<apex>``: every service's ``curr`` and, while a roll is pending,
    ``next`` records, so resolvers know both keys across the switch; for a service with a
    standby key, that key's records too, published long before it is used.

    Parameters:
      apex(str): the zone, for the header.
      versions(Mapping): service → ``[(label, records), ...]`` in the order to write them,
        normally ``[("curr", ...), ("next", ...)]``. Services are written sorted by name.

    Returns:
      Zone-file text. Each DNS record (owner + rdata, see :attr:`TlsaRecord.key`) appears
      once, at its first occurrence; a later version whose records were already written gets
      a comment saying so. Under ``-r`` (key reused) ``next`` equals ``curr``, and every line of
      every written record stays intact, however many lines it has.
    """
    pending = any(label == _NEXT for entries in versions.values() for label, _ in entries)
    lines = [";;", f";; TLSA {apex} : phase = {_PHASE_ROLL if pending else _PHASE_NORMAL}", ";;"]
    seen: set[tuple[str, int, int, int, str]] = set()
    for service in sorted(versions):
        for label, records in versions[service]:
            lines += [";;", f";; {service} {label}", ";;"]
            fresh = []
            for record in records:
                if record.key not in seen:
                    seen.add(record.key)
                    fresh.append(record)
            if len(fresh) < len(records):
                lines.append(f"; {len(records) - len(fresh)} record(s) already listed above")
            lines += _record_lines(fresh)
    return "\n".join(lines) + "\n"


def _logical_records(text: str) -> list[str]:
    """The records of TLSA zone text, one normalised string each.

    Comments (``;`` to end of line: TLSA text has no quoted strings) and blank lines are
    dropped, parenthesised continuations joined, and the case folded (owner, class, type and hex
    are all case-insensitive). The hex after the three TLSA fields is joined, so where a record
    was wrapped does not matter.
    """
    found: list[str] = []
    tokens: list[str] = []
    depth = 0
    for line in text.splitlines():
        code = line.split(";", 1)[0]
        depth += code.count("(") - code.count(")")
        tokens += code.replace("(", " ").replace(")", " ").lower().split()
        if depth <= 0 and tokens:
            if "tlsa" in tokens:
                fields = tokens.index("tlsa") + 4
                tokens = [*tokens[:fields], "".join(tokens[fields:])]
            found.append(" ".join(tokens))
            tokens, depth = [], 0
    if tokens:
        found.append(" ".join(tokens))
    return found


def records_digest(text: str) -> str:
    """SHA-256 (hex) over the records in ``text`` only.

    Comments, whitespace, line wrapping, letter case, record order and repeated records do not
    count, so a change in a comment (the phase label, a stamp) is not a change and causes no
    DNS refresh; any change in a record's owner, TTL or data is.
    """
    canonical = "\n".join(sorted(set(_logical_records(text))))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise StoreError(f"reading {path}: {err}") from err


def listed_services(path: Path) -> set[str]:
    """The services the group file at ``path`` (as :func:`group_file_text` wrote it) has a
    section for; none when there is no file.

    Raises:
      StoreError: the file exists but cannot be read.
    """
    text = _read_text(path) or ""
    return {
        parts[1]
        for parts in (line.split() for line in text.splitlines())
        if len(parts) == 3 and parts[0] == ";;" and parts[2] in _SECTION_LABELS
    }


def publish_group_file(
    text: str, *, apex: str, store_path: Path, tlsa_dirs: Sequence[Path]
) -> bool:
    """Write the group file to the store and into every ``tlsa_dirs`` entry, where its records
    changed.

    Each copy (``store_path`` and ``<dir>/tlsa.<apex>``) is compared on its own: a copy that is
    missing, or whose :func:`records_digest` differs, is replaced atomically (mode 0644); the
    others are left alone, so a comment-only change rewrites nothing. Comparing each copy makes
    a crash between two writes harmless: the next call finishes the job.

    Not locked here: the caller holds the lock under which it read the state ``text`` was built
    from, so two publishers never interleave. Directories are not created: a missing
    ``tlsa_dirs`` entry is a configuration mistake to report, not to paper over.

    Idempotent.

    Parameters:
      text(str): the file, from :func:`group_file_text`.
      apex(str): the zone; names the copies ``tlsa.<apex>``.
      store_path(Path): ``Layout.group_tlsa(group)``.
      tlsa_dirs(Sequence[Path]): ``[dns] tlsa_dirs``.

    Returns:
      Whether any copy was written, i.e. whether the zone may need a refresh.

    Raises:
      StoreError: ``apex`` is not a safe file name part, or a copy could not be read or written
        (copies written before the failure stay written).
    """
    name = f"tlsa.{check_group(apex)}"
    digest = records_digest(text)
    changed = False
    for path in [store_path, *(directory / name for directory in tlsa_dirs)]:
        current = _read_text(path)
        if current is None or records_digest(current) != digest:
            write_atomic(path, text.encode(), mode=PUBLIC_MODE)
            changed = True
    return changed
