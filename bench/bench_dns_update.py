"""Issue N dns-01 certificates from Pebble through Redis and 2 worker processes twice in one
run: once with the challenge records in the zones' include files (a refresh command re-signs
and reloads), once by RFC 2136 updates signed with TSIG (the server re-signs by itself); print
both wall times and their ratio.

The set-up is bench_acme's (imported, not copied): the integration tests' BIND lab on
127.0.0.53 (primary, inline signing) and 127.0.0.54 (secondary), Pebble validating through the
primary, one redis-server and one ``celery worker --pool prefork --concurrency 2`` per method.
The lab serves four zones: ``example.test`` and ``other.test`` with includes, ``update.test``
and ``update-other.test`` taking updates under an ``update-policy`` that grants the key the
challenge names of the N services only. The include zones are warmed up first, as bench_acme
does (BIND was seen to drop the first change of a zone it is still signing for the first
time). Certificate ``i`` names ``svcI.<first>``,
``*.svcI.<first>`` and ``svcI.<second>`` of its method's two zones: three challenges in two
zones. Every chain is checked, and every challenge record must be gone again afterwards
(from the include files; from both servers for the updated zones).

Run in a network namespace of its own (other lab runs use the same loopback addresses):
``unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/bench_dns_update.py'``.
Needs root (loopback aliases), named, tsig-keygen, pebble and redis-server.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
from bench_acme import (
    APEXES,
    DNS_POLL_S,
    DNS_WAIT_S,
    DirectClient,
    issue_with_sslm,
    names_of,
    stop_on_sigterm,
    waits_in,
)
from cryptography import x509

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO / "tests")]

from lab_dns import DnsLab, start_dns_lab  # noqa: E402
from lab_pebble import start_pebble  # noqa: E402
from lab_update import dns_update_tables  # noqa: E402
from services import services_in  # noqa: E402

#: The zones of the method by update (the include method has bench_acme's ``APEXES``).
UPDATED = ("update.test", "update-other.test")


def check_deleted(lab: DnsLab, count: int) -> None:
    """Every challenge owner of the updated zones is empty again on both servers."""
    owners = {
        f"_acme-challenge.{name.removeprefix('*.')}"
        for i in range(1, count + 1)
        for name in names_of(i, UPDATED)
    }
    deadline = time.monotonic() + DNS_WAIT_S
    for owner in sorted(owners):
        for server in lab.servers:
            while lab.txt(owner, server):
                if time.monotonic() > deadline:
                    raise SystemExit(f"update: {server} still serves TXT at {owner}")
                time.sleep(DNS_POLL_S)


def row(label: str, text: str) -> None:
    print(f"{label:<36}: {text}")


def report(label: str, seconds: float, refreshes: int, worker_log: Path) -> None:
    row(label, f"{seconds:6.2f} s  ({refreshes} DNS refreshes)")
    for step, countdowns in sorted(waits_in(worker_log).items()):
        row(f"  {step}", f"{len(countdowns)} retries, {sum(countdowns):g} s of countdowns")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20, help="certificates per method")
    count = parser.parse_args().count
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    for name in [name for name in os.environ if name.startswith(("SSLM_", "SSL_MGR_"))]:
        del os.environ[name]

    with (
        tempfile.TemporaryDirectory(prefix="sslm-bench-update-") as tmp,
        services_in(Path(tmp)) as services,
    ):
        work = Path(tmp)
        lab = start_dns_lab(
            services,
            work / "dns",
            apex=APEXES[0],
            other_apexes=(*APEXES[1:], *UPDATED),
            updatable=UPDATED,
            update_hosts=[f"svc{i:02d}" for i in range(1, count + 1)],
        )
        try:
            pebble = start_pebble(services, work / "pebble", dns_server=f"{lab.primary}:53")
            issuer = x509.load_pem_x509_certificate(pebble.intermediates_pem()).subject
            # BIND drops the first change of a zone it is still signing for the first time
            # (bench_acme's warm-up): one record through the include zones before the clock.
            DirectClient(lab, pebble).warm_up()
            include_s, _, include_refreshes, include_log = issue_with_sslm(
                services, lab, pebble, work / "include", count, issuer
            )
            update_s, _, update_refreshes, update_log = issue_with_sslm(
                services,
                lab,
                pebble,
                work / "update",
                count,
                issuer,
                UPDATED,
                dns_update_tables(lab, UPDATED),
            )
            check_deleted(lab, count)
            row("certificates (3 names, 2 zones)", f"{count} per method, each checked")
            report("include files + refresh command", include_s, include_refreshes, include_log)
            report("RFC 2136 updates (TSIG)", update_s, update_refreshes, update_log)
            row("ratio update / include", f"{update_s / include_s:.2f}")
        finally:
            lab.close()


if __name__ == "__main__":
    try:
        main()
    except (pytest.skip.Exception, pytest.fail.Exception) as missing:
        raise SystemExit(f"bench_dns_update: {missing}") from missing
    except KeyboardInterrupt:
        raise SystemExit(
            "bench_dns_update: interrupted; everything it started is stopped"
        ) from None
