"""A topdir exactly as ssl-mgr 7.8 leaves it, made here by code that does what it does
(``/work/shared/reference/ssl-mgr-behaviour.md``; no ssl-mgr code), for the migration tests.

What ssl-mgr writes, and sslm must take over as it is:

- ``conf.d`` in ssl-mgr's words: ``verb``, ``sslm_auth_hook``, ``services = ['*']``, empty
  ``OU``/``L``/``ST``, an ``email`` in every ``[X509]``;
- a local root and intermediate and the services they sign, built the way ssl-mgr builds
  them: subjects of exactly seven attributes in its order (CN, C, ST, L, O, OU,
  emailAddress), the empty ones included; every extension taken from the CSR, among them an
  authority key identifier that is the certificate's *own* key id (so ``openssl verify``
  rejects every chain, §4.f); CA certificates with a ``DNS:<CN>`` name; SHA-384;
- version directories named by *local* time (``YYYYmmdd-HH:MM:SS``), with relative
  ``curr`` links and an ``info`` file once rolled, at ssl-mgr's modes;
- a ``next`` that ``-d`` left incomplete: key, CSR and certificate, no ``bundle.pem``;
- the production tree as its rsync made it: real directories, the CA keys included, the
  group's ``tlsa.<group>``, and the ``dh/`` that ``sslm-dhparm`` writes;
- the group's TLSA file with its double apex record commented out, copied into the zone's
  include directory (the caller has DNS serve it).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sslm_tasks.crypto.tlsa import tlsa_data

#: ssl-mgr's version directory names: local time, one-second resolution.
LOCAL_STAMP = "%Y%m%d-%H:%M:%S"
GROUP = "example.test"
#: The service whose ``next`` a ``-d`` left incomplete (sorted first, so the others follow it).
INCOMPLETE = "mail"
DANE = "web"
EMAIL = f"hostmaster@{GROUP}"
#: ssl-mgr's TLSA TTL for the example's DANE service (``dane_tls_ttl``), short for the tests.
TLSA_TTL = 1

_MAIN = """\
[globals]
    verb = true
    sslm_auth_hook = '/usr/lib/ssl-mgr/sslm-auth-hook'
    prod_cert_dir = '{top}/prod-certs'
    logdir = '{top}/Logs'
    clean_keep = 5
    min_roll_mins = 0
    dns_check_delay = 240
    dns_xtra_ns = []
    post_copy_cmd = []

[[groups]]
    domain = 'ca'
    services = ['my-root', 'my-int']
    active = true

[[groups]]
    domain = '{group}'
    services = ['*']
    active = true

[[dns_primary]]
    domain = 'default'
    server = '{primary}'
    port = {port}

[dns]
    restart_cmd = '{refresh}'
    tlsa_dirs = ['{tlsa_dir}']
    depends = ['dns']
"""

_CA_INFO = """\
[my-root]
    ca_desc = 'Example root CA'
    ca_type = 'self'

[my-int]
    ca_desc = 'Example intermediate CA'
    ca_type = 'local'
"""

_SERVICE = """\
name = '{name}'
group = '{group}'
service = '{service}'
signing_ca = '{signing_ca}'
{dane}
{ca}
[KeyOpts]
    ktype = 'ec'
    ec_algo = 'secp384r1'

[X509]
    CN = '{cn}'
    O = '{o}'
    OU = ''
    L = ''
    ST = ''
    C = 'US'
    email = '{email}'
    sans = {sans!r}
"""


@dataclass(frozen=True)
class Spec:
    """One service as its ssl-mgr service file states it."""

    group: str
    service: str
    signing_ca: str
    cn: str
    o: str
    sans: tuple[str, ...] = ()
    sign_end_days: int | None = None
    dane_tls: str = ""

    @property
    def is_ca(self) -> bool:
        return self.group == "ca"

    def text(self) -> str:
        ca = (
            ""
            if self.sign_end_days is None
            else (f"[CA]\n    sign_end_days = {self.sign_end_days}\n    digest = 'sha384'\n")
        )
        dane = (
            ""
            if not self.dane_tls
            else (f"dane_tls = {self.dane_tls}\ndane_tls_ttl = {TLSA_TTL}\n")
        )
        return _SERVICE.format(
            name=self.service.title(),
            group=self.group,
            service=self.service,
            signing_ca=self.signing_ca,
            dane=dane,
            ca=ca,
            cn=self.cn,
            o=self.o,
            email=EMAIL,
            sans=list(self.sans),
        )


ROOT = Spec("ca", "my-root", "self", "my-root", "Example Certs", sign_end_days=3650)
INTERMEDIATE = Spec("ca", "my-int", "my-root", "my-int", "Example Certs", sign_end_days=1825)
MAIL = Spec(GROUP, INCOMPLETE, "my-int", f"mail.{GROUP}", "Example", (f"mail.{GROUP}",))
WEB = Spec(
    GROUP,
    DANE,
    "my-int",
    GROUP,
    "Example",
    (GROUP, f"www.{GROUP}"),
    dane_tls="[[443, 'tcp', 3, 1, 1]]",
)


@dataclass(frozen=True)
class Version:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    fullchain: bytes


def upstream_subject(spec: Spec) -> x509.Name:
    """ssl-mgr's seven attributes, in its order, the empty ones included (§4.b.4)."""
    values = [
        (NameOID.COMMON_NAME, spec.cn),
        (NameOID.COUNTRY_NAME, "US"),
        (NameOID.STATE_OR_PROVINCE_NAME, ""),
        (NameOID.LOCALITY_NAME, ""),
        (NameOID.ORGANIZATION_NAME, spec.o),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, ""),
        (NameOID.EMAIL_ADDRESS, EMAIL),
    ]
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in values])


def _sans(spec: Spec) -> x509.SubjectAlternativeName:
    names = list(spec.sans) or [spec.cn]  # a CA without sans gets DNS:<CN>
    if spec.cn not in names:
        names.insert(0, spec.cn)
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _csr_extensions(
    spec: Spec, key: ec.EllipticCurvePrivateKey
) -> list[tuple[x509.ExtensionType, bool]]:
    """What ssl-mgr puts into every CSR and then copies into the certificate."""
    public = key.public_key()
    usages = [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.EMAIL_PROTECTION,
        ExtendedKeyUsageOID.CODE_SIGNING,
        ExtendedKeyUsageOID.TIME_STAMPING,
    ]
    return [
        (x509.BasicConstraints(ca=spec.is_ca, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=spec.is_ca,
                crl_sign=spec.is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            False,
        ),
        (x509.ExtendedKeyUsage(usages), False),
        (x509.SubjectKeyIdentifier.from_public_key(public), False),
        # ssl-mgr's bug: the authority key id is the certificate's own key id.
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(public), False),
        (_sans(spec), False),
    ]


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)


class UpstreamTree:
    """Builds the tree under ``top``; each step as ssl-mgr's run would leave it."""

    def __init__(self, top: Path, *, now: datetime) -> None:
        self.top = top
        self.now = now
        self.versions: dict[str, Version] = {}

    @property
    def certs(self) -> Path:
        return self.top / "certs"

    @property
    def prod(self) -> Path:
        return self.top / "prod-certs"

    def stamp(self, offset_s: int) -> str:
        return (self.now + timedelta(seconds=offset_s)).astimezone().strftime(LOCAL_STAMP)

    def write_config(self, *, primary: str, port: int, refresh: Path, tlsa_dir: Path) -> None:
        conf = self.top / "conf.d"
        (conf / "ca").mkdir(parents=True)
        (conf / GROUP).mkdir()
        (conf / "ssl-mgr.conf").write_text(
            _MAIN.format(
                top=self.top,
                group=GROUP,
                primary=primary,
                port=port,
                refresh=refresh,
                tlsa_dir=tlsa_dir,
            )
        )
        (conf / "ca-info.conf").write_text(_CA_INFO)
        for spec in (ROOT, INTERMEDIATE, MAIL, WEB):
            (conf / spec.group / spec.service).write_text(spec.text())

    def issue(self, spec: Spec, *, offset_s: int, link: str = "curr", bundle: bool = True) -> str:
        """Key, CSR and certificate of ``spec`` into ``db/<local stamp>`` and ``link`` to it;
        the certificate signed as ssl-mgr signs (its signer's ``curr``, its policy)."""
        key = ec.generate_private_key(ec.SECP384R1())
        subject = upstream_subject(spec)
        extensions = _csr_extensions(spec, key)
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject)
        for extension, critical in extensions:
            csr = csr.add_extension(extension, critical)
        signed_csr = csr.sign(key, hashes.SHA384())
        if spec.signing_ca == "self":
            issuer_key, issuer_name, days, chain = key, subject, spec.sign_end_days, b""
        else:
            signer = self.versions[spec.signing_ca]
            signer_spec = {s.service: s for s in (ROOT, INTERMEDIATE)}[spec.signing_ca]
            issuer_key, issuer_name = signer.key, signer.cert.subject
            days, chain = signer_spec.sign_end_days, signer.fullchain
        start = self.now + timedelta(seconds=offset_s)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days or 1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        cert = builder.sign(issuer_key, hashes.SHA384())
        fullchain = _pem(cert) + chain
        stamp = self.stamp(offset_s)
        service_dir = self.certs / spec.group / spec.service
        version = service_dir / "db" / stamp
        for directory, mode in (
            (self.certs / spec.group, 0o750),
            (service_dir, 0o755),
            (service_dir / "db", 0o750),
            (version, 0o750),
        ):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(mode)
        _write(version / "privkey.pem", _pem_key(key), 0o600)
        _write(version / "csr.pem", signed_csr.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(version / "cert.pem", _pem(cert), 0o644)
        _write(version / "chain.pem", chain or _pem(cert), 0o644)
        _write(version / "fullchain.pem", fullchain, 0o644)
        if bundle:
            _write(version / "bundle.pem", _pem_key(key) + fullchain, 0o600)
        if link == "curr":
            info = f"# {spec.service} rolled to curr : {stamp}\n"
            _write(version / "info", info.encode(), 0o644)
            self.versions[spec.service] = Version(key, cert, fullchain)
        if spec.dane_tls:
            _write(version / "tlsa.rr", self.tlsa_rr(spec, cert, stamp).encode(), 0o644)
        os.symlink(f"db/{stamp}", service_dir / link)
        return stamp

    def tlsa_lines(self, spec: Spec, cert: x509.Certificate) -> list[str]:
        """ssl-mgr's records of a ``[443, 'tcp', 3, 1, 1]`` entry: the apex, then each SAN
        with a dot added (the apex again: its bug), two spaces before ``IN``."""
        data = tlsa_data(cert, 1, 1)
        owners = [f"_443._tcp.{spec.group}.", *(f"_443._tcp.{san}." for san in spec.sans)]
        return [f"{owner} {TLSA_TTL}  IN TLSA 3 1 1 {data}" for owner in owners]

    def tlsa_rr(self, spec: Spec, cert: x509.Certificate, stamp: str) -> str:
        head = [";;", f";; tlsa {spec.group} {spec.service} {stamp}", ";;"]
        return "\n".join([*head, *self.tlsa_lines(spec, cert)]) + "\n"

    def group_tlsa(self) -> str:
        """``tlsa.<group>``: ``curr`` of each DANE service; a line seen before is commented."""
        lines = [";;", f";; TLSA {GROUP} : phase = normal", ";;"]
        seen: set[str] = set()
        for spec in (WEB,):
            lines += [";;", f";; {spec.service} curr", ";;"]
            for line in self.tlsa_lines(spec, self.versions[spec.service].cert):
                lines.append(f";; {line}" if line in seen else line)
                seen.add(line)
        return "\n".join(lines) + "\n"

    def copy_to_production(self, tlsa_text: str) -> None:
        """rsync -a of ``curr`` and ``next`` of every service (the CA keys too), the group's
        TLSA file, and the ``dh/`` of ``sslm-dhparm -s``."""
        for spec in (ROOT, INTERMEDIATE, MAIL, WEB):
            for link in ("curr", "next"):
                source = self.certs / spec.group / spec.service / link
                if not source.exists():
                    continue
                target = self.prod / spec.group / spec.service / link
                target.mkdir(parents=True)
                target.chmod(0o750)
                for item in source.resolve().iterdir():
                    _write(target / item.name, item.read_bytes(), item.stat().st_mode & 0o777)
        _write(self.prod / GROUP / f"tlsa.{GROUP}", tlsa_text.encode(), 0o644)
        dh = self.prod / GROUP / "dh"
        dh.mkdir(mode=0o750)
        _write(dh / "dh-ffdhe2048.pem", b"-----BEGIN DH PARAMETERS-----\n(ffdhe2048)\n", 0o644)
        os.symlink("dh-ffdhe2048.pem", dh / "dhparam.pem")


def make_upstream_tree(
    top: Path, *, primary: str, port: int, refresh: Path, tlsa_dir: Path
) -> UpstreamTree:
    """ssl-mgr's tree under ``top``: its config; the root, the intermediate and two services
    issued and rolled a few seconds apart; ``mail``'s incomplete ``next``; the production
    tree; ``web``'s TLSA file in the store, in production and in ``tlsa_dir`` (the zone's
    include: the caller refreshes the zone)."""
    tree = UpstreamTree(top, now=datetime.now(UTC).replace(microsecond=0) - timedelta(days=30))
    tree.write_config(primary=primary, port=port, refresh=refresh, tlsa_dir=tlsa_dir)
    for offset, spec in enumerate((ROOT, INTERMEDIATE, MAIL, WEB)):
        tree.issue(spec, offset_s=offset)
    text = tree.group_tlsa()
    _write(tree.certs / GROUP / f"tlsa.{GROUP}", text.encode(), 0o644)
    _write(tlsa_dir / f"tlsa.{GROUP}", text.encode(), 0o644)
    tree.copy_to_production(text)
    # then sslm-mgr -d -renew mail, as ssl-mgr 7.8 ran it: a real key, CSR and certificate,
    # no bundle, and no copy to production
    tree.issue(MAIL, offset_s=3600, link="next", bundle=False)
    flags = top / ".flags"
    flags.mkdir()
    stamp = tree.now.astimezone().strftime(LOCAL_STAMP)
    (flags / "6_1_updated").write_text(f"6.1 Update: production dir sync done: {stamp}\n")
    return tree
