"""Every certificate sslm-mgr makes, CA or leaf, as the pkilint linters and openssl see it.

The example configuration (root, intermediate, EC and RSA leaves, one with IP SANs and a
wildcard, all with an ``email``) plus an Ed25519 leaf, built by a real ``sslm-mgr -renew
-roll``. pkilint's RFC 5280 linter must find no error; the CA/B Forum linter no error beyond
those a private CA cannot meet by design (each listed below with its reason).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support import BIN, RunMgr, openssl

ED25519_SERVICE = """\
name = 'Example.com Web (Ed25519)'
group = 'example.com'
service = 'web-ed'
signing_ca = 'my-int'

[KeyOpts]
    ktype = 'ed25519'

[X509]
    CN = 'ed.example.com'
    O = 'Example Company'
    C = 'US'
    email = 'hostmaster@example.com'
    sans = ['192.0.2.20', '2001:db8::20']
"""
EXAMPLE_SERVICES = "services = ['mail-ec', 'mail-rsa', 'web-ec']"
CERTS = {
    "ca/my-root": "root",
    "ca/my-int": "intermediate",
    "example.com/mail-ec": "EC leaf",
    "example.com/mail-rsa": "RSA leaf",
    "example.com/web-ec": "EC leaf with IP SANs and a wildcard",
    "example.com/web-ed": "Ed25519 leaf",
}
#: RFC 5280 knows no wildcards (its names are RFC 1034 "preferred name syntax"); RFC 6125 and
#: the CA/B Forum define them, and the CA/B linter below checks them instead.
PKIX_WILDCARD = ("pkix.invalid_domain_name_syntax", 'Invalid domain name syntax: "*.example.com"')
WILDCARD_SERVICE = "example.com/web-ec"
#: CA/B Forum rules for publicly trusted CAs that a private CA does not follow, and why.
NOT_FOR_A_PRIVATE_CA = {
    # no CRL or OCSP service: the certificates are short-lived and the CA is the operator's
    "cabf.serverauth.subscriber.revocation_information_absent",
    "msft.end_entity.revocation_information_absent",
    "cabf.serverauth.subscriber.authority_info_access_extension_absent",
    "cabf.serverauth.ca.crl_distribution_points_extension_absent",
    # the reserved policy OIDs assert validation by a public CA under the BRs
    "cabf.serverauth.subscriber.certificate_policies_extension_absent",
    "cabf.serverauth.ca.certificate_policies_extension_absent",
    # CA certificates carry no EKU (docs/decisions.md, Signing and CAs)
    "cabf.serverauth.ca.extended_key_usage_extension_absent",
    # O and OU are the operator's own: no public CA validated them (a "DV" certificate to
    # the linter, which finds no policy OID)
    "cabf.serverauth.dv.unknown_attribute_present",
    # private and documentation addresses are what a private CA certifies
    "cabf.internal_ip_address",
}
#: Ed25519 is outside the web PKI (BR 7.1.3.1): fit for private uses only (docs/configuration.md).
CABF_ED25519 = "cabf.serverauth.prohibited_subject_public_key_algorithm_encoding"


def build(topdir: Path, mgr: RunMgr) -> dict[str, Path]:
    """The example plus an Ed25519 leaf, renewed and rolled; cert.pem of each service."""
    (topdir / "conf.d/example.com/web-ed").write_text(ED25519_SERVICE)
    main = topdir / "conf.d/ssl-mgr.conf"
    text = main.read_text()
    assert EXAMPLE_SERVICES in text
    main.write_text(text.replace(EXAMPLE_SERVICES, EXAMPLE_SERVICES[:-1] + ", 'web-ed']"))
    done = mgr("-renew", "-roll")
    assert done.returncode == 0, done.stdout + done.stderr
    return {svc: topdir / "certs" / svc / "curr/cert.pem" for svc in CERTS}


def errors(linter: str, cert: Path, *options: str) -> list[tuple[str, str]]:
    """(code, message) of each ERROR or FATAL finding of a pkilint ``linter`` on ``cert``."""
    done = subprocess.run(
        [str(BIN / linter), "lint", *options, "-s", "ERROR", "-f", "JSON", str(cert)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    report = json.loads(done.stdout)  # a crash prints no JSON and fails here
    return [
        (finding["code"], finding["message"] or "")
        for result in report["results"]
        for finding in result["finding_descriptions"]
        if finding["severity"] in ("ERROR", "FATAL")
    ]


def test_every_certificate_passes_the_rfc_5280_and_cabf_linters(topdir: Path, mgr: RunMgr) -> None:
    # Given the example's CAs and leaves, built by sslm-mgr
    certs = build(topdir, mgr)
    for svc, cert in certs.items():
        # When pkilint's RFC 5280 linter reads each
        pkix = errors("lint_pkix_cert", cert)
        # Then it finds no error but the wildcard name, where there is one
        expected = [PKIX_WILDCARD] if svc == WILDCARD_SERVICE else []
        assert pkix == expected, (CERTS[svc], pkix)
        # And the CA/B Forum linter finds nothing beyond what a private CA does not do
        cabf = errors("lint_cabf_serverauth_cert", cert, "--detect")
        allowed = NOT_FOR_A_PRIVATE_CA | ({CABF_ED25519} if svc.endswith("web-ed") else set())
        assert [(code, msg) for code, msg in cabf if code not in allowed] == [], (CERTS[svc], cabf)


def test_subjects_are_conventional_cas_have_no_san_and_email_stays_out(
    topdir: Path, mgr: RunMgr
) -> None:
    certs = build(topdir, mgr)
    subjects = {
        svc: openssl("x509", "-in", str(cert), "-noout", "-subject", "-nameopt", "oneline").stdout
        for svc, cert in certs.items()
    }
    # Subjects run from the most general attribute to the CN (CA/B BR 7.1.4.2)
    assert subjects["ca/my-root"] == "subject=C = US, O = Example Certs, CN = my-root\n"
    assert subjects["example.com/mail-ec"] == (
        "subject=C = US, O = Example Company, OU = IT Mail, CN = example.com\n"
    )
    for svc, cert in certs.items():
        text = openssl("x509", "-in", str(cert), "-noout", "-text").stdout
        # The configured e-mail address is in no certificate: not in the subject, no SAN
        assert "hostmaster@example.com" not in text, svc
        assert "emailAddress" not in text and "email:" not in text, svc
        # CA certificates have no SAN (none is configured); leaves name their CN first
        if svc.startswith("ca/"):
            assert "Subject Alternative Name" not in text, svc
        else:
            sans = openssl("x509", "-in", str(cert), "-noout", "-ext", "subjectAltName").stdout
            assert sans.splitlines()[1].strip().startswith("DNS:"), (svc, sans)
    web_sans = openssl(
        "x509", "-in", str(certs["example.com/web-ec"]), "-noout", "-ext", "subjectAltName"
    ).stdout
    assert "IP Address:192.0.2.10, IP Address:2001:DB8:0:0:0:0:0:10" in web_sans
