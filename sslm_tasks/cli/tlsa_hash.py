"""``sslm-tlsa-hash``: TLSA data of ``<dir>/cert.pem``, cross-checked with openssl.

The data is computed twice, by sslm and by an openssl pipeline, so an operator can trust the
record before publishing it. Upstream supported only ``3 1 1``; every selector and matching
type works here.

Exit status: 0 matched, 1 mismatch or unreadable certificate, 2 missing file or bad arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sslm_tasks.cli._common import error, run_openssl
from sslm_tasks.cli.console import console_script
from sslm_tasks.cli.version import add_version_flag
from sslm_tasks.crypto.inspect import load_certs
from sslm_tasks.crypto.tlsa import tlsa_data
from sslm_tasks.errors import CryptoError

CERT_FILE = "cert.pem"
_DGST_FLAGS = {1: "-sha256", 2: "-sha512"}


def openssl_tlsa_data(cert_pem: bytes, selector: int, matching: int) -> str:
    """TLSA data of the first certificate in ``cert_pem``, computed only by openssl.

    Raises:
      CryptoError: an openssl step failed.
    """
    if selector == 1:
        pubkey_pem = run_openssl(["x509", "-pubkey", "-noout"], cert_pem)
        der = run_openssl(["pkey", "-pubin", "-outform", "der"], pubkey_pem)
    else:
        der = run_openssl(["x509", "-outform", "der"], cert_pem)
    if matching == 0:
        return der.hex()
    # -r prints "<hex> *stdin", whatever the openssl version calls the digest.
    return run_openssl(["dgst", _DGST_FLAGS[matching], "-r"], der).decode().split()[0].lower()


@console_script
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sslm-tlsa-hash``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="sslm-tlsa-hash", description="TLSA record data of <dir>/cert.pem."
    )
    add_version_flag(parser)
    parser.add_argument("dir", nargs="?", default="./", type=Path, help="default: ./")
    parser.add_argument("-u", "--usage", type=int, choices=range(4), default=3)
    parser.add_argument("-s", "--selector", type=int, choices=range(2), default=1)
    parser.add_argument("-m", "--matching", type=int, choices=range(3), default=1)
    args = parser.parse_args(argv)

    cert_path: Path = args.dir / CERT_FILE
    if not cert_path.is_file():
        error(f"Error: Missing cert file : {cert_path}")
        return 2
    try:
        cert_pem = cert_path.read_bytes()
        internal = tlsa_data(load_certs(cert_pem)[0], args.selector, args.matching)
        external = openssl_tlsa_data(cert_pem, args.selector, args.matching)
    except (OSError, CryptoError) as err:
        error(f"Error: {cert_path}: {err}")
        return 1
    if internal != external:
        print("** Warning: Mismatched:")
        print(f" internal: {internal}")
        print(f"  openssl: {external}")
        return 1
    print("Matched:")
    print(f"tlsa hash: {internal}")
    print(f"{args.usage} {args.selector} {args.matching} {internal}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
