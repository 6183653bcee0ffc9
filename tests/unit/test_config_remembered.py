"""config.remembered: a load of the whole tree is taken from the store only while no file of the
configuration tree and no code changed, and what lies outside the tree is checked every time."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from support import REPO

from sslm_tasks.config import remembered
from sslm_tasks.config.load import Config, load_config, remember_config
from sslm_tasks.errors import ConfigError
from sslm_tasks.store import identity

HMAC_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "conf.d", tmp_path / "conf.d")
    (tmp_path / "certs").mkdir(mode=0o750)
    main = tmp_path / "conf.d" / "ssl-mgr.conf"  # the group's directory is scanned
    main.write_text(main.read_text().replace("['mail-ec', 'mail-rsa', 'web-ec']", "['ALL']"))
    # Files written a moment ago are trusted (the racy rule has tests of its own).
    monkeypatch.setattr(identity, "RACY_S", 0.0)
    time.sleep(0.05)  # past the kernel's timestamp tick of the copies
    return tmp_path / "conf.d"


def kept(conf: Path) -> Path:
    return conf.parent / "certs" / remembered.FILE_NAME


def recalled(conf: Path) -> object | None:
    return remembered.recall(conf.parent / "certs", conf)


def remember(conf: Path) -> Config:
    config, refs = load_config([], conf_dir=conf)
    remember_config(config, refs)
    assert kept(conf).is_file()
    assert recalled(conf) is not None
    return config


def same(one: Config, two: Config) -> bool:
    return (one.main, one.cas, one.services, one.strays) == (
        two.main,
        two.cas,
        two.services,
        two.strays,
    ) and {ref: str(err) for ref, err in one.broken.items()} == {
        ref: str(err) for ref, err in two.broken.items()
    }


def test_a_remembered_load_is_the_load_of_the_files(conf: Path) -> None:
    # Given a wildcard-found service that fails alone and a stray copy beside the services
    group = conf / "example.com"
    (group / "web-ec.bak").write_text((group / "web-ec").read_text())
    (group / "broken").write_text(
        (group / "web-ec").read_text().replace("web-ec", "broken") + "x = 1\n"
    )
    time.sleep(0.05)
    # When a run remembers its load and the next load of the whole tree recalls it
    fresh, fresh_refs = load_config([], conf_dir=conf)
    remember_config(fresh, fresh_refs)
    assert recalled(conf) is not None
    again, again_refs = load_config([], conf_dir=conf)
    # Then it is the same configuration, order, failures and warnings
    assert same(fresh, again) and fresh_refs == again_refs
    assert again.broken and again.strays
    # and the file is the running user's alone
    assert kept(conf).stat().st_mode & 0o777 == 0o600


def test_a_same_size_edit_of_a_service_file_is_read(conf: Path) -> None:
    remember(conf)
    service = conf / "example.com" / "mail-ec"
    before = service.stat()
    service.write_text(service.read_text().replace("OU = 'IT Mail'", "OU = 'IT Post'"))
    os.utime(service, ns=(before.st_atime_ns, before.st_mtime_ns))  # even with its old time
    assert service.stat().st_size == before.st_size
    assert recalled(conf) is None
    config, _ = load_config([], conf_dir=conf)
    assert any(svc.x509.ou == "IT Post" for svc in config.services.values())


def test_a_file_added_to_a_scanned_group_or_a_main_file_edited_is_read(conf: Path) -> None:
    remember(conf)
    (conf / "example.com" / "notes").write_text("not a service\n")
    assert recalled(conf) is None
    remember(conf)
    main = conf / "ssl-mgr.conf"
    main.write_text(main.read_text() + "\n")
    assert recalled(conf) is None


def test_an_invalid_edit_after_a_remembered_load_is_an_error(conf: Path) -> None:
    remember(conf)
    service = conf / "example.com" / "web-ec"
    service.write_text(service.read_text() + "renew_expire_days = 'soon'\n")
    config, refs = load_config([], conf_dir=conf)
    # found by the group's wildcard, it fails alone, with its own error
    assert [str(ref) for ref in config.broken] == ["example.com:web-ec"]
    assert "renew_expire_days" in str(next(iter(config.broken.values())))
    assert "web-ec" not in {ref.service for ref in refs}


def test_a_file_changed_while_the_load_read_it_is_not_remembered(conf: Path) -> None:
    config, refs = load_config([], conf_dir=conf)
    started = time.time_ns()
    time.sleep(0.05)
    service = conf / "example.com" / "web-ec"
    service.write_text(service.read_text() + "\n")  # after the load began
    places = [(str(conf / "example.com"), ["web-ec"])]
    remembered.keep(conf.parent / "certs", conf, places, (config, refs), read_since_ns=started)
    assert not kept(conf).exists()


def test_what_lies_outside_the_tree_is_checked_at_every_load(conf: Path) -> None:
    # Given an ACME CA whose EAB key file is fine when the load is remembered
    key = conf.parent / "eab.key"
    key.write_text(HMAC_KEY + "\n")
    key.chmod(0o600)
    cas = conf / "ca-info.conf"
    cas.write_text(
        cas.read_text()
        + "\n[zerossl]\n    ca_type = 'acme'\n"
        + "    ca_acme_directory = 'https://acme.zerossl.com/v2/DV90'\n"
        + "    ca_eab_kid = 'kid-1'\n    ca_eab_hmac_key_file = 'eab.key'\n"
    )
    time.sleep(0.05)
    remember(conf)
    # When the key file becomes readable by others, the load refuses it though remembered
    key.chmod(0o644)
    assert recalled(conf) is not None
    with pytest.raises(ConfigError, match="ca_eab_hmac_key_file"):
        load_config([], conf_dir=conf)
    key.chmod(0o600)
    # and a file where the production tree must go is refused too
    (conf.parent / "prod-certs").write_text("")
    with pytest.raises(ConfigError, match="prod_cert_dir"):
        load_config([], conf_dir=conf)
    # while a reader that may not read secrets still loads (its checks are its own)
    (conf.parent / "prod-certs").unlink()
    key.chmod(0o644)
    config, _ = load_config([], conf_dir=conf, read_secrets=False)
    assert "zerossl" in config.cas


def test_a_file_that_is_not_the_users_own_is_not_used(conf: Path) -> None:
    remember(conf)
    path = kept(conf)
    path.chmod(0o620)  # writable by the group
    assert recalled(conf) is None
    path.chmod(0o600)
    assert recalled(conf) is not None
    elsewhere = path.with_name("elsewhere")
    path.rename(elsewhere)
    path.symlink_to(elsewhere.name)  # a link, even to a good file
    assert recalled(conf) is None


def test_a_torn_file_or_other_code_is_a_miss(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remember(conf)
    path = kept(conf)
    whole = path.read_bytes()
    path.write_bytes(whole[:-100])
    assert recalled(conf) is None
    # a byte changed where unpickling would not notice (a setting's text)
    assert b"IT Mail" in whole
    path.write_bytes(whole.replace(b"IT Mail", b"IT Mali"))
    assert recalled(conf) is None
    path.write_bytes(whole)
    assert recalled(conf) is not None
    monkeypatch.setattr(remembered, "code_identity", lambda: "another release")
    assert recalled(conf) is None


def test_another_users_file_or_store_is_not_used(conf: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test changes owners: run the suite as root (as CI does)")
    remember(conf)
    os.chown(kept(conf), 65534, -1)  # another user's file
    assert recalled(conf) is None
    kept(conf).unlink()
    os.chown(conf.parent / "certs", 65534, -1)  # another user's store: nothing left in it
    remember_config(*load_config([], conf_dir=conf))
    assert not kept(conf).exists()
    os.chown(conf.parent / "certs", 0, -1)
    remember(conf)


def test_only_a_load_that_remembers_writes_and_a_selection_never_recalls(conf: Path) -> None:
    load_config([], conf_dir=conf)
    assert not kept(conf).exists()
    # A selection's load is never kept, nor a remembered load kept again
    remember_config(*load_config(["example.com:web-ec"], conf_dir=conf))
    assert not kept(conf).exists()
    remember(conf)
    before = kept(conf).stat()
    remember_config(*load_config([], conf_dir=conf))
    assert kept(conf).stat().st_ino == before.st_ino
    # While the whole tree's load is remembered, a selection is loaded from its files: its
    # own services (the CAs it needs beside them), not the remembered tree's
    config, refs = load_config(["example.com:web-ec"], conf_dir=conf)
    assert [str(ref) for ref in refs] == ["example.com:web-ec"]
    assert {str(ref) for ref in config.services} == {
        "example.com:web-ec",
        "ca:my-int",
        "ca:my-root",
    }


def test_a_killed_writes_temp_file_goes_at_the_next_keep_a_fresh_one_stays(conf: Path) -> None:
    certs = conf.parent / "certs"
    stale = certs / f"{remembered.FILE_NAME}.tmp-0123456789abcdef"
    fresh = certs / f"{remembered.FILE_NAME}.tmp-fedcba9876543210"
    other = certs / "state.json.tmp-0123456789abcdef"  # not this module's: never touched
    for path in (stale, fresh, other):
        path.write_bytes(b"half a write")
    an_hour_ago = time.time() - 3600
    for path in (stale, other):
        os.utime(path, (an_hour_ago, an_hour_ago))
    remember(conf)
    assert not stale.exists()
    assert fresh.exists() and other.exists()
