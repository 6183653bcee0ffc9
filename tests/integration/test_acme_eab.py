"""External Account Binding end to end: ``sslm-mgr -renew`` of a service whose ACME CA, the lab's
Pebble, registers accounts only with a binding made with the HMAC key it knows (as ZeroSSL,
Google Trust Services and SSL.com do), its dns-01 challenges published through the lab's BIND.

The right binding registers the account and the certificate is issued; a missing or wrong one
fails the run with one error naming the CA (and the kid), and the HMAC key is never written
anywhere but its own file: not in the output, the log, the records or the account.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
from lab_acme import SVC, enqueue, last_error, mgr, use_pebble, write_topdir
from lab_dns import DnsLab
from lab_pebble import Pebble, start_pebble
from lab_update import redis_texts, texts_under
from services import RedisServer, Services, WorkerStarter

pytestmark = pytest.mark.integration

SERVICE = "example.test:web"
KID = "sslm-lab-kid"


@pytest.fixture
def hmac_key() -> str:
    """The HMAC key the CA gave: 32 random bytes in base64url, as ZeroSSL hands them out."""
    return secrets.token_urlsafe(32)


@pytest.fixture
def eab_pebble(services: Services, dns_lab: DnsLab, tmp_path: Path, hmac_key: str) -> Pebble:
    """A Pebble that requires a binding made with ``hmac_key`` under :data:`KID`."""
    return start_pebble(
        services,
        tmp_path / "pebble-eab",
        dns_server=f"{dns_lab.primary}:{dns_lab.port}",
        eab_keys={KID: hmac_key},
    )


@pytest.fixture
def topdir(tmp_path: Path, dns_lab: DnsLab, eab_pebble: Pebble) -> Path:
    return write_topdir(tmp_path / "top", dns_lab, eab_pebble)


def bind(topdir: Path, pebble: Pebble, *, kid: str, key: str) -> None:
    """Configure the lab CA's binding: ``kid``, and ``key`` in a 0600 file beside the topdir
    (outside it, so that any copy of the key inside the topdir is a leak)."""
    key_file = topdir.parent / "eab-hmac.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    use_pebble(topdir, pebble)
    # use_pebble writes the lab CA's table last, so these lines belong to it.
    with (topdir / "conf.d/ca-info.conf").open("a") as conf:
        conf.write(f"    ca_eab_kid = '{kid}'\n    ca_eab_hmac_key_file = '{key_file}'\n")


def shown(topdir: Path, run: subprocess.CompletedProcess[str]) -> str:
    """What a run showed and left in the topdir (logs, records, the account): where the HMAC
    key must never be."""
    return run.stdout + run.stderr + texts_under(topdir)


def registered_accounts(topdir: Path) -> list[Path]:
    return list((topdir / "certs" / SVC / "cb").rglob("regr.json"))


def test_the_right_binding_registers_the_account_and_the_certificate_is_issued(
    topdir: Path, eab_pebble: Pebble, hmac_key: str
) -> None:
    # Given the CA's kid and HMAC key in ca-info.conf
    bind(topdir, eab_pebble, kid=KID, key=hmac_key)
    # When the service is renewed the first time
    run = mgr(topdir, "-renew", SERVICE)
    # Then the account is registered and Pebble issues the certificate
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(registered_accounts(topdir)) == 1
    assert eab_pebble.verify_output(topdir / "certs" / SVC / "curr").strip().endswith("OK")
    # and the HMAC key is nowhere but its own file
    assert hmac_key not in shown(topdir, run)


def test_a_missing_or_wrong_binding_fails_naming_the_ca_and_never_the_key_until_put_right(
    topdir: Path, eab_pebble: Pebble, hmac_key: str
) -> None:
    # When the service is renewed with no binding configured
    run = mgr(topdir, "-renew", SERVICE)
    # Then the run fails, saying the CA requires a binding and what to set
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "CA 'pebble' requires External Account Binding" in output, output
    assert "set ca_eab_kid and ca_eab_hmac_key_file" in output, output
    assert registered_accounts(topdir) == []

    # When it is renewed with a key the CA did not give, then with a kid it does not know
    for kid, key in ((KID, secrets.token_urlsafe(32)), ("no-such-kid", hmac_key)):
        bind(topdir, eab_pebble, kid=kid, key=key)
        run = mgr(topdir, "-renew", "-f", SERVICE)  # -f: no wait after the failed attempt
        # Then the run fails naming the CA and the kid, the refusal recorded as the service's
        # last error, and no account is registered
        output = run.stdout + run.stderr
        assert run.returncode != 0, output
        assert f"CA 'pebble' (External Account Binding, kid {kid!r})" in output, output
        assert "CA 'pebble' refused the External Account Binding" in output, output
        assert "CA 'pebble' refused the External Account Binding" in last_error(topdir)
        assert registered_accounts(topdir) == []
        # and the key it was given is shown nowhere
        assert key not in shown(topdir, run)

    # When the binding is put right
    bind(topdir, eab_pebble, kid=KID, key=hmac_key)
    run = mgr(topdir, "-renew", "-f", SERVICE)
    # Then the account key the refused attempts wrote is registered, and the certificate issued
    assert run.returncode == 0, run.stdout + run.stderr
    assert "registering the existing ACME key" in run.stdout + texts_under(topdir / "logs")
    assert len(registered_accounts(topdir)) == 1


def test_on_workers_a_wrong_binding_fails_naming_the_ca_and_no_message_holds_the_key(
    topdir: Path, eab_pebble: Pebble, redis_server: RedisServer, workers: WorkerStarter
) -> None:
    # Given a worker on every queue, and a key the CA did not give
    wrong = secrets.token_urlsafe(32)
    bind(topdir, eab_pebble, kid=KID, key=wrong)
    worker = workers.start("all@eab", env={"SSL_MGR_TOPDIR": str(topdir)})
    # When the CLI enqueues the renewal
    run = enqueue(topdir, redis_server, "-renew", SERVICE)
    # Then it fails naming the CA and the kid
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "CA 'pebble' refused the External Account Binding" in last_error(topdir)
    assert f"kid {KID!r}" in last_error(topdir)
    # and the key is in no log line, record, message or task result (the failed task's result,
    # the refusal, is among what the broker holds)
    assert wrong not in shown(topdir, run) + worker.service.log_text()
    held = redis_texts(redis_server.url())
    assert "refused the External Account Binding" in held and wrong not in held
