"""``sslm-mgr revoke`` of a certificate the lab's Pebble issued: RFC 8555 §7.6 ``revokeCert``
signed by the service's account key, accepted once and refused as already revoked after.

Run under the lab lock (its DNS addresses need their own network namespace), as the other
integration tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from lab_acme import SVC, mgr
from lab_dns import DnsLab
from lab_pebble import Pebble

pytestmark = pytest.mark.integration


def test_pebble_revokes_once_and_refuses_a_second_revocation(
    acme_topdir: Path, dns_lab: DnsLab, pebble: Pebble
) -> None:
    # Given a certificate Pebble issued to example.test:web
    issued = mgr(acme_topdir, "-renew", "example.test:web")
    assert issued.returncode == 0, issued.stdout + issued.stderr
    curr = acme_topdir / "certs" / SVC / "curr"
    serial = x509.load_pem_x509_certificate((curr / "cert.pem").read_bytes()).serial_number
    assert pebble.cert_status(serial) == "Valid"

    # When it is revoked
    done = mgr(acme_topdir, "revoke", "example.test:web", "-reason", "cessationOfOperation")

    # Then Pebble accepted the revocation and the record says who did it
    assert done.returncode == 0, done.stdout + done.stderr
    assert "revoked curr" in done.stdout and "by acme" in done.stdout
    assert pebble.cert_status(serial) == "Revoked"
    status = mgr(acme_topdir, "-s", "--json", "example.test:web")
    (service,) = json.loads(status.stdout)["services"]
    (revocation,) = service["revocations"]
    assert int(revocation["serial"], 16) == serial
    assert (revocation["reason"], revocation["by"]) == ("cessationOfOperation", "acme")

    # When it is revoked again, then Pebble refuses it and sslm says so, failing
    again = mgr(acme_topdir, "revoke", "example.test:web", "-reason", "cessationOfOperation")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "already revoked" in again.stderr and "alreadyRevoked" in again.stderr
    # and the record still holds the one revocation
    status = mgr(acme_topdir, "-s", "--json", "example.test:web")
    assert len(json.loads(status.stdout)["services"][0]["revocations"]) == 1
