"""The certificates' details a run keeps for ``-s`` (``certs/.cert-book.json``), through
``sslm-mgr``: a run that works on the tree keeps them, ``-s`` only reads them, and what ``-s``
shows from them is what it shows parsing every certificate."""

from __future__ import annotations

import json
import re
from pathlib import Path

from support import RunMgr

from sslm_tasks.lifecycle.cert_book import FILE_NAME

#: What changes between two looks a few seconds apart: the ages and times left.
_CLOCK = re.compile(r"\([^)]*\)|renew in : .*")


def _shown(mgr: RunMgr, *args: str) -> str:
    done = mgr("-s", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return _CLOCK.sub("", done.stdout)


def _details(mgr: RunMgr) -> dict[str, dict[str, object]]:
    done = mgr("-s", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    fields = ("issuer", "subject", "pubkey", "sans", "sig_algo")
    return {
        f"{one['group']}:{one['service']}": {key: one["curr"][key] for key in fields}
        for one in json.loads(done.stdout)["services"]
    }


def test_a_run_keeps_the_details_and_the_show_reads_them(topdir: Path, mgr: RunMgr) -> None:
    book = topdir / "certs" / FILE_NAME
    done = mgr("-renew", "-roll")
    assert done.returncode == 0, done.stdout + done.stderr
    # A run that works keeps one entry per certificate it looked at, the running user's alone
    assert book.stat().st_mode & 0o777 == 0o600
    entries = json.loads(book.read_text())["entries"]
    assert len(entries) == 5, entries
    parsed_each_time = _shown(mgr)
    # A show writes nothing
    book.unlink()
    assert _shown(mgr) == parsed_each_time
    assert not book.exists()
    # And from the book it shows exactly what parsing every certificate shows
    assert mgr("-renew").returncode == 0
    assert book.is_file()
    assert _shown(mgr) == parsed_each_time
    assert "issuer" in parsed_each_time and "pubkey" in parsed_each_time
    # (and so does -s --json)
    from_book = _details(mgr)
    book.unlink()
    assert _details(mgr) == from_book
    assert len(from_book) == 5 and all(d["issuer"] and d["pubkey"] for d in from_book.values())


def test_a_show_takes_the_details_from_the_book(topdir: Path, mgr: RunMgr) -> None:
    # Given a book whose entry for one certificate says something no certificate says
    book = topdir / "certs" / FILE_NAME
    assert mgr("-renew", "-roll").returncode == 0
    kept = json.loads(book.read_text())
    some = next(iter(kept["entries"]))
    kept["entries"][some]["issuer"] = "CN=from the book"
    kept["entries"][some]["expires"] = "2031-01-02T03:04:05+00:00"
    book.write_text(json.dumps(kept))
    # Then -s shows it, its dates too: the book is read, the certificate is not parsed
    shown = _shown(mgr)
    assert "CN=from the book" in shown
    assert "expires: 2031-01-02 03:04:05 UTC" in shown
    # And a book another user could have written is not trusted
    book.chmod(0o620)
    assert "CN=from the book" not in _shown(mgr)
