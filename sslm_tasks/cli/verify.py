"""``sslm-verify``: validate a certificate directory's chain for real.

Upstream only checked the certificate's signature against the first chain certificate and
said "Verified" for chains OpenSSL rejects. This validates the whole path with cryptography's
X.509 verifier (see :func:`sslm_tasks.crypto.inspect.check_chain`): a leaf as a TLS server
certificate, up to a trusted root: the chain's own self-signed root, or those in ``--ca-file``.

Exit status: 0 verified, 1 failed or unreadable certificates, 2 usage error or missing files.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from sslm_tasks.cli._common import DASH_LINE, block_header, cert_summary, error
from sslm_tasks.cli.console import console_script
from sslm_tasks.cli.version import add_version_flag
from sslm_tasks.crypto.inspect import check_chain, load_certs
from sslm_tasks.errors import CryptoError

CERT_FILE = "cert.pem"
CHAIN_FILE = "chain.pem"


@console_script
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sslm-verify``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="sslm-verify",
        description="Validate cert.pem against chain.pem in a certificate directory.",
    )
    add_version_flag(parser)
    parser.add_argument("path", type=Path, help="the directory, or any file in it")
    parser.add_argument(
        "--ca-file", type=Path, help="trusted root certificates (default: chain.pem's own root)"
    )
    args = parser.parse_args(argv)
    directory: Path = args.path if args.path.is_dir() else args.path.parent
    cert_path, chain_path = directory / CERT_FILE, directory / CHAIN_FILE
    if not (cert_path.is_file() and chain_path.is_file()):
        error(f"Failed to find {CERT_FILE}, {CHAIN_FILE} given {directory}")
        return 2
    try:
        inputs = {path: path.read_bytes() for path in (cert_path, chain_path)}
        trust_pem = None if args.ca_file is None else args.ca_file.read_bytes()
    except OSError as err:
        error(f"Error: cannot read {err.filename}: {err.strerror or err}")
        return 2
    try:
        certs = load_certs(inputs[cert_path])
        chain = load_certs(inputs[chain_path])
        trust = None if trust_pem is None else load_certs(trust_pem)
    except CryptoError as err:
        error(f"Error: {directory}: {err}")
        return 1

    now = datetime.now(UTC)
    verdict = check_chain(certs[0], chain, now=now, trust=trust)
    print(DASH_LINE)
    print(f"\tCertificate ** {'Failed' if verdict.problems else 'Verified'} **")
    for problem in verdict.problems:
        print(f"\t  {problem}")
    for note in verdict.notes:
        print(f"\t  note: {note}")
    print("Certificate Info:")
    for cert in certs:
        print("\n".join([*block_header(str(cert_path)), *cert_summary(cert, now)]))
    print("\n-------------------\nChain Info:")
    for cert in chain:
        print("\n".join([*block_header(str(chain_path)), *cert_summary(cert, now)]))
    return 1 if verdict.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
