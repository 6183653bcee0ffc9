"""sslm at 1,000 and 10,000 services: what a run costs when nothing is due, and what a broker
run sends. Each figure is printed for both sizes with the growth factor (10 = linear).

The tree (issue 15, P5) holds the example's two local CAs and groups of 100 services each
(10 groups at 1,000, 100 at 10,000; ``--per-group N`` changes that, ``--per-group 0`` puts every
service in one group). It is built quickly: the CAs and one service are issued for real, and
that service's configuration, store and production copy are copied to every other one (same
dates, so nothing is due), each with a certificate of its own (the same one signed again by
the same CA with another serial), so that nothing keyed by a certificate's content is
measured on copies.
Measured (each a separate process, wall time and peak RSS):
- ``sslm-mgr -renew`` in-process, nothing due: the first run after the tree was built, and the
  one after it (the steady state: production copies found whole before are not read again);
- ``sslm-mgr -s`` and ``sslm-mgr -s --json``;
- ``load_config`` of the whole tree (in this process), reading the files, then taking the
  configuration the renew runs remembered;
- ``sslm-mgr -renew --no-wait`` over a Redis with no worker: the number of messages queued,
  the largest one, and Redis's memory per queued service;
- beat's renew scan (``sslm.renew.scan``, run as a function) with ``DUE`` services made due
  (their store removed): its time and the messages it queued;
- ``sslm-metrics --listen``: its first scrape and one after a service's record changed.

Starts its own redis-server on a free loopback port and stops it.
Usage: .venv/bin/python bench/bench_scale.py [--sizes 1000,10000] [--per-group 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_metrics import exporter, scrape
from bench_private_ca import SERVICE
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO / "tests")]

from services import VENV_BIN, services_in, start_redis  # noqa: E402

from sslm_tasks.config.load import load_config  # noqa: E402

#: The services the renew scan finds due: its messages should be these, not the tree's size.
DUE = 10
GROUP_ENTRY = "\n[[groups]]\n    active = true\n    domain = '{name}'\n    services = ['ALL']\n"
#: Runs beat's renew scan in this process, as a worker would, and prints its seconds.
_SCAN = """import time
from sslm_tasks.tasks import renew_scan
started = time.perf_counter()
renew_scan()
print(time.perf_counter() - started)
"""


def group_names(count: int, per_group: int) -> list[str]:
    if per_group <= 0 or per_group >= count:
        return ["bench.example"]
    return [f"bench{g:03d}.example" for g in range(count // per_group)]


def service_file(group: str, index: int) -> str:
    return SERVICE.format(i=index).replace("bench.example", group)


def make_config(top: Path, groups: list[str], per_group: int) -> None:
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    for group in groups:
        (top / "conf.d" / group).mkdir()
        for i in range(per_group):
            (top / "conf.d" / group / f"svc{i:03d}").write_text(service_file(group, i))
    main = top / "conf.d" / "ssl-mgr.conf"
    main.write_text(main.read_text() + "".join(GROUP_ENTRY.format(name=g) for g in groups))


def build(top: Path, count: int, per_group: int) -> None:
    groups = group_names(count, per_group)
    per_group = count // len(groups)
    make_config(top, groups, per_group)
    env = {**os.environ, "SSL_MGR_TOPDIR": str(top)}
    env.pop("SSLM_BROKER_URL", None)
    first = groups[0]
    done = subprocess.run(
        [str(VENV_BIN / "sslm-mgr"), "-renew", "-roll", "ca:ALL", "example.com", f"{first}:svc000"],
        cwd=top,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    for tree in ("certs", "prod-certs"):
        template = top / tree / first / "svc000"
        for group in groups:
            for i in range(per_group):
                target = top / tree / group / f"svc{i:03d}"
                if target != template:
                    shutil.copytree(template, target, symlinks=True)
    own_certificates(top, groups, per_group)


def own_certificates(top: Path, groups: list[str], per_group: int) -> None:
    """Give every copy a certificate of its own: the template's, signed again by the same CA
    with another serial, put in place of the template's wherever it appears (the store version
    and the production copy). A tree of identical certificates would flatter anything keyed by
    a certificate's content (``-s``'s book of details parses one certificate for all)."""
    template_dir = top / "certs" / groups[0] / "svc000" / "curr"
    template_pem = (template_dir / "cert.pem").read_bytes()
    template = x509.load_pem_x509_certificate(template_pem)
    ca_dir = top / "certs" / "ca" / "my-int" / "curr"
    ca_key = serialization.load_pem_private_key((ca_dir / "privkey.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    stamp = os.readlink(top / "certs" / groups[0] / "svc000" / "curr").removeprefix("db/")
    for group in groups:
        for i in range(per_group):
            if (group, i) == (groups[0], 0):
                continue
            builder = (
                x509.CertificateBuilder()
                .subject_name(template.subject)
                .issuer_name(template.issuer)
                .public_key(template.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(template.not_valid_before_utc)
                .not_valid_after(template.not_valid_after_utc)
            )
            for extension in template.extensions:
                builder = builder.add_extension(extension.value, extension.critical)
            own = builder.sign(ca_key, hashes.SHA384()).public_bytes(serialization.Encoding.PEM)
            for version in (
                top / "certs" / group / f"svc{i:03d}" / "db" / stamp,
                top / "prod-certs" / group / f"svc{i:03d}" / "curr",
            ):
                for name in ("cert.pem", "fullchain.pem", "bundle.pem"):
                    path = version / name
                    path.write_bytes(path.read_bytes().replace(template_pem, own))


def measure(top: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one sslm-mgr run."""
    run_env = {**os.environ, "SSL_MGR_TOPDIR": str(top), **(env or {})}
    if "SSLM_BROKER_URL" not in (env or {}):
        run_env.pop("SSLM_BROKER_URL", None)
    # As people run it: a shell that sets PYTHONUNBUFFERED (some CI images, this project's
    # sandbox) makes -s write each line with its own system calls.
    run_env.pop("PYTHONUNBUFFERED", None)
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(VENV_BIN / "sslm-mgr"), *args],
        cwd=top,
        env=run_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):
        raise SystemExit(f"sslm-mgr {' '.join(args)} exited {code}")
    return elapsed, usage.ru_maxrss / 1024


def broker_figures(top: Path, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work, services_in(Path(work)) as services:
        redis = start_redis(services)
        client = redis.client()
        base = client.info("memory")["used_memory"]
        seconds, _ = measure(top, "-renew", "--no-wait", env={"SSLM_BROKER_URL": redis.url()})
        messages = client.llen("issue")
        largest = max((len(item) for item in client.lrange("issue", 0, -1)), default=0)
        used = client.info("memory")["used_memory"] - base
        client.flushall()
        scan_s = renew_scan(top, redis.url())
        scanned = client.llen("issue")
    return {
        "--no-wait s": seconds,
        "messages": messages,
        "largest message KB": largest / 1024,
        "Redis KB per service": used / 1024 / count,
        f"renew scan ({DUE} due) s": scan_s,
        f"renew scan ({DUE} due) messages": scanned,
    }


def renew_scan(top: Path, broker_url: str) -> float:
    """Seconds of beat's renew scan once ``DUE`` services have no certificate (so are due)."""
    for store in sorted((top / "certs").glob("bench*/svc*"))[-DUE:]:
        shutil.rmtree(store)
    env = {**os.environ, "SSL_MGR_TOPDIR": str(top), "SSLM_BROKER_URL": broker_url}
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-c", _SCAN], cwd=top, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return float(done.stdout.split()[-1])


def metrics_figures(top: Path) -> dict[str, float]:
    with exporter(top) as (url, _):
        first, _ = scrape(url)
        record = next((top / "certs").glob("bench*/svc000/state.json"))
        record.write_text(record.read_text())  # rewritten: a new mtime
        changed, _ = scrape(url)
    return {"metrics scrape s": first, "metrics scrape, 1 changed s": changed}


def figures(count: int, per_group: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        build(top, count, per_group)
        found: dict[str, float] = {}
        start = time.perf_counter()
        load_config([], conf_dir=top / "conf.d")
        found["load_config s"] = time.perf_counter() - start
        for name, args in (
            # The first run finds production copies it has never checked (they were just
            # copied): it compares them byte for byte and remembers each (one record write a
            # service). The second is every later run's cost.
            ("-renew (nothing due), first", ("-renew",)),
            ("-renew (nothing due), again", ("-renew",)),
            ("-s", ("-s",)),
            ("-s --json", ("-s", "--json")),
        ):
            seconds, peak = measure(top, *args)
            found[f"{name} s"] = seconds
            found[f"{name} MB"] = peak
        # The renew runs kept their load (certs/.config-remembered): what a later load costs.
        start = time.perf_counter()
        load_config([], conf_dir=top / "conf.d")
        found["load_config, remembered s"] = time.perf_counter() - start
        found.update(metrics_figures(top))
        found.update(broker_figures(top, count))  # last: the scan removes services' stores
        return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument(
        "--per-group", type=int, default=100, help="services per group; 0: all in one group"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    results = {size: figures(size, args.per_group) for size in sizes}
    first = sizes[0]
    print(f"{'figure':<32}" + "".join(f"{size:>12}" for size in sizes) + "   growth")
    for name in results[first]:
        values = [results[size][name] for size in sizes]
        growth = values[-1] / values[0] if values[0] else float("nan")
        print(f"{name:<32}" + "".join(f"{value:>12.3f}" for value in values) + f"   {growth:.1f}x")


if __name__ == "__main__":
    main()
