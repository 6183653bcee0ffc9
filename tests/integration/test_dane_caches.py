"""The DANE roll outwaits every cache: a real client that checks DANE, through a validating
resolver (unbound) in front of the lab's signed BIND primary and secondary, never fails across
a key roll that also lowers the TLSA TTL (issue 13, item 1).

The records are first published with a long TTL. The resolver caches that RRset (old key only)
just before a renewal publishes the new key beside the old one, with a short TTL. The roll must
wait until no cache can still hold the old RRset: twice the TTL served *before* the change, not
twice the new one. Meanwhile a client keeps fetching the TLSA records through the resolver
(DNSSEC-validated) and connecting with ``openssl s_client -dane_tlsa_rrdata`` to a TLS server
that each deploy restarts with the production key and certificate.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import pytest
from cryptography import x509
from lab_dane import MailServer, serve_mail, write_topdir
from lab_dns import DnsLab
from lab_resolver import Resolver, start_resolver
from services import Services, require_binary
from support import edit, run_tool

from sslm_tasks.crypto.tlsa import tlsa_data

pytestmark = pytest.mark.integration

#: The TLSA TTL before the renewal, and the one the renewal brings.
TTL_BEFORE = 20
TTL_AFTER = 2
MX = "mx1.example.test"
SERVICE = "example.test:mail"
#: How long the test lets the roll take before it fails (2 x TTL_BEFORE plus the runs).
ROLL_TIMEOUT_S = 4 * TTL_BEFORE + 60
OPENSSL_TIMEOUT_S = 10.0
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def record_of(cert: x509.Certificate) -> str:
    """The ``3 1 1`` record of a certificate's key."""
    return f"3 1 1 {tlsa_data(cert, 1, 1)}"


def version_record(topdir: Path, which: str) -> str:
    pem = (topdir / "certs/example.test/mail" / which / "cert.pem").read_bytes()
    return record_of(x509.load_pem_x509_certificate(pem))


@dataclass(frozen=True)
class Probe:
    """One connection of the client: ``ok`` (DANE verified), ``failed`` (the records it got
    match no key the server presented: what a DANE client refuses), or ``unreachable`` (no TLS
    handshake: the server was being restarted)."""

    outcome: str
    served: str | None
    records: tuple[str, ...]
    at: float


@dataclass
class DaneClient:
    """Probes the mail server in a thread, the way a DANE client does: the TLSA records at
    ``_<port>._tcp.<mx>`` from the validating resolver, then a TLS handshake that checks the
    server's key against them."""

    resolver: Resolver
    port: int
    probes: list[Probe] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def owner(self) -> str:
        return f"_{self.port}._tcp.{MX}"

    def probe(self) -> Probe:
        at = time.monotonic()
        try:
            answer = self.resolver.lookup(self.owner, "TLSA")
        except (dns.exception.DNSException, OSError, AssertionError) as err:
            return Probe(f"failed: no validated answer: {err}", None, (), at)
        if not answer.validated or not answer.records:
            return Probe(f"failed: answer {answer}", None, tuple(answer.records), at)
        argv = [require_binary("openssl"), "s_client", "-connect", f"127.0.0.1:{self.port}"]
        argv += ["-servername", MX, "-dane_tlsa_domain", MX, "-dane_ee_no_namechecks"]
        for record in answer.records:
            argv += ["-dane_tlsa_rrdata", record]
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=OPENSSL_TIMEOUT_S,
            check=False,
        )
        found = _PEM.search(done.stdout)
        if found is None:
            return Probe("unreachable", None, tuple(answer.records), at)
        served = record_of(x509.load_pem_x509_certificate(found.group().encode()))
        if "Verification: OK" in done.stdout:
            return Probe("ok", served, tuple(answer.records), at)
        verdict = next((line for line in done.stdout.splitlines() if "Verif" in line), "")
        return Probe(f"failed: {verdict}", served, tuple(answer.records), at)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probes.append(self.probe())
            self._stop.wait(0.2)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=OPENSSL_TIMEOUT_S + 5)

    def wait_for(self, what: str, wanted: str, *, since: float, timeout_s: float = 30) -> None:
        """Wait until a probe that began after ``since`` verified the key of record ``wanted``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.at >= since and p.outcome == "ok" and p.served == wanted for p in self.probes):
                return
            time.sleep(0.1)
        raise AssertionError(f"no probe saw {what} within {timeout_s} s: {self.probes[-5:]}")

    def failures(self) -> list[Probe]:
        return [probe for probe in self.probes if probe.outcome.startswith("failed")]


@pytest.fixture
def mail(tmp_path: Path, dns_lab: DnsLab) -> Iterator[tuple[Path, MailServer]]:
    topdir = write_topdir(tmp_path / "top", dns_lab)
    server = serve_mail(topdir, tmp_path, verify=False)
    edit(topdir / "conf.d/example.test/mail", "dane_tls_ttl = 1", f"dane_tls_ttl = {TTL_BEFORE}")
    try:
        yield topdir, server
    finally:
        server.stop()


def served_everywhere(lab: DnsLab, owner: str, wanted: set[str], *, present: bool) -> None:
    """Wait until both name servers serve (or, not ``present``, no longer serve) ``wanted``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = [{r.to_text().lower() for r in lab.query(owner, "TLSA", s)} for s in lab.servers]
        if all((wanted <= s) if present else not (wanted & s) for s in got):
            return
        time.sleep(0.2)
    raise AssertionError(f"{owner}: wanted {wanted} present={present}, served {got}")


def mgr(topdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_tool("sslm-mgr", *args, cwd=topdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_validating_client_never_fails_across_a_roll_that_lowers_the_ttl(
    mail: tuple[Path, MailServer], dns_lab: DnsLab, services: Services, tmp_path: Path
) -> None:
    topdir, server = mail
    # Given a first certificate whose record is published with TTL_BEFORE and served
    mgr(topdir, "-renew")
    old = version_record(topdir, "curr")
    owner = f"_{server.port}._tcp.{MX}"
    served_everywhere(dns_lab, owner, {old}, present=True)
    # and a DANE client resolving through a validating resolver, which caches the old RRset
    # (the old key only) just before the renewal
    resolver = start_resolver(services, tmp_path / "unbound", dns_lab)
    client = DaneClient(resolver, server.port)
    client.start()
    try:
        resolver.flush("example.test")
        client.wait_for("the current key", old, since=time.monotonic())
        # When a renewal brings a new key and lowers the TTL to TTL_AFTER
        edit(
            topdir / "conf.d/example.test/mail",
            f"dane_tls_ttl = {TTL_BEFORE}",
            f"dane_tls_ttl = {TTL_AFTER}",
        )
        mgr(topdir, "-f", "-renew", SERVICE)
        new = version_record(topdir, "next")
        assert new != old
        served_everywhere(dns_lab, owner, {old, new}, present=True)
        # and the roll is tried as cron would, until the gate lets it
        said: list[str] = []
        deadline = time.monotonic() + ROLL_TIMEOUT_S
        while (topdir / "certs/example.test/mail/next").exists():
            assert time.monotonic() < deadline, said[-3:]
            said.append(mgr(topdir, "-roll", SERVICE).stdout)
            time.sleep(1)
        assert version_record(topdir, "curr") == new
        # and the old record is retired once the server took the new key
        served_everywhere(dns_lab, owner, {old}, present=False)
        client.wait_for("the new key", new, since=time.monotonic())
        time.sleep(2 * TTL_AFTER)  # a cache of the last RRset with the old key runs out
        client.wait_for("the new key", new, since=time.monotonic())
    finally:
        client.stop()
    # Then the client never failed: every handshake it made verified against what DNS said
    assert client.failures() == [], client.failures()[:3]
    seen = {probe.served for probe in client.probes if probe.outcome == "ok"}
    assert {old, new} <= seen
    # and the roll said what it waited for: what caches held before the change
    assert any(f"{TTL_BEFORE} s before the change" in text for text in said), said
