"""sslm-info, sslm-verify, sslm-tlsa-hash and sslm-dhparm, run as real processes."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sslm_tasks.cli import tlsa_hash
from sslm_tasks.cli.arg_types import non_negative
from sslm_tasks.crypto.bundle import compose_outputs
from sslm_tasks.crypto.csr import SubjectSpec, build_csr, csr_to_pem
from sslm_tasks.crypto.keys import KeySpec, PrivateKey, generate_private_key, private_key_to_pem
from sslm_tasks.crypto.signing import SigningPolicy, self_sign, sign_with_ca
from sslm_tasks.crypto.tlsa import tlsa_data

NOW = datetime.now(UTC).replace(microsecond=0)
DASHES = "-" * 70
SANS = ["www.example.com", "*.example.com", "192.0.2.10", "2001:db8::10"]


@dataclass(frozen=True)
class Pki:
    """Service directories as sslm writes them, plus the leaf of the good one."""

    good: Path
    self_signed: Path
    expired: Path
    wrong_chain: Path
    root_pem: Path
    other_root_pem: Path
    leaf: x509.Certificate


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def signed(
    key: PrivateKey,
    cn: str,
    sans: list[str],
    *,
    issuer: tuple[PrivateKey, x509.Certificate] | None,
    days: float,
    is_ca: bool = False,
    now: datetime = NOW,
) -> x509.Certificate:
    csr = build_csr(key, SubjectSpec(CN=cn, O="Example Certs"), sans, is_ca=is_ca)
    policy = SigningPolicy(days=days, is_ca=is_ca)
    if issuer is None:
        return self_sign(csr, key, policy, now=now)
    return sign_with_ca(csr, issuer[0], issuer[1], policy, now=now)


def service_dir(
    path: Path, key: PrivateKey, cert: x509.Certificate, chain: list[x509.Certificate] | None
) -> Path:
    """Write the files of one certificate version the way the lifecycle code does."""
    path.mkdir()
    key_pem = private_key_to_pem(key)
    out = compose_outputs(
        cert_pem=pem(cert), chain_pem=pem(*chain) if chain else None, key_pem=key_pem
    )
    files = {
        "privkey.pem": key_pem,
        "cert.pem": out.cert,
        "chain.pem": out.chain,
        "fullchain.pem": out.fullchain,
        "bundle.pem": out.bundle,
    }
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    p384 = KeySpec("ec", ec_curve="secp384r1")
    p256 = KeySpec("ec", ec_curve="secp256r1")
    root_key, int_key, leaf_key = (generate_private_key(s) for s in (p384, p384, p256))
    root = signed(root_key, "my-root", [], issuer=None, days=3650, is_ca=True)
    inter = signed(int_key, "my-int", [], issuer=(root_key, root), days=1825, is_ca=True)
    leaf = signed(leaf_key, "example.com", SANS, issuer=(int_key, inter), days=30)
    other_key = generate_private_key(p256)
    other_root = signed(other_key, "other-root", [], issuer=None, days=30, is_ca=True)
    other_int = signed(other_key, "my-int", [], issuer=(other_key, other_root), days=30, is_ca=True)
    old_leaf = signed(
        leaf_key, "example.com", SANS, issuer=(int_key, inter), days=1, now=NOW - timedelta(3)
    )
    lone_key = generate_private_key(p256)
    lone = signed(lone_key, "lone.example.com", [], issuer=None, days=10)
    good = service_dir(base / "good", leaf_key, leaf, [inter, root])
    (good / "csr.pem").write_bytes(
        csr_to_pem(build_csr(leaf_key, SubjectSpec(CN="example.com"), SANS, is_ca=False))
    )
    (base / "root.pem").write_bytes(pem(root))
    (base / "other-root.pem").write_bytes(pem(other_root))
    return Pki(
        good=good,
        self_signed=service_dir(base / "self", lone_key, lone, None),
        expired=service_dir(base / "expired", leaf_key, old_leaf, [inter, root]),
        wrong_chain=service_dir(base / "wrong", leaf_key, leaf, [other_int, other_root]),
        root_pem=base / "root.pem",
        other_root_pem=base / "other-root.pem",
        leaf=leaf,
    )


def run(tool: str, *args: str | Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``sslm-<tool>`` as its own process, as cron or a shell would."""
    return subprocess.run(
        [sys.executable, "-m", f"sslm_tasks.cli.{tool}", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


# --------------------------------------------------------------------------- sslm-info


def test_info_summarises_a_certificate_in_upstreams_layout(pki: Pki) -> None:
    # When I ask for a summary of cert.pem
    done = run("info", pki.good / "cert.pem")
    # Then it exits 0 with one block in upstream's shape
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == [DASHES, str(pki.good / "cert.pem"), ""]
    date = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
    assert re.fullmatch(rf"Expires  : {date} \(  (29|30)d \d\d:\d\d:\d\d\)", lines[3])
    assert re.fullmatch(
        rf"Issued   : {date} \(   0d \d\d:\d\d:\d\d ago\) \(30 day cert\)", lines[4]
    )
    assert lines[5:] == [
        "Issuer   : CN=my-int,O=Example Certs",
        "Subject  : CN=example.com,O=Example Certs",
        "Sans     : example.com, www.example.com, *.example.com, 192.0.2.10,",
        "           2001:db8::10",
        "Pubkey   : pubkey-secp256r1",
        "Sig algo : ecdsa-with-SHA384",
    ]


def test_info_shows_one_block_per_certificate_of_a_chain(pki: Pki) -> None:
    done = run("info", pki.good / "fullchain.pem")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(DASHES) == 3
    subjects = re.findall(r"^Subject  : (.*)$", done.stdout, flags=re.MULTILINE)
    assert subjects == [
        "CN=example.com,O=Example Certs",
        "CN=my-int,O=Example Certs",
        "CN=my-root,O=Example Certs",
    ]


def test_info_reads_a_key_from_stdin(pki: Pki) -> None:
    done = run("info", stdin=(pki.good / "privkey.pem").read_text())
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [DASHES, "stdin", "", "Key algo : prvkey-secp256r1"]


def test_info_summarises_a_csr(pki: Pki) -> None:
    done = run("info", pki.good / "csr.pem")
    assert done.returncode == 0, done.stderr
    assert "Subject  : CN=example.com" in done.stdout
    assert "Sans     : example.com, www.example.com" in done.stdout
    assert "Sig algo : ecdsa-with-SHA384" in done.stdout
    assert "Expires" not in done.stdout


def test_info_verbose_never_prints_private_key_material(pki: Pki) -> None:
    # When I ask for openssl's full text of a bundle (key + certificates)
    done = run("info", "-v", pki.good / "bundle.pem")
    # Then certificates are shown in full, the key only by its public half
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Certificate:\n") == 3
    assert "Public-Key: (256 bit)" in done.stdout
    assert "priv:" not in done.stdout
    assert "Private-Key" not in done.stdout


def test_info_names_unreadable_inputs_and_exits_1(pki: Pki, tmp_path: Path) -> None:
    # Given a missing file, a non-PEM file and a good file
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello\n")
    missing = tmp_path / "missing.pem"
    # When I run sslm-info on all three
    done = run("info", missing, not_pem, pki.good / "cert.pem")
    # Then each bad input gets an error line naming it, the good one is still shown
    assert done.returncode == 1
    assert f"Error: cannot read {missing}" in done.stderr
    assert f"Error: {not_pem}: no PEM blocks found" in done.stderr
    assert "Pubkey   : pubkey-secp256r1" in done.stdout


# --------------------------------------------------------------------------- sslm-verify


def test_verify_accepts_a_good_chain(pki: Pki) -> None:
    # When I verify a directory (or a file in it)
    for target in (pki.good, pki.good / "fullchain.pem"):
        done = run("verify", target)
        # Then it is verified, and both info sections follow
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[:3] == [
            DASHES,
            "\tCertificate ** Verified **",
            "Certificate Info:",
        ]
        assert "\n-------------------\nChain Info:\n" in done.stdout
        assert done.stdout.count(DASHES) == 1 + 1 + 2


def test_verify_accepts_a_self_signed_certificate(pki: Pki) -> None:
    assert run("verify", pki.self_signed).returncode == 0


@pytest.mark.parametrize(
    ("which", "problem"),
    [
        ("expired", "CN=example.com,O=Example Certs expired at"),
        # another CA of the same name: only the key identifiers tell them apart
        ("wrong_chain", "does not match subject key id"),
    ],
)
def test_verify_fails_bad_chains_with_a_reason(pki: Pki, which: str, problem: str) -> None:
    done = run("verify", getattr(pki, which))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[1] == "\tCertificate ** Failed **"
    # the verifier's verdict first, then what a walk along the issuer names found
    assert lines[2].startswith("\t  rejected by the web-PKI verifier: ")
    reasons = lines[2 : lines.index("Certificate Info:")]
    assert all(line.startswith("\t  ") for line in reasons)
    assert any(problem in line for line in reasons), reasons


def test_verify_checks_against_a_given_ca_file(pki: Pki) -> None:
    assert run("verify", pki.good, "--ca-file", pki.root_pem).returncode == 0
    done = run("verify", pki.good, "--ca-file", pki.other_root_pem)
    assert done.returncode == 1
    assert "is not a trusted certificate" in done.stdout


def test_verify_without_cert_files_is_a_usage_error(tmp_path: Path) -> None:
    done = run("verify", tmp_path)
    assert done.returncode == 2
    assert f"Failed to find cert.pem, chain.pem given {tmp_path}" in done.stderr


# --------------------------------------------------------------------------- sslm-tlsa-hash


def test_tlsa_hash_defaults_to_3_1_1_and_matches_openssl(pki: Pki) -> None:
    done = run("tlsa_hash", pki.good)
    expected = tlsa_data(pki.leaf, 1, 1)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["Matched:", f"tlsa hash: {expected}", f"3 1 1 {expected}"]


def test_tlsa_hash_supports_other_selectors_and_matching_types(pki: Pki) -> None:
    done = run("tlsa_hash", pki.good, "-u", "2", "-s", "0", "-m", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"2 0 2 {tlsa_data(pki.leaf, 0, 2)}"


def test_tlsa_hash_reports_a_missing_cert(tmp_path: Path) -> None:
    done = run("tlsa_hash", tmp_path)
    assert done.returncode == 2
    assert f"Error: Missing cert file : {tmp_path / 'cert.pem'}" in done.stderr


def test_tlsa_hash_refuses_unknown_selector(pki: Pki) -> None:
    assert run("tlsa_hash", pki.good, "-s", "2").returncode == 2


def test_tlsa_hash_warns_and_fails_on_a_mismatch(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an openssl that disagrees (in-process: a real openssl never does)
    monkeypatch.setattr(tlsa_hash, "openssl_tlsa_data", lambda *_args: "00")
    # When / Then the tool says so and exits 1
    assert tlsa_hash.main([str(pki.good)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "** Warning: Mismatched:",
        f" internal: {tlsa_data(pki.leaf, 1, 1)}",
        "  openssl: 00",
    ]


# --------------------------------------------------------------------------- sslm-dhparm


def test_dhparm_subdirs_skip_ca_and_warn_about_missing_dirs(tmp_path: Path) -> None:
    # Given a production tree with a service group and the ca group
    prod = tmp_path / "prod"
    (prod / "example.com").mkdir(parents=True)
    (prod / "CA").mkdir()
    # When I run the cron form with an extra, missing directory
    done = run("dhparm", "-k", "ffdhe2048,512", "-s", prod, tmp_path / "nope")
    # Then the group gets its files and link, ca is skipped, the missing dir is a warning
    assert done.returncode == 0, done.stderr
    dh_dir = prod / "example.com" / "dh"
    assert os.readlink(dh_dir / "dhparam.pem") == "dh-ffdhe2048.pem"
    assert (dh_dir / "dh512.pem").is_file()
    assert not (prod / "CA" / "dh").exists()
    assert done.stdout.splitlines() == [
        f" dhparam : {prod / 'example.com'}",
        f"         : {dh_dir}",
        "           - dh-ffdhe2048.pem",
        "           - dh512.pem",
    ]
    assert f"Warning : no such directory: {tmp_path / 'nope'} - ignoring" in done.stderr


def test_dhparm_default_keys_work_and_link_the_first_group(tmp_path: Path) -> None:
    # When I run with the default keys (upstream crashed here)
    done = run("dhparm", tmp_path)
    # Then every group is written once and dhparam.pem points at the first
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("- dh-ffdhe") == 5
    assert os.readlink(tmp_path / "dh" / "dhparam.pem") == "dh-ffdhe8192.pem"


def test_dhparm_without_usable_dirs_exits_1(tmp_path: Path) -> None:
    done = run("dhparm", tmp_path / "nope")
    assert done.returncode == 1
    assert "No usable directories" in done.stderr


def test_dhparm_refuses_unknown_keys_before_writing(tmp_path: Path) -> None:
    done = run("dhparm", "-k", "ffdhe2048,weird", tmp_path)
    assert done.returncode == 2
    assert "'weird'" in done.stderr
    assert not (tmp_path / "dh").exists()


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "-inf", "ten", ""])
def test_a_non_negative_option_refuses_what_is_not_a_finite_number_from_zero(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"a number of days >= 0$") as refused:
        non_negative("days")(text)
    assert str(refused.value).startswith(repr(text))


@pytest.mark.parametrize(("text", "value"), [("0", 0.0), ("2.5", 2.5), ("1e3", 1000.0)])
def test_a_non_negative_option_takes_a_finite_number_from_zero(text: str, value: float) -> None:
    assert non_negative("seconds")(text) == value
