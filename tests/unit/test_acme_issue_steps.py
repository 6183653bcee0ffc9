"""The pure parts of ACME issuance: which zone a name's challenge goes into, how a chain without
its root is checked, how long the waiting tasks wait, and how a local sign refuses an ACME CA."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from support import REPO

from sslm_tasks.acme.network import AcmeTransientError
from sslm_tasks.config.load import load_config
from sslm_tasks.config.settings import DEFAULT_ACME_WAIT_S, load_settings
from sslm_tasks.crypto.csr import SubjectSpec, build_csr
from sslm_tasks.crypto.inspect import verify_chain
from sslm_tasks.crypto.keys import KeySpec, PrivateKey, generate_private_key
from sslm_tasks.crypto.signing import SigningPolicy, self_sign, sign_with_ca
from sslm_tasks.errors import ConfigError, PermanentError
from sslm_tasks.lifecycle import acme_issue, build
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import ServiceRef
from sslm_tasks.tasks import (
    ACME_COUNTDOWN_MAX_S,
    acme_countdown,
    acme_max_retries,
    acme_next_countdown,
    acme_waited,
)
from sslm_tasks.workflows import ACME_SIGN_STEPS, BUILD_STEPS, SignStep

NOW = datetime(2026, 6, 1, tzinfo=UTC)
WEB = ServiceRef("example.test", "web")

SERVICE = """name = 'Web'
group = 'example.test'
service = 'web'
signing_ca = 'le'

[X509]
    CN = 'example.test'
    O = 'Example'
    C = 'US'
    sans = ['example.test', '*.example.test', 'www.other.test', 'a.b.sub.example.test']
"""


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    conf = tmp_path / "conf.d"
    shutil.copytree(REPO / "conf.d", conf)
    (conf / "example.test").mkdir()
    (conf / "example.test/web").write_text(SERVICE)
    with (conf / "ca-info.conf").open("a") as ca_info:
        ca_info.write("\n[le]\n    ca_type = 'letsencrypt'\n    ca_validation = 'dns-01'\n")
    with (conf / "ssl-mgr.conf").open("a") as main:
        main.write(
            "\n[[groups]]\n    active = true\n    domain = 'example.test'\n    services = ['web']\n"
            "\n[[dns_primary]]\n    domain = 'default'\n    server = '127.0.0.53'\n"
            "\n[[dns_primary]]\n    domain = 'sub.example.test'\n    server = '127.0.0.53'\n"
            "\n[[dns_primary]]\n    domain = 'other.test.'\n    server = '127.0.0.53'\n"
        )
    config, _ = load_config([str(WEB)], conf_dir=conf)
    return Workspace(config=config)


def test_a_name_goes_into_the_longest_configured_zone(ws: Workspace) -> None:
    assert acme_issue.apex_of(ws, WEB, "*.example.test") == "example.test"
    assert acme_issue.apex_of(ws, WEB, "example.test") == "example.test"
    assert acme_issue.apex_of(ws, WEB, "www.other.test") == "other.test"
    assert acme_issue.apex_of(ws, WEB, "a.b.sub.example.test") == "sub.example.test"
    with pytest.raises(ConfigError, match=r"no zone for 'www\.nowhere\.test'"):
        acme_issue.apex_of(ws, WEB, "www.nowhere.test")


def test_an_acme_service_has_no_local_signer_and_the_local_sign_refuses_it(
    ws: Workspace,
) -> None:
    assert acme_issue.is_acme(ws, WEB)
    assert build.signing_ca_curr(ws, WEB) is None
    build.start_build(ws, WEB)
    build.make_key(ws, WEB)
    build.make_csr(ws, WEB)
    with pytest.raises(PermanentError, match="is an ACME CA"):
        build.sign(ws, WEB)


def test_the_acme_steps_are_stated_once_in_rfc_order() -> None:
    assert [step.name for step in ACME_SIGN_STEPS] == [
        "acme_order",
        "acme_publish",
        "acme_propagated",
        "acme_answer",
        "acme_validated",
        "acme_finalize",
    ]
    waiting = [step.name for step in ACME_SIGN_STEPS if step.ready is not None]
    assert waiting == ["acme_propagated", "acme_validated", "acme_finalize"]
    assert all((step.run is None) != (step.ready is None) for step in ACME_SIGN_STEPS)
    assert [name for name, _ in BUILD_STEPS] == ["keygen", "csr", "sign", "store"]


def test_waiting_tasks_count_down_front_weighted_and_give_up_after_the_bound() -> None:
    countdowns = [acme_countdown(n) for n in range(12)]
    assert countdowns == [0.25] * 4 + [0.5, 1, 2, 4, 8, 16, 32, ACME_COUNTDOWN_MAX_S]
    assert acme_waited(0) == 0 and acme_waited(5) == 4 * 0.25 + 0.5
    tries = next(n for n in range(100) if acme_waited(n) >= DEFAULT_ACME_WAIT_S)
    assert tries == 20 and acme_max_retries(DEFAULT_ACME_WAIT_S) == 46
    # A short bound (SSLM_ACME_WAIT_S=5): the check after 8.5 s gives up; the backstop stays
    assert next(n for n in range(100) if acme_waited(n) >= 5) == 8
    assert acme_max_retries(5) > 8


def test_dns_check_delay_is_the_first_wait_of_a_dns01_propagation_check_only(
    ws: Workspace,
) -> None:
    def first(step: str, *, delay: float, over_dns: bool) -> float:
        return acme_next_countdown(step, 0, dns_check_delay=delay, over_dns=over_dns)

    # dns-01: the first wait is dns_check_delay, capped; the later ones do not change
    assert first("acme_propagated", delay=20, over_dns=True) == 20
    assert first("acme_propagated", delay=240, over_dns=True) == ACME_COUNTDOWN_MAX_S
    later = acme_next_countdown("acme_propagated", 1, dns_check_delay=20, over_dns=True)
    assert later == acme_countdown(1)
    # without a delay, for another step, or for http-01 tokens: the usual countdown
    assert first("acme_propagated", delay=0, over_dns=True) == acme_countdown(0)
    assert first("acme_validated", delay=20, over_dns=True) == acme_countdown(0)
    assert first("acme_propagated", delay=20, over_dns=False) == acme_countdown(0)
    # and the service of this workspace validates over DNS
    assert acme_issue.validates_over_dns(ws, WEB)


def test_the_acme_bound_comes_from_the_environment_and_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSLM_ACME_WAIT_S", raising=False)
    assert load_settings().acme_wait_s == DEFAULT_ACME_WAIT_S
    monkeypatch.setenv("SSLM_ACME_WAIT_S", "5")
    assert load_settings().acme_wait_s == 5
    monkeypatch.setenv("SSLM_ACME_WAIT_S", "0")
    with pytest.raises(ConfigError, match="SSLM_ACME_WAIT_S"):
        load_settings()


def _failing(err: Exception) -> SignStep:
    def run(ws: Workspace, ref: ServiceRef) -> None:
        raise err

    return SignStep("acme_order", run=run)


def test_a_step_tries_again_after_transient_errors_but_not_after_a_rate_limit(
    ws: Workspace,
) -> None:
    storm = AcmeTransientError("creating the order: badNonce: ...", code="badNonce")
    with pytest.raises(AcmeTransientError):
        _failing(storm).attempt(ws, WEB)
    limited = AcmeTransientError("creating the order: rateLimited: ...", code="rateLimited")
    with pytest.raises(PermanentError, match="acme_order: creating the order: rateLimited") as err:
        _failing(limited).attempt(ws, WEB)
    assert err.value.__cause__ is limited  # its Retry-After, for the next attempt's wait
    assert SignStep("acme_order", run=lambda ws, ref: None).attempt(ws, WEB) == (True, "done")


def _issue(
    name: str, issuer: tuple[PrivateKey, x509.Certificate] | None, *, ca: bool
) -> tuple[PrivateKey, x509.Certificate]:
    key = generate_private_key(KeySpec(ktype="ec", ec_curve="secp256r1"))
    csr = build_csr(key, SubjectSpec(CN=name), [name] if not ca else [], is_ca=ca)
    policy = SigningPolicy(days=30, is_ca=ca)
    if issuer is None:
        return key, self_sign(csr, key, policy, now=NOW)
    return key, sign_with_ca(csr, issuer[0], issuer[1], policy, now=NOW)


def test_a_chain_without_its_root_verifies_only_when_the_top_may_stay_open() -> None:
    root = _issue("Root", None, ca=True)
    intermediate = _issue("Intermediate", root, ca=True)
    _, leaf = _issue("www.example.test", intermediate, ca=False)
    # An ACME chain: leaf, then the intermediate; the root is not sent
    assert verify_chain(leaf, [intermediate[1]], now=NOW)  # no issuer for the intermediate
    assert verify_chain(leaf, [intermediate[1]], now=NOW, open_top=True) == []
    # What is there is still checked: an impostor intermediate (same name, other key) fails
    impostor = _issue("Intermediate", root, ca=True)
    assert verify_chain(leaf, [impostor[1]], now=NOW, open_top=True)
    # and a leaf alone is no chain
    assert verify_chain(leaf, [], now=NOW, open_top=True)
