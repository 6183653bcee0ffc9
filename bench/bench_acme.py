"""Issue N dns-01 certificates from Pebble through Redis and 2 worker processes (``--workers``
says otherwise), against the same N certificates issued (a) by a minimal client on the ``acme``
library alone, on N threads, and (b) by N sequential ``certbot certonly --manual`` runs with
hook scripts (upstream's approach), and print the wall-time ratios. Targets (issue 15, P1):
sslm at most 1.0x (a) in at least 4 of 5 runs (issue 4 asked 1.5x), and at least 10x faster
than (b).

The lab is the integration tests' own (``tests/integration``): BIND primary 127.0.0.53 and
secondary 127.0.0.54 serving ``example.test`` and ``other.test`` (signed, the zones
``$INCLUDE`` the challenge files), Pebble validating through the primary, redis-server, and one
``celery -A sslm_tasks worker --pool prefork --concurrency 2`` on every queue. Everything is
started here and stopped at the end, also on failure or Ctrl-C.

Certificate ``i`` names ``svcI.example.test``, ``*.svcI.example.test`` and ``svcI.other.test``:
three dns-01 challenges in two zones, two of them side by side at one owner name. Each method
makes one account per certificate (sslm keeps one per service, upstream one certbot
config per service), a fresh EC key and CSR, publishes the TXT records in the lab's include
files, runs the lab's refresh script (``[dns] restart_cmd``), waits until the primary and the
secondary serve them, answers, waits for validation, finalizes, and withdraws its records with
one more refresh. Every issued chain is checked (the names, Pebble's issuer) and every include
must be empty of records again after each method. Each method starts from a quiet lab: the
secondary serves what the primary serves and a second has passed (:func:`settle`), so no
method pays for the refreshes of the one before it.

(sslm)    ``sslm-mgr -renew example.test:ALL`` with ``SSLM_BROKER_URL``: the CLI enqueues one
          workflow per service and follows them to the end. ``dns_check_delay = 0``: the first
          propagation check runs at once (upstream's default is a blind 240 s).
(a)       N threads in this process; each: account, order, TXT records + one refresh, DNS poll
          every 0.1 s, answer, the library's ``poll_and_finalize`` (it sleeps 1 s per poll),
          records removed + one refresh.
(b)       ``certbot certonly --manual --csr ...`` one after the other, one config dir each.
          The auth hook appends the record; at the last challenge of the certificate
          (``CERTBOT_REMAINING_CHALLENGES=0``, as upstream's hook does) it refreshes the
          zones once and waits until both servers serve every record (``dig``).

Run under the lab lock (other engineers' lab tests use the same loopback addresses):
``flock /tmp/sslm-lab.lock .venv/bin/python bench/bench_acme.py [--count 20]``.
Needs root (loopback aliases), named, pebble, redis-server, dig and certbot (in the venv).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import acme.challenges
import acme.client
import acme.crypto_util
import acme.messages
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

REPO = Path(__file__).resolve().parent.parent
# The lab (BIND, Pebble, redis, workers) is the integration tests' code, imported rather than
# copied, so the bench runs exactly what the tests prove. They import each other and
# ``tests/support.py`` by bare name, as pytest's ``pythonpath = ["tests"]`` and rootdir
# conftest insertion allow; hence both directories on sys.path.
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO / "tests")]

from lab_dns import DnsLab, start_dns_lab  # noqa: E402
from lab_pebble import Pebble, start_pebble  # noqa: E402
from services import (  # noqa: E402
    VENV_BIN,
    Services,
    WorkerStarter,
    celery_env,
    require_binary,
    services_in,
    start_redis,
)

from sslm_tasks.config.load import load_config  # noqa: E402
from sslm_tasks.dns.challenges import parse_include_text  # noqa: E402
from sslm_tasks.lifecycle.challenges.dns_include import REPUSH_AFTER_S  # noqa: E402
from sslm_tasks.lifecycle.workspace import Workspace  # noqa: E402

APEX, OTHER = "example.test", "other.test"
APEXES = (APEX, OTHER)
#: Issue 15's targets (P1): sslm / (a) at most this (in 4 runs of 5), (b) / sslm at least this.
TARGET_VS_LIBRARY = 1.0
TARGET_VS_CERTBOT = 10.0
#: Bounds of one issuance (any method) and of one DNS wait: a stuck run fails, it never hangs.
ISSUE_TIMEOUT_S = 120.0
DNS_WAIT_S = 30.0
DNS_POLL_S = 0.1

SERVICE = """name = 'bench {i}'
group = '{apex}'
service = 'svc{i:02d}'
signing_ca = 'pebble'

[KeyOpts]
    ktype = 'ec'
    ec_algo = 'secp256r1'

[X509]
    CN = 'svc{i:02d}.{apex}'
    O = 'Bench'
    C = 'US'
    sans = [{sans}]
"""

#: certbot's --manual-auth-hook ("<hook> auth") and --manual-cleanup-hook ("<hook> cleanup").
CERTBOT_HOOK = """\
#!/bin/sh
# Bench hook for certbot --manual (dns-01) against the sslm test lab: $1 is auth or cleanup.
# Each call edits the include file of the challenge's zone; the last challenge of the
# certificate (CERTBOT_REMAINING_CHALLENGES=0) refreshes the zones once and, for auth, waits
# until the primary and the secondary serve every record.
set -eu
apex=
for zone in {apexes}; do
    case "$CERTBOT_DOMAIN" in "$zone"|*."$zone") apex=$zone ;; esac
done
[ -n "$apex" ] || {{ echo "no lab zone for $CERTBOT_DOMAIN" >&2; exit 1; }}
name="_acme-challenge.${{CERTBOT_DOMAIN#\\*.}}."
file={acme_dir}/acme-challenge.$apex
pending={state_dir}/pending-$1
if [ "$1" = auth ]; then
    printf '%s 60 IN TXT "%s" ; order certbot\\n' "$name" "$CERTBOT_VALIDATION" >> "$file"
else
    sed -i "/\\"$CERTBOT_VALIDATION\\"/d" "$file"
fi
echo "$apex $name $CERTBOT_VALIDATION" >> "$pending"
[ "$CERTBOT_REMAINING_CHALLENGES" = 0 ] || exit 0
{refresh} --serial_bump $(cut -d' ' -f1 "$pending" | sort -u) >/dev/null
if [ "$1" = auth ]; then
    deadline=$(( $(date +%s) + {wait_s} ))
    while read -r zone owner value; do
        for server in {servers}; do
            until dig +short +norecurse +time=1 +tries=1 @"$server" TXT "$owner" \\
                    | grep -qF "\\"$value\\""; do
                [ "$(date +%s)" -lt "$deadline" ] || {{ echo "$server lacks $owner" >&2; exit 1; }}
                sleep {poll_s}
            done
        done
    done < "$pending"
fi
rm -f "$pending"
"""


def names_of(i: int, zones: Sequence[str] = APEXES) -> list[str]:
    """Certificate ``i``'s names: two in the first of ``zones`` (one a wildcard), one in the
    second."""
    first, second = zones
    return [f"svc{i:02d}.{first}", f"*.svc{i:02d}.{first}", f"svc{i:02d}.{second}"]


def apex_of(name: str) -> str:
    host = name.removeprefix("*.")
    return next(apex for apex in APEXES if host == apex or host.endswith(f".{apex}"))


def new_csr(names: Sequence[str]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return acme.crypto_util.make_csr(key_pem, list(names))


def check_issued(
    method: str, i: int, fullchain: bytes, pebble_issuer: x509.Name, zones: Sequence[str] = APEXES
) -> None:
    """The leaf names exactly certificate ``i``'s names and Pebble's intermediate issued it."""
    leaf = x509.load_pem_x509_certificates(fullchain)[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if sorted(sans.get_values_for_type(x509.DNSName)) != sorted(names_of(i, zones)):
        raise SystemExit(f"{method}: certificate {i} names {sans}, expected {names_of(i, zones)}")
    if leaf.issuer != pebble_issuer:
        raise SystemExit(f"{method}: certificate {i} was issued by {leaf.issuer.rfc4514_string()}")


#: A BIND secondary notified again within half a second of a transfer waits out that half
#: second (measured in the lab), and a burst of refreshes leaves a queue of such waits behind.
#: Each method starts once the secondary serves what the primary serves and this long passed.
QUIET_S = 1.0


def settle(lab: DnsLab, zones: Sequence[str] = APEXES) -> None:
    """Wait until the previous method's refreshes have reached the secondary, then a moment,
    so no method pays for the one before it."""
    for apex in zones:
        lab.wait_until_secondary_has(lab.serial(lab.primary, apex), apex)
    time.sleep(QUIET_S)


def check_withdrawn(method: str, lab: DnsLab) -> None:
    for apex in APEXES:
        path = lab.acme_file(apex)
        left = parse_include_text(path.read_text(), source=path)
        if left:
            raise SystemExit(f"{method}: {len(left)} challenge records left in {path}")


# --------------------------------------------------------------------------- (a) acme library


class DirectClient:
    """A minimal dns-01 client on the ``acme`` library, one order per call, thread-safe."""

    def __init__(self, lab: DnsLab, pebble: Pebble) -> None:
        self.lab = lab
        self.pebble = pebble
        self._includes = threading.Lock()  # read-modify-write of the shared include files

    def _edit(self, apex: str, *, add: Sequence[str] = (), drop: str | None = None) -> None:
        """Append ``add`` to the include of ``apex``; remove the lines that end in ``drop``."""
        path = self.lab.acme_file(apex)
        with self._includes:
            old = path.read_text().splitlines()
            lines = [line for line in old if drop is None or not line.endswith(drop)]
            scratch = path.with_name(f".{path.name}.{threading.get_ident()}")
            scratch.write_text("".join(f"{line}\n" for line in [*lines, *add]))
            scratch.replace(path)  # the refresh of another thread never reads half a file

    def _refresh(self, apexes: Sequence[str]) -> None:
        done = self.lab.refresh(*apexes)
        if done.returncode != 0:
            raise RuntimeError(f"refresh {apexes}: {done.stderr.strip()}")

    def _wait_served(self, apexes: Sequence[str], records: Sequence[tuple[str, str]]) -> None:
        """Wait until both servers serve ``records``; refresh again when the primary still
        lacks them after a while, as sslm does (BIND may drop a reload under a burst)."""
        start = time.monotonic()
        repush_at = start + REPUSH_AFTER_S
        for name, value in records:
            for server in self.lab.servers:
                while value not in self.lab.txt(name, server):
                    now = time.monotonic()
                    if now > start + DNS_WAIT_S:
                        raise RuntimeError(f"{server} does not serve {name} TXT {value}")
                    if server == self.lab.primary and now > repush_at:
                        self._refresh(apexes)
                        repush_at = now + REPUSH_AFTER_S
                    time.sleep(DNS_POLL_S)

    def warm_up(self) -> None:
        """One record published, served and withdrawn before the clock starts: a lab that has
        just started was seen to ignore a burst of refreshes while it signed its zones for the
        first time (this phase runs first)."""
        apexes = [APEX, OTHER]
        records = [(apex, f"_acme-challenge.warm-up.{apex}", "warm-up") for apex in apexes]
        for apex, name, value in records:
            self._edit(apex, add=[f'{name}. 60 IN TXT "{value}" ; order warm-up'])
        self._refresh(apexes)
        self._wait_served(apexes, [(name, value) for _, name, value in records])
        for apex in apexes:
            self._edit(apex, drop="; order warm-up")
        self._refresh(apexes)

    def issue(self, i: int) -> bytes:
        csr_pem = new_csr(names_of(i))
        # the account
        account_key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        # requests takes a CA bundle path for verify=, and ClientNetwork passes it on as is.
        bundle: Any = str(self.pebble.ca_bundle)
        net = acme.client.ClientNetwork(account_key, alg=ES256, verify_ssl=bundle)
        directory = acme.client.ClientV2.get_directory(self.pebble.directory_url, net)
        client = acme.client.ClientV2(directory, net)
        client.new_account(acme.messages.NewRegistration.from_data(terms_of_service_agreed=True))
        # the order, and the TXT record of each authorization
        order = client.new_order(csr_pem)
        challenges, records = [], []
        for authz in order.authorizations:
            domain = authz.body.identifier.value
            chall = next(
                c for c in authz.body.challenges if isinstance(c.chall, acme.challenges.DNS01)
            )
            challenges.append(chall)
            name = chall.chall.validation_domain_name(domain)
            records.append((apex_of(domain), name, chall.chall.validation(account_key)))
        tag = f"; order direct-{i}"
        apexes = sorted({apex for apex, _, _ in records})
        for apex in apexes:
            lines = [f'{n}. 60 IN TXT "{v}" {tag}' for a, n, v in records if a == apex]
            self._edit(apex, add=lines)
        self._refresh(apexes)
        self._wait_served(apexes, [(name, value) for _, name, value in records])
        # answer, then the library's own polling of the authorizations and the finalization
        for chall in challenges:
            client.answer_challenge(chall, chall.response(account_key))
        deadline = datetime.now() + timedelta(seconds=ISSUE_TIMEOUT_S)
        order = client.poll_and_finalize(order, deadline)
        # withdraw this order's records
        for apex in apexes:
            self._edit(apex, drop=tag)
        self._refresh(apexes)
        return order.fullchain_pem.encode()


def issue_with_library(
    lab: DnsLab, pebble: Pebble, count: int, issuer: x509.Name
) -> tuple[float, int]:
    client = DirectClient(lab, pebble)
    client.warm_up()
    settle(lab)
    calls = len(lab.refresh_calls())
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        chains = list(pool.map(client.issue, range(1, count + 1)))
    elapsed = time.perf_counter() - start
    for i, chain in enumerate(chains, start=1):
        check_issued("acme library", i, chain, issuer)
    check_withdrawn("acme library", lab)
    return elapsed, len(lab.refresh_calls()) - calls


# --------------------------------------------------------------------------- sslm


def write_tree(
    top: Path,
    lab: DnsLab,
    pebble: Pebble,
    count: int,
    zones: Sequence[str] = APEXES,
    extra: str = "",
) -> None:
    """The example conf.d plus the Pebble CA, the lab's DNS and N services of the first of
    ``zones`` (names in both), and ``extra`` at the end of ssl-mgr.conf."""
    apex, other = zones
    conf = top / "conf.d"
    shutil.copytree(REPO / "conf.d", conf)
    (conf / apex).mkdir()
    for i in range(1, count + 1):
        sans = ", ".join(f"'{name}'" for name in names_of(i, zones))
        (conf / apex / f"svc{i:02d}").write_text(SERVICE.format(i=i, apex=apex, sans=sans))
    with (conf / "ca-info.conf").open("a") as ca_info:
        ca_info.write(f"""
[pebble]
    ca_desc = 'The lab Pebble'
    ca_type = 'acme'
    ca_validation = 'dns-01'
    ca_acme_directory = '{pebble.directory_url}'
    ca_acme_ca_bundle = '{pebble.ca_bundle}'
""")
    main = conf / "ssl-mgr.conf"
    text = main.read_text().replace("dns_xtra_ns = []", "dns_xtra_ns = []\n    dns_check_delay = 0")
    main.write_text(
        text
        + f"""
[[groups]]
    active = true
    domain = '{apex}'
    services = ['ALL']
"""
        + "".join(
            f"""
[[dns_primary]]
    domain = '{domain}'
    server = '{lab.primary}'
    port = {lab.port}
"""
            for domain in ("default", other)
        )
        + f"""
[dns]
    acme_dir = ['{lab.acme_dir}']
    restart_cmd = '{lab.refresh_script}'
"""
        + extra
    )


def issue_with_sslm(
    services: Services,
    lab: DnsLab,
    pebble: Pebble,
    top: Path,
    count: int,
    issuer: x509.Name,
    zones: Sequence[str] = APEXES,
    extra: str = "",
    workers: int = 2,
) -> tuple[float, float, int, Path]:
    """sslm's time until ``sslm-mgr`` returned (every certificate issued, stored, published),
    and until the refresh that takes the withdrawn challenge records out of DNS ran: sslm
    defers that one (debounced after the run) where (a) and (b) refresh at once per order."""
    write_tree(top, lab, pebble, count, zones, extra)
    redis = start_redis(services)
    worker = WorkerStarter(services, redis.url()).start(
        f"bench@{top.name}",
        pool="prefork",
        concurrency=workers,
        env={"SSL_MGR_TOPDIR": str(top)},
    )
    env = celery_env(redis.url(), SSL_MGR_TOPDIR=str(top))
    settle(lab, zones)
    calls = len(lab.refresh_calls())
    start = time.perf_counter()
    done = subprocess.run(
        [str(VENV_BIN / "sslm-mgr"), "-renew", f"{zones[0]}:ALL"],
        cwd=top,
        env=env,
        capture_output=True,
        text=True,
        timeout=ISSUE_TIMEOUT_S * 3,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sslm-mgr -renew failed:\n{done.stdout}\n{done.stderr}")
    refresher = Workspace(config=load_config([], conf_dir=top / "conf.d")[0]).zone_refresher()
    while refresher.pending() and time.perf_counter() - start < ISSUE_TIMEOUT_S:
        time.sleep(DNS_POLL_S)
    cleaned = time.perf_counter() - start
    if refresher.pending():
        raise SystemExit(f"sslm: no refresh covered {refresher.pending()}")
    for i in range(1, count + 1):
        curr = top / "certs" / zones[0] / f"svc{i:02d}" / "curr"
        check_issued("sslm", i, (curr / "cert.pem").read_bytes(), issuer, zones)
    check_withdrawn("sslm", lab)
    return elapsed, cleaned, len(lab.refresh_calls()) - calls, worker.service.log


def waits_in(worker_log: Path) -> dict[str, list[float]]:
    """The countdowns each waiting ACME step took, from the worker's "not yet" lines."""
    waits: dict[str, list[float]] = {}
    pattern = re.compile(r": (acme_\w+): not yet \(.*\); again in ([\d.]+) s")
    for match in pattern.finditer(worker_log.read_text(errors="replace")):
        waits.setdefault(match[1], []).append(float(match[2]))
    return waits


def busy_in(worker_log: Path) -> dict[str, tuple[int, float]]:
    """Per task name: how many runs succeeded and their seconds in all (Celery's own figures;
    runs that ended in a retry are not in them)."""
    busy: dict[str, tuple[int, float]] = {}
    # A task shows by its shadow name ("acme_order example.test:svc01") or, without one, by
    # its task name ("sslm.ping"): the step is the first word, or the name's last part.
    pattern = re.compile(r"Task ([\w.]+)(?: \S+)?\[[^\]]+\] succeeded in ([\d.]+)s")
    for match in pattern.finditer(worker_log.read_text(errors="replace")):
        step = match[1].rsplit(".", 1)[-1]
        runs, seconds = busy.get(step, (0, 0.0))
        busy[step] = (runs + 1, seconds + float(match[2]))
    return busy


# --------------------------------------------------------------------------- (b) certbot


def issue_with_certbot(
    lab: DnsLab, pebble: Pebble, work: Path, count: int, issuer: x509.Name
) -> tuple[float, int, list[float]]:
    work.mkdir()
    hook = work / "hook.sh"
    hook.write_text(
        CERTBOT_HOOK.format(
            apexes=" ".join(APEXES),
            acme_dir=shlex.quote(str(lab.acme_dir)),
            state_dir=shlex.quote(str(work)),
            refresh=shlex.quote(str(lab.refresh_script)),
            servers=" ".join(lab.servers),
            wait_s=int(DNS_WAIT_S),
            poll_s=DNS_POLL_S,
        )
    )
    hook.chmod(0o755)
    certbot = require_binary("certbot")
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    settle(lab)
    calls = len(lab.refresh_calls())
    per_cert = []
    start = time.perf_counter()
    for i in range(1, count + 1):
        began = time.perf_counter()
        run = work / f"svc{i:02d}"
        run.mkdir()
        (run / "csr.pem").write_bytes(new_csr(names_of(i)))
        argv = [
            certbot, "certonly", "--manual", "--preferred-challenges", "dns",
            "--csr", str(run / "csr.pem"),
            "--manual-auth-hook", f"{hook} auth", "--manual-cleanup-hook", f"{hook} cleanup",
            "--server", pebble.directory_url,
            "--config-dir", str(run / "config"), "--work-dir", str(run / "work"),
            "--logs-dir", str(run / "logs"),
            "--cert-path", str(run / "cert.pem"), "--chain-path", str(run / "chain.pem"),
            "--fullchain-path", str(run / "fullchain.pem"),
            "--non-interactive", "--agree-tos", "--register-unsafely-without-email",
        ]  # fmt: skip
        done = subprocess.run(
            argv, env=env, cwd=run, capture_output=True, text=True, timeout=ISSUE_TIMEOUT_S
        )
        if done.returncode != 0:
            raise SystemExit(f"certbot for svc{i:02d} failed:\n{done.stdout}\n{done.stderr}")
        per_cert.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    for i in range(1, count + 1):
        check_issued("certbot", i, (work / f"svc{i:02d}" / "fullchain.pem").read_bytes(), issuer)
    check_withdrawn("certbot", lab)
    return elapsed, len(lab.refresh_calls()) - calls, per_cert


# --------------------------------------------------------------------------- main


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the lab


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20, help="certificates per method")
    parser.add_argument(
        "--without-certbot", action="store_true", help="skip (b), the minute of certbot runs"
    )
    parser.add_argument("--workers", type=int, default=2, help="sslm's worker processes")
    args = parser.parse_args()
    count = args.count
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    for name in [name for name in os.environ if name.startswith(("SSLM_", "SSL_MGR_"))]:
        del os.environ[name]

    with (
        tempfile.TemporaryDirectory(prefix="sslm-bench-acme-") as tmp,
        services_in(Path(tmp)) as services,
    ):
        work = Path(tmp)
        lab = start_dns_lab(services, work / "dns", other_apexes=(OTHER,))
        try:
            pebble = start_pebble(services, work / "pebble", dns_server=f"{lab.primary}:53")
            issuer = x509.load_pem_x509_certificate(pebble.intermediates_pem()).subject
            library_s, library_refreshes = issue_with_library(lab, pebble, count, issuer)
            sslm_s, cleaned_s, sslm_refreshes, worker_log = issue_with_sslm(
                services, lab, pebble, work / "top", count, issuer, workers=args.workers
            )
            waits, busy = waits_in(worker_log), busy_in(worker_log)
            certbot = (
                None
                if args.without_certbot
                else issue_with_certbot(lab, pebble, work / "certbot", count, issuer)
            )
        finally:
            lab.close()

    def row(label: str, text: str) -> None:
        print(f"{label:<34}: {text}")

    row("certificates (3 names, 2 zones)", f"{count} per method, each checked")
    row(
        f"sslm: redis + {args.workers} worker processes",
        f"{sslm_s:6.2f} s  ({sslm_refreshes} DNS refreshes)",
    )
    row("  until the deferred cleanup refresh", f"{cleaned_s:6.2f} s")
    top = sorted(busy.items(), key=lambda item: -item[1][1])[:8]
    row(
        "  worker task time",
        f"{sum(s for _, s in busy.values()):.2f} s in all; "
        + ", ".join(f"{name} {seconds / runs * 1000:.0f} ms" for name, (runs, seconds) in top),
    )
    for step, countdowns in sorted(waits.items()):
        each = ", ".join(f"{c:g}" for c in sorted(set(countdowns)))
        row(
            f"  {step}",
            f"{len(countdowns)} retries, {sum(countdowns):g} s of countdowns ({each} s)",
        )
    row(
        f"(a) acme library, {count} threads",
        f"{library_s:6.2f} s  ({library_refreshes} DNS refreshes)",
    )
    vs_library = sslm_s / library_s
    row(
        "ratio sslm / (a)",
        f"{vs_library:.2f}  (target <= {TARGET_VS_LIBRARY:g}: "
        f"{verdict(vs_library <= TARGET_VS_LIBRARY)})",
    )
    if certbot is None:
        row("(b) certbot --manual, sequential", "skipped (--without-certbot)")
        return
    certbot_s, certbot_refreshes, per_cert = certbot
    row(
        "(b) certbot --manual, sequential",
        f"{certbot_s:6.2f} s  ({certbot_refreshes} DNS refreshes; "
        f"{min(per_cert):.2f}-{max(per_cert):.2f} s each)",
    )
    vs_certbot = certbot_s / sslm_s
    row(
        "ratio (b) / sslm",
        f"{vs_certbot:.2f}  (target >= {TARGET_VS_CERTBOT:g}: "
        f"{verdict(vs_certbot >= TARGET_VS_CERTBOT)})",
    )


if __name__ == "__main__":
    try:
        main()
    except (pytest.skip.Exception, pytest.fail.Exception) as missing:
        # The lab's helpers skip or fail as in a test; here either means: cannot run.
        raise SystemExit(f"bench_acme: {missing}") from missing
    except KeyboardInterrupt:
        raise SystemExit("bench_acme: interrupted; everything it started is stopped") from None
