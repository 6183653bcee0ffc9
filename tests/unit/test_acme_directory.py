"""The pure parts of sslm's ACME layer: which server, where accounts live, how failures sort.

Everything that talks to a server is tested against Pebble (tests/integration) or the local
RenewalInfo endpoint (test_acme_ari.py); these need no network.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import acme.client
import acme.messages
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwk import JWKEC

from sslm_tasks.acme import directory
from sslm_tasks.acme.accounts import accounts_dir
from sslm_tasks.acme.directory import (
    LETSENCRYPT_PRODUCTION,
    LETSENCRYPT_STAGING,
    AcmeServer,
    server_for,
)
from sslm_tasks.acme.network import (
    AcmePermanentError,
    AcmeRateLimited,
    AcmeTransientError,
    classify,
    parse_retry_after,
    suggested_retry,
)
from sslm_tasks.acme.orders import choose_profile
from sslm_tasks.config.models import CaInfo
from sslm_tasks.errors import ConfigError, StoreError
from sslm_tasks.lifecycle.workspace import RunOptions

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _problem(code: str, detail: str = "", **extra: object) -> acme.messages.Error:
    jobj = {"type": f"urn:ietf:params:acme:error:{code}", "detail": detail, **extra}
    error: acme.messages.Error = acme.messages.Error.from_json(jobj)
    return error


# --------------------------------------------------------------------------- which server


def test_default_is_lets_encrypt_production_and_staging_with_test_mode() -> None:
    ca = CaInfo(ca_type="letsencrypt")
    assert server_for(ca, test=False) == AcmeServer(LETSENCRYPT_PRODUCTION)
    assert server_for(ca, test=True) == AcmeServer(LETSENCRYPT_STAGING)
    explicit = CaInfo(ca_type="certbot", ca_acme_directory=LETSENCRYPT_PRODUCTION)
    assert server_for(explicit, test=True).directory_url == LETSENCRYPT_STAGING


def test_a_dry_run_talks_to_staging_as_certbot_dry_run_does() -> None:
    ca = CaInfo(ca_type="letsencrypt")
    for options, url in (
        (RunOptions(), LETSENCRYPT_PRODUCTION),
        (RunOptions(dry_run=True), LETSENCRYPT_STAGING),
        (RunOptions(test=True), LETSENCRYPT_STAGING),
    ):
        assert server_for(ca, test=options.acme_test_server).directory_url == url
        # and the switch reaches a worker through the task message
        assert RunOptions.from_json(options.to_json()) == options


def test_other_directory_and_bundle_are_used_as_written(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    ca = CaInfo(
        ca_type="acme",
        ca_acme_directory="https://127.0.0.1:14000/dir",
        ca_acme_ca_bundle=str(bundle),
    )
    assert server_for(ca, test=True) == AcmeServer("https://127.0.0.1:14000/dir", bundle)


def test_bad_directory_or_missing_bundle_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_acme_directory"):
        server_for(CaInfo(ca_type="acme", ca_acme_directory="http://127.0.0.1/dir"), test=False)
    missing = CaInfo(ca_type="acme", ca_acme_ca_bundle=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match="ca_acme_ca_bundle"):
        server_for(missing, test=False)


# --------------------------------------------------------------------------- accounts dir


def test_accounts_dir_is_certbots() -> None:
    cb = Path("/top/certs/mail/smtp/cb")
    assert accounts_dir(cb, LETSENCRYPT_PRODUCTION) == (
        cb / "accounts/acme-v02.api.letsencrypt.org/directory"
    )
    assert accounts_dir(cb, LETSENCRYPT_STAGING).parts[-2:] == (
        "acme-staging-v02.api.letsencrypt.org",
        "directory",
    )
    assert accounts_dir(cb, "https://127.0.0.1:14000/dir") == cb / "accounts/127.0.0.1:14000/dir"


@pytest.mark.parametrize(
    "url", ["https://ca.example/../../etc", "https://ca.example/a/./b", "/dir"]
)
def test_accounts_dir_never_leaves_cb(url: str) -> None:
    with pytest.raises(StoreError, match="cannot name an accounts dir"):
        accounts_dir(Path("/top/cb"), url)


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("code", ["badNonce", "serverInternal", "orderNotReady"])
def test_transient_problems(code: str) -> None:
    retry = NOW + timedelta(minutes=5)
    error = classify("creating the order", _problem(code, "try later"), retry_after=retry)
    assert isinstance(error, AcmeTransientError)
    assert (error.code, error.retry_after) == (code, retry)
    assert str(error) == f"creating the order: {code}: try later"


@pytest.mark.parametrize(
    "code",
    ["malformed", "unauthorized", "rejectedIdentifier", "caa", "dns", "connection", "badCSR"],
)
def test_permanent_problems(code: str) -> None:
    error = classify("creating the order", _problem(code, "no"))
    assert isinstance(error, AcmePermanentError) and error.code == code


def test_a_rate_limit_is_its_own_kind_carrying_its_retry_after() -> None:
    retry = NOW + timedelta(hours=1)
    error = classify("creating the order", _problem("rateLimited", "slow down"), retry_after=retry)
    # Permanent for this attempt (retrying within the wait would only be refused again), with
    # the time the next one may come
    assert isinstance(error, AcmeRateLimited) and isinstance(error, AcmePermanentError)
    assert (error.code, error.retry_after, suggested_retry(error)) == ("rateLimited", retry, retry)
    assert str(error) == "creating the order: rateLimited: slow down"


def test_unknown_problem_is_permanent_and_compound_looks_at_its_parts() -> None:
    assert isinstance(classify("x", _problem("somethingNew")), AcmePermanentError)
    nonce = [{"type": "urn:ietf:params:acme:error:badNonce", "detail": "again"}]
    assert isinstance(classify("x", _problem("compound", subproblems=nonce)), AcmeTransientError)
    sub = [{"type": "urn:ietf:params:acme:error:rateLimited", "detail": "slow down"}]
    assert isinstance(classify("x", _problem("compound", subproblems=sub)), AcmeRateLimited)
    sub.append({"type": "urn:ietf:params:acme:error:caa", "detail": "CAA forbids"})
    error = classify("x", _problem("compound", subproblems=sub))
    assert isinstance(error, AcmePermanentError) and not isinstance(error, AcmeRateLimited)
    assert "CAA forbids" in str(error)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", NOW + timedelta(minutes=2)),
        ("Mon, 01 Jun 2026 13:00:00 GMT", NOW + timedelta(hours=1)),
        ("Sun, 31 May 2026 13:00:00 GMT", NOW),  # a date in the past: now
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_header(header: str | None, expected: datetime | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


# --------------------------------------------------------------------------- profiles


def test_profile_falls_back_to_the_servers_default() -> None:
    bare = acme.messages.Directory.from_json({"newOrder": "https://ca.example/new-order"})
    with_profiles = acme.messages.Directory.from_json(
        {"meta": {"profiles": {"classic": "90 days", "tlsserver": "45 days"}}}
    )
    assert choose_profile(bare, "tlsserver") is None
    assert choose_profile(with_profiles, "tlsserver") == "tlsserver"
    assert choose_profile(with_profiles, "shortlived") is None
    assert choose_profile(with_profiles, None) is None


# --------------------------------------------------------------------------- imports


def test_our_acme_package_does_not_shadow_certbots() -> None:
    import sslm_tasks.acme.orders as orders

    # Inside sslm_tasks.acme, "acme" is certbot's library, never our own package
    assert orders.acme.client is acme.client
    assert "site-packages" in (acme.client.__file__ or "")
    assert hasattr(acme.client, "ClientV2")


def test_a_thread_reuses_an_accounts_client_and_a_process_its_directory_until_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetched: list[str] = []

    def fetch(_net: acme.client.ClientNetwork, url: str) -> acme.messages.Directory:
        fetched.append(url)
        return acme.messages.Directory({})

    clock = [1000.0]
    monkeypatch.setattr(directory, "fetch_directory", fetch)
    monkeypatch.setattr(directory, "_fetched", {})
    monkeypatch.setattr(directory, "_reuse", threading.local())
    monkeypatch.setattr(directory, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    server = AcmeServer("https://127.0.0.1:14000/dir")
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    other_key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    account = "https://127.0.0.1:14000/my-account/1"

    first = directory.connect(server, key, account_uri=account)
    # the same account in the same thread: the same client, no request
    assert directory.connect(server, key, account_uri=account) is first
    # another account: its own client, the process's directory
    assert directory.connect(server, other_key, account_uri=account + "0") is not first
    # registering (no account yet) never reuses a client
    assert directory.connect(server, key) is not directory.connect(server, key)
    # another thread: its own client
    elsewhere: list[acme.client.ClientV2] = []
    worker = threading.Thread(
        target=lambda: elsewhere.append(directory.connect(server, key, account_uri=account))
    )
    worker.start()
    worker.join()
    assert elsewhere[0] is not first
    assert fetched == [server.directory_url]
    # once stale, a new client and a new directory fetch
    clock[0] += directory.CLIENT_TTL_S
    assert directory.connect(server, key, account_uri=account) is not first
    assert fetched == [server.directory_url] * 2
