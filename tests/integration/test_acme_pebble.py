"""sslm's ACME layer against a real Pebble validating through the lab's real BIND.

Each step of an order is one call of ``sslm_tasks.acme``; the waiting between them (which the
task layer does with countdowns) is done here with short sleeps. Run these under the lab lock:
``flock /tmp/sslm-lab.lock .venv/bin/pytest -q tests/integration/test_acme_pebble.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import acme.client
import acme.messages
import pytest
import requests
from cryptography import x509
from josepy import b64
from lab_dns import DnsLab
from lab_pebble import Pebble, start_pebble
from services import Services, free_port, require_binary, wait_for

from sslm_tasks.acme.accounts import (
    META,
    PRIVATE_KEY,
    REGR,
    Account,
    accounts_dir,
    connect_as,
    ensure_account,
    find_account,
)
from sslm_tasks.acme.directory import AcmeServer, connect
from sslm_tasks.acme.network import AcmePermanentError, AcmeTransientError
from sslm_tasks.acme.order_state import PROCESSING, VALID, ChallengeToPublish, OrderState
from sslm_tasks.acme.orders import (
    OrderFailed,
    answer,
    authorization_states,
    challenges_for,
    create_order,
    fetch_certificate,
    finalize,
    resume_or_create,
)
from sslm_tasks.crypto.csr import SubjectSpec, build_csr, csr_to_pem
from sslm_tasks.crypto.keys import KeySpec, generate_private_key
from sslm_tasks.errors import PermanentError, TransientError

pytestmark = pytest.mark.integration

EMAIL = "hostmaster@example.test"
#: RFC 9773's example certificate ID: a well-formed value for ``replaces``.
CERT_ID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
#: Long enough for Pebble to validate through BIND (well under a second when all is well).
STEP_TIMEOUT_S = 20.0
POLL_S = 0.1

_T = TypeVar("_T")


@pytest.fixture
def server(pebble: Pebble) -> AcmeServer:
    """The ca-info.conf entry of the lab's Pebble: its directory and its HTTPS CA bundle."""
    return AcmeServer(directory_url=pebble.directory_url, ca_bundle=pebble.ca_bundle)


@pytest.fixture
def account(server: AcmeServer, tmp_path: Path) -> Account:
    return ensure_account(tmp_path / "cb", server, ca="pebble", email=EMAIL)


@pytest.fixture
def client(server: AcmeServer, account: Account) -> acme.client.ClientV2:
    return connect_as(server, account)


def _csr(*names: str) -> bytes:
    key = generate_private_key(KeySpec(ktype="ec", ec_curve="secp384r1"))
    return csr_to_pem(build_csr(key, SubjectSpec(CN=names[0]), names[1:], is_ca=False))


def _until(what: str, step: Callable[[], _T | None]) -> _T:
    """Call ``step`` until it returns a value, as the task layer's retries would."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        result = step()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not done within {STEP_TIMEOUT_S} s")
        time.sleep(POLL_S)


def _publish(lab: DnsLab, challenges: list[ChallengeToPublish]) -> None:
    """Append the TXT records to the lab's challenge include, refresh, wait for the secondary."""
    lines = "".join(f'{c.name}. 60 IN TXT "{c.value}"\n' for c in challenges)
    with lab.acme_file().open("a") as include:
        include.write(lines)
    done = lab.refresh()
    assert done.returncode == 0, done.stderr
    serial = lab.serial()
    lab.wait_until_secondary_has(serial)
    names = {c.name for c in challenges}
    wait_for(
        "the TXT records are served",
        lambda: all({c.value for c in challenges if c.name == n} <= lab.txt(n) for n in names),
        timeout_s=10,
    )


def _validated(client: acme.client.ClientV2, order: OrderState) -> OrderState:
    """Poll the authorizations (one request each per round) until all are valid."""

    def step() -> OrderState | None:
        nonlocal order
        order = authorization_states(client, order)
        return order if order.all_valid else None

    return _until("authorizations valid", step)


def _certificate(client: acme.client.ClientV2, order: OrderState) -> tuple[bytes, bytes]:
    def step() -> tuple[bytes, bytes] | None:
        try:
            return fetch_certificate(client, order, preferred_chain=None)
        except AcmeTransientError:
            return None

    return _until("certificate issued", step)


def _openssl_verify(tmp_path: Path, pebble: Pebble, cert_pem: bytes, chain_pem: bytes) -> str:
    (tmp_path / "root.pem").write_bytes(pebble.roots_pem())
    (tmp_path / "chain.pem").write_bytes(chain_pem)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    verified = subprocess.run(
        [
            require_binary("openssl"),
            "verify",
            "-CAfile",
            str(tmp_path / "root.pem"),
            "-untrusted",
            str(tmp_path / "chain.pem"),
            str(tmp_path / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return verified.stdout


# --------------------------------------------------------------------------- accounts


def _must_not_connect(*_: object, **__: object) -> acme.client.ClientV2:
    raise AssertionError("an account on disk must be used without a request")


def test_account_is_created_once_and_loaded_again(
    server: AcmeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a service without an account
    cb = tmp_path / "cb"
    assert find_account(cb, server.directory_url) is None

    # When it is ensured twice
    first = ensure_account(cb, server, ca="pebble", email=EMAIL)
    with monkeypatch.context() as patched:
        # (the second call must not even connect, let alone register)
        patched.setattr("sslm_tasks.acme.accounts.connect", _must_not_connect)
        second = ensure_account(cb, server, ca="pebble", email=EMAIL)

    # Then one account exists, in certbot's layout, with a private key file
    assert (second.id, second.uri) == (first.id, first.uri)
    base = accounts_dir(cb, server.directory_url)
    assert [p.name for p in base.iterdir()] == [first.id]
    assert str(base).endswith(server.directory_url.removeprefix("https://"))
    assert stat.S_IMODE(os.stat(first.path / PRIVATE_KEY).st_mode) == 0o600
    assert json.loads((first.path / REGR).read_text()) == {"body": {}, "uri": first.uri}
    assert set(json.loads((first.path / META).read_text())) == {"creation_dt", "creation_host"}
    assert "key=" not in repr(first)  # the private key stays out of reprs, hence out of logs


def test_key_without_registration_record_gets_its_account_back(
    server: AcmeServer, account: Account, tmp_path: Path
) -> None:
    # Given a crash after the key was written but before regr.json
    (account.path / REGR).unlink()

    # When the account is ensured again
    again = ensure_account(tmp_path / "cb", server, ca="pebble", email=EMAIL)

    # Then the same key is registered again and the CA answers with the same account
    assert (again.id, again.uri) == (account.id, account.uri)


def _certbot(cb: Path, server: AcmeServer, *args: str) -> subprocess.CompletedProcess[str]:
    assert server.ca_bundle is not None
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(server.ca_bundle)}
    return subprocess.run(
        [
            require_binary("certbot"),
            *args,
            "--config-dir",
            str(cb),
            "--work-dir",
            str(cb / "work"),
            "--logs-dir",
            str(cb / "logs"),
            "--server",
            server.directory_url,
            "--non-interactive",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_account_registered_by_certbot_is_used(server: AcmeServer, tmp_path: Path) -> None:
    # Given an upstream installation whose account certbot registered under cb/
    cb = tmp_path / "cb"
    registered = _certbot(cb, server, "register", "--agree-tos", "-m", EMAIL, "--no-eff-email")
    assert registered.returncode == 0, registered.stderr

    # When sslm looks for the service's account
    found = find_account(cb, server.directory_url)
    ensured = ensure_account(cb, server, ca="pebble", email=EMAIL)

    # Then it is certbot's, and it signs requests
    assert found is not None and found == ensured
    client = connect_as(server, found)
    order = create_order(client, _csr("www.example.test"), profile=None, replaces=None)
    assert order.status == "pending"


def test_account_written_by_sslm_is_read_by_certbot(
    account: Account, server: AcmeServer, tmp_path: Path
) -> None:
    # Given an account sslm registered (the fixture), When certbot reads the same cb/
    shown = _certbot(tmp_path / "cb", server, "show_account")

    # Then it finds the account and its URL
    assert shown.returncode == 0, shown.stderr
    assert account.uri in shown.stdout


# --------------------------------------------------------------------------- orders


def test_dns01_order_step_by_step_issues_a_chain_openssl_verifies(
    dns_lab: DnsLab,
    pebble: Pebble,
    client: acme.client.ClientV2,
    account: Account,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    csr = _csr("example.test", "*.example.test")

    # Given a new order, recorded as JSON the way the task layer stores it
    order = resume_or_create(client, None, csr, profile="tlsserver", replaces=None)
    assert order.status == "pending" and order.profile is None  # Pebble has no profiles
    assert sorted(order.identifiers) == ["*.example.test", "example.test"]
    stored = OrderState.from_json(json.loads(json.dumps(order.to_json())))
    assert stored == order

    # When the step is redelivered, the stored order is resumed, not ordered again
    resumed = resume_or_create(client, stored, csr, profile="tlsserver", replaces=None)
    assert resumed.url == order.url and resumed.authorizations == order.authorizations

    # And its dns-01 challenges are published: apex and wildcard share one name
    challenges = challenges_for(resumed, "dns-01", account.key)
    assert {c.name for c in challenges} == {"_acme-challenge.example.test"}
    assert sorted(c.wildcard for c in challenges) == [False, True]
    assert len({c.value for c in challenges}) == 2
    _publish(dns_lab, challenges)

    # And answered, twice (a redelivered answer is a no-op)
    for challenge in challenges:
        answer(client, challenge.url)
        answer(client, challenge.url)

    # Then the authorizations become valid, the order is finalized (twice: idempotent) ...
    validated = _validated(client, resumed)
    finalized = finalize(client, validated, csr)
    assert finalized.status in (PROCESSING, VALID)
    assert finalize(client, finalized, csr).status in (PROCESSING, VALID)

    # ... and the downloaded chain verifies against Pebble's root
    cert_pem, chain_pem = _certificate(client, finalized)
    leaf = x509.load_pem_x509_certificate(cert_pem)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"example.test", "*.example.test"}
    intermediate = x509.load_pem_x509_certificate(pebble.intermediates_pem())
    assert x509.load_pem_x509_certificate(chain_pem) == intermediate
    assert _openssl_verify(tmp_path, pebble, cert_pem, chain_pem).strip().endswith(": OK")

    # And a chain that is not offered falls back to the CA's default one
    other = fetch_certificate(client, finalized, preferred_chain="No Such Root")
    assert other[1] == chain_pem
    print(f"dns-01 order for 2 names, step by step: {time.monotonic() - started:.2f} s")


def test_wrong_txt_value_fails_the_order_with_pebbles_reason(
    dns_lab: DnsLab, client: acme.client.ClientV2, account: Account
) -> None:
    # Given an order whose TXT record holds a wrong value
    csr = _csr("www.example.test")
    order = create_order(client, csr, profile=None, replaces=None)
    [challenge] = challenges_for(order, "dns-01", account.key)
    _publish(dns_lab, [dataclasses.replace(challenge, value="not-the-right-value")])

    # When the challenge is answered and polled
    answer(client, challenge.url)

    def step() -> OrderFailed | None:
        try:
            authorization_states(client, order)
        except OrderFailed as failed:
            return failed
        return None

    failed = _until("authorization invalid", step)

    # Then it fails permanently, with Pebble's reason for the operator
    assert isinstance(failed, PermanentError)
    assert failed.problems and failed.problems[0].startswith("www.example.test: ")
    assert "unauthorized" in str(failed) and "Correct value not found" in str(failed)
    # And the failed order cannot be resumed: the caller backs off and orders anew
    with pytest.raises(OrderFailed, match="Correct value not found"):
        resume_or_create(client, order, csr, profile=None, replaces=None)
    print(f"failure reported as: {failed}")


def test_stored_order_for_other_names_is_refused(client: acme.client.ClientV2) -> None:
    order = create_order(client, _csr("www.example.test"), profile=None, replaces=None)
    with pytest.raises(AcmePermanentError, match="stale"):
        resume_or_create(client, order, _csr("example.test"), profile=None, replaces=None)


def _sent_payloads(client: acme.client.ClientV2) -> list[dict[str, Any]]:
    """Collects the JSON payload of every signed POST the client sends from now on."""
    payloads: list[dict[str, Any]] = []

    def record(response: requests.Response, *_: object, **__: object) -> None:
        body = response.request.body
        if response.request.method == "POST" and body:
            payload = json.loads(body).get("payload")
            if payload:  # POST-as-GET has an empty payload
                payloads.append(json.loads(b64.b64decode(payload)))

    client.net.session.hooks["response"].append(record)
    return payloads


def test_replaces_is_sent_only_to_a_ca_with_renewal_info(client: acme.client.ClientV2) -> None:
    csr = _csr("www.example.test")
    sent = _sent_payloads(client)

    # Pebble 2.4 has no renewalInfo: 'replaces' is left out and the order is made
    assert create_order(client, csr, profile=None, replaces=CERT_ID).status == "pending"
    assert sent and not any("replaces" in payload for payload in sent)

    # With renewalInfo in the directory, newOrder carries it (Pebble ignores unknown fields)
    pretend = dict(client.directory.to_partial_json(), renewalInfo="https://127.0.0.1:1/ari")
    client.directory = acme.messages.Directory(pretend)
    order = create_order(client, csr, profile=None, replaces=CERT_ID)
    assert order.status == "pending" and len(order.authorizations) == 1
    new_order = sent[-1]  # (reads of the authorizations carry no payload)
    assert new_order["replaces"] == CERT_ID
    assert [ident["value"] for ident in new_order["identifiers"]] == ["www.example.test"]


# --------------------------------------------------------------------------- failures


def test_badnonce_storm_is_transient_after_the_librarys_retry(
    services: Services, dns_lab: DnsLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Pebble that rejects every nonce
    stormy = start_pebble(
        services,
        tmp_path / "stormy",
        dns_server=f"{dns_lab.primary}:{dns_lab.port}",
        nonce_reject=100,
    )
    server = AcmeServer(directory_url=stormy.directory_url, ca_bundle=stormy.ca_bundle)

    sends: list[str] = []
    post_once = acme.client.ClientNetwork._post_once

    def counted(net: acme.client.ClientNetwork, url: str, *args: Any, **kwargs: Any) -> Any:
        sends.append(url)
        return post_once(net, url, *args, **kwargs)

    monkeypatch.setattr(acme.client.ClientNetwork, "_post_once", counted)

    # When an account is registered, Then the library retries once, and the second badNonce
    # in a row is a transient error for the task layer to retry later
    with pytest.raises(AcmeTransientError) as raised:
        ensure_account(tmp_path / "cb", server, ca="pebble", email=EMAIL)
    assert raised.value.code == "badNonce"
    assert isinstance(raised.value, TransientError)
    assert len(sends) == 2 and sends[0] == sends[1]


def test_server_down_is_transient_and_untrusted_https_is_permanent(pebble: Pebble) -> None:
    down = AcmeServer(directory_url=f"https://127.0.0.1:{free_port()}/dir")
    with pytest.raises(AcmeTransientError, match="unreachable"):
        connect(down, None)
    untrusted = AcmeServer(directory_url=pebble.directory_url)  # no ca_bundle for Pebble's CA
    with pytest.raises(AcmePermanentError, match="ca_acme_ca_bundle"):
        connect(untrusted, None)
