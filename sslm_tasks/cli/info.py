"""``sslm-info``: summarise PEM certificates, chains, CSRs and keys.

Every PEM block of every input gets its own block of output. ``-v`` shows openssl's full text
instead, except that a private key only ever shows its public half.

Exit status: 0 when every input was read and every block understood, 1 otherwise (upstream
crashed on non-PEM input and exited 0 on a missing file).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sslm_tasks.cli._common import (
    block_header,
    cert_summary,
    error,
    run_openssl,
    sans_lines,
)
from sslm_tasks.cli.console import console_script
from sslm_tasks.cli.version import add_version_flag
from sslm_tasks.crypto.inspect import (
    load_certs,
    san_strings,
    signature_algorithm_name,
    split_pem_blocks,
)
from sslm_tasks.crypto.keys import load_private_key, public_key_label
from sslm_tasks.errors import CryptoError

STDIN_NAME = "stdin"
_CERT_LABELS = frozenset({"CERTIFICATE", "TRUSTED CERTIFICATE"})


def _kind(label: str) -> str:
    """``cert``, ``csr``, ``pubkey``, ``prvkey`` or ``other`` for a PEM label."""
    if label in _CERT_LABELS:
        return "cert"
    if "REQUEST" in label:
        return "csr"
    if label == "PUBLIC KEY":
        return "pubkey"
    if "PRIVATE KEY" in label:
        return "prvkey"
    return "other"


def _csr_summary(pem: bytes) -> list[str]:
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as err:
        raise CryptoError(f"unreadable certificate request: {err}") from err
    return [
        f"Subject  : {csr.subject.rfc4514_string()}",
        *sans_lines(san_strings(csr.extensions)),
        f"Pubkey   : pubkey-{public_key_label(csr.public_key())}",
        f"Sig algo : {signature_algorithm_name(csr.signature_algorithm_oid)}",
    ]


def _pubkey_summary(pem: bytes) -> list[str]:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as err:
        raise CryptoError(f"unreadable public key: {err}") from err
    return [f"Pubkey   : pubkey-{public_key_label(key)}"]


def summary(label: str, block: str, now: datetime) -> list[str]:
    """Summary lines of one PEM block.

    Raises:
      CryptoError: the block does not parse as what its label says.
    """
    pem = block.encode("ascii")
    kind = _kind(label)
    if kind == "cert":
        return cert_summary(load_certs(pem)[0], now)
    if kind == "csr":
        return _csr_summary(pem)
    if kind == "pubkey":
        return _pubkey_summary(pem)
    if kind == "prvkey":
        return [f"Key algo : prvkey-{public_key_label(load_private_key(pem).public_key())}"]
    return [f"Type     : {label} (no summary for this kind of block)"]


#: openssl arguments for the full text of each kind. Keys use ``-text_pub`` so that the
#: private numbers never reach the terminal (upstream ran ``openssl ec -text``); an empty
#: ``-passin`` makes an encrypted key fail instead of prompting on the tty.
_VERBOSE_ARGS = {
    "cert": ["x509", "-noout", "-text"],
    "csr": ["req", "-noout", "-text"],
    "pubkey": ["pkey", "-pubin", "-noout", "-text_pub"],
    "prvkey": ["pkey", "-noout", "-text_pub", "-passin", "pass:"],
}


def verbose(label: str, block: str) -> list[str]:
    """openssl's text for one PEM block (public parts only for keys).

    Raises:
      CryptoError: openssl could not read the block.
    """
    args = _VERBOSE_ARGS.get(_kind(label))
    if args is None:
        return [f"Type     : {label} (openssl has no text form for this kind of block)"]
    return run_openssl(args, block.encode("ascii")).decode(errors="replace").splitlines()


def _read(path: str | None) -> bytes:
    if path is None:
        return sys.stdin.buffer.read()
    with open(path, "rb") as handle:
        return handle.read()


def _show(path: str | None, *, is_verbose: bool, now: datetime) -> bool:
    """Print every block of one input (None = stdin); False when anything failed."""
    source = STDIN_NAME if path is None else path
    try:
        text = _read(path).decode("utf-8", errors="replace")
    except OSError as err:
        error(f"Error: cannot read {source}: {err.strerror or err}")
        return False
    try:
        blocks = split_pem_blocks(text)
    except CryptoError as err:
        error(f"Error: {source}: {err}")
        return False
    if not blocks:
        error(f"Error: {source}: no PEM blocks found")
        return False
    shown_all = True
    for label, block in blocks:
        try:
            lines = verbose(label, block) if is_verbose else summary(label, block, now)
        except CryptoError as err:
            error(f"Error: {source}: {label} block: {err}")
            shown_all = False
            continue
        print("\n".join([*block_header(source), *lines]))
    return shown_all


@console_script
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sslm-info``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="sslm-info", description="Summarise PEM certificates, chains, CSRs and keys."
    )
    add_version_flag(parser)
    parser.add_argument(
        "-v",
        "--verb",
        "--verbose",
        dest="verbose",
        action="store_true",
        help="show openssl's full text (public parts only for keys)",
    )
    parser.add_argument("files", nargs="*", help="PEM files (default: stdin)")
    args = parser.parse_args(argv)
    now = datetime.now(UTC)
    paths: list[str | None] = list(args.files) or [None]
    results = [_show(path, is_verbose=args.verbose, now=now) for path in paths]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
