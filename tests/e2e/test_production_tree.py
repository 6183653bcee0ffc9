"""The production tree never reaches the store, never follows a link it did not make, and never
deletes a file it did not write (issue 10, item 1)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from support import RunMgr, openssl, tree_snapshot

from sslm_tasks.config.load import load_config
from sslm_tasks.lifecycle import production
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store import confined, identity
from sslm_tasks.store.layout import ServiceRef

WEB = "example.com/web-ec"


def set_global(topdir: Path, key: str, value: str) -> None:
    conf = topdir / "conf.d/ssl-mgr.conf"
    lines = [
        f"    {key} = {value}" if line.strip().startswith(f"{key} ") else line
        for line in conf.read_text().splitlines()
    ]
    conf.write_text("\n".join(lines) + "\n")


def key_matches_cert(version: Path) -> bool:
    key_pub = openssl("pkey", "-in", str(version / "privkey.pem"), "-pubout").stdout
    cert_pub = openssl("x509", "-in", str(version / "cert.pem"), "-noout", "-pubkey").stdout
    return key_pub == cert_pub


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("prod_cert_dir", "'certs'"),
        ("prod_cert_dir", "'certs/ca'"),
        ("prod_cert_dir", "'.'"),
        ("prod_cert_dir", "'/'"),
        ("logdir", "'certs/logs'"),
        ("logdir", "'/'"),
    ],
)
def test_a_tree_that_overlaps_the_store_is_refused_before_anything_is_touched(
    topdir: Path, mgr: RunMgr, key: str, value: str
) -> None:
    # Given an issued tree whose CA keys are in the store
    assert mgr("-renew", "-roll").returncode == 0
    ca_key = topdir / "certs/ca/my-root/curr/privkey.pem"
    assert ca_key.is_file()
    set_global(topdir, key, value)
    before = tree_snapshot(topdir)
    # When a forced renew and roll runs with that tree
    result = mgr("-f", "-renew", "-roll")
    # Then it stops with one line naming the file, the key and the value, and changes nothing
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line
    assert f"ssl-mgr.conf: globals.{key} = {value}" in line, line
    assert tree_snapshot(topdir) == before
    assert ca_key.is_file()


def test_a_link_planted_at_a_production_version_is_not_followed(
    topdir: Path, mgr: RunMgr, tmp_path: Path
) -> None:
    # Given an issued tree, and prod-certs/<g>/<s>/curr replaced by a link to someone's directory
    assert mgr("-renew", "-roll").returncode == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    curr = topdir / "prod-certs" / WEB / "curr"
    for name in os.listdir(curr):
        (curr / name).unlink()
    curr.rmdir()
    curr.symlink_to(victim)
    # When a run syncs production
    result = mgr("-renew")
    # Then nothing was written into or deleted from the link's target
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(os.listdir(victim)) == ["precious"]
    # production holds a real, whole curr again, the store's
    assert not curr.is_symlink() and curr.is_dir()
    assert (curr / "cert.pem").read_bytes() == (
        topdir / "certs" / WEB / "curr/cert.pem"
    ).read_bytes()
    assert key_matches_cert(curr)
    # and the planted link was kept aside, not removed
    kept = list(curr.parent.glob("curr.kept-*"))
    assert len(kept) == 1 and kept[0].is_symlink() and os.readlink(kept[0]) == str(victim)


def test_a_file_sslm_did_not_write_is_kept_when_its_version_changes(
    topdir: Path, mgr: RunMgr
) -> None:
    # Given an issued tree with an operator's file inside a production version
    assert mgr("-renew", "-roll").returncode == 0
    curr = topdir / "prod-certs" / WEB / "curr"
    (curr / "operator-notes.txt").write_text("mine")
    # When the version changes
    result = mgr("-f", "-renew", "-roll", "-roll-mins", "0", "example.com:web-ec")
    assert result.returncode == 0, result.stdout + result.stderr
    # Then curr holds only the new version, and the operator's file still exists beside it
    assert "operator-notes.txt" not in os.listdir(curr)
    assert key_matches_cert(curr)
    kept = list(curr.parent.glob("curr.kept-*/operator-notes.txt"))
    assert [path.read_text() for path in kept] == ["mine"]


def test_a_linked_group_directory_fails_that_group_only(
    topdir: Path, mgr: RunMgr, tmp_path: Path
) -> None:
    # Given prod-certs/example.com is a link to someone's directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (topdir / "prod-certs").mkdir()
    (topdir / "prod-certs/example.com").symlink_to(elsewhere)
    # When the first run issues everything
    result = mgr("-renew", "-roll")
    # Then the example.com services fail naming the link, the CAs are mirrored, exit 1
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{topdir / 'prod-certs/example.com'}: it is a link" in result.stdout
    assert os.listdir(elsewhere) == []
    assert (topdir / "prod-certs/ca/my-root/curr/cert.pem").is_file()


def test_the_ca_group_never_ships_private_keys(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew", "-roll").returncode == 0
    for ca in ("my-root", "my-int"):
        shipped = os.listdir(topdir / "prod-certs/ca" / ca / "curr")
        assert "cert.pem" in shipped
        assert "privkey.pem" not in shipped and "bundle.pem" not in shipped


def test_without_an_atomic_exchange_the_switch_still_leaves_one_whole_version(
    topdir: Path, mgr: RunMgr, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an issued tree with a new next (renewed, not rolled)
    assert mgr("-renew", "-roll").returncode == 0
    assert mgr("-f", "-renew", "example.com:web-ec").returncode == 0
    config, _ = load_config(["example.com:web-ec"], conf_dir=topdir / "conf.d")
    ctx = ServiceContext(Workspace(config=config), ServiceRef("example.com", "web-ec"))
    prod = topdir / "prod-certs" / WEB
    (prod / "next" / "cert.pem").write_text("damaged")
    # When the system has no RENAME_EXCHANGE
    monkeypatch.setattr(confined, "exchange", lambda *_: False)
    # Then the sync repairs the damaged version by two renames, leaving nothing hidden behind
    assert production.sync_service(ctx) is True
    assert key_matches_cert(prod / "next")
    assert sorted(os.listdir(prod)) == ["curr", "next"]
    assert production.sync_service(ctx) is False


def test_a_corrupt_state_record_stays_with_its_service(topdir: Path, mgr: RunMgr) -> None:
    # Given an issued tree where one service's record is garbage
    assert mgr("-renew", "-roll").returncode == 0
    state = topdir / "certs/example.com/mail-ec/state.json"
    state.write_text('{"phase": "issu')
    # When every service is forced to renew
    result = mgr("-f", "-renew", "-roll", "-roll-mins", "0")
    # Then the run goes through all of them, the bad record kept aside and rebuilt
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    kept = list(state.parent.glob("state.json.corrupt-*"))
    assert [path.read_text() for path in kept] == ['{"phase": "issu']
    for svc in ("example.com/mail-ec", "example.com/mail-rsa", "example.com/web-ec"):
        assert len(list((topdir / "certs" / svc / "db").iterdir())) == 2, svc
    # and -s says what happened to it
    status = mgr("-s", "example.com:mail-ec")
    assert "state record was unreadable" in status.stdout, status.stdout


def _web_context(topdir: Path) -> ServiceContext:
    config, _ = load_config([WEB.replace("/", ":")], conf_dir=topdir / "conf.d")
    return ServiceContext(Workspace(config=config), ServiceRef("example.com", "web-ec"))


def _same_size_edit(path: Path) -> None:
    """Change one character of the file in place (same inode, same size)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] = ord("A") if data[middle] != ord("A") else ord("B")
    with path.open("r+b") as handle:
        handle.write(bytes(data))


def test_a_production_copy_seen_whole_is_not_read_again_until_something_changes(
    topdir: Path, mgr: RunMgr, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an issued tree whose production copy of web-ec was checked and found whole, long
    # enough after its last write for the check to be remembered (no racy window here)
    assert mgr("-renew", "-roll").returncode == 0
    monkeypatch.setattr(identity, "RACY_S", 0.0)
    assert production.sync_service(_web_context(topdir)) is False
    state = topdir / "certs" / WEB / "state.json"
    assert json.loads(state.read_text())["prod_seen"] is not None
    # When nothing changed, the next sync does not read a production file
    with monkeypatch.context() as reads:
        reads.setattr(confined, "read_file", _refused)
        assert production.sync_service(_web_context(topdir)) is False
    # But a same-size edit made in place afterwards is found and repaired by the next sync
    prod_cert = topdir / "prod-certs" / WEB / "curr" / "cert.pem"
    time.sleep(0.05)  # past the kernel's timestamp tick
    _same_size_edit(prod_cert)
    assert production.sync_service(_web_context(topdir)) is True
    assert prod_cert.read_bytes() == (topdir / "certs" / WEB / "curr" / "cert.pem").read_bytes()
    # and so is a file dropped beside the copy, and a store file edited in place
    time.sleep(0.05)
    assert production.sync_service(_web_context(topdir)) is False  # seen again, remembered
    stray = topdir / "prod-certs" / WEB / "curr" / "stray.pem"
    stray.write_text("not sslm's")
    assert production.sync_service(_web_context(topdir)) is True
    assert not (topdir / "prod-certs" / WEB / "curr" / "stray.pem").exists()
    time.sleep(0.05)
    assert production.sync_service(_web_context(topdir)) is False
    _same_size_edit(topdir / "certs" / WEB / "curr" / "chain.pem")
    assert production.sync_service(_web_context(topdir)) is True


def test_a_copy_written_just_now_is_compared_byte_for_byte_next_time(
    topdir: Path, mgr: RunMgr
) -> None:
    # Given a production copy sslm has just written (inside the racy window)
    assert mgr("-renew", "-roll").returncode == 0
    # Then no identity is remembered for it: a clock coarser than the next edit could hide one
    assert json.loads((topdir / "certs" / WEB / "state.json").read_text())["prod_seen"] is None


def _refused(*_: object) -> bytes:
    raise AssertionError("a production file was read although nothing changed")
