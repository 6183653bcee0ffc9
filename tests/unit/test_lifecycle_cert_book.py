"""lifecycle.cert_book: details are taken from the book only when it is this release's and this
user's; a save keeps the live certificates' entries and writes nothing when nothing was added."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from sslm_tasks.lifecycle import cert_book
from sslm_tasks.lifecycle.cert_book import FILE_NAME, BookedCert, CertBook, details_of

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def _cert(name: str, *, days: float) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(autouse=True)
def _release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cert_book, "code_identity", lambda: "this release")


def _entries(tmp_path: Path) -> dict[str, dict[str, object]]:
    entries: dict[str, dict[str, object]] = json.loads((tmp_path / FILE_NAME).read_text())[
        "entries"
    ]
    return entries


def test_a_saved_book_gives_back_what_parsing_gives(tmp_path: Path) -> None:
    cert = _cert("web.example", days=90)
    book = CertBook.open(tmp_path)
    assert book.details(cert) == details_of(cert)
    book.save(now=NOW)
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert CertBook.open(tmp_path).details(cert) == details_of(cert)


def test_a_book_of_another_release_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = _cert("web.example", days=90)
    book = CertBook.open(tmp_path)
    book.details(cert)
    book.save(now=NOW)
    entry = next(iter(_entries(tmp_path)))
    kept = json.loads((tmp_path / FILE_NAME).read_text())
    kept["entries"][entry]["subject"] = "CN=kept"
    (tmp_path / FILE_NAME).write_text(json.dumps(kept))
    assert CertBook.open(tmp_path).details(cert).subject == "CN=kept"
    monkeypatch.setattr(cert_book, "code_identity", lambda: "another release")
    assert CertBook.open(tmp_path).details(cert).subject == "CN=web.example"


def test_a_save_drops_expired_certificates_and_writes_only_what_was_added(
    tmp_path: Path,
) -> None:
    live, expiring = _cert("live.example", days=90), _cert("old.example", days=1)
    book = CertBook.open(tmp_path)
    book.details(live)
    book.details(expiring)
    book.save(now=NOW)
    assert len(_entries(tmp_path)) == 2
    # Nothing added: nothing written, even with an entry expired since
    (tmp_path / FILE_NAME).write_text((tmp_path / FILE_NAME).read_text() + " ")
    reopened = CertBook.open(tmp_path)
    reopened.details(live)
    reopened.save(now=NOW + timedelta(days=2))
    assert (tmp_path / FILE_NAME).read_text().endswith(" ")
    # Something added: the expired entry goes with the write
    reopened.details(_cert("new.example", days=90))
    reopened.save(now=NOW + timedelta(days=2))
    subjects = {entry["subject"] for entry in _entries(tmp_path).values()}
    assert subjects == {"CN=live.example", "CN=new.example"}


def test_a_store_of_another_user_gets_no_book(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = CertBook.open(tmp_path)
    book.details(_cert("web.example", days=90))
    monkeypatch.setattr(cert_book.os, "geteuid", lambda: tmp_path.stat().st_uid + 1)
    book.save(now=NOW)
    assert not (tmp_path / FILE_NAME).exists()


def test_a_known_cert_pem_is_looked_up_by_its_bytes_with_its_dates(tmp_path: Path) -> None:
    # Given a book that parsed a certificate
    cert = _cert("web.example", days=90)
    book = CertBook.open(tmp_path)
    book.details(cert)
    book.save(now=NOW)
    pem = cert.public_bytes(Encoding.PEM)
    # When a status looks up the bytes of its cert.pem
    found = CertBook.open(tmp_path).look_up(pem)
    # Then it has what parsing gives, dates included
    assert found == BookedCert(
        cert.not_valid_before_utc, cert.not_valid_after_utc, details_of(cert)
    )
    # And bytes it never parsed, or a body that is not strict base64, are parsed instead
    assert (
        CertBook.open(tmp_path).look_up(_cert("other.example", days=9).public_bytes(Encoding.PEM))
        is None
    )
    lines = pem.splitlines(keepends=True)
    lines[1] = lines[1][:10] + b"!" + lines[1][10:]
    assert CertBook.open(tmp_path).look_up(b"".join(lines)) is None


def test_an_entry_without_the_dates_is_made_again(tmp_path: Path) -> None:
    cert = _cert("web.example", days=90)
    book = CertBook.open(tmp_path)
    book.details(cert)
    book.save(now=NOW)
    kept = json.loads((tmp_path / FILE_NAME).read_text())
    entry = next(iter(kept["entries"].values()))
    del entry["issued"]
    (tmp_path / FILE_NAME).write_text(json.dumps(kept))
    reopened = CertBook.open(tmp_path)
    assert reopened.look_up(cert.public_bytes(Encoding.PEM)) is None
    assert reopened.details(cert) == details_of(cert)
    assert reopened.look_up(cert.public_bytes(Encoding.PEM)) is not None


def test_a_save_drops_a_hand_edited_entry_it_cannot_read(tmp_path: Path) -> None:
    # Given a book whose entry someone edited: an expiry without a time zone
    cert = _cert("web.example", days=90)
    book = CertBook.open(tmp_path)
    book.details(cert)
    book.save(now=NOW)
    kept = json.loads((tmp_path / FILE_NAME).read_text())
    next(iter(kept["entries"].values()))["expires"] = "2030-01-01T00:00:00"
    (tmp_path / FILE_NAME).write_text(json.dumps(kept))
    # When a run adds a certificate and saves
    reopened = CertBook.open(tmp_path)
    reopened.details(_cert("new.example", days=90))
    reopened.save(now=NOW)
    # Then the save works, and only the entry it can read stays
    assert {entry["subject"] for entry in _entries(tmp_path).values()} == {"CN=new.example"}
