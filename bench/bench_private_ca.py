"""Renew and roll N private-CA services in-process and print the time per service.

Baseline, measured in the same run: the bare cryptography work the same services need (EC key,
CSR, CA signature) with no files, links or config. The ratio is sslm's whole-pipeline cost
(config, atomic writes, chain verification, state, production copy) over that floor. Upstream
ssl-mgr was measured at about 50 ms per EC service on these machines; that figure is printed
for reference, not measured here (upstream is not installed). The fsyncs and renames the timed
run made are counted too (per service), since on a real disk they are most of its cost.

Usage: .venv/bin/python bench/bench_private_ca.py [--services 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sslm_tasks.cli import mgr
from sslm_tasks.crypto.csr import SubjectSpec, build_csr
from sslm_tasks.crypto.keys import KeySpec, generate_private_key
from sslm_tasks.crypto.signing import SigningPolicy, self_sign, sign_with_ca
from sslm_tasks.store import confined

REPO = Path(__file__).resolve().parent.parent
UPSTREAM_MS_PER_SERVICE = 50.0

SERVICE = """name = 'bench {i}'
group = 'bench.example'
service = 'svc{i:03d}'
signing_ca = 'my-int'

[KeyOpts]
    ktype = 'ec'
    ec_algo = 'secp256r1'

[X509]
    CN = 'svc{i:03d}.bench.example'
    O = 'Bench'
    C = 'US'
    sans = ['svc{i:03d}.bench.example', 'www{i:03d}.bench.example']
"""


def make_tree(top: Path, count: int) -> None:
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    group = top / "conf.d" / "bench.example"
    group.mkdir()
    for i in range(count):
        (group / f"svc{i:03d}").write_text(SERVICE.format(i=i))
    main = top / "conf.d" / "ssl-mgr.conf"
    main.write_text(
        main.read_text()
        + "\n[[groups]]\n    active = true\n    domain = 'bench.example'\n    services = ['ALL']\n"
    )


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """Count fsyncs and renames (a directory exchange is one) made inside the block, and add up
    the seconds spent in the calls that wait on the filesystem's journal (``seconds``: open,
    mkdir, symlink, fsync, rename; on an idle disk most of it is the fsyncs)."""
    counts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    kinds = {"fsync": "fsync", "replace": "rename", "rename": "rename", "exchange": "rename"}
    patched: list[tuple[object, str, Callable[..., object]]] = [
        (os, "fsync", os.fsync),
        (os, "replace", os.replace),
        (os, "rename", os.rename),
        (os, "open", os.open),
        (os, "mkdir", os.mkdir),
        (os, "symlink", os.symlink),
        (confined, "exchange", confined.exchange),
    ]

    def counted(name: str, call: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            if name in kinds:
                counts[kinds[name]] += 1
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                seconds["filesystem"] += time.perf_counter() - started

        return wrapper

    for owner, name, call in patched:
        setattr(owner, name, counted(name, call))
    try:
        yield counts
    finally:
        for owner, name, call in patched:
            setattr(owner, name, call)
        counts["filesystem_us"] = round(seconds["filesystem"] * 1e6)


def bare_crypto(count: int) -> float:
    now = datetime.now(UTC)
    spec = KeySpec(ktype="ec", ec_curve="secp256r1")
    ca_key = generate_private_key(KeySpec(ktype="ec"))
    ca_csr = build_csr(ca_key, SubjectSpec(CN="bench-ca", O="Bench", C="US"), [], is_ca=True)
    ca_cert = self_sign(ca_csr, ca_key, SigningPolicy(days=365, is_ca=True), now=now)
    start = time.perf_counter()
    for i in range(count):
        key = generate_private_key(spec)
        name = f"svc{i:03d}.bench.example"
        csr = build_csr(key, SubjectSpec(CN=name, O="Bench", C="US"), [name], is_ca=False)
        sign_with_ca(csr, ca_key, ca_cert, SigningPolicy(days=90), now=now)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=30)
    count = parser.parse_args().services
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        make_tree(top, count)
        os.environ["SSL_MGR_TOPDIR"] = str(top)
        os.environ.pop("SSLM_BROKER_URL", None)
        assert mgr.main(["-renew", "-roll", "ca:ALL"]) == 0
        with counting() as counts:
            start = time.perf_counter()
            code = mgr.main(["-f", "-renew", "-roll", "-roll-mins", "0", "bench.example:ALL"])
            elapsed = time.perf_counter() - start
        assert code == 0, "bench run failed"
    baseline = bare_crypto(count)
    per_service_ms = elapsed / count * 1000
    print(f"services                 : {count}")
    print(f"sslm renew+roll          : {elapsed:.3f} s  ({per_service_ms:.1f} ms/service)")
    print(
        f"bare crypto baseline     : {baseline:.3f} s  ({baseline / count * 1000:.1f} ms/service)"
    )
    print(f"ratio sslm / baseline    : {elapsed / baseline:.2f}")
    waited_ms = counts["filesystem_us"] / 1000 / count
    print(f"  in open/mkdir/symlink/fsync/rename: {waited_ms:.1f} ms/service")
    print(f"  the rest (CPU, reads)  : {per_service_ms - waited_ms:.1f} ms/service")
    print(f"fsyncs per service       : {counts['fsync'] / count:.1f}")
    print(f"renames per service      : {counts['rename'] / count:.1f}")
    upstream_ratio = per_service_ms / UPSTREAM_MS_PER_SERVICE
    print(f"ratio vs upstream ~50 ms : {upstream_ratio:.2f} (reference figure)")


if __name__ == "__main__":
    main()
