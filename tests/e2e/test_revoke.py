"""``sslm-mgr revoke`` on the example private CA: the CRL the intermediate keeps, judged by
``openssl verify -crl_check``, its production copy, the record and ``-s``; bad input."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from support import RunMgr, crl_verify, edit, openssl, run_tool, tree_snapshot
from test_status import validate

from sslm_tasks.config.load import load_config
from sslm_tasks.crypto import crl as crls
from sslm_tasks.lifecycle import steps
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import Workspace, utc_now

CRL_URL = "http://crl.example.com/my-int.crl"


def _with_crl_url(topdir: Path) -> None:
    edit(
        topdir / "conf.d/ca/my-int",
        "    digest = 'sha384'",
        f"    digest = 'sha384'\n    crl_url = '{CRL_URL}'",
    )


def stores(topdir: Path) -> dict[str, str]:
    return {**tree_snapshot(topdir / "certs"), **tree_snapshot(topdir / "prod-certs")}


def test_a_revoked_certificate_fails_the_crl_check_and_a_fresh_one_passes(
    topdir: Path, mgr: RunMgr, tmp_path: Path
) -> None:
    # Given the example tree, its intermediate configured with a crl_url
    _with_crl_url(topdir)
    assert mgr("-renew", "-roll").returncode == 0
    web = topdir / "certs/example.com/web-ec/curr"
    points = openssl(
        "x509", "-in", str(web / "cert.pem"), "-noout", "-ext", "crlDistributionPoints"
    )
    assert f"URI:{CRL_URL}" in points.stdout
    # and every local CA keeps a CRL from its first roll on, which production copies
    for ca in ("my-root", "my-int"):
        crl = topdir / f"certs/ca/{ca}/crl.pem"
        assert (topdir / f"prod-certs/ca/{ca}/crl.pem").read_bytes() == crl.read_bytes()
    assert crl_verify(topdir, web)[0]

    # When web-ec's curr is revoked
    done = mgr("revoke", "example.com:web-ec", "-reason", "superseded")

    # Then it succeeded and openssl refuses it against the re-issued CRL
    assert done.returncode == 0, done.stdout + done.stderr
    assert "example.com:web-ec: revoked curr" in done.stdout
    ok, said = crl_verify(topdir, web)
    assert not ok and "certificate revoked" in said
    crl_text = openssl("crl", "-in", str(topdir / "certs/ca/my-int/crl.pem"), "-noout", "-text")
    assert "Superseded" in crl_text.stdout and "CRL Number: \n                2" in crl_text.stdout
    # and a certificate it did not revoke still passes
    assert crl_verify(topdir, topdir / "certs/example.com/mail-ec/curr")[0]
    # and production holds the new CRL
    assert (topdir / "prod-certs/ca/my-int/crl.pem").read_bytes() == (
        topdir / "certs/ca/my-int/crl.pem"
    ).read_bytes()
    # and the record and the status say so
    serial = openssl("x509", "-in", str(web / "cert.pem"), "-noout", "-serial").stdout
    status = mgr("-s", "--json", "example.com:web-ec")
    validate(status.stdout, tmp_path)
    (service,) = json.loads(status.stdout)["services"]
    (revocation,) = service["revocations"]
    assert f"serial={revocation['serial']}" == serial.strip()
    assert (revocation["reason"], revocation["by"]) == ("superseded", "crl:my-int")
    assert "revoked" in mgr("-s", "example.com:web-ec").stdout

    # When it is revoked again, then that is refused and nothing changes
    before = stores(topdir)
    again = mgr("revoke", "example.com:web-ec", "--reason", "superseded")
    assert again.returncode == 1 and "already revoked" in again.stderr
    assert stores(topdir) == before


def test_key_compromise_renews_with_a_new_key_at_once(topdir: Path, mgr: RunMgr) -> None:
    # Given the example tree
    assert mgr("-renew", "-roll").returncode == 0
    mail = topdir / "certs/example.com/mail-ec"
    old_key = openssl("pkey", "-in", str(mail / "curr/privkey.pem"), "-pubout").stdout

    # When mail-ec's key is reported compromised
    done = mgr("revoke", "example.com:mail-ec", "--reason", "keyCompromise")

    # Then its curr is revoked and a next with a new key is built at once; the roll waits
    # for its usual gate (min_roll_mins)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "curr was revoked for keyCompromise" in done.stdout
    assert not crl_verify(topdir, mail / "curr")[0]
    new_key = openssl("pkey", "-in", str(mail / "next/privkey.pem"), "-pubout").stdout
    assert new_key != old_key
    assert (mail / "next").resolve() != (mail / "curr").resolve()
    # and the next renew does not build again (the new next replaces curr at its roll)
    waiting = (mail / "next").resolve()
    assert mgr("-renew", "example.com:mail-ec").returncode == 0
    assert (mail / "next").resolve() == waiting
    # and once rolled, the fresh certificate passes the CRL check
    assert mgr("-roll", "-f", "example.com:mail-ec").returncode == 0
    assert crl_verify(topdir, mail / "curr")[0]


def test_bad_revocations_are_refused_and_change_nothing(topdir: Path, mgr: RunMgr) -> None:
    assert mgr("-renew", "-roll").returncode == 0
    before = stores(topdir)
    for args, code, said in (
        (("example.com:ALL",), 2, "must name exactly one service"),
        (("example.com:nosuch",), 2, "nosuch"),
        (("--reason", "bored", "example.com:web-ec"), 2, "invalid choice: 'bored'"),
        (("ca:my-root",), 1, "self-signed"),
        (("--version", "next", "example.com:web-ec"), 1, "next holds no certificate"),
    ):
        result = mgr("revoke", *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert said in result.stderr, (args, result.stderr)
    assert stores(topdir) == before


def test_the_renew_check_reissues_the_crl_before_it_goes_stale(topdir: Path, mgr: RunMgr) -> None:
    # Given the example tree, web-ec revoked: my-int's CRL lists it and is valid for 7 days
    assert mgr("-renew", "-roll").returncode == 0
    assert mgr("revoke", "example.com:web-ec").returncode == 0
    path = topdir / "certs/ca/my-int/crl.pem"
    first = x509.load_pem_x509_crl(path.read_bytes())
    config, (ref,) = load_config(["ca:my-int"], conf_dir=topdir / "conf.d")

    def check_after(days: float) -> str:
        ws = Workspace(config=config, clock=lambda: utc_now() + timedelta(days=days))
        return steps.check(ServiceContext(ws, ref)).detail

    # When the CA's renew check runs 3 days on, then the CRL is left alone
    assert "CRL" not in check_after(3)
    assert path.read_bytes() == first.public_bytes(Encoding.PEM)
    # When it runs 4 days on (less than half of its validity left), then it is re-issued:
    # numbered one higher, valid 7 days from then, the revoked serial carried forward
    assert "CRL re-issued" in check_after(4)
    second = x509.load_pem_x509_crl(path.read_bytes())
    assert crls.number(second) == crls.number(first) + 1
    assert second.next_update_utc is not None and first.next_update_utc is not None
    assert second.next_update_utc - first.next_update_utc >= timedelta(days=4)
    assert crls.entries(second) == crls.entries(first) != []


def test_a_link_planted_at_the_crl_copy_is_never_followed(
    topdir: Path, mgr: RunMgr, tmp_path: Path
) -> None:
    # Given the example tree, and a link planted where production keeps my-int's CRL
    assert mgr("-renew", "-roll").returncode == 0
    outside = tmp_path / "outside.pem"
    outside.write_text("not sslm's\n")
    copy = topdir / "prod-certs/ca/my-int/crl.pem"
    copy.unlink()
    copy.symlink_to(outside)

    # When a revocation re-issues the CRL and production mirrors it
    result = mgr("revoke", "example.com:web-ec")

    # Then the CA's production step fails naming the link, which is neither followed nor removed
    assert result.returncode == 1
    assert f"{copy} is a link or not a regular file" in result.stdout + result.stderr
    assert copy.is_symlink() and outside.read_text() == "not sslm's\n"


def test_a_revoked_curr_is_critical_until_a_next_waits_to_replace_it(
    topdir: Path, mgr: RunMgr, tmp_path: Path
) -> None:
    # Given the example tree, web-ec's curr revoked for a reason that renews nothing
    assert mgr("-renew", "-roll").returncode == 0
    assert mgr("revoke", "example.com:web-ec", "-reason", "superseded").returncode == 0
    stamp = (topdir / "certs/example.com/web-ec/curr").resolve().name

    # When its status is read, Then it is failing: -s exits 1 and says why
    shown = mgr("-s", "example.com:web-ec")
    assert shown.returncode == 1, shown.stdout
    assert "health : failing" in shown.stdout
    assert (
        "failing : revoked since" in shown.stdout and "was revoked for superseded" in shown.stdout
    )
    # and -s --json has the problem, and curr says it was revoked
    status = mgr("-s", "--json", "example.com:web-ec")
    assert status.returncode == 1
    validate(status.stdout, tmp_path)
    (service,) = json.loads(status.stdout)["services"]
    assert service["health"] == "failing"
    (problem,) = service["problems"]
    assert (problem["what"], problem["where"], problem["attempts"]) == (
        "revoked",
        "example.com:web-ec",
        0,
    )
    assert f"curr {stamp}" in problem["reason"] and "sslm-mgr -renew -f" in problem["reason"]
    assert service["curr"]["revoked"] == "superseded"
    # and the monitoring check is CRITICAL
    check = mgr("-s", "--check", "example.com:web-ec")
    assert check.returncode == 2, check.stdout
    assert "was revoked for superseded" in check.stdout
    # and the metrics count it among the failures, by its own step
    prom = tmp_path / "sslm.prom"
    written = run_tool("sslm-metrics", "--textfile", str(prom), cwd=topdir)
    assert written.returncode == 0, written.stderr
    assert re.search(r'^sslm_failures\{step="revoked"\} 1(\.0)?$', prom.read_text(), re.M), (
        prom.read_text()
    )

    # When a next is built that will replace it
    assert mgr("-renew", "-f", "example.com:web-ec").returncode == 0

    # Then it is pending (-s exits 0), and the check warns at once that curr is revoked
    status = mgr("-s", "--json", "example.com:web-ec")
    assert status.returncode == 0
    validate(status.stdout, tmp_path)
    (service,) = json.loads(status.stdout)["services"]
    assert (service["health"], service["problems"]) == ("pending", [])
    assert (service["curr"]["revoked"], service["next"]["revoked"]) == ("superseded", None)
    check = mgr("-s", "--check", "example.com:web-ec")
    assert check.returncode == 1, check.stdout
    assert "curr was revoked for superseded; next replaces it at its roll" in check.stdout

    # When it rolls, Then the service is ok again
    assert mgr("-roll", "-f", "example.com:web-ec").returncode == 0
    assert mgr("-s", "--check", "example.com:web-ec").returncode == 0
