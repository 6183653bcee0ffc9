"""A topdir whose one service is signed over ACME by the lab's Pebble, its dns-01 records
published through the lab's BIND: what the ACME tests share (the ``acme_topdir`` fixture).

``example.test:web`` has three names in two apexes (a wildcard among them), so one order has
three authorizations and two zones to publish in; ``dns_xtra_ns = []`` and explicit
``[[dns_primary]]`` entries keep every query on loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lab_dns import DnsLab
from lab_pebble import Pebble
from services import RedisServer
from support import REPO, run_tool

from sslm_tasks.config.load import load_config
from sslm_tasks.dns.challenges import parse_include_text
from sslm_tasks.lifecycle import acme_sign, build
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import ServiceRef


def service_text(sans: Sequence[str]) -> str:
    """``conf.d/example.test/web``, signed by the lab's Pebble, for ``sans``."""
    return f"""name = 'Web'
group = 'example.test'
service = 'web'
signing_ca = 'pebble'

[KeyOpts]
    ktype = 'ec'
    ec_algo = 'secp256r1'

[X509]
    CN = 'example.test'
    O = 'Example'
    C = 'US'
    email = 'hostmaster@example.test'
    sans = {list(sans)!r}
"""


SERVICE = service_text(["example.test", "*.example.test", "www.other.test"])
SVC = "example.test/web"
APEXES = ("example.test", "other.test")


def write_topdir(top: Path, dns_lab: DnsLab, pebble: Pebble) -> Path:
    """The example conf.d plus ``example.test:web`` signed by ``pebble``; returns ``top``."""
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    (top / "conf.d/example.test").mkdir()
    (top / "conf.d/example.test/web").write_text(SERVICE)
    use_pebble(top, pebble)
    main = top / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text()
        + f"""
[[groups]]
    active = true
    domain = 'example.test'
    services = ['web']

[[dns_primary]]
    domain = 'default'
    server = '{dns_lab.primary}'
    port = {dns_lab.port}

[[dns_primary]]
    domain = 'other.test'
    server = '{dns_lab.primary}'
    port = {dns_lab.port}

[dns]
    acme_dir = ['{dns_lab.acme_dir}']
    restart_cmd = '{dns_lab.refresh_script}'
"""
    )
    return top


def set_dns_check_delay(top: Path, seconds: float) -> None:
    """``dns_check_delay``: the workers' first countdown before the propagation check (the
    example's 240 s would be 60 s, the countdowns' cap)."""
    main = top / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text().replace(
            "dns_xtra_ns = []", f"dns_xtra_ns = []\n    dns_check_delay = {seconds:g}"
        )
    )


def use_pebble(top: Path, pebble: Pebble, *, validation: str = "dns-01") -> None:
    """Make ``pebble`` the service's CA (another Pebble is another CA, with no account yet)."""
    (top / "conf.d/ca-info.conf").write_text(
        (REPO / "conf.d/ca-info.conf").read_text()
        + f"""
[pebble]
    ca_desc = 'The lab Pebble'
    ca_type = 'acme'
    ca_validation = '{validation}'
    ca_acme_directory = '{pebble.directory_url}'
    ca_acme_ca_bundle = '{pebble.ca_bundle}'
"""
    )


def mgr(
    topdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_tool("sslm-mgr", *args, cwd=topdir, env=env, timeout=300)


def enqueue(
    topdir: Path, redis_server: RedisServer, *args: str
) -> subprocess.CompletedProcess[str]:
    """``sslm-mgr *args`` through the broker of ``redis_server``, to the workers."""
    return mgr(topdir, *args, env={"SSLM_BROKER_URL": redis_server.url()})


def service_dir(topdir: Path) -> Path:
    return topdir / "certs" / SVC


def recorded_order(topdir: Path) -> str | None:
    """The URL of the order the service state records (``None``: no order in progress)."""
    state = json.loads((service_dir(topdir) / "state.json").read_text())
    order = state["order"]
    return None if order is None else str(order["order"]["url"])


def last_error(topdir: Path) -> str:
    state = json.loads((service_dir(topdir) / "state.json").read_text())
    return str(state["last_error"])


def records_left(lab: DnsLab) -> dict[str, list[str]]:
    """The challenge records still in each apex's include (which must stay loadable)."""
    left = {}
    for apex in APEXES:
        path = lab.acme_file(apex)
        left[apex] = [r.value for r in parse_include_text(path.read_text(), source=path)]
    return left


def zones_awaiting_refresh(topdir: Path) -> list[str]:
    """The zones with a change (challenge records, TLSA) no DNS refresh has covered yet."""
    config, _ = load_config([], conf_dir=topdir / "conf.d")
    return Workspace(config=config).zone_refresher().pending()


def ordered_build(ws: Workspace, ref: ServiceRef) -> ServiceContext:
    """Start a build of ``ref`` and take it through key, CSR and the ACME order: where a test
    drives the remaining ACME steps one by one (each with a fresh context, as a step has)."""
    build.start_build(ServiceContext(ws, ref))
    build.make_key(ServiceContext(ws, ref))
    build.make_csr(ServiceContext(ws, ref))
    acme_sign.order(ServiceContext(ws, ref))
    return ServiceContext(ws, ref)
