"""``openssl verify`` as the judge of chains the web-PKI verifier refuses to look at.

sslm's chain checks (:func:`sslm_tasks.crypto.inspect.check_chain`) use cryptography's
verifier, which implements the CA/Browser Forum profile and refuses every CA key and signature
algorithm outside it (Ed25519 or brainpool CA keys, SHA-224 and SHA-3 signatures). sslm makes
such chains when configured to, and the TLS libraries of mail and other private-use servers
(OpenSSL, GnuTLS) accept them; for those chains the verdict is OpenSSL's, with the same trust
anchors, purpose and time.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sslm_tasks.crypto.dhparam import OPENSSL

#: ``error 47 at 0 depth lookup: permitted subtree violation``: one problem openssl found.
_ERROR_LINE = re.compile(r"^error (\d+) at (\d+) depth lookup: (.+)$")
_TIMEOUT_S = 60


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(Encoding.PEM) for cert in certs)


def _problems(stderr: str) -> list[str]:
    """One line per ``error N at D depth lookup: ...`` in openssl's output, with the subject
    line openssl prints just before it."""
    lines = stderr.splitlines()
    found = []
    for index, line in enumerate(lines):
        match = _ERROR_LINE.match(line.strip())
        if match is None:
            continue
        depth, reason = match.group(2), match.group(3)
        subject = lines[index - 1].strip() if index > 0 else ""
        found.append(f"openssl verify: {reason} (depth {depth}: {subject or 'unknown'})")
    if found:
        return found
    last = next((line for line in reversed(lines) if line.strip()), "no message")
    return [f"openssl verify failed: {last.strip()}"]


def openssl_verify(
    cert: x509.Certificate,
    untrusted: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    at: datetime,
    purpose: str | None,
    partial_chain: bool,
) -> list[str]:
    """What ``openssl verify`` finds wrong with the path from ``cert`` to ``anchors``.

    Only ``anchors`` are trusted: the system's trust store is switched off.

    Parameters:
      cert(Certificate): the certificate to check.
      untrusted(Sequence[Certificate]): candidate intermediates.
      anchors(Sequence[Certificate]): trust anchors; must not be empty.
      at(datetime): timezone-aware time to check validity at (whole seconds).
      purpose(str | None): openssl's ``-purpose`` (``sslserver`` checks the serverAuth EKU
        of the leaf and its issuers); None checks no purpose.
      partial_chain(bool): accept anchors that are not self-signed (a chain sent without its
        root).

    Returns:
      One line per problem openssl reports, empty when it says OK.
    """
    with tempfile.TemporaryDirectory(prefix="sslm-verify-") as folder:
        anchors_file, untrusted_file, cert_file = (
            Path(folder, name) for name in ("anchors.pem", "untrusted.pem", "cert.pem")
        )
        anchors_file.write_bytes(_pem(anchors))
        cert_file.write_bytes(_pem([cert]))
        argv = [OPENSSL, "verify", "-no-CApath", "-no-CAstore", "-CAfile", str(anchors_file)]
        argv += ["-attime", str(int(at.timestamp()))]
        if untrusted:
            untrusted_file.write_bytes(_pem(untrusted))
            argv += ["-untrusted", str(untrusted_file)]
        if purpose is not None:
            argv += ["-purpose", purpose]
        if partial_chain:
            argv.append("-partial_chain")
        argv.append(str(cert_file))
        try:
            done = subprocess.run(argv, capture_output=True, timeout=_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            return [f"cannot run {OPENSSL} verify: {err}"]
    if done.returncode == 0:
        return []
    return _problems(done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace"))
