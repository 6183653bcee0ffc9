"""Verify after deploy against real TLS listeners on loopback, judged also by openssl.

Plain TLS is ``openssl s_server -www``; SMTP and IMAP with STARTTLS are small servers written
here (the protocol exchange up to STARTTLS, then Python's TLS server side), serving a
root → intermediate → leaf PKI made with ``sslm_tasks.crypto``. Every DANE verdict of ours is
checked against ``openssl s_client -dane_tlsa_rrdata`` on the same listener, and one test looks
the name and the TLSA records up in the signed BIND lab, as the roll will.

Every socket here has a timeout and nothing leaves 127.0.0.1 (the lab: 127.0.0.53).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lab_dns import DnsLab
from services import Services, free_port, require_binary, wait_for

from sslm_tasks.config.load import load_main
from sslm_tasks.config.probes import VerifyTarget, parse_verify
from sslm_tasks.crypto.csr import SubjectSpec, build_csr
from sslm_tasks.crypto.keys import KeySpec, PrivateKey, generate_private_key, private_key_to_pem
from sslm_tasks.crypto.signing import SigningPolicy, self_sign, sign_with_ca
from sslm_tasks.crypto.tlsa import tlsa_data
from sslm_tasks.deploy.verify import check_served, published_tlsa, served_certificate
from sslm_tasks.dns.servers import Nameserver
from sslm_tasks.dns.tlsa import TlsaRecord
from sslm_tasks.errors import ConfigError, PermanentError, TransientError

pytestmark = pytest.mark.integration

MX = "mx1.example.test"
OTHER_NAME = "other.example.test"
#: Budget of one probe; loopback answers in milliseconds.
TIMEOUT_S = 3.0
#: How long a listener of ours waits on a silent client before dropping it.
SERVER_IO_TIMEOUT_S = 5.0
OPENSSL_TIMEOUT_S = 10.0
P256 = KeySpec("ec", ec_curve="secp256r1")
NOW = datetime.now(UTC).replace(microsecond=0)


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Issued:
    key: PrivateKey
    cert: x509.Certificate


def issue(cn: str, sans: list[str], *, issuer: Issued | None, is_ca: bool = False) -> Issued:
    key = generate_private_key(P256)
    csr = build_csr(key, SubjectSpec(CN=cn, O="Verify Tests", C="US"), sans, is_ca=is_ca)
    policy = SigningPolicy(days=2, is_ca=is_ca)
    if issuer is None:
        return Issued(key, self_sign(csr, key, policy, now=NOW))
    return Issued(key, sign_with_ca(csr, issuer.key, issuer.cert, policy, now=NOW))


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


@dataclass(frozen=True)
class Pki:
    """A root, an intermediate under it, the leaf it signed for ``MX``, and an unrelated
    certificate for the same name with another key; PEM files of each in ``directory``."""

    root: Issued
    inter: Issued
    leaf: Issued
    other: Issued
    directory: Path

    def files(self, which: Literal["leaf", "other"]) -> tuple[Path, Path]:
        """(certificate chain file: the certificate then the intermediate, key file)."""
        return self.directory / f"{which}.chain.pem", self.directory / f"{which}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    root = issue("Verify Root", [], issuer=None, is_ca=True)
    inter = issue("Verify Intermediate", [], issuer=root, is_ca=True)
    made = Pki(
        root=root,
        inter=inter,
        leaf=issue(MX, [MX], issuer=inter),
        other=issue(MX, [MX], issuer=inter),
        directory=directory,
    )
    for which in ("leaf", "other"):
        issued: Issued = getattr(made, which)
        chain, key = made.files(which)
        chain.write_bytes(pem(issued.cert, inter.cert))
        key.write_bytes(private_key_to_pem(issued.key))
        key.chmod(0o600)
    return made


def spki_sha256(cert: x509.Certificate) -> str:
    return tlsa_data(cert, 1, 1)


# --------------------------------------------------------------------------- listeners


def _read_line(conn: socket.socket) -> str:
    """One CRLF line, byte by byte: nothing past it may be read before the TLS handshake."""
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            raise ConnectionError("the client hung up")
        line += byte
    return line.rstrip(b"\r\n").decode()


class StartTlsServer:
    """An SMTP or IMAP server on a free 127.0.0.1 port, one connection at a time: the exchange
    up to STARTTLS, a TLS handshake with ``chain``/``key``, then it reads until the client
    hangs up. ``sessions`` records how each connection ended (``"tls"`` or the error)."""

    def __init__(
        self,
        protocol: Literal["smtp", "imap"],
        chain: Path,
        key: Path,
        *,
        offer_starttls: bool = True,
    ) -> None:
        self.protocol = protocol
        self.offer_starttls = offer_starttls
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(chain, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.sessions: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=SERVER_IO_TIMEOUT_S + 1)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(SERVER_IO_TIMEOUT_S)
                try:
                    if self._until_starttls(conn):
                        self._tls(conn)
                except OSError as err:  # ssl.SSLError too: the session ends, the server stays
                    self.sessions.append(f"{type(err).__name__}: {err}")

    def _until_starttls(self, conn: socket.socket) -> bool:
        """The plain-text part of the session; True when TLS is to start."""
        if self.protocol == "smtp":
            return self._smtp(conn)
        return self._imap(conn)

    def _smtp(self, conn: socket.socket) -> bool:
        conn.sendall(f"220 {MX} ESMTP ready\r\n".encode())
        while True:
            verb = _read_line(conn).split(" ", 1)[0].upper()
            if verb == "EHLO":
                last = "250 STARTTLS" if self.offer_starttls else "250 8BITMIME"
                conn.sendall(f"250-{MX}\r\n250-PIPELINING\r\n{last}\r\n".encode())
            elif verb == "STARTTLS" and self.offer_starttls:
                conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                return True
            elif verb == "QUIT":
                conn.sendall(b"221 2.0.0 Bye\r\n")
                self.sessions.append("quit")
                return False
            else:
                conn.sendall(b"502 5.5.1 Not implemented\r\n")

    def _imap(self, conn: socket.socket) -> bool:
        conn.sendall(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
        while True:
            tag, _, command = _read_line(conn).partition(" ")
            command = command.upper()
            if command == "CAPABILITY":
                conn.sendall(f"* CAPABILITY IMAP4rev1 STARTTLS\r\n{tag} OK done\r\n".encode())
            elif command == "STARTTLS":
                conn.sendall(f"{tag} OK Begin TLS negotiation now\r\n".encode())
                return True
            elif command == "LOGOUT":
                conn.sendall(f"* BYE\r\n{tag} OK bye\r\n".encode())
                self.sessions.append("logout")
                return False
            else:
                conn.sendall(f"{tag} BAD unknown command\r\n".encode())

    def _tls(self, conn: socket.socket) -> None:
        with self.context.wrap_socket(conn, server_side=True) as tls:
            self.sessions.append("tls")
            while tls.recv(4096):
                continue


class Listeners:
    """Starts :class:`StartTlsServer`s for one test; the fixture closes them all."""

    def __init__(self) -> None:
        self.started: list[StartTlsServer] = []

    def start(
        self,
        protocol: Literal["smtp", "imap"],
        files: tuple[Path, Path],
        *,
        offer_starttls: bool = True,
    ) -> StartTlsServer:
        server = StartTlsServer(protocol, *files, offer_starttls=offer_starttls)
        self.started.append(server)
        return server


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    started = Listeners()
    yield started
    for server in started.started:
        server.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_s_server(services: Services, chain: Path, key: Path) -> int:
    """``openssl s_server -www`` with ``chain`` on a free port; returns the port.

    Its stdin is /dev/null (``Services.spawn``): in ``-www`` mode s_server never reads it, so
    EOF there does not stop it.
    """
    port = free_port()
    argv = [require_binary("openssl"), "s_server", "-www", "-cert", str(chain)]
    argv += ["-key", str(key), "-cert_chain", str(chain), "-accept", f"127.0.0.1:{port}"]
    service = services.spawn(f"s_server-{port}", argv)
    wait_for(
        f"s_server on {port}",
        lambda: _accepts(port),
        timeout_s=10,
        log=service.log,
        alive=lambda: service.alive,
    )
    return port


def openssl_dane_ok(port: int, name: str, rrdata: str, starttls: str | None) -> bool:
    """openssl's verdict on ``rrdata`` for the listener on ``port``: "Verification: OK"?"""
    argv = [require_binary("openssl"), "s_client", "-connect", f"127.0.0.1:{port}"]
    argv += ["-servername", name, "-dane_tlsa_domain", name, "-dane_tlsa_rrdata", rrdata]
    # RFC 7671 §5.1 (and RFC 7672 §3.1.1 for SMTP): DANE-EE checks no names. openssl checks
    # them unless told not to.
    argv.append("-dane_ee_no_namechecks")
    if starttls is not None:
        argv += ["-starttls", starttls]
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT_S,
        check=False,
    )
    if "Verification: OK" in done.stdout:
        return True
    assert "Verification error" in done.stdout, done.stdout + done.stderr
    return False


def target(protocol: Literal["tls", "smtp", "imap"], port: int, name: str = MX) -> VerifyTarget:
    return parse_verify(f"{protocol}://{name}:{port}?connect=127.0.0.1", default_host=MX)


# --------------------------------------------------------------------------- plain TLS


def test_tls_serving_the_expected_key_is_ok(services: Services, pki: Pki) -> None:
    # Given s_server with the leaf and its intermediate
    port = start_s_server(services, *pki.files("leaf"))
    # When we verify against the leaf
    result = check_served(
        target("tls", port), expected=pki.leaf.cert, tlsa=None, timeout_s=TIMEOUT_S
    )
    # Then it is ok, the served certificate is the leaf, and the hash is the leaf's key
    assert result.ok, result.detail
    assert result.served_spki_sha256 == spki_sha256(pki.leaf.cert)
    assert served_certificate(target("tls", port), timeout_s=TIMEOUT_S) == pki.leaf.cert


def test_tls_serving_another_certificate_fails_naming_both_hashes(
    services: Services, pki: Pki
) -> None:
    # Given s_server still serving the other certificate (a restart that did not happen)
    port = start_s_server(services, *pki.files("other"))
    # When we expect the leaf
    result = check_served(
        target("tls", port), expected=pki.leaf.cert, tlsa=None, timeout_s=TIMEOUT_S
    )
    # Then it fails, and the detail names what is served and what was expected
    assert not result.ok
    assert spki_sha256(pki.other.cert) in result.detail
    assert spki_sha256(pki.leaf.cert) in result.detail
    assert result.served_spki_sha256 == spki_sha256(pki.other.cert)


# --------------------------------------------------------------------------- DANE, SMTP


@dataclass(frozen=True)
class DaneCase:
    """One TLSA record (of a certificate of the PKI), the name DANE checks, the verdict."""

    cert: Literal["leaf", "other", "inter", "root"]
    usage: int
    selector: int
    matching: int
    name: str
    ok: bool


DANE_CASES = {
    "3 1 1 of the served key": DaneCase("leaf", 3, 1, 1, MX, True),
    "3 0 1 of the served certificate": DaneCase("leaf", 3, 0, 1, MX, True),
    "3 1 2 of the served key": DaneCase("leaf", 3, 1, 2, MX, True),
    "3 1 0 the served key in full": DaneCase("leaf", 3, 1, 0, MX, True),
    "3 1 1 of another key": DaneCase("other", 3, 1, 1, MX, False),
    "3 1 1 checks no name": DaneCase("leaf", 3, 1, 1, OTHER_NAME, True),
    "2 1 1 of the served issuer": DaneCase("inter", 2, 1, 1, MX, True),
    "2 0 1 of the served issuer": DaneCase("inter", 2, 0, 1, MX, True),
    "2 1 1 of a root the server does not send": DaneCase("root", 2, 1, 1, MX, False),
    "2 1 1 for a name the certificate lacks": DaneCase("inter", 2, 1, 1, OTHER_NAME, False),
    "1 1 1 needs PKIX, not checked": DaneCase("leaf", 1, 1, 1, MX, False),
}


@pytest.mark.parametrize("case", DANE_CASES.values(), ids=list(DANE_CASES))
def test_smtp_dane_verdict_agrees_with_openssl(
    listeners: Listeners, pki: Pki, case: DaneCase
) -> None:
    # Given an SMTP server offering STARTTLS with the leaf and its intermediate
    server = listeners.start("smtp", pki.files("leaf"))
    cert: Issued = getattr(pki, case.cert)
    rrdata = f"{case.usage} {case.selector} {case.matching} "
    rrdata += tlsa_data(cert.cert, case.selector, case.matching)
    # When we check the record, and openssl checks it on the same server
    result = check_served(
        target("smtp", server.port, case.name),
        expected=pki.leaf.cert,
        tlsa=[rrdata],
        timeout_s=TIMEOUT_S,
    )
    theirs = openssl_dane_ok(server.port, case.name, rrdata, "smtp")
    # Then both give the expected verdict, and ours names the served key
    assert (result.ok, theirs) == (case.ok, case.ok), result.detail
    assert result.served_spki_sha256 == spki_sha256(pki.leaf.cert)
    # And both really went through STARTTLS into TLS
    wait_for("two TLS sessions", lambda: server.sessions.count("tls") == 2, timeout_s=5)


def test_smtp_one_matching_record_among_several_is_enough(listeners: Listeners, pki: Pki) -> None:
    # Given a roll in progress: DNS serves curr's record (another key) and next's (the leaf)
    server = listeners.start("smtp", pki.files("leaf"))
    records = [f"3 1 1 {spki_sha256(pki.other.cert)}", f"3 1 1 {spki_sha256(pki.leaf.cert)}"]
    # When we check
    result = check_served(
        target("smtp", server.port), expected=pki.leaf.cert, tlsa=records, timeout_s=TIMEOUT_S
    )
    # Then one match is enough
    assert result.ok, result.detail


def test_smtp_no_tlsa_records_at_all_fails(listeners: Listeners, pki: Pki) -> None:
    server = listeners.start("smtp", pki.files("leaf"))
    result = check_served(
        target("smtp", server.port), expected=pki.leaf.cert, tlsa=[], timeout_s=TIMEOUT_S
    )
    assert not result.ok
    assert "no TLSA records" in result.detail


def test_smtp_server_without_starttls_is_a_permanent_error(listeners: Listeners, pki: Pki) -> None:
    server = listeners.start("smtp", pki.files("leaf"), offer_starttls=False)
    with pytest.raises(PermanentError, match="does not offer STARTTLS"):
        served_certificate(target("smtp", server.port), timeout_s=TIMEOUT_S)


# --------------------------------------------------------------------------- IMAP


def test_imap_starttls_key_and_dane_agree_with_openssl(listeners: Listeners, pki: Pki) -> None:
    # Given an IMAP server offering STARTTLS with the leaf
    server = listeners.start("imap", pki.files("leaf"))
    good = f"3 1 1 {spki_sha256(pki.leaf.cert)}"
    bad = f"3 1 1 {spki_sha256(pki.other.cert)}"
    probe = target("imap", server.port)
    # When we check the right record and a wrong one, and so does openssl
    right = check_served(probe, expected=pki.leaf.cert, tlsa=[good], timeout_s=TIMEOUT_S)
    wrong = check_served(probe, expected=pki.leaf.cert, tlsa=[bad], timeout_s=TIMEOUT_S)
    # Then the verdicts agree
    assert right.ok, right.detail
    assert not wrong.ok
    assert openssl_dane_ok(server.port, MX, good, "imap")
    assert not openssl_dane_ok(server.port, MX, bad, "imap")


# --------------------------------------------------------------------------- failures


def test_closed_port_is_a_transient_error_within_the_timeout(pki: Pki) -> None:
    # Given a port nobody listens on
    port = free_port()
    started = time.monotonic()
    # When we probe it, Then a TransientError names host:port, quickly
    with pytest.raises(TransientError, match=f"127.0.0.1:{port}"):
        check_served(target("smtp", port), expected=pki.leaf.cert, tlsa=None, timeout_s=2)
    assert time.monotonic() - started < 2.5


def test_silent_server_is_a_transient_error_within_the_timeout(pki: Pki) -> None:
    # Given a listener that accepts connections (the kernel does) but never says a word
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = int(silent.getsockname()[1])
        started = time.monotonic()
        # When we probe it with a 1 s budget, Then it gives up after that, naming host:port
        with pytest.raises(TransientError, match=f"127.0.0.1:{port}: no answer within 1 s"):
            served_certificate(target("smtp", port), timeout_s=1)
        assert 0.9 < time.monotonic() - started < 1.5


def test_a_name_without_a_dns_server_is_refused_before_connecting() -> None:
    probe = parse_verify("smtp://{host}:25", default_host=MX)
    with pytest.raises(ConfigError, match="add \\?connect=<IP>"):
        served_certificate(probe, timeout_s=TIMEOUT_S)


# --------------------------------------------------------------------------- config


def test_verify_values_parse_to_targets() -> None:
    assert parse_verify("smtp://{host}:25", default_host=MX) == VerifyTarget(MX, 25, "smtp", MX)
    assert parse_verify("IMAP://Imap.Example.Test.", default_host=MX) == VerifyTarget(
        "imap.example.test", 143, "imap", "imap.example.test"
    )
    assert parse_verify("tls://www.example.test?connect=::1", default_host=MX) == VerifyTarget(
        "::1", 443, "tls", "www.example.test"
    )
    assert parse_verify("tls://[::1]:8443", default_host=MX) == VerifyTarget(
        "::1", 8443, "tls", None
    )


@pytest.mark.parametrize(
    "value",
    [
        "https://www.example.test",
        "smtp://mx_1.example.test:25",
        "smtp://{host}:0",
        "smtp://{host}:70000",
        "smtp://{host}:25/path",
        "smtp://user@{host}:25",
        "smtp://{host}:25?connect=mx1.example.test",
        "smtp://{host}:25?via=127.0.0.1",
        "smtp://{hostname}:25",
        "smtp://:25",
    ],
)
def test_bad_verify_values_are_config_errors_naming_the_value(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_verify(value, default_host=MX)
    assert raised.value.key == "verify"
    assert raised.value.value == value
    assert repr(value) in str(raised.value)


def test_config_file_verify_is_checked_for_every_server(tmp_path: Path) -> None:
    # Given ssl-mgr.conf whose [smtp] verify has one good and one bad probe
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "ssl-mgr.conf").write_text(
        '[smtp]\nservers = ["mx1.example.test", "mx2.example.test"]\n'
        'verify = ["smtp://{host}:25", "tls://{host}:465?connect=localhost"]\n'
    )
    # When it is loaded, Then the ConfigError names the file, the key and the bad value
    with pytest.raises(ConfigError) as raised:
        load_main(conf)
    assert raised.value.key == "smtp.verify"
    assert "ssl-mgr.conf" in raised.value.file
    assert "'tls://{host}:465?connect=localhost'" in str(raised.value)
    # And with the good probe alone it loads, one target per server
    (conf / "ssl-mgr.conf").write_text(
        '[smtp]\nservers = ["mx1.example.test", "mx2.example.test"]\nverify = "smtp://{host}:25"\n'
    )
    section = load_main(conf).smtp
    assert section is not None
    targets = [parse_verify(v, default_host=s) for s in section.servers for v in section.verify]
    assert [t.url for t in targets] == ["smtp://mx1.example.test:25", "smtp://mx2.example.test:25"]


# --------------------------------------------------------------------------- with DNS


def test_name_and_tlsa_from_the_signed_zone(
    dns_lab: DnsLab, listeners: Listeners, pki: Pki
) -> None:
    # Given the MX host's TLSA record published in the signed zone (the lab's mx1 has an A
    # record of 127.0.0.1) and an SMTP server with the leaf on some port
    server = listeners.start("smtp", pki.files("leaf"))
    probe = parse_verify(f"smtp://{{host}}:{server.port}", default_host=MX)
    owner = f"_{server.port}._tcp.{MX}."
    record = TlsaRecord(owner, 300, 3, 1, 1, spki_sha256(pki.leaf.cert))
    before = dns_lab.serial()
    with dns_lab.tlsa_file().open("a") as handle:
        handle.write(record.zone_line() + "\n")
    done = dns_lab.refresh()
    assert done.returncode == 0, done.stderr
    wait_for("the new TLSA record", lambda: dns_lab.serial() > before, timeout_s=10)
    primary = Nameserver(dns_lab.primary, dns_lab.port)
    # When we read the published records and probe the name, both through the primary
    published = published_tlsa(probe, nameserver=primary, timeout_s=1)
    result = check_served(
        probe, expected=pki.leaf.cert, tlsa=published, timeout_s=TIMEOUT_S, nameserver=primary
    )
    # Then DNS serves exactly our record, and the server matches it
    assert published == [f"3 1 1 {spki_sha256(pki.leaf.cert)}"]
    assert result.ok, result.detail
    assert "TLSA 3 1 1" in result.detail
