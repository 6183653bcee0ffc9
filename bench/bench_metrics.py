"""How ``sslm-metrics`` and ``sslm-mgr -s --json`` grow with the number of services.

A tree of N services is built quickly: the example is issued for real once (``sslm-mgr
-renew``), then one issued service (``example.com:web-ec``: its configuration file, its store
directory with record, links and version, and its production copy) is copied into 100 groups
of N/100 services, each copy its own files. For 1,000 and 10,000 services it prints:

- the scrape of a real ``sslm-metrics --listen`` process over HTTP: the first one after start
  (the exporter has read everything once before it listens), one after a service's record
  changed, one after a deploy changed the ledger entry of a server every service uses;
- how many services a scrape rendered anew (the rest came from the exporter's memory);
- ``sslm-mgr -s --json``: wall time and peak RSS of the process (it writes service by service);
- each figure at 10,000 against 1,000, so the growth is visible.

No timed assertion: this prints. Usage: .venv/bin/python bench/bench_metrics.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TEMPLATE = ("example.com", "web-ec")
GROUPS = 100
SERVER = "smtp:localhost"
GROUP_ENTRY = "[[groups]]\n    active = true\n    domain = '{name}'\n    services = ['ALL']\n"


def run(topdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
    env["SSL_MGR_TOPDIR"] = str(topdir)
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, check=False
    )


def copy_tree_files(source: Path, target: Path) -> None:
    """Copy ``source`` (files, links, directories) to ``target``, modes kept, no hard links."""
    for directory, subdirs, files in os.walk(source):
        here = Path(directory)
        there = target / here.relative_to(source)
        there.mkdir(mode=here.stat().st_mode & 0o777, exist_ok=True)
        for name in subdirs + files:
            path = here / name
            if path.is_symlink():
                (there / name).symlink_to(os.readlink(path))
            elif path.is_file():
                fd = os.open(there / name, os.O_WRONLY | os.O_CREAT, path.stat().st_mode & 0o777)
                with os.fdopen(fd, "wb") as out:
                    out.write(path.read_bytes())
        subdirs[:] = [d for d in subdirs if not (here / d).is_symlink()]


def build_tree(top: Path, count: int) -> None:
    """The example issued, plus ``count`` copies of one of its services in 100 groups, each
    deployed to one server (a ledger entry every service's status depends on)."""
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    assert run(top, "sslm-mgr", "-renew").returncode == 0
    group, service = TEMPLATE
    conf = (top / "conf.d" / group / service).read_text()
    store = top / "certs" / group / service
    prod = top / "prod-certs" / group / service
    main = top / "conf.d/ssl-mgr.conf"
    entries = []
    per_group = count // GROUPS
    for g in range(GROUPS):
        name = f"bench{g:03d}.example"
        (top / "conf.d" / name).mkdir()
        (top / "certs" / name).mkdir(mode=0o750)
        (top / "prod-certs" / name).mkdir(mode=0o750)
        for s in range(per_group):
            svc = f"svc{s:03d}"
            text = conf.replace(f"group = '{group}'", f"group = '{name}'")
            (top / "conf.d" / name / svc).write_text(
                text.replace(f"service = '{service}'", f"service = '{svc}'")
            )
            copy_tree_files(store, top / "certs" / name / svc)
            copy_tree_files(prod, top / "prod-certs" / name / svc)
        entries.append(GROUP_ENTRY.format(name=name))
    main.write_text(
        main.read_text()
        + "".join(entries)
        + "\n[smtp]\n    servers = ['localhost']\n    depends = ['cert']\n"
    )
    ledger = {SERVER: deploy_entry(ok=True)}
    (top / "certs/.deploys.json").write_text(json.dumps(ledger))


def deploy_entry(*, ok: bool) -> dict[str, object]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return {"started": now, "at": now, "ok": ok, "detail": "bench", "failures": 0 if ok else 1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def exporter(top: Path) -> Iterator[tuple[str, int]]:
    """A real ``sslm-metrics --listen`` on the tree; yields its URL and pid once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
    env["SSL_MGR_TOPDIR"] = str(top)
    process = subprocess.Popen(
        [str(BIN / "sslm-metrics"), "--listen", f"127.0.0.1:{port}"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert process.stderr is not None
        for line in process.stderr:  # the server logs once it has read everything
            if "serving" in line:
                break
        else:
            raise RuntimeError("sslm-metrics ended before serving")
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


def sample(body: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", body, re.M)
    assert found is not None, name
    return float(found[1])


def scrape(url: str) -> tuple[float, str]:
    """Seconds and body of one scrape."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as answer:
        body = answer.read().decode()
    return time.perf_counter() - started, body


def fresh_after(url: str, changed: float) -> tuple[float, str]:
    """Seconds from ``changed`` (a wall time) until a scrape serves a reading begun after it."""
    while True:
        _, body = scrape(url)
        if sample(body, "sslm_metrics_read_timestamp_seconds") >= changed:
            return time.time() - changed, body
        time.sleep(0.1)


#: Runs a command as its only child and prints the child's seconds and peak RSS (KiB).
_MEASURED = """import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
took = time.perf_counter() - started
print(code, took, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def status_json(top: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of ``sslm-mgr -s --json``, output thrown away."""
    done = run(top, "python", "-c", _MEASURED, str(BIN / "sslm-mgr"), "-s", "--json")
    code, took, peak = done.stdout.split()
    assert code in ("0", "1"), done.stderr  # 1: the bench's server is failing by then
    return float(took), int(peak) / 1024


def peak_rss_mb(pid: int) -> float:
    """The peak resident size of a running process (VmHWM)."""
    found = re.search(r"^VmHWM:\s+(\d+) kB$", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert found is not None
    return int(found[1]) / 1024


def measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        started = time.perf_counter()
        build_tree(top, count)
        built = time.perf_counter() - started
        figures: dict[str, float] = {"build tree s": built}
        with exporter(top) as (url, pid):
            figures["exporter start s"] = time.perf_counter() - started - built
            took, body = scrape(url)
            figures |= {"first scrape s": took, "MB": len(body) / 1e6}
            took, body = scrape(url)
            rendered = sample(body, "sslm_metrics_services_rendered")
            figures |= {"unchanged scrape s": took, "unchanged rendered": rendered}
            record = top / "certs/bench000.example/svc000/state.json"
            record.write_text(record.read_text())  # rewritten: a new mtime
            took, body = scrape(url)
            rendered = sample(body, "sslm_metrics_services_rendered")
            figures |= {"one record changed s": took, "one changed rendered": rendered}
            changed = time.time()
            ledger = {SERVER: deploy_entry(ok=False)}
            (top / "certs/.deploys.json").write_text(json.dumps(ledger))
            took, _ = scrape(url)
            figures["server failed: answer s"] = took
            fresh, _ = fresh_after(url, changed)
            figures["server failed: fresh after s"] = fresh
            figures["exporter peak RSS MB"] = peak_rss_mb(pid)
        took, rss = status_json(top)
        figures |= {"-s --json s": took, "-s --json peak RSS MB": rss}
        return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    sizes = parser.parse_args().sizes
    results = {size: measure(size) for size in sizes}
    base = sizes[0]
    print(f"{'figure':<26}" + "".join(f"{size:>12}" for size in sizes) + "   ratio")
    for name in results[base]:
        row = "".join(f"{results[size][name]:>12.3f}" for size in sizes)
        ratio = results[sizes[-1]][name] / results[base][name] if results[base][name] else 0.0
        print(f"{name:<26}{row}   {ratio:.1f}x")


if __name__ == "__main__":
    main()
