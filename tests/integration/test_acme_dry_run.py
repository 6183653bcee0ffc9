"""``sslm-mgr -n``: an ACME dry run validates a real order with the lab's Pebble and BIND, asks for
no certificate, and leaves the store as it found it, whether the order succeeded or failed.

Run under the lab lock:
``flock /tmp/sslm-lab.lock .venv/bin/pytest -q tests/integration/test_acme_dry_run.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lab_acme import APEXES, mgr, records_left, service_dir
from lab_dns import DnsLab
from lab_pebble import Pebble

pytestmark = pytest.mark.integration

SERVICE = "example.test:web"


def assert_left_as_found(topdir: Path, dns_lab: DnsLab) -> None:
    """No certificate, key, build or order anywhere; the state says nothing happened."""
    svc = service_dir(topdir)
    assert not (svc / "curr").exists() and not (svc / "next").exists()
    assert not list(svc.rglob("cert.pem")), list(svc.rglob("cert.pem"))
    assert not list(svc.rglob("privkey.pem")), list(svc.rglob("privkey.pem"))
    assert not any((svc / "db").iterdir()), list((svc / "db").iterdir())
    state = json.loads((svc / "state.json").read_text())
    assert (state["phase"], state["stamp"], state["last_error"]) == ("idle", None, None), state
    assert state["order"] is None and state["web_tokens"] == {}, state
    assert records_left(dns_lab) == {apex: [] for apex in APEXES}


def test_a_dry_run_validates_an_order_then_leaves_nothing_behind(
    acme_topdir: Path, dns_lab: DnsLab, pebble: Pebble
) -> None:
    # When a service that has no certificate yet is renewed with -n
    dry = mgr(acme_topdir, "-n", "-renew", SERVICE)

    # Then the CA validated every authorization of a real order
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "dry run: every authorization is valid; no certificate was asked for" in dry.stdout
    # and no certificate, key, build or record is left, only the account for the next run
    assert_left_as_found(acme_topdir, dns_lab)
    assert list((service_dir(acme_topdir) / "cb").rglob("private_key.json"))

    # When the real renewal follows
    real = mgr(acme_topdir, "-renew", SERVICE)

    # Then it issues, from an order of its own
    assert real.returncode == 0, real.stdout + real.stderr
    assert pebble.verify_output(service_dir(acme_topdir) / "curr").strip().endswith("OK")


def test_a_failed_dry_run_says_why_exits_1_and_leaves_nothing_behind(
    acme_topdir: Path, dns_lab: DnsLab, tmp_path: Path
) -> None:
    # Given an acme_dir the zones do not include, so the CA can never see the records
    elsewhere = tmp_path / "not-included"
    elsewhere.mkdir()
    main = acme_topdir / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text().replace(str(dns_lab.acme_dir), str(elsewhere)))

    # When a dry run waits at most 3 s for the records
    dry = mgr(acme_topdir, "-n", "-renew", SERVICE, env={"SSLM_ACME_WAIT_S": "3"})

    # Then it fails, naming the step and the server that lacks the records
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert "dry run:" in dry.stdout and "acme_propagated: not done after 3 s" in dry.stdout
    assert dns_lab.primary in dry.stdout, dry.stdout
    # and nothing is left for the next real run to resume or wait for
    assert_left_as_found(acme_topdir, dns_lab)
    assert not any(p.read_text().count("IN TXT") for p in elsewhere.iterdir())
