"""``sslm-mgr revoke`` with a broker: the revocation runs in the CLI, what follows it (the local
CA's new CRL to production; for keyCompromise a renew with a new key) on real workers over a
real Redis. openssl judges the CRL the revocation leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from services import RedisServer, WorkerStarter
from support import RunMgr, crl_verify, free_port, openssl, tree_snapshot

pytestmark = pytest.mark.integration


def public_key(path: Path) -> str:
    return openssl("pkey", "-in", str(path), "-pubout").stdout


def test_revoke_through_workers_lists_it_in_the_crl_production_gets(
    topdir: Path, mgr: RunMgr, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given the example tree, built in-process, and one worker for every queue
    assert mgr("-renew", "-roll").returncode == 0
    worker = workers.start("all@test", env={"SSL_MGR_TOPDIR": str(topdir)})
    broker = {"SSLM_BROKER_URL": redis_server.url()}
    web = topdir / "certs/example.com/web-ec/curr"
    assert crl_verify(topdir, web)[0]

    # When web-ec's curr is revoked through the broker
    done = mgr("revoke", "example.com:web-ec", "-reason", "superseded", env=broker)

    # Then it succeeded, and openssl refuses the certificate against my-int's new CRL
    assert done.returncode == 0, done.stdout + done.stderr
    assert "example.com:web-ec: revoked curr" in done.stdout
    ok, said = crl_verify(topdir, web)
    assert not ok and "certificate revoked" in said
    crl = topdir / "certs/ca/my-int/crl.pem"
    crl_text = openssl("crl", "-in", str(crl), "-noout", "-text").stdout
    serial = openssl("x509", "-in", str(web / "cert.pem"), "-noout", "-serial").stdout
    assert "Superseded" in crl_text
    assert f"Serial Number: {serial.strip().removeprefix('serial=')}" in crl_text
    # and the worker (not the CLI) took the CA's step that copies the CRL to production
    assert "ca:my-int: step production" in worker.service.log_text()
    assert (topdir / "prod-certs/ca/my-int/crl.pem").read_bytes() == crl.read_bytes()
    # and the service's record lists the revocation
    status = mgr("-s", "--json", "example.com:web-ec")
    (service,) = json.loads(status.stdout)["services"]
    (revocation,) = service["revocations"]
    assert f"serial={revocation['serial']}" == serial.strip()
    assert (revocation["reason"], revocation["by"]) == ("superseded", "crl:my-int")


def test_key_compromise_through_workers_renews_with_a_new_key(
    topdir: Path, mgr: RunMgr, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given the example tree, built in-process, and one worker for every queue
    assert mgr("-renew", "-roll").returncode == 0
    worker = workers.start("all@test", env={"SSL_MGR_TOPDIR": str(topdir)})
    mail = topdir / "certs/example.com/mail-ec"
    old_key = public_key(mail / "curr/privkey.pem")

    # When mail-ec's key is reported compromised through the broker
    done = mgr(
        "revoke",
        "example.com:mail-ec",
        "--reason",
        "keyCompromise",
        env={"SSLM_BROKER_URL": redis_server.url()},
    )

    # Then curr is revoked, and a worker built a next with a new key at once
    assert done.returncode == 0, done.stdout + done.stderr
    assert "example.com:mail-ec: revoked curr" in done.stdout
    assert "curr was revoked for keyCompromise: a new key" in done.stdout
    assert not crl_verify(topdir, mail / "curr")[0]
    assert "example.com:mail-ec: step keygen" in worker.service.log_text()
    assert (mail / "next").resolve() != (mail / "curr").resolve()
    assert public_key(mail / "next/privkey.pem") != old_key
    # and that next passes the CRL check
    assert crl_verify(topdir, mail / "next")[0]


def test_a_broker_that_cannot_be_reached_stops_the_revocation_before_it_happens(
    topdir: Path, mgr: RunMgr
) -> None:
    # Given the example tree and a RabbitMQ broker URL where nothing listens (no Redis: the
    # locks are file locks, so only the broker check can stop it)
    assert mgr("-renew", "-roll").returncode == 0
    before = tree_snapshot(topdir / "certs")
    broker = f"amqp://sslm:secret@127.0.0.1:{free_port()}//"

    # When a revocation is asked for through it
    done = mgr("revoke", "example.com:web-ec", env={"SSLM_BROKER_URL": broker})

    # Then it fails saying why, and nothing was revoked: the CRL production gets and the one
    # the CA keeps stay as they were (no revocation the workers could not follow up on)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "unreachable" in done.stderr and "secret" not in done.stderr
    assert "revoked" not in done.stdout
    assert tree_snapshot(topdir / "certs") == before
    assert crl_verify(topdir, topdir / "certs/example.com/web-ec/curr")[0]
