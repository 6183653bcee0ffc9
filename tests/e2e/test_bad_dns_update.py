"""A bad ``[[dns_update]]`` table or key file: one line naming ssl-mgr.conf, the key and the
value, exit 2, nothing written, and never the secret."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
from support import RunMgr, tree_snapshot

SECRET = base64.b64encode(secrets.token_bytes(32)).decode()
#: What ``tsig-keygen -a hmac-sha256 sslm-example`` writes (with a fresh secret).
KEY_TEXT = f'key "sslm-example" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'


def table(key_file: Path, *, domain: str = "example.com", server: str = "127.0.0.53") -> str:
    return f"""
[[dns_update]]
    domain = '{domain}'
    server = '{server}'
    key_file = '{key_file}'
"""


def key_file(tmp_path: Path, text: str = KEY_TEXT, *, mode: int = 0o600) -> Path:
    path = tmp_path / "sslm-example.key"
    path.write_text(text)
    path.chmod(mode)
    return path


CASES = [
    # (id, key file text or None for a missing file, its mode, table arguments, key, fragment)
    ("mode", KEY_TEXT, 0o644, {}, "dns_update[0].key_file", "(mode 0644)"),
    ("group", KEY_TEXT, 0o640, {}, "dns_update[0].key_file", "must be mode 0600"),
    ("missing", None, 0o600, {}, "dns_update[0].key_file", "no such file"),
    ("garbage", "not a key\n", 0o600, {}, "dns_update[0].key_file", "holds no key"),
    (
        "base64",
        KEY_TEXT.replace(SECRET, "abcde"),
        0o600,
        {},
        "dns_update[0].key_file",
        "does not parse",
    ),
    (
        "algorithm",
        KEY_TEXT.replace("hmac-sha256", "hmac-whirlpool"),
        0o600,
        {},
        "dns_update[0].key_file",
        "'hmac-whirlpool'",
    ),
    ("empty", KEY_TEXT.replace(SECRET, ""), 0o600, {}, "dns_update[0].key_file", "empty secret"),
    (
        "server",
        KEY_TEXT,
        0o600,
        {"server": "ns1.example.com"},
        "dns_update.0.server",
        "must be an IP address",
    ),
    ("domain", KEY_TEXT, 0o600, {"domain": "Example.com."}, "dns_update.0.domain", "lower-case"),
]


@pytest.mark.parametrize(
    ("text", "mode", "entry", "key", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_bad_dns_update_entry_is_one_line_and_changes_nothing(
    topdir: Path,
    mgr: RunMgr,
    tmp_path: Path,
    text: str | None,
    mode: int,
    entry: dict[str, str],
    key: str,
    fragment: str,
) -> None:
    # Given a working tree, then a [[dns_update]] table whose key file or value is bad
    assert mgr("-renew").returncode == 0
    path = key_file(tmp_path, text or KEY_TEXT, mode=mode)
    if text is None:
        path.unlink()
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text() + table(path, **entry))
    before = tree_snapshot(topdir)

    # When renew and roll run
    result = mgr("-f", "-renew", "-roll")

    # Then it exits 2 with one line naming ssl-mgr.conf, the key and the value, no secret
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{main}: {key}" in lines[0], lines[0]
    assert fragment in lines[0], lines[0]
    if key.endswith("key_file"):
        assert f"= '{path}'" in lines[0], lines[0]
    assert SECRET not in result.stdout + result.stderr
    assert result.stdout == ""
    # and nothing on disk changed
    assert tree_snapshot(topdir) == before


def test_two_entries_for_one_zone_are_refused(topdir: Path, mgr: RunMgr, tmp_path: Path) -> None:
    path = key_file(tmp_path)
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text() + table(path) + table(path, server="127.0.0.54"))
    result = mgr("-renew")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{main}: dns_update[1].domain = 'example.com': a second entry" in result.stderr
    assert not (topdir / "certs").exists()


def test_a_good_key_file_loads_and_a_private_ca_setup_runs(
    topdir: Path, mgr: RunMgr, tmp_path: Path
) -> None:
    # A key file readable by its owner only (0600, or 0400) is taken; nothing asks the server
    # while no service publishes in the zone
    path = key_file(tmp_path, mode=0o400)
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text() + table(path))
    result = mgr("-renew")
    assert result.returncode == 0, result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
