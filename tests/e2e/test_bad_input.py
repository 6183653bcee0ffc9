"""Bad input: one clear line naming file, key and value, a non-zero exit, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import RunMgr, edit, tree_snapshot

CASES = [
    # (file under conf.d, old text, new text, expected key, expected value fragment)
    (
        "example.com/web-ec",
        "signing_ca = 'my-int'",
        "signing_ca = 'my-int",
        "(toml)",
        "malformed TOML",
    ),
    ("example.com/web-ec", "CN = 'example.com'", "", "X509.CN", "Field required"),
    (
        "example.com/web-ec",
        "signing_ca = 'my-int'",
        "signing_ca = 'no-such-ca'",
        "signing_ca",
        "'no-such-ca'",
    ),
    ("example.com/web-ec", "'192.0.2.10'", "'not a name!'", "X509.sans", "'not a name!'"),
    ("example.com/mail-rsa", "rsa_bits = 3072", "rsa_bits = 1024", "KeyOpts.rsa_bits", "1024"),
    (
        "example.com/mail-ec",
        "signing_ca = 'my-int'",
        "signing_ca = 'my-int'\ndane_tls = [[25, 'tcp', 3, 1]]",
        "dane_tls.0",
        "[25, 'tcp', 3, 1]",
    ),
    ("example.com/mail-ec", "ktype = 'ec'", "ktype = 'dsa'", "KeyOpts.ktype", "'dsa'"),
    ("example.com/mail-ec", "[KeyOpts]", "[Keyopts]", "Keyopts", "unknown key"),
    ("ca/my-root", "digest = 'sha384'", "digest = 'md5'", "CA.digest", "'md5'"),
    ("ca/my-root", "group = 'ca'", "group = 'cax'", "group", "'cax'"),
    ("ssl-mgr.conf", "clean_keep = 5", "clean_keep = 'five'", "globals.clean_keep", "'five'"),
    (
        "ssl-mgr.conf",
        "min_roll_mins = 90",
        "min_roll_mins = 90\n    no_such_key = 1",
        "globals.no_such_key",
        "unknown key",
    ),
    (
        "ssl-mgr.conf",
        "[renew_info]",
        "[renew_info]\n    renew_target_x = 3",
        "renew_info",
        "renew_target_x",
    ),
    ("ca-info.conf", "ca_type = 'local'", "ca_type = 'bogus'", "my-int.ca_type", "'bogus'"),
    ("example.com/web-ec", "CN = 'example.com'", "CN = 'Web Server'", "X509.CN", "'Web Server'"),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "key", "fragment"), CASES, ids=[c[3] + ":" + c[4][:12] for c in CASES]
)
def test_bad_input_is_one_clear_line_and_changes_nothing(
    topdir: Path, mgr: RunMgr, file: str, old: str, new: str, key: str, fragment: str
) -> None:
    # Given a working tree, then one bad value in one file
    assert mgr("-renew").returncode == 0
    edit(topdir / "conf.d" / file, old, new)
    before = tree_snapshot(topdir)
    # When renew and roll run
    result = mgr("-f", "-renew", "-roll")
    # Then it exits 2 with one line naming the file, the key and the value
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(topdir / "conf.d" / file) in lines[0]
    assert f": {key}" in lines[0], lines[0]
    assert fragment in lines[0], lines[0]
    assert result.stdout == ""
    # and nothing on disk changed
    assert tree_snapshot(topdir) == before


def test_missing_ca_curr_fails_that_service_only_and_writes_nothing_for_it(
    topdir: Path, mgr: RunMgr
) -> None:
    # Given the CAs were never issued, and web-ec is selected with a self-signed extra service
    (topdir / "conf.d/example.com/self-web").write_text(
        (topdir / "conf.d/example.com/web-ec")
        .read_text()
        .replace("service = 'web-ec'", "service = 'self-web'")
        .replace("signing_ca = 'my-int'", "signing_ca = 'self'")
    )
    result = mgr("-renew", "example.com:web-ec,self-web")
    # Then web-ec fails naming its file, key and value, self-web succeeds, exit is 1
    assert result.returncode == 1
    assert f"{topdir / 'conf.d/example.com/web-ec'}: signing_ca = 'my-int'" in result.stdout
    assert not (topdir / "certs/example.com/web-ec").exists()
    assert (topdir / "certs/example.com/self-web/curr/cert.pem").is_file()


def test_unknown_or_unsafe_group_on_the_command_line(topdir: Path, mgr: RunMgr) -> None:
    result = mgr("-renew", "nosuch.example:web")
    assert result.returncode == 2 and "nosuch.example/web" in result.stderr
    unsafe = mgr("-renew", "../etc:passwd")
    assert unsafe.returncode == 2 and "'../etc:passwd'" in unsafe.stderr
    assert len(unsafe.stderr.strip().splitlines()) == 1
    assert not (topdir / "certs").exists()
