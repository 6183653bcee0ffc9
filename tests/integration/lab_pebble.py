"""Pebble, Let's Encrypt's test CA, on loopback: the real ACME server of the ACME tests.

:func:`start_pebble` runs ``pebble`` under the test's :class:`Services` with its own HTTPS
certificate, issued by a throwaway CA whose certificate is :attr:`Pebble.ca_bundle` (sslm's
``ca_acme_ca_bundle``). Pebble resolves names and validates challenges through the DNS server
it is given (the lab's BIND primary), so a dns-01 TXT record must really be published there
and an http-01 token really served on ``127.0.0.1:<http_port>``.

Validation is real: ``PEBBLE_VA_NOSLEEP=1`` only drops Pebble's random sleep before each
validation, ``PEBBLE_AUTHZREUSE=0`` makes every order validate afresh, and
``PEBBLE_VA_ALWAYS_VALID`` is never set (it would accept any challenge). Each start is a new
CA that knows no account: fetch :meth:`Pebble.roots_pem` from the Pebble that issued.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lab_dns import DNS_PORT, PRIMARY
from services import START_TIMEOUT_S, Service, Services, free_port, require_binary, wait_for
from support import verify_against

#: Seconds for one request to Pebble's HTTPS API.
HTTP_TIMEOUT_S = 5.0


@dataclass
class Pebble:
    """A running Pebble: where its ACME directory is, and how to trust and inspect it."""

    #: The ACME directory (sslm's ``ca_acme_directory``).
    directory_url: str
    #: The management API: ``/roots/0``, ``/intermediates/0``.
    management_url: str
    #: PEM of the CA that issued Pebble's HTTPS certificate (sslm's ``ca_acme_ca_bundle``).
    ca_bundle: Path
    #: Pebble's HTTPS certificate (127.0.0.1 and localhost) and its key: a test's front for
    #: Pebble presents the same identity, so clients trust it through :attr:`ca_bundle`.
    https_cert: Path
    https_key: Path
    #: Where Pebble fetches http-01 tokens: ``http://<name>:<http_port>/.well-known/...``.
    http_port: int
    service: Service

    def roots_pem(self) -> bytes:
        """The root that signs this Pebble's certificates (PEM): the trust anchor to verify
        an issued chain against."""
        return self._management("roots/0")

    def intermediates_pem(self) -> bytes:
        """The intermediate between the root and issued certificates (PEM)."""
        return self._management("intermediates/0")

    def verify_output(self, version: Path) -> str:
        """``openssl verify`` of a stored version (its cert.pem through its chain.pem) against
        this Pebble's root; its whole output, ending in "OK" when the chain holds."""
        root = self.ca_bundle.parent / "pebble-root.pem"
        root.write_bytes(self.roots_pem())
        return verify_against(root, version)

    def orders_created(self) -> list[str]:
        """The id (last path segment of the URL) of every order this Pebble created, from its
        own log: the CA's count, whatever the client believes it did."""
        return re.findall(r'Added order "([^"]+)" to the db', self.service.log_text())

    def answers(self) -> bool:
        """Whether the ACME directory answers over HTTPS that :attr:`ca_bundle` trusts."""
        try:
            return requests.get(self.directory_url, verify=str(self.ca_bundle), timeout=1).ok
        except requests.RequestException:
            return False

    def cert_status(self, serial: int) -> str:
        """What this Pebble says of the certificate with ``serial``: ``Valid`` or ``Revoked``."""
        found = json.loads(self._management(f"cert-status-by-serial/{serial:x}"))
        return str(found["Status"])

    def _management(self, path: str) -> bytes:
        response = requests.get(
            f"{self.management_url}/{path}", verify=str(self.ca_bundle), timeout=HTTP_TIMEOUT_S
        )
        response.raise_for_status()
        return response.content


def _write_https_identity(directory: Path) -> tuple[Path, Path, Path]:
    """Make a throwaway CA and, from it, a certificate for 127.0.0.1 and localhost.

    Returns the CA certificate (the bundle clients trust), the server certificate and its key.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sslm test lab: Pebble HTTPS CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "https-ca.pem"
    cert_path = directory / "https-cert.pem"
    key_path = directory / "https-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def start_pebble(
    services: Services,
    workdir: Path,
    *,
    dns_server: str = f"{PRIMARY}:{DNS_PORT}",
    nonce_reject: int = 0,
    http_port: int | None = None,
    eab_keys: Mapping[str, str] | None = None,
) -> Pebble:
    """Start Pebble on free loopback ports; return once its directory answers.

    ``dns_server`` (``address:port``) is where Pebble resolves and looks up challenges: the
    DNS lab's primary by default. ``nonce_reject`` is the percentage of good nonces Pebble
    rejects with badNonce (0: deterministic runs; e.g. 5 to prove retries work).
    ``http_port`` is where Pebble fetches http-01 tokens (default: a free port).
    ``eab_keys`` (``{kid: base64url HMAC key}``), when given, makes Pebble a CA that registers
    an account only with an External Account Binding made with one of these keys.
    """
    binary = require_binary("pebble")
    workdir.mkdir(parents=True, exist_ok=True)
    ca_bundle, cert, key = _write_https_identity(workdir)
    acme_port, management_port, tls_port = free_port(), free_port(), free_port()
    http_port = free_port() if http_port is None else http_port
    config = workdir / "pebble-config.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{acme_port}",
                    "managementListenAddress": f"127.0.0.1:{management_port}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": bool(eab_keys),
                    "externalAccountMACKeys": dict(eab_keys or {}),
                }
            },
            indent=2,
        )
    )
    # A developer's own PEBBLE_* (PEBBLE_VA_ALWAYS_VALID above all) must not leak in.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PEBBLE_")}
    env |= {
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_AUTHZREUSE": "0",
        "PEBBLE_WFE_NONCEREJECT": str(nonce_reject),
    }
    service = services.spawn(
        f"pebble-{len(services.started)}",
        [binary, "-config", str(config), "-dnsserver", dns_server],
        env=env,
        cwd=workdir,
    )
    pebble = Pebble(
        directory_url=f"https://127.0.0.1:{acme_port}/dir",
        management_url=f"https://127.0.0.1:{management_port}",
        ca_bundle=ca_bundle,
        https_cert=cert,
        https_key=key,
        http_port=http_port,
        service=service,
    )
    wait_for(
        "pebble's ACME directory answers",
        pebble.answers,
        timeout_s=START_TIMEOUT_S,
        log=service.log,
        alive=lambda: service.alive,
    )
    return pebble
