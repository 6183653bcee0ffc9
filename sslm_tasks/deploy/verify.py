"""Verify after deploy: does a server really serve the certificate we deployed, and does DANE
accept it?

Each server class (``[smtp]``, ``[imap]``, ``[web]``, ``[other]``) may carry ``verify``, a list
of probe URLs in which ``{host}`` stands for each server of the class in turn::

    [smtp]
    servers = ["mx1.example.com", "mx2.example.com"]
    verify = ["smtp://{host}:25"]

    [web]
    servers = ["web1.example.com"]
    verify = ["tls://www.example.com:443?connect=192.0.2.10"]

The scheme says how TLS starts: ``tls`` (from the first byte: HTTPS, SMTPS, IMAPS), ``smtp``
(greeting, ``EHLO``, ``STARTTLS``) or ``imap`` (greeting, ``a1 STARTTLS``). The port defaults to
443, 25 and 143. The host is the name clients use: it is sent as SNI and it is the base of the
TLSA owner name, ``_<port>._tcp.<host>``. ``?connect=<IP>`` connects to that address instead
of looking the name up (a server behind a load balancer, a test on loopback). A value without
``{host}`` is the same probe for every server of its class.

A name without ``?connect=`` is looked up at an explicit DNS server, normally the zone's
``[[dns_primary]]``, never through the system resolver: on the machines sslm runs on it may
point off the box (see :mod:`sslm_tasks.dns.lookup`). An IP literal as the host connects there
and sends no SNI; such a probe cannot be checked against TLSA records, which need a name.

The handshake verifies nothing: a server serving the wrong certificate is exactly what we look
for, so we take whatever it sends and compare keys ourselves.
"""

from __future__ import annotations

import _ssl
import itertools
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from dns.rdtypes.ANY.TLSA import TLSA
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from sslm_tasks.config.files import MAIN_FILE
from sslm_tasks.config.probes import CONFIG_KEY, VerifyTarget, bracketed, ip_literal, tlsa_owner
from sslm_tasks.crypto.inspect import extension_value
from sslm_tasks.crypto.tlsa import tlsa_data
from sslm_tasks.dns.lookup import QUERY_TIMEOUT_S, QUERY_TRIES, query_rrset
from sslm_tasks.dns.servers import Nameserver
from sslm_tasks.dns.tlsa import TlsaRecord
from sslm_tasks.errors import ConfigError, CryptoError, PermanentError, TransientError

#: Longest protocol line read before STARTTLS; a longer one means a broken server.
_MAX_LINE: Final = 8192
#: Lines of one reply read before STARTTLS; more means a broken server.
_MAX_LINES: Final = 100
_IMAP_TAG: Final = "a1"
#: TLSA usages checked here (RFC 7218 names); 0 and 1 (PKIX-TA, PKIX-EE) need a trust store.
_DANE_TA: Final = 2
_DANE_EE: Final = 3


@dataclass(frozen=True)
class VerifyResult:
    """What a server serves, judged. ``ok`` only when every check passed.

    ``detail`` is one line for the report naming the hashes compared; ``served_spki_sha256``
    is the hex SHA-256 of the served leaf's SubjectPublicKeyInfo (``3 1 1`` TLSA data).
    """

    ok: bool
    detail: str
    served_spki_sha256: str


# --------------------------------------------------------------------------- DNS


def published_tlsa(
    target: VerifyTarget, *, nameserver: Nameserver, timeout_s: float = QUERY_TIMEOUT_S
) -> list[str]:
    """The TLSA records ``nameserver`` serves at :func:`tlsa_owner` of ``target``, as sorted
    rdata text (``"3 1 1 <hex>"``) for :func:`check_served`; empty when it serves none.

    Asks without recursion and without DNSSEC validation: the question is what our own
    authoritative server publishes now, not whether a resolver would trust it.

    Raises:
      ConfigError: the target has no name.
      DnsNoAnswer: no answer in time or SERVFAIL (transient).
      DnsAnswerError: the server refused (permanent).
    """
    rrset = query_rrset(nameserver, tlsa_owner(target), "TLSA", timeout_s=timeout_s)
    return sorted(
        f"{rdata.usage} {rdata.selector} {rdata.mtype} {rdata.cert.hex()}"
        for rdata in rrset or ()
        if isinstance(rdata, TLSA)
    )


class _Deadline:
    """One time budget for a whole probe: each network step gets what is left of it."""

    def __init__(self, timeout_s: float, what: str) -> None:
        self._timeout_s = timeout_s
        self._end = time.monotonic() + timeout_s
        self._what = what

    def left(self) -> float:
        """Seconds left; TransientError when none are."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise TransientError(f"{self._what}: no answer within {self._timeout_s:g} s")
        return left


def _addresses(
    target: VerifyTarget, nameserver: Nameserver | None, deadline: _Deadline
) -> list[str]:
    """Where to connect: ``target.host`` when it is an IP literal, else the name's IPv4
    addresses at ``nameserver`` or, when it has none, its IPv6 ones."""
    if ip_literal(target.host) is not None:
        return [target.host]
    if nameserver is None:
        problem = (
            "the host is a name and no DNS server was given to look it up at (sslm never asks "
            "the system resolver); add ?connect=<IP>"
        )
        raise ConfigError(MAIN_FILE, CONFIG_KEY, target.url, problem)
    for rdtype in ("A", "AAAA"):
        per_try = min(QUERY_TIMEOUT_S, deadline.left() / QUERY_TRIES)
        rrset = query_rrset(nameserver, target.host, rdtype, timeout_s=per_try)
        found = sorted(rdata.address for rdata in rrset or () if isinstance(rdata, A | AAAA))
        if found:
            return found
    raise PermanentError(f"{target.url}: {nameserver.label} serves no address for {target.host}")


# --------------------------------------------------------------------------- the probe


class _Lines:
    """CRLF lines over a plain socket, before STARTTLS, within the probe's deadline."""

    def __init__(self, sock: socket.socket, deadline: _Deadline, where: str) -> None:
        self._sock = sock
        self._deadline = deadline
        self._where = where
        self._buffer = b""

    def send(self, line: str) -> None:
        self._sock.settimeout(self._deadline.left())
        self._sock.sendall(line.encode("ascii") + b"\r\n")

    def read(self) -> str:
        """The next line without its line end.

        Raises:
          TransientError: the server closed the connection.
          PermanentError: the line is longer than :data:`_MAX_LINE`.
        """
        while b"\n" not in self._buffer:
            if len(self._buffer) > _MAX_LINE:
                raise PermanentError(f"{self._where}: a line longer than {_MAX_LINE} bytes")
            self._sock.settimeout(self._deadline.left())
            chunk = self._sock.recv(4096)
            if not chunk:
                raise TransientError(f"{self._where}: the server closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def expect_nothing_more(self) -> None:
        """Before the handshake: the server must have sent nothing past its STARTTLS reply.

        Bytes sent in the clear after it would be read as if they came over TLS (the STARTTLS
        command injection of CVE-2011-0411), so we stop instead.
        """
        if self._buffer:
            raise PermanentError(f"{self._where}: data after the STARTTLS reply, before TLS")


def _reply_error(where: str, step: str, code: int, text: str) -> PermanentError | TransientError:
    """A refusal: 4xx is "try again later" in SMTP, anything else needs the operator."""
    message = f"{where}: {step} answered {code} {text}".rstrip()
    return TransientError(message) if 400 <= code < 500 else PermanentError(message)


def _smtp_reply(lines: _Lines, where: str) -> tuple[int, list[str]]:
    """One SMTP reply (RFC 5321 §4.2): its code and the text of each line."""
    texts: list[str] = []
    for _ in range(_MAX_LINES):
        line = lines.read()
        code, mark = line[:3], line[3:4]
        if not code.isdigit() or mark not in ("", " ", "-"):
            raise PermanentError(f"{where}: not an SMTP reply: {line[:80]!r}")
        texts.append(line[4:])
        if mark != "-":
            return int(code), texts
    raise PermanentError(f"{where}: an SMTP reply of more than {_MAX_LINES} lines")


def _smtp_starttls(lines: _Lines, where: str) -> None:
    code, texts = _smtp_reply(lines, where)
    if code != 220:
        raise _reply_error(where, "the greeting", code, texts[0])
    # gethostname() asks no resolver; the EHLO argument is informational for the server.
    lines.send(f"EHLO {socket.gethostname() or 'localhost'}")
    code, texts = _smtp_reply(lines, where)
    if code != 250:
        raise _reply_error(where, "EHLO", code, texts[0])
    if not any(text.split(" ", 1)[0].upper() == "STARTTLS" for text in texts[1:]):
        raise PermanentError(f"{where}: the server does not offer STARTTLS")
    lines.send("STARTTLS")
    code, texts = _smtp_reply(lines, where)
    if code != 220:
        raise _reply_error(where, "STARTTLS", code, texts[0])


def _imap_starttls(lines: _Lines, where: str) -> None:
    greeting = lines.read()
    if greeting.upper().startswith("* BYE"):
        raise TransientError(f"{where}: the server said {greeting[:80]!r}")
    if not greeting.upper().startswith("* OK"):
        raise PermanentError(f"{where}: the greeting {greeting[:80]!r} is not '* OK'")
    lines.send(f"{_IMAP_TAG} STARTTLS")
    for _ in range(_MAX_LINES):
        line = lines.read()
        if line.startswith("* "):
            continue  # untagged data (a CAPABILITY, an alert) may come before our answer
        tag, _, status = line.partition(" ")
        if tag != _IMAP_TAG or status.split(" ", 1)[0].upper() != "OK":
            raise PermanentError(f"{where}: STARTTLS answered {line[:80]!r}")
        return
    raise PermanentError(f"{where}: no answer to STARTTLS in {_MAX_LINES} lines")


def _peer_chain_der(tls: ssl.SSLSocket) -> list[bytes]:
    """The certificates the server sent, leaf first, as DER.

    ``getpeercert`` gives only the leaf, and DANE-TA needs the issuers too.
    ``SSLSocket.get_unverified_chain`` is public from Python 3.13; 3.10 to 3.12 have the same
    call on the private ``_sslobj``, returning ``_ssl.Certificate`` objects.
    """
    if sys.version_info >= (3, 13):
        return tls.get_unverified_chain()
    private = getattr(tls, "_sslobj")  # noqa: B009 - private, so typeshed does not declare it
    chain: list[Any] = private.get_unverified_chain() or []
    return [bytes(cert.public_bytes(_ssl.ENCODING_DER)) for cert in chain]


def _handshake(
    sock: socket.socket, target: VerifyTarget, deadline: _Deadline, where: str
) -> list[x509.Certificate]:
    """STARTTLS where the protocol needs it, the TLS handshake, and the served chain."""
    if target.protocol != "tls":
        lines = _Lines(sock, deadline, where)
        if target.protocol == "smtp":
            _smtp_starttls(lines, where)
        else:
            _imap_starttls(lines, where)
        lines.expect_nothing_more()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(
        sock, server_hostname=target.server_name, do_handshake_on_connect=False
    ) as tls:
        tls.settimeout(deadline.left())
        tls.do_handshake()
        chain_der = _peer_chain_der(tls)
    if not chain_der:
        raise PermanentError(f"{where}: the server sent no certificate")
    try:
        return [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as err:
        raise CryptoError(f"{where}: the served certificate does not parse: {err}") from None


def _served_chain(
    target: VerifyTarget, *, timeout_s: float, nameserver: Nameserver | None
) -> list[x509.Certificate]:
    """The chain ``target`` serves, leaf first; see :func:`served_certificate`."""
    deadline = _Deadline(timeout_s, target.url)
    failures: list[str] = []
    for address in _addresses(target, nameserver, deadline):
        where = f"{target.protocol} {bracketed(address)}:{target.port}"
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.settimeout(deadline.left())
                sock.connect((address, target.port))
            except TimeoutError:
                failures.append(f"{where}: no connection within {timeout_s:g} s")
                continue
            except OSError as err:
                failures.append(f"{where}: {err.strerror or err}")
                continue
            try:
                return _handshake(sock, target, deadline, where)
            except TimeoutError:
                raise TransientError(f"{where}: no answer within {timeout_s:g} s") from None
            except ssl.SSLEOFError:
                raise TransientError(f"{where}: connection closed in the TLS handshake") from None
            except ssl.SSLError as err:
                raise PermanentError(
                    f"{where}: TLS handshake failed: {err.reason or err}"
                ) from None
            except OSError as err:
                raise TransientError(f"{where}: {err.strerror or err}") from None
    raise TransientError(f"{target.url}: cannot connect: {'; '.join(failures)}")


def served_certificate(
    target: VerifyTarget, *, timeout_s: float, nameserver: Nameserver | None = None
) -> x509.Certificate:
    """The leaf certificate ``target`` serves.

    Connects (trying each address of a name in turn), speaks SMTP or IMAP up to STARTTLS when
    the protocol says so, and does a TLS handshake with SNI ``target.server_name`` that checks
    nothing. Read-only for the server; safe to repeat.

    Parameters:
      target(VerifyTarget): what to probe.
      timeout_s(float): budget for the whole probe, DNS lookup included.
      nameserver(Nameserver | None): where a ``host`` that is a name is looked up.

    Raises:
      TransientError: connection refused or timed out (naming ``host:port``), the server
        closed the connection, answered 4xx, or the lookup got no answer.
      PermanentError: the server does not offer or refuses STARTTLS, speaks another protocol,
        the handshake fails, or the name has no address; ConfigError when ``host`` is a name
        and ``nameserver`` is None.
    """
    return _served_chain(target, timeout_s=timeout_s, nameserver=nameserver)[0]


# --------------------------------------------------------------------------- judging


def _parse_tlsa(text: str, owner: str) -> TlsaRecord:
    """``"<usage> <selector> <matching> <hex ...>"`` as a record at ``owner``."""
    fields = text.split()
    try:
        usage, selector, matching = (int(field) for field in fields[:3])
        return TlsaRecord(owner, None, usage, selector, matching, "".join(fields[3:]).lower())
    except ValueError as err:
        raise PermanentError(f"TLSA record {text!r} is not '<u> <s> <m> <hex>': {err}") from None


def _shown(record: TlsaRecord) -> str:
    return f"{record.usage} {record.selector} {record.matching} {record.data[:16]}..."


def _names_host(cert: x509.Certificate, name: str) -> bool:
    """Whether a DNS SAN of ``cert`` is ``name``, or a wildcard covering its first label."""
    sans = extension_value(cert.extensions, x509.SubjectAlternativeName)
    parent = name.partition(".")[2]
    for pattern in [] if sans is None else sans.get_values_for_type(x509.DNSName):
        pattern = pattern.lower().removesuffix(".")
        if pattern == name or (pattern.startswith("*.") and parent and pattern[2:] == parent):
            return True
    return False


def _anchored_problem(path: Sequence[x509.Certificate], name: str, now: datetime) -> str | None:
    """Why ``path`` (served leaf up to the DANE-TA match) does not hold, or None when it does.

    RFC 7671 §5.2: below a trust anchor the usual checks apply: each certificate signed by the
    next, each valid now, and the leaf names the server.
    """
    for child, parent in itertools.pairwise(path):
        try:
            child.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError):
            return f"{child.subject.rfc4514_string()} is not signed by the certificate above it"
    for cert in path:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return f"{cert.subject.rfc4514_string()} is not valid now"
    if not _names_host(path[0], name):
        return f"the served certificate does not name {name}"
    return None


def _dane_verdict(
    chain: Sequence[x509.Certificate], records: Sequence[TlsaRecord], name: str, now: datetime
) -> tuple[bool, str]:
    """Whether any record authenticates the served ``chain``, and a line saying why.

    DANE-EE (3) matches the leaf, with no other check (RFC 7671 §5.1). DANE-TA (2) matches a
    certificate the server sent above the leaf, which must then anchor the leaf
    (:func:`_anchored_problem`); a bare-key anchor the server does not send is not found.
    PKIX-TA and PKIX-EE (0, 1) need a trust store and are reported as not checked.
    """
    if not records:
        return False, "no TLSA records to check against"
    notes: list[str] = []
    for record in records:
        shown = _shown(record)
        if record.usage not in (_DANE_TA, _DANE_EE):
            kind = "PKIX, needs a trust store" if record.usage < _DANE_TA else "unknown usage"
            notes.append(f"{shown} not checked ({kind})")
            continue
        if record.selector not in (0, 1) or record.matching not in (0, 1, 2):
            notes.append(f"{shown} not checked (unknown selector or matching type)")
            continue
        if record.usage == _DANE_EE:
            if tlsa_data(chain[0], record.selector, record.matching) == record.data:
                return True, f"TLSA {shown} matches the served certificate"
            continue
        for depth, issuer in enumerate(chain[1:], start=1):
            if tlsa_data(issuer, record.selector, record.matching) == record.data:
                problem = _anchored_problem(chain[: depth + 1], name, now)
                if problem is None:
                    return True, f"TLSA {shown} matches the served issuer at depth {depth}"
                notes.append(f"{shown} matches the issuer at depth {depth}, but {problem}")
                break
    unchecked = f" ({'; '.join(notes)})" if notes else ""
    return False, f"none of the {len(records)} TLSA records matches{unchecked}"


def check_served(
    target: VerifyTarget,
    *,
    expected: x509.Certificate,
    tlsa: Sequence[str] | None,
    timeout_s: float,
    nameserver: Nameserver | None = None,
) -> VerifyResult:
    """Probe ``target`` (see :func:`served_certificate`) and judge what it serves.

    ``ok`` only when the served leaf's public key (SPKI) is ``expected``'s and, when ``tlsa``
    is given, at least one of those records authenticates the served chain: DANE-EE (3) and
    DANE-TA (2) with selectors 0/1 and matching types 0/1/2; PKIX usages (0/1) are listed as
    not checked and never make a match. An empty ``tlsa`` (a DANE service whose owner has no
    records) fails. A mismatch is a result, not an exception; the caller fails the roll.

    Parameters:
      expected(Certificate): what should be served, normally ``curr``'s certificate.
      tlsa(Sequence[str] | None): rdata text (``"3 1 1 <hex>"``, e.g. from
        :func:`published_tlsa`); None skips the DANE check.
      timeout_s, nameserver: as :func:`served_certificate`.

    Returns:
      The verdict; ``detail`` names the served and expected SPKI SHA-256 on a key mismatch.

    Raises:
      TransientError, PermanentError: as :func:`served_certificate`, and PermanentError for a
        ``tlsa`` entry that is not rdata text; ConfigError when ``tlsa`` is given and the
        target has no name.
    """
    owner = tlsa_owner(target) if tlsa is not None else ""
    records = [_parse_tlsa(text, owner) for text in tlsa or ()]
    chain = _served_chain(target, timeout_s=timeout_s, nameserver=nameserver)
    served, wanted = tlsa_data(chain[0], 1, 1), tlsa_data(expected, 1, 1)
    key_ok = served == wanted
    parts = [
        f"serves the expected key (SPKI sha256 {served})"
        if key_ok
        else f"serves SPKI sha256 {served}, expected {wanted}"
    ]
    dane_ok = True
    if tlsa is not None:
        name = target.server_name or ""  # tlsa_owner above refused a target without one
        dane_ok, dane_detail = _dane_verdict(chain, records, name, datetime.now(UTC))
        parts.append(dane_detail)
    return VerifyResult(key_ok and dane_ok, f"{target.url}: {'; '.join(parts)}", served)
