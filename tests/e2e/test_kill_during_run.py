"""A kill -9 at any point of renew or roll leaves curr intact, and a rerun completes the work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support import RunMgr, chain_verifies, openssl

HARNESS = Path(__file__).with_name("kill_harness.py")
LEAVES = ["example.com/mail-ec", "example.com/web-ec"]
SELECTION = ["ca:ALL", "example.com:mail-ec,web-ec"]
KILL_POINTS_AT_ONCE = 2


def run_killed(topdir: Path, kill_at: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
    env["SSL_MGR_TOPDIR"] = str(topdir)
    return subprocess.run(
        [sys.executable, str(HARNESS), str(kill_at), *args],
        cwd=topdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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


def count_replaces(topdir: Path, *args: str) -> int:
    done = run_killed(topdir, 10**9, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"replace calls: (\d+)", done.stdout)
    assert match
    return int(match.group(1))


def at_every_write(check: Callable[[int], None], total: int) -> None:
    """``check(kill_at)`` for every write 1..``total``, two at a time: each works on its own
    copy of the tree, and the runs are processes, so two cores halve the wait."""
    with ThreadPoolExecutor(max_workers=KILL_POINTS_AT_ONCE) as pool:
        for _ in pool.map(check, range(1, total + 1)):
            pass  # re-raises the first failed check's AssertionError


def test_kill_at_every_write_of_a_first_run_then_rerun_completes(
    tmp_path: Path, topdir: Path, mgr: RunMgr
) -> None:
    # Given the number of atomic replacements a clean first run makes
    import shutil

    probe = tmp_path / "probe"
    shutil.copytree(topdir, probe)
    total = count_replaces(probe, "-renew", "-roll", *SELECTION)
    assert total > 20

    def killed_then_rerun(kill_at: int) -> None:
        tree = tmp_path / f"k{kill_at}"
        shutil.copytree(topdir, tree)
        # When the run is killed at that write
        killed = run_killed(tree, kill_at, "-renew", "-roll", *SELECTION)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stdout, killed.stderr)
        # Then every curr that exists is a complete, verifying version
        for svc in LEAVES:
            if (tree / "certs" / svc / "curr").exists():
                assert chain_ok(tree, svc), (kill_at, svc)
        # and a plain rerun finishes the job
        rerun = run_killed(tree, 10**9, "-renew", "-roll", *SELECTION)
        assert rerun.returncode == 0, (kill_at, rerun.stdout, rerun.stderr)
        for svc in LEAVES:
            assert chain_ok(tree, svc), (kill_at, svc)
            assert not (tree / "certs" / svc / "next").exists(), (kill_at, svc)
        shutil.rmtree(tree)

    at_every_write(killed_then_rerun, total)


def test_kill_during_a_forced_renew_and_roll_keeps_the_old_curr_serving(
    tmp_path: Path, topdir: Path, mgr: RunMgr
) -> None:
    import shutil

    assert mgr("-renew", *SELECTION).returncode == 0
    args = ("-f", "-renew", "-roll", "-roll-mins", "0", "example.com:mail-ec,web-ec")
    probe = tmp_path / "probe"
    shutil.copytree(topdir, probe, symlinks=True)
    total = count_replaces(probe, *args)
    old = {svc: os.readlink(topdir / "certs" / svc / "curr") for svc in LEAVES}

    def killed_then_rerun(kill_at: int) -> None:
        tree = tmp_path / f"k{kill_at}"
        shutil.copytree(topdir, tree, symlinks=True)
        killed = run_killed(tree, kill_at, *args)
        assert killed.returncode == -signal.SIGKILL
        for svc in LEAVES:
            assert chain_ok(tree, svc), (kill_at, svc)
            # what a server reads from production is one whole version at every instant
            assert production_whole(tree, svc) == [], kill_at
        rerun = run_killed(
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

    at_every_write(killed_then_rerun, total)
