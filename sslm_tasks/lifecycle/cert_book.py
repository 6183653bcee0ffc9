"""What people read about each certificate (``-s``), remembered by the certificate's fingerprint.

``-s`` shows each version's issuer, subject, key, names and signature algorithm. Getting them
from a parsed certificate costs ~90 µs (cryptography builds the names and the extensions as
Python objects on first use), about 1 s of ``-s`` at 10,000 services. A run that works on the
tree (a renew, beat's renew scan) keeps them in ``certs/.cert-book.json`` for the certificates
it looked at, and ``-s`` takes them from there, with the certificate's dates: a ``cert.pem``
the book knows is not parsed at all (its fingerprint is taken from the file's text).

An entry is keyed by the SHA-256 fingerprint of the certificate, and what it holds is a function
of those bytes alone: a hit is exactly what parsing would give, whenever the entry was made, with
no file identity or clock to trust. What could change the words is the code that made them, so
the book is kept with :func:`~sslm_tasks.config.remembered.code_identity` and dropped when sslm
or cryptography changed. The file is used only when it is this user's own (``read_own_file``);
anything amiss (another user's file, bad JSON, another release) is an empty book, never an
error. Entries of certificates that have expired go at each save, so the book holds about one
entry per live certificate. ``-s`` never writes it: it is a command that writes nothing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.hashes import SHA256

from sslm_tasks.config.remembered import code_identity
from sslm_tasks.crypto.inspect import cert_info, plain_cert_fingerprint
from sslm_tasks.errors import StoreError
from sslm_tasks.store.atomic import write_atomic
from sslm_tasks.store.layout import KEY_MODE
from sslm_tasks.store.read import read_own_file

log = logging.getLogger("sslm")

FILE_NAME: Final = ".cert-book.json"
_FORMAT: Final = 1


@dataclass(frozen=True)
class CertDetails:
    """What people read about a certificate (``-s``); parsing it costs more than the dates."""

    issuer: str
    subject: str
    pubkey: str
    sans: list[str]
    sig_algo: str


@dataclass(frozen=True)
class BookedCert:
    """A certificate the book knows by its file's bytes: what ``-s`` reads of it (its dates
    and details), without parsing it. It has the dates by the names a parsed certificate
    has them, so whatever judges dates takes either (``lifecycle.current.Dated``)."""

    not_valid_before_utc: datetime
    not_valid_after_utc: datetime
    details: CertDetails


def details_of(cert: x509.Certificate) -> CertDetails:
    info = cert_info(cert)
    return CertDetails(info.issuer, info.subject, info.pubkey, info.sans, info.sig_algo)


@dataclass
class CertBook:
    """The book of one tree's store (``certs_dir``), as read when opened; :meth:`details`
    adds what it did not hold, :meth:`save` writes it back."""

    certs_dir: Path
    _entries: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _added: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, certs_dir: Path) -> CertBook:
        book = cls(certs_dir)
        data = read_own_file(certs_dir / FILE_NAME)
        try:
            kept = json.loads(data) if data is not None else None
        except ValueError:
            kept = None
        if (
            isinstance(kept, dict)
            and kept.get("format") == _FORMAT
            and kept.get("code") == code_identity()
            and isinstance(kept.get("entries"), dict)
        ):
            book._entries = kept["entries"]
        return book

    def look_up(self, pem: bytes) -> BookedCert | None:
        """The certificate of a ``cert.pem`` holding ``pem``, when the book has it: found by
        the fingerprint of the bytes (:func:`plain_cert_fingerprint`), so a hit is what parsing
        those bytes gave when the entry was made. None: parse it."""
        key = plain_cert_fingerprint(pem)
        return None if key is None else _booked(self._entries.get(key))

    def details(self, cert: x509.Certificate) -> CertDetails:
        """``cert``'s details: from the book, else from the certificate (and then kept)."""
        key = cert.fingerprint(SHA256()).hex()
        booked = _booked(self._entries.get(key))
        if booked is not None:
            return booked.details
        found = details_of(cert)
        self._entries[key] = {
            **asdict(found),
            "issued": cert.not_valid_before_utc.isoformat(),
            "expires": cert.not_valid_after_utc.isoformat(),
        }
        self._added = True
        return found

    def save(self, *, now: datetime) -> None:
        """Write the book when it gained entries, without those of expired certificates; only
        into a store its own user owns (as the remembered configuration). A failure to write
        is logged, never raised: ``-s`` then parses what is missing."""
        code = code_identity()
        if not self._added or code is None:
            return
        try:
            if self.certs_dir.stat().st_uid != os.geteuid():
                return
        except OSError:
            return
        live = {
            key: entry
            for key, entry in self._entries.items()
            if (booked := _booked(entry)) is not None and booked.not_valid_after_utc > now
        }
        body = json.dumps({"format": _FORMAT, "code": code, "entries": live}, ensure_ascii=False)
        try:
            write_atomic(self.certs_dir / FILE_NAME, body.encode(), mode=KEY_MODE, sync_dir=False)
        except StoreError as err:
            log.debug("the certificates' details are not kept: %s", err)
            return
        self._entries, self._added = live, False


def _booked(entry: dict[str, Any] | None) -> BookedCert | None:
    """An entry as a certificate; None for none, or one not of this release's shape (a
    hand-edited file): made again from the certificate."""
    if entry is None:
        return None
    try:
        details = CertDetails(
            str(entry["issuer"]),
            str(entry["subject"]),
            str(entry["pubkey"]),
            [str(name) for name in entry["sans"]],
            str(entry["sig_algo"]),
        )
        issued = datetime.fromisoformat(str(entry["issued"]))
        expires = datetime.fromisoformat(str(entry["expires"]))
    except (KeyError, TypeError, ValueError):
        return None
    if issued.tzinfo is None or expires.tzinfo is None:
        return None
    return BookedCert(issued, expires, details)
