"""The DANE lab's topdir: the example CAs signing ``example.test:mail``, whose TLSA records go
through the lab's BIND (``dane_tls_ttl`` 1 s, ``min_roll_mins`` 0): what the DANE tests share."""

from __future__ import annotations

import shutil
from pathlib import Path

from lab_dns import DnsLab
from support import REPO

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
