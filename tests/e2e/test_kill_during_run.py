"""A kill -9 at any point of renew or roll leaves curr intact, and a rerun completes the work."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import RunMgr, chain_verifies, openssl

HARNESS = Path(__file__).with_name("kill_harness.py")
LEAVES = ["example.com/mail-ec", "example.com/web-ec"]
SELECTION = ["ca:ALL", "example.com:mail-ec,web-ec"]
KILL_POINTS_AT_ONCE = 2


class Harness:
    """One ``kill_harness.py`` server: each run is a fork of it, so sslm is imported once."""

    def __init__(self, workdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
        self.workdir = workdir
        self.runs = 0
        self.process = subprocess.Popen(
            [sys.executable, str(HARNESS)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, topdir: Path, kill_at: int, *args: str) -> subprocess.CompletedProcess[str]:
        """sslm-mgr ``args`` in ``topdir``, killed at the ``kill_at``-th rename."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.runs += 1
        out = self.workdir / f"run-{self.runs}"
        request = {"kill_at": kill_at, "args": list(args), "topdir": str(topdir), "out": str(out)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, f"the kill harness stopped (exit {self.process.poll()})"
        stdout, stderr = (Path(f"{out}.{name}") for name in ("stdout", "stderr"))
        done = subprocess.CompletedProcess(
            list(args), json.loads(answer)["returncode"], stdout.read_text(), stderr.read_text()
        )
        stdout.unlink()
        stderr.unlink()
        return done

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def harnesses(tmp_path: Path) -> Iterator[queue.Queue[Harness]]:
    """As many kill harnesses as kill points run at once, each used by one at a time."""
    free: queue.Queue[Harness] = queue.Queue()
    started = []
    for number in range(KILL_POINTS_AT_ONCE):
        workdir = tmp_path / f"harness-{number}"
        workdir.mkdir()
        started.append(Harness(workdir))
        free.put(started[-1])
    yield free
    for harness in started:
        harness.close()


def chain_ok(topdir: Path, svc: str) -> bool:
    """curr verifies to the root, and its key is the certificate's."""
    base = topdir / "certs" / svc / "curr"
    key_pub = openssl("pkey", "-in", str(base / "privkey.pem"), "-pubout").stdout
    cert_pub = openssl("x509", "-in", str(base / "cert.pem"), "-noout", "-pubkey").stdout
    return chain_verifies(topdir, svc) and key_pub == cert_pub


def production_whole(topdir: Path, svc: str) -> list[str]:
    """What a server reading ``prod-certs`` would get wrong: for each production version of
    ``svc``, a key that is not its certificate's, or a bundle that is not key + fullchain."""
    wrong = []
    for which in ("curr", "next"):
        base = topdir / "prod-certs" / svc / which
        if not base.exists():
            continue
        key_pub = openssl("pkey", "-in", str(base / "privkey.pem"), "-pubout").stdout
        cert_pub = openssl("x509", "-in", str(base / "cert.pem"), "-noout", "-pubkey").stdout
        fullchain = (base / "fullchain.pem").read_bytes()
        bundle = (base / "bundle.pem").read_bytes()
        if key_pub != cert_pub or not fullchain.startswith((base / "cert.pem").read_bytes()):
            wrong.append(f"{svc}/{which}: key and certificate differ")
        if bundle != (base / "privkey.pem").read_bytes() + fullchain:
            wrong.append(f"{svc}/{which}: bundle is not key + fullchain")
    return wrong


def hidden_leftovers(topdir: Path) -> list[Path]:
    """Versions being prepared or replaced in production (``.curr.new-*``, ``.next.old-*``)."""
    return sorted((topdir / "prod-certs").glob("*/*/.*"))


def count_replaces(harness: Harness, topdir: Path, *args: str) -> int:
    done = harness.run(topdir, 10**9, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"replace calls: (\d+)", done.stdout)
    assert match
    return int(match.group(1))


def at_every_write(
    check: Callable[[Harness, int], None], total: int, harnesses: queue.Queue[Harness]
) -> None:
    """``check(harness, kill_at)`` for every write 1..``total``, two at a time: each works on
    its own copy of the tree with a harness of its own, and the runs are processes, so two
    cores halve the wait."""

    def with_a_harness(kill_at: int) -> None:
        harness = harnesses.get()
        try:
            check(harness, kill_at)
        finally:
            harnesses.put(harness)

    with ThreadPoolExecutor(max_workers=KILL_POINTS_AT_ONCE) as pool:
        for _ in pool.map(with_a_harness, range(1, total + 1)):
            pass  # re-raises the first failed check's AssertionError


def test_kill_at_every_write_of_a_first_run_then_rerun_completes(
    tmp_path: Path, topdir: Path, mgr: RunMgr, harnesses: queue.Queue[Harness]
) -> None:
    # Given the number of atomic replacements a clean first run makes
    import shutil

    probe = tmp_path / "probe"
    shutil.copytree(topdir, probe)
    harness = harnesses.get()
    total = count_replaces(harness, probe, "-renew", "-roll", *SELECTION)
    harnesses.put(harness)
    assert total > 20

    def killed_then_rerun(harness: Harness, kill_at: int) -> None:
        tree = tmp_path / f"k{kill_at}"
        shutil.copytree(topdir, tree)
        # When the run is killed at that write
        killed = harness.run(tree, kill_at, "-renew", "-roll", *SELECTION)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stdout, killed.stderr)
        # Then every curr that exists is a complete, verifying version
        for svc in LEAVES:
            if (tree / "certs" / svc / "curr").exists():
                assert chain_ok(tree, svc), (kill_at, svc)
        # and a plain rerun finishes the job
        rerun = harness.run(tree, 10**9, "-renew", "-roll", *SELECTION)
        assert rerun.returncode == 0, (kill_at, rerun.stdout, rerun.stderr)
        for svc in LEAVES:
            assert chain_ok(tree, svc), (kill_at, svc)
            assert not (tree / "certs" / svc / "next").exists(), (kill_at, svc)
        shutil.rmtree(tree)

    at_every_write(killed_then_rerun, total, harnesses)


def test_kill_during_a_forced_renew_and_roll_keeps_the_old_curr_serving(
    tmp_path: Path, topdir: Path, mgr: RunMgr, harnesses: queue.Queue[Harness]
) -> None:
    import shutil

    assert mgr("-renew", *SELECTION).returncode == 0
    args = ("-f", "-renew", "-roll", "-roll-mins", "0", "example.com:mail-ec,web-ec")
    probe = tmp_path / "probe"
    shutil.copytree(topdir, probe, symlinks=True)
    harness = harnesses.get()
    total = count_replaces(harness, probe, *args)
    harnesses.put(harness)
    old = {svc: os.readlink(topdir / "certs" / svc / "curr") for svc in LEAVES}

    def killed_then_rerun(harness: Harness, kill_at: int) -> None:
        tree = tmp_path / f"k{kill_at}"
        shutil.copytree(topdir, tree, symlinks=True)
        killed = harness.run(tree, kill_at, *args)
        assert killed.returncode == -signal.SIGKILL
        for svc in LEAVES:
            assert chain_ok(tree, svc), (kill_at, svc)
            # what a server reads from production is one whole version at every instant
            assert production_whole(tree, svc) == [], kill_at
        rerun = harness.run(
            tree, 10**9, "-renew", "-roll", "-roll-mins", "0", "example.com:mail-ec,web-ec"
        )
        assert rerun.returncode == 0, (kill_at, rerun.stdout, rerun.stderr)
        for svc in LEAVES:
            assert chain_ok(tree, svc), (kill_at, svc)
            # no second next was started: the forced build that was killed is the one now in curr,
            # or (killed before it began) the old curr is kept
            assert not (tree / "certs" / svc / "next").exists()
            assert production_whole(tree, svc) == [], kill_at
            assert (tree / "prod-certs" / svc / "curr/cert.pem").read_bytes() == (
                tree / "certs" / svc / "curr/cert.pem"
            ).read_bytes()
        assert hidden_leftovers(tree) == [], kill_at
        changed = [svc for svc in LEAVES if os.readlink(tree / "certs" / svc / "curr") != old[svc]]
        builds = {svc: len(list((tree / "certs" / svc / "db").iterdir())) for svc in LEAVES}
        assert all(count <= 2 for count in builds.values()), (kill_at, builds, changed)
        shutil.rmtree(tree)

    at_every_write(killed_then_rerun, total, harnesses)
