"""sslm-mgr on the example private-CA configuration, checked with the real openssl binary."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from support import RunMgr, openssl, settle, tree_snapshot, verify_output

from sslm_tasks.config.load import load_config
from sslm_tasks.lifecycle.build import check_renew
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import Workspace

SERVICES = [
    "ca/my-root",
    "ca/my-int",
    "example.com/mail-ec",
    "example.com/mail-rsa",
    "example.com/web-ec",
]


def curr(topdir: Path, svc: str) -> Path:
    return topdir / "certs" / svc / "curr"


def verify_leaf(topdir: Path, svc: str, base: Path | None = None) -> str:
    return verify_output(topdir, base or curr(topdir, svc))


def test_renew_roll_builds_verifiable_chains_in_upstream_layout(topdir: Path, mgr: RunMgr) -> None:
    # Given a fresh tree with the example configuration
    # When the main job runs
    result = mgr("-renew", "-roll")

    # Then every service succeeded and has a curr that openssl verifies to the root
    assert result.returncode == 0, result.stdout + result.stderr
    for svc in SERVICES[1:]:
        assert verify_leaf(topdir, svc).strip().endswith("OK"), verify_leaf(topdir, svc)
    # and the layout is upstream's: curr -> db/<stamp>, files present, no next after the roll
    link = os.readlink(curr(topdir, "example.com/mail-ec"))
    assert link.startswith("db/") and len(link) == len("db/20261127-18:01:52")
    for name in (
        "privkey.pem",
        "csr.pem",
        "cert.pem",
        "chain.pem",
        "fullchain.pem",
        "bundle.pem",
        "info",
    ):
        assert (curr(topdir, "example.com/mail-ec") / name).is_file(), name
    assert not (topdir / "certs/example.com/mail-ec/next").exists()


def test_outputs_have_the_requested_keys_names_and_policy_extensions(
    topdir: Path, mgr: RunMgr
) -> None:
    assert mgr("-renew").returncode == 0
    web = curr(topdir, "example.com/web-ec") / "cert.pem"
    text = openssl("x509", "-in", str(web), "-noout", "-text").stdout
    # SANs: DNS, wildcard, IPv4 and IPv6
    assert "DNS:www.example.com" in text and "DNS:*.example.com" in text
    assert "IP Address:192.0.2.10" in text and "IP Address:2001:DB8:0:0:0:0:0:10" in text
    assert "ASN1 OID: secp384r1" in text and "CA:FALSE" in text
    rsa = openssl(
        "x509", "-in", str(curr(topdir, "example.com/mail-rsa") / "cert.pem"), "-noout", "-text"
    ).stdout
    assert "Public-Key: (3072 bit)" in rsa
    root = openssl(
        "x509", "-in", str(curr(topdir, "ca/my-root") / "cert.pem"), "-noout", "-text"
    ).stdout
    assert "CA:TRUE" in root and "Certificate Sign" in root
    # the leaf's AKI is the intermediate's SKI (upstream copied its own SKI: chains broke)
    leaf_aki = openssl("x509", "-in", str(web), "-noout", "-ext", "authorityKeyIdentifier").stdout
    int_ski = openssl(
        "x509",
        "-in",
        str(curr(topdir, "ca/my-int") / "cert.pem"),
        "-noout",
        "-ext",
        "subjectKeyIdentifier",
    ).stdout
    assert int_ski.splitlines()[1].strip() in leaf_aki
    # fullchain = leaf + intermediate + root; bundle = key + fullchain
    full = (curr(topdir, "example.com/web-ec") / "fullchain.pem").read_text()
    assert full.count("BEGIN CERTIFICATE") == 3
    bundle = (curr(topdir, "example.com/web-ec") / "bundle.pem").read_text()
    assert bundle.startswith("-----BEGIN PRIVATE KEY-----") and bundle.endswith(full)


def test_private_keys_are_0600_in_0700_dirs_and_ca_keys_stay_out_of_production(
    topdir: Path, mgr: RunMgr
) -> None:
    assert mgr("-renew", env={}).returncode == 0
    for svc in SERVICES:
        version = curr(topdir, svc).resolve()
        assert stat.S_IMODE(version.stat().st_mode) == 0o700
        assert stat.S_IMODE(version.parent.stat().st_mode) == 0o700
        for name in ("privkey.pem", "bundle.pem"):
            assert stat.S_IMODE((version / name).stat().st_mode) == 0o600, (svc, name)
    prod = topdir / "prod-certs"
    assert (prod / "example.com/mail-ec/curr/privkey.pem").is_file()
    assert stat.S_IMODE((prod / "example.com/mail-ec/curr/privkey.pem").stat().st_mode) == 0o600
    assert (prod / "ca/my-int/curr/cert.pem").is_file()
    assert not list(prod.glob("ca/*/*/privkey.pem")) and not list(prod.glob("ca/*/*/bundle.pem"))


def test_status_json_reports_every_service(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew").returncode == 0
    before = tree_snapshot(topdir)
    result = mgr("-s", "--json")
    assert result.returncode == 0
    services = {f"{s['group']}:{s['service']}": s for s in json.loads(result.stdout)["services"]}
    assert set(services) == {s.replace("/", ":") for s in SERVICES}
    web = services["example.com:web-ec"]
    assert web["curr"]["lifetime_days"] == 90 and web["next"] is None
    assert "192.0.2.10" in web["curr"]["sans"] and web["renew"]["due"] is False
    # -s is read-only
    assert tree_snapshot(topdir) == before


def test_second_renew_is_a_no_op_and_a_pending_next_is_kept(topdir: Path, mgr: RunMgr) -> None:
    # Given a tree with curr for everything, settled
    assert mgr("-renew").returncode == 0
    settle(mgr)
    before = tree_snapshot(topdir / "certs")
    # When renew runs again, nothing is due
    again = mgr("-renew")
    assert again.returncode == 0
    assert tree_snapshot(topdir / "certs") == before
    # When a forced renew builds a next, a later (unforced, due) renew keeps it
    assert mgr("-f", "-renew", "example.com:web-ec").returncode == 0
    pending = os.readlink(topdir / "certs/example.com/web-ec/next")
    assert mgr("-renew", "example.com:web-ec", "-roll-mins", "100000").returncode == 0
    assert os.readlink(topdir / "certs/example.com/web-ec/next") == pending


def test_roll_waits_for_min_roll_mins_unless_forced(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew").returncode == 0
    first = os.readlink(curr(topdir, "example.com/mail-ec"))
    assert mgr("-f", "-renew", "example.com:mail-ec").returncode == 0
    too_soon = mgr("-roll", "example.com:mail-ec")
    assert too_soon.returncode == 0 and "too soon to roll" in too_soon.stdout
    assert os.readlink(curr(topdir, "example.com/mail-ec")) == first
    rolled = mgr("-roll", "-roll-mins", "0", "example.com:mail-ec")
    assert rolled.returncode == 0
    assert os.readlink(topdir / "certs/example.com/mail-ec/prev") == first
    assert os.readlink(curr(topdir, "example.com/mail-ec")) != first
    assert (
        (curr(topdir, "example.com/mail-ec") / "info")
        .read_text()
        .startswith("# mail-ec rolled to curr : ")
    )
    # production follows: next removed, curr updated
    prod = topdir / "prod-certs/example.com/mail-ec"
    assert not (prod / "next").exists()
    assert (prod / "curr/cert.pem").read_bytes() == (
        curr(topdir, "example.com/mail-ec") / "cert.pem"
    ).read_bytes()


def test_reuse_keeps_the_key_and_forced_roll_without_next_is_not_an_error(
    topdir: Path, mgr: RunMgr
) -> None:
    assert mgr("-renew").returncode == 0
    key = (curr(topdir, "example.com/mail-ec") / "privkey.pem").read_bytes()
    assert (
        mgr("-f", "-r", "-renew", "-roll", "-roll-mins", "0", "example.com:mail-ec").returncode == 0
    )
    rolled = curr(topdir, "example.com/mail-ec")
    assert (rolled / "privkey.pem").read_bytes() == key
    assert stat.S_IMODE((rolled / "privkey.pem").stat().st_mode) == 0o600
    assert mgr("-f", "-roll", "example.com:mail-ec").returncode == 0


def test_dry_run_writes_nothing(topdir: Path, mgr: RunMgr) -> None:
    before = tree_snapshot(topdir)
    result = mgr("-d", "-renew", "-roll")
    assert result.returncode == 0
    assert "would renew: no current certificate" in result.stdout
    assert tree_snapshot(topdir) == before


def test_dev_steps_each_work_alone(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew").returncode == 0
    svc = "example.com:web-ec"
    old_key = (curr(topdir, "example.com/web-ec") / "privkey.pem").read_bytes()
    # -keys alone: a build with a new key, next untouched
    assert mgr("dev", "-keys", svc).returncode == 0
    assert not (topdir / "certs/example.com/web-ec/next").exists()
    state = json.loads((topdir / "certs/example.com/web-ec/state.json").read_text())
    build = topdir / "certs/example.com/web-ec/db" / state["stamp"]
    assert (build / "privkey.pem").read_bytes() != old_key and not (build / "csr.pem").exists()
    # -csr alone: the CSR of that build
    assert mgr("dev", "-csr", svc).returncode == 0
    assert (build / "csr.pem").is_file() and not (build / "cert.pem").exists()
    # -cert alone: signed and stored as next
    assert mgr("dev", "-cert", svc).returncode == 0
    assert os.readlink(topdir / "certs/example.com/web-ec/next") == f"db/{state['stamp']}"
    assert (
        verify_leaf(topdir, "example.com/web-ec", topdir / "certs/example.com/web-ec/next")
        .strip()
        .endswith("OK")
    )
    # -ntoc alone: next becomes curr now
    assert mgr("dev", "-ntoc", svc).returncode == 0
    assert (curr(topdir, "example.com/web-ec") / "privkey.pem").read_bytes() != old_key


def test_clean_keeps_the_newest_unlinked_versions(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew").returncode == 0
    for _ in range(4):
        assert (
            mgr(
                "-f", "-renew", "-roll", "-roll-mins", "0", "-clean-keep", "2", "example.com:web-ec"
            ).returncode
            == 0
        )
    versions = sorted(p.name for p in (topdir / "certs/example.com/web-ec/db").iterdir())
    linked = {os.readlink(topdir / f"certs/example.com/web-ec/{w}")[3:] for w in ("curr", "prev")}
    # 2 unlinked kept + curr + prev
    assert len(versions) == 4 and linked <= set(versions)


def test_ca_renewal_keeps_existing_leaves_verifiable(topdir: Path, mgr: RunMgr) -> None:
    # Given leaves signed by the intermediate
    assert mgr("-renew").returncode == 0
    leaf_before = (curr(topdir, "example.com/mail-ec") / "cert.pem").read_bytes()
    # When the CAs are renewed and rolled (forced)
    assert mgr("-f", "-renew", "-roll", "-roll-mins", "0", "ca:ALL").returncode == 0
    # Then the old leaf still verifies against the new CA certificates (same CA keys)
    assert (curr(topdir, "example.com/mail-ec") / "cert.pem").read_bytes() == leaf_before
    new_int = curr(topdir, "ca/my-int") / "fullchain.pem"
    result = openssl(
        "verify",
        "-CAfile",
        str(curr(topdir, "ca/my-root") / "cert.pem"),
        "-untrusted",
        str(new_int),
        str(curr(topdir, "example.com/mail-ec") / "cert.pem"),
        check=False,
    )
    assert result.stdout.strip().endswith("OK"), result.stdout + result.stderr


def test_a_new_ca_key_makes_its_leaves_due(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew").returncode == 0
    # When the intermediate gets a new key (explicitly) and is rolled
    assert mgr("dev", "-keys", "-cert", "-ntoc", "ca:my-int").returncode == 0
    # Then the next renew re-signs its leaves, which verify with the new intermediate
    result = mgr("-renew", "-roll", "-roll-mins", "0", "example.com:ALL")
    assert result.returncode == 0 and "signing CA has a new key" in result.stdout
    for svc in SERVICES[2:]:
        assert verify_leaf(topdir, svc).strip().endswith("OK")


def test_two_runs_on_one_tree_exclude_each_other(topdir: Path, mgr: RunMgr) -> None:
    import fcntl

    assert mgr("-renew").returncode == 0
    lock = next((topdir / "certs").glob(".sslm*.lock"))
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        busy = mgr("-renew", "--lock-wait", "0.5")
    assert busy.returncode == 3 and "lock" in busy.stderr.lower()


def test_a_failing_service_does_not_stop_the_others(topdir: Path, mgr: RunMgr) -> None:
    # Given a leaf whose CA is not issued yet, selected without the CA
    result = mgr("-renew", "example.com:mail-ec,web-ec")
    # Then both fail clearly, exit is non-zero, and nothing was written for them
    assert result.returncode == 1
    assert "signing_ca = 'my-int'" in result.stdout and "no current certificate" in result.stdout
    assert not (topdir / "certs/example.com/mail-ec").exists()
    # When the CAs exist, the same run succeeds for both
    assert mgr("-renew", "ca:ALL").returncode == 0
    assert mgr("-renew", "example.com:mail-ec,web-ec").returncode == 0


def test_dev_copy_and_csr_keep_the_current_key(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew").returncode == 0
    key = (curr(topdir, "example.com/web-ec") / "privkey.pem").read_bytes()
    # -copy alone: the build in progress holds curr's key
    assert mgr("dev", "-copy", "example.com:web-ec").returncode == 0
    state = json.loads((topdir / "certs/example.com/web-ec/state.json").read_text())
    build = topdir / "certs/example.com/web-ec/db" / state["stamp"]
    assert (build / "privkey.pem").read_bytes() == key
    assert stat.S_IMODE((build / "privkey.pem").stat().st_mode) == 0o600
    # -cert alone continues that build with the same key
    assert mgr("dev", "-cert", "example.com:web-ec").returncode == 0
    assert (topdir / "certs/example.com/web-ec/next/privkey.pem").read_bytes() == key


def test_fsr_is_its_own_dev_option_not_f_s_r(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew").returncode == 0
    settle(mgr)
    before = tree_snapshot(topdir / "certs")
    # With no servers configured there is nothing to restart, and nothing is renewed
    # (read as -f -s -r it would have shown the status and renewed nothing either, so check
    # the report: a dev run, not a status listing)
    result = mgr("dev", "-fsr", "example.com:web-ec")
    assert result.returncode == 0, result.stderr
    assert "Certs to production" in result.stdout and "expires:" not in result.stdout
    assert tree_snapshot(topdir / "certs") == before


def test_clean_all_reaches_services_not_selected(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew").returncode == 0
    for _ in range(3):
        assert mgr("-f", "-renew", "-roll", "-roll-mins", "0", "example.com:web-ec").returncode == 0
    db = topdir / "certs/example.com/web-ec/db"
    assert len(list(db.iterdir())) == 4
    # a run on another service with --clean-all and keep 1 also cleans web-ec
    assert mgr("-renew", "-clean-all", "-clean-keep", "1", "ca:my-root").returncode == 0
    assert len(list(db.iterdir())) == 3  # curr + prev + one unlinked


def test_dry_run_says_a_first_certificate_becomes_curr(topdir: Path, mgr: RunMgr) -> None:
    result = mgr("-d", "-renew", "-roll", "example.com:web-ec")
    assert "would make the first certificate curr at once" in result.stdout
    assert "nothing to roll" not in result.stdout


def test_status_names_a_service_with_a_broken_link_and_shows_the_others(
    topdir: Path, mgr: RunMgr
) -> None:
    assert mgr("-renew").returncode == 0
    link = topdir / "certs/example.com/web-ec/curr"
    link.unlink()
    link.symlink_to("/etc")
    result = mgr("-s")
    assert result.returncode == 1
    assert "example.com:web-ec: Error:" in result.stdout and "mail-ec" in result.stdout
    # and a run still serves every other service, failing only that one
    run = mgr("-f", "-renew")
    assert run.returncode == 1
    assert "Failed to perform required task(s): example.com:web-ec" in run.stdout
    assert verify_leaf(topdir, "example.com/mail-ec").strip().endswith("OK")


def test_a_ca_rekeyed_while_a_workspace_lives_makes_its_leaves_due(
    topdir: Path, mgr: RunMgr
) -> None:
    # Given issued leaves, and one workspace (a run, or a task) that checked one of them
    assert mgr("-renew").returncode == 0
    config, refs = load_config(["example.com:mail-ec"], conf_dir=topdir / "conf.d")
    ws = Workspace(config=config)
    assert not check_renew(ServiceContext(ws, refs[0]), record=False).build
    # When the intermediate gets a new key and is rolled meanwhile
    assert mgr("dev", "-keys", "-cert", "-ntoc", "ca:my-int").returncode == 0
    # Then the same workspace sees the new CA certificate, not the one it read before
    check = check_renew(ServiceContext(ws, refs[0]), record=False)
    assert check.build and "signing CA has a new key" in check.reason
