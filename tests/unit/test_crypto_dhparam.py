"""DH parameter files: named groups from openssl, classic sizes that age, the dhparam.pem link."""

from __future__ import annotations

import os
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sslm_tasks.crypto.dhparam import (
    generate_classic,
    generate_named,
    refresh_dir,
)
from sslm_tasks.errors import CryptoError, StoreError

OPENSSL = "/usr/bin/openssl"
NOW = datetime.now(UTC)
# One named group and one small classic size keep the suite fast.
KEYS = ["ffdhe2048", "512"]


def param_text(path: Path) -> str:
    done = subprocess.run(
        [OPENSSL, "pkeyparam", "-in", str(path), "-noout", "-text"],
        capture_output=True,
        check=False,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def age(path: Path, days: float) -> None:
    """Set ``path``'s mtime ``days`` into the past."""
    then = (NOW - timedelta(days=days)).timestamp()
    os.utime(path, (then, then))


def test_named_group_is_the_rfc7919_group(tmp_path: Path) -> None:
    # When I generate a named group
    path = tmp_path / "g.pem"
    path.write_bytes(generate_named("ffdhe3072"))
    # Then openssl recognises it as that fixed group
    text = param_text(path)
    assert "DH Parameters: (3072 bit)" in text
    assert "GROUP: ffdhe3072" in text


def test_classic_parameters_have_the_size_and_generator_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "c.pem"
    path.write_bytes(generate_classic(512))
    assert path.read_bytes().startswith(b"-----BEGIN DH PARAMETERS-----")
    text = param_text(path)
    assert "DH Parameters: (512 bit)" in text
    assert "G:    2 (0x2)" in text


@pytest.mark.parametrize("bad", ["ffdhe1024", "modp2048", ""])
def test_unknown_named_groups_are_refused(bad: str) -> None:
    with pytest.raises(CryptoError):
        generate_named(bad)


def test_classic_parameters_below_512_bits_are_refused() -> None:
    with pytest.raises(CryptoError):
        generate_classic(256)


def test_refresh_writes_missing_files_and_links_the_first_key(tmp_path: Path) -> None:
    # Given an empty production directory
    # When I refresh it with a named group first
    written = refresh_dir(tmp_path, KEYS, max_age_days=120, force=False, now=NOW)
    # Then both files exist, readable by openssl, in a 0750 dh/ dir
    dh_dir = tmp_path / "dh"
    assert written == ["dh-ffdhe2048.pem", "dh512.pem"]
    assert "GROUP: ffdhe2048" in param_text(dh_dir / "dh-ffdhe2048.pem")
    assert "(512 bit)" in param_text(dh_dir / "dh512.pem")
    assert stat.S_IMODE(dh_dir.stat().st_mode) == 0o750
    # And dhparam.pem points at the named group (upstream crashed here and made no link)
    link = dh_dir / "dhparam.pem"
    assert link.is_symlink()
    assert os.readlink(link) == "dh-ffdhe2048.pem"
    # And no temp file was left behind
    assert sorted(p.name for p in dh_dir.iterdir()) == [
        "dh-ffdhe2048.pem",
        "dh512.pem",
        "dhparam.pem",
    ]


def test_refresh_is_a_no_op_when_everything_is_current(tmp_path: Path) -> None:
    refresh_dir(tmp_path, KEYS, max_age_days=120, force=False, now=NOW)
    before = {p.name: p.read_bytes() for p in (tmp_path / "dh").glob("dh*.pem")}
    assert refresh_dir(tmp_path, KEYS, max_age_days=120, force=False, now=NOW) == []
    assert {p.name: p.read_bytes() for p in (tmp_path / "dh").glob("dh*.pem")} == before


def test_old_classic_files_are_regenerated_but_named_groups_are_not(tmp_path: Path) -> None:
    # Given both files, aged past the limit
    refresh_dir(tmp_path, KEYS, max_age_days=120, force=False, now=NOW)
    classic, named = tmp_path / "dh" / "dh512.pem", tmp_path / "dh" / "dh-ffdhe2048.pem"
    old_classic = classic.read_bytes()
    age(classic, 121)
    age(named, 121)
    named_mtime = named.stat().st_mtime
    # When I refresh again
    written = refresh_dir(tmp_path, KEYS, max_age_days=120, force=False, now=NOW)
    # Then only the classic file is new (random primes: new content); the group is untouched
    assert written == ["dh512.pem"]
    assert classic.read_bytes() != old_classic
    assert named.stat().st_mtime == named_mtime


def test_force_rewrites_everything(tmp_path: Path) -> None:
    refresh_dir(tmp_path, KEYS, max_age_days=120, force=False, now=NOW)
    written = refresh_dir(tmp_path, KEYS, max_age_days=120, force=True, now=NOW)
    assert written == ["dh-ffdhe2048.pem", "dh512.pem"]


def test_link_follows_the_first_key_and_moves_when_keys_change(tmp_path: Path) -> None:
    # Given a numeric size first
    refresh_dir(tmp_path, ["512", "ffdhe2048"], max_age_days=120, force=False, now=NOW)
    link = tmp_path / "dh" / "dhparam.pem"
    assert os.readlink(link) == "dh512.pem"
    # When the preference changes / Then the link moves, and nothing is regenerated
    assert refresh_dir(tmp_path, ["ffdhe2048"], max_age_days=120, force=False, now=NOW) == []
    assert os.readlink(link) == "dh-ffdhe2048.pem"


def test_duplicate_keys_are_generated_once(tmp_path: Path) -> None:
    written = refresh_dir(
        tmp_path, ["ffdhe2048", "ffdhe2048", "512", "0512"], max_age_days=1, force=False, now=NOW
    )
    assert written == ["dh-ffdhe2048.pem", "dh512.pem"]


@pytest.mark.parametrize("keys", [["ffdhe2048", "bogus"], ["256"], []])
def test_bad_keys_are_refused_before_anything_is_written(tmp_path: Path, keys: list[str]) -> None:
    with pytest.raises(CryptoError):
        refresh_dir(tmp_path, keys, max_age_days=120, force=False, now=NOW)
    assert not (tmp_path / "dh").exists()


def test_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        refresh_dir(tmp_path / "nope", KEYS, max_age_days=120, force=False, now=NOW)
