"""An ssl-mgr tree taken over as docs/migration.md says, step by step (issue 13, items 2-4).

The tree is ssl-mgr's own shape (``upstream_tree``): local CAs whose certificates name their
own key as authority key id, subjects of seven attributes with empty ones, local-time version
names, CA keys in production, ``dh/``, and a ``next`` that ``-d`` left incomplete. Its TLSA
records are served by the lab's signed BIND, as they were before sslm came.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from lab_dns import DnsLab
from support import openssl, run_tool, tree_snapshot
from upstream_tree import DANE, GROUP, INCOMPLETE, UpstreamTree, make_upstream_tree

from sslm_tasks.crypto.tlsa import tlsa_data

pytestmark = pytest.mark.integration

OWNER = f"_443._tcp.www.{GROUP}"
ROLL_TIMEOUT_S = 60


@pytest.fixture
def tree(tmp_path: Path, dns_lab: DnsLab) -> UpstreamTree:
    made = make_upstream_tree(
        tmp_path / "ssl-mgr",
        primary=dns_lab.primary,
        port=dns_lab.port,
        refresh=dns_lab.refresh_script,
        tlsa_dir=dns_lab.tlsa_dir,
    )
    refreshed = dns_lab.refresh(GROUP)
    assert refreshed.returncode == 0, refreshed.stderr
    return made


def mgr(tree: UpstreamTree, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_tool("sslm-mgr", *args, cwd=tree.top)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def verify(tree: UpstreamTree, service: str) -> subprocess.CompletedProcess[str]:
    return run_tool("sslm-verify", str(tree.certs / service / "curr"), cwd=tree.top)


def record(tree: UpstreamTree, service: str, which: str = "curr") -> str:
    pem = (tree.certs / GROUP / service / which / "cert.pem").read_bytes()
    return f"3 1 1 {tlsa_data(x509.load_pem_x509_certificate(pem), 1, 1)}"


def served(lab: DnsLab, wanted: str, *, present: bool) -> bool:
    """Whether both name servers serve (or no longer serve) ``wanted`` at :data:`OWNER`."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = [{r.to_text().lower() for r in lab.query(OWNER, "TLSA", s)} for s in lab.servers]
        if all((wanted in s) == present for s in got):
            return True
        time.sleep(0.2)
    return False


def block(output: str, service: str) -> str:
    """The lines of a ``-d`` report that belong to ``service``."""
    lines = output.splitlines()
    start = lines.index(service)
    rest = [i for i, line in enumerate(lines[start + 1 :], start + 1) if not line.startswith(" ")]
    return "\n".join(lines[start : rest[0] if rest else len(lines)])


def state(tree: UpstreamTree, service: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(
        (tree.certs / GROUP / service / "state.json").read_text()
    )
    return loaded


def test_an_upstream_tree_is_taken_over_as_the_migration_guide_says(
    tree: UpstreamTree, dns_lab: DnsLab
) -> None:
    old_web = record(tree, DANE)
    assert served(dns_lab, old_web, present=True)
    incomplete = os.readlink(tree.certs / GROUP / INCOMPLETE / "next").removeprefix("db/")
    dh_before = tree_snapshot(tree.prod / GROUP / "dh")
    root_before = (tree.certs / "ca/my-root/curr/cert.pem").read_bytes()

    # Step 4: -s reads the tree as it is, and writes nothing
    before = tree_snapshot(tree.top)
    status = mgr(tree, "-s")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("phase : idle") == 4, status.stdout
    assert tree_snapshot(tree.top) == before

    # Step 5: the dry runs say what each service would do; the incomplete next is named for its
    # service (not a traceback), the services after it are still shown, and nothing is written
    renew = mgr(tree, "-d", "-renew")
    assert renew.returncode == 0, renew.stdout + renew.stderr
    assert "would renew" in block(renew.stdout, f"{GROUP}:{DANE}")
    for args in (("-d", "-roll"), ("dev", "-d", "-ntoc"), ("-d", "-f", "-roll")):
        dry = mgr(tree, *args)
        assert dry.returncode == 1, (args, dry.stdout, dry.stderr)
        said = block(dry.stdout, f"{GROUP}:{INCOMPLETE}")
        assert f"Error: {GROUP}:{INCOMPLETE}: next {incomplete} is incomplete" in said, args
        assert "build a new one with -f -renew" in said
        assert "nothing to roll: no next" in block(dry.stdout, f"{GROUP}:{DANE}"), args
    assert tree_snapshot(tree.top) == before

    # Step 6: a run without an action takes production over: the CA keys leave it, dh/ stays,
    # and the group's TLSA file is there as the store has it
    takeover = mgr(tree)
    assert takeover.returncode == 0, takeover.stdout + takeover.stderr
    for ca in ("my-root", "my-int"):
        assert sorted(p.name for p in (tree.prod / "ca" / ca / "curr").iterdir()) == [
            "cert.pem",
            "chain.pem",
            "csr.pem",
            "fullchain.pem",
            "info",
        ]
    assert tree_snapshot(tree.prod / GROUP / "dh") == dh_before
    tlsa_file = f"{GROUP}/tlsa.{GROUP}"
    assert (tree.prod / tlsa_file).read_bytes() == (tree.certs / tlsa_file).read_bytes()

    # Step 7: the chains of ssl-mgr's local CAs do not verify
    assert verify(tree, "ca/my-root").returncode == 0
    for service in ("ca/my-int", f"{GROUP}/{DANE}"):
        failed = verify(tree, service)
        assert failed.returncode != 0 and "authority key id" in failed.stdout, failed.stdout
    # When a service is renewed before its CA (what this guide said before), its build fails,
    # saying what to do
    early = mgr(tree, "-f", "-renew", f"{GROUP}:{DANE}")
    assert early.returncode == 1, early.stdout
    assert "its signing CA ca:my-int does not verify itself" in early.stdout, early.stdout
    assert "sslm-mgr -f -renew -roll ca:my-int" in early.stdout
    failed_build = str(state(tree, DANE)["stamp"])
    # and -f -renew starts a fresh build rather than resuming the failed one
    again = mgr(tree, "-f", "-renew", f"{GROUP}:{DANE}")
    assert again.returncode == 1
    stale_build = str(state(tree, DANE)["stamp"])
    assert stale_build != failed_build and state(tree, DANE)["phase"] == "failed"
    # When the intermediate is re-issued (its key kept; the root left as it is)
    fixed = mgr(tree, "-f", "-renew", "-roll", "ca:my-int")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert verify(tree, "ca/my-int").returncode == 0
    assert (tree.certs / "ca/my-root/curr/cert.pem").read_bytes() == root_before
    # Then the services it signed are due, and the failed builds start afresh
    renewed = mgr(tree, "-renew", GROUP)
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert f"signing CA changed since build {stale_build} began" in renewed.stdout
    assert "signing CA has a new subject" in renewed.stdout  # mail, whose build never failed
    new_web = record(tree, DANE, "next")
    # and the new TLSA record goes out beside the old, in DNS and in the production copy
    assert served(dns_lab, new_web, present=True) and served(dns_lab, old_web, present=True)
    copy = (tree.prod / tlsa_file).read_text().lower()
    assert copy == (tree.certs / tlsa_file).read_text().lower()
    assert new_web.split()[-1] in copy and old_web.split()[-1] in copy
    # and once DNS serves the new TLSA record beside the old, -roll makes them curr
    deadline = time.monotonic() + ROLL_TIMEOUT_S
    while (tree.certs / GROUP / DANE / "next").exists():
        assert time.monotonic() < deadline, "the roll did not come"
        rolled = mgr(tree, "-roll", GROUP)
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        time.sleep(0.5)
    assert not (tree.certs / GROUP / INCOMPLETE / "next").exists()
    assert os.readlink(tree.certs / GROUP / INCOMPLETE / "curr") != incomplete
    root = tree.certs / "ca/my-root/curr/cert.pem"
    for service in (INCOMPLETE, DANE):
        assert verify(tree, f"{GROUP}/{service}").returncode == 0
        version = tree.certs / GROUP / service / "curr"
        checked = openssl(
            "verify",
            "-CAfile",
            str(root),
            "-untrusted",
            str(version / "chain.pem"),
            str(version / "cert.pem"),
            check=False,
        )
        assert checked.stdout.strip().endswith("OK"), checked.stdout + checked.stderr
    # and DNS and the production copy of the TLSA file carry the new key, not the old
    assert served(dns_lab, new_web, present=True) and served(dns_lab, old_web, present=False)
    copy = (tree.prod / tlsa_file).read_text().lower()
    assert copy == (tree.certs / tlsa_file).read_text().lower()
    assert new_web.split()[-1] in copy and old_web.split()[-1] not in copy

    # When the root is re-issued some day (same key, but sslm's subject: ssl-mgr's seven
    # attributes become C, O, CN), what it signed names an issuer that is no more
    reissued = mgr(tree, "-f", "-renew", "-roll", "ca:my-root")
    assert reissued.returncode == 0, reissued.stdout + reissued.stderr
    # Then the intermediate is due at once, though its key id still matches
    due = mgr(tree, "-d", "-renew", "ca:my-int")
    assert "would renew: signing CA has a new subject" in due.stdout, due.stdout
