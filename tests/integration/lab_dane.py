"""The DANE lab's topdir: the example CAs signing ``example.test:mail``, whose TLSA records go
through the lab's BIND (``dane_tls_ttl`` 1 s, ``min_roll_mins`` 0), and a mail server on this
host that serves its production certificate: what the DANE tests share."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab_dns import DnsLab
from support import REPO, edit, free_port

SERVICE = """name = 'Mail'
group = 'example.test'
service = 'mail'
signing_ca = 'my-int'
dane_tls = [[25, 'tcp', 3, 1, 1]]
dane_tls_ttl = 1

[KeyOpts]
    ktype = 'ec'
    ec_algo = 'secp256r1'

[X509]
    CN = 'example.test'
    O = 'Example'
    C = 'US'
    sans = ['example.test', 'mx1.example.test', 'mx2.example.test']
"""


def write_topdir(top: Path, dns_lab: DnsLab) -> Path:
    """The example conf.d plus ``example.test:mail`` with DANE through ``dns_lab``."""
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    (top / "conf.d/example.test").mkdir()
    (top / "conf.d/example.test/mail").write_text(SERVICE)
    main = top / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text().replace("min_roll_mins = 90", "min_roll_mins = 0")
        + f"""
[[groups]]
    active = true
    domain = 'example.test'
    services = ['mail']

[[dns_primary]]
    domain = 'default'
    server = '{dns_lab.primary}'
    port = {dns_lab.port}

[dns]
    restart_cmd = '{dns_lab.refresh_script}'
    tlsa_dirs = ['{dns_lab.tlsa_dir}']
    depends = ['tlsa']
"""
    )
    return top


RESTART = """#!/bin/sh
# Restart the test's TLS server with the production certificate (or, when {wrong} exists,
# with a certificate of another key), leaving the pid for the test to stop it.
[ -f {pid} ] && kill "$(cat {pid})" 2>/dev/null
cert={prod}/curr/cert.pem
key={prod}/curr/privkey.pem
if [ -f {wrong} ]; then cert={wrong}; key={wrong_key}; fi
setsid openssl s_server -quiet -www -accept 127.0.0.1:{port} -cert "$cert" -key "$key" \\
    </dev/null >/dev/null 2>&1 &
echo $! > {pid}
sleep 0.5
echo "restarted $cert" >> {log}
"""


@dataclass(frozen=True)
class MailServer:
    """A TLS listener (``openssl s_server``) on 127.0.0.1:``port`` that the ``[smtp]`` server
    ``localhost`` restarts with ``example.test:mail``'s production ``curr`` (or with ``wrong``
    and ``wrong_key`` while ``wrong`` exists)."""

    port: int
    pid: Path
    log: Path
    wrong: Path
    wrong_key: Path

    def stop(self) -> None:
        if self.pid.exists():
            subprocess.run(["kill", self.pid.read_text().strip()], capture_output=True, check=False)


def serve_mail(topdir: Path, workdir: Path, *, verify: bool) -> MailServer:
    """Make ``example.test:mail`` publish DANE records for a port of this host under its MX
    names, served by a :class:`MailServer` that its deploys restart (and, with ``verify``,
    probe). The caller stops it."""
    server = MailServer(
        port=free_port(),
        pid=workdir / "s_server.pid",
        log=workdir / "restarts.log",
        wrong=workdir / "wrong.pem",
        wrong_key=workdir / "wrong.key",
    )
    script = workdir / "restart.sh"
    script.write_text(
        RESTART.format(
            prod=topdir / "prod-certs/example.test/mail",
            pid=server.pid,
            log=server.log,
            port=server.port,
            wrong=server.wrong,
            wrong_key=server.wrong_key,
        )
    )
    script.chmod(0o755)
    edit(
        topdir / "conf.d/example.test/mail",
        "[[25, 'tcp', 3, 1, 1]]",
        f"[[{server.port}, 'tcp', 3, 1, 1, 'MX']]",
    )
    probe = f"verify = ['tls://mx1.example.test:{server.port}?connect=127.0.0.1']" if verify else ""
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text()
        + f"""
[smtp]
    servers = ['localhost']
    restart_cmd = '{script}'
    svc_depends = [['example.test', ['mail']]]
    {probe}
"""
    )
    return server


def served(lab: DnsLab, server: str, owner: str) -> set[str]:
    return {rdata.to_text().lower() for rdata in lab.query(owner, "TLSA", server)}


def wait_served(lab: DnsLab, owner: str, records: set[str], *, present: bool = True) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = [served(lab, server, owner) for server in lab.servers]
        if all((records <= s) if present else not (records & s) for s in got):
            return
        time.sleep(0.2)
    raise AssertionError(f"{owner}: wanted {records} present={present}, served {got}")


#: A TLSA record in delv's answer (not its RRSIG): the hex may be split by spaces.
TLSA_LINE = re.compile(r"\sIN\s+TLSA\s+(\d+)\s+(\d+)\s+(\d+)\s+([0-9A-Fa-f ]+)$", re.M)


def spki_hash(pem_path: Path, *, private: bool = False) -> str:
    """SHA-256 of the SubjectPublicKeyInfo of a certificate (or a private key), by openssl."""
    if private:
        pubkey = ["openssl", "pkey", "-in", str(pem_path), "-pubout"]
    else:
        pubkey = ["openssl", "x509", "-in", str(pem_path), "-noout", "-pubkey"]
    pem = subprocess.run(pubkey, capture_output=True, check=True).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pem, capture_output=True, check=True
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-r"], input=der, capture_output=True, check=True
    )
    return digest.stdout.split()[0].decode()


def validated_tlsa(lab: DnsLab, owner: str) -> dict[str, set[str]]:
    """The TLSA rdata each name server serves at ``owner``, DNSSEC-validated by ``delv``."""
    found = {}
    for server in lab.servers:
        anchor = str(lab.trust_anchor_file())
        delv = subprocess.run(
            [
                "delv",
                f"@{server}",
                "-a",
                anchor,
                "+root=example.test",
                "+nomultiline",
                owner,
                "TLSA",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert "; fully validated" in delv.stdout, delv.stdout + delv.stderr
        found[server] = {
            f"{usage} {selector} {matching} {''.join(data.split())}".lower()
            for usage, selector, matching, data in TLSA_LINE.findall(delv.stdout)
        }
    return found
