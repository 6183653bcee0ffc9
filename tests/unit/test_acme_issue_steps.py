"""The pure parts of ACME issuance: which zone a name's challenge goes into, how a chain without
its root is checked, how long the waiting tasks wait, and how a local sign refuses an ACME CA."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from support import REPO, record_disk_order, synced_before

from sslm_tasks.acme import orders
from sslm_tasks.acme.network import AcmeRateLimited, AcmeTransientError
from sslm_tasks.acme.order_state import OrderState
from sslm_tasks.config.load import load_config
from sslm_tasks.config.settings import DEFAULT_ACME_WAIT_S, load_settings
from sslm_tasks.crypto.csr import SubjectSpec, build_csr, load_csr
from sslm_tasks.crypto.inspect import verify_chain
from sslm_tasks.crypto.keys import KeySpec, PrivateKey, generate_private_key
from sslm_tasks.crypto.signing import SigningPolicy, self_sign, sign_with_ca
from sslm_tasks.errors import ConfigError, PermanentError
from sslm_tasks.lifecycle import acme_sign, build, pipeline
from sslm_tasks.lifecycle.challenges.dns_include import apex_of
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.pipeline import COUNTDOWN_MAX_S, Kind, Step, countdown, first_pause
from sslm_tasks.lifecycle.verdict import Verdict
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import ServiceRef

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
def ctx(ws: Workspace) -> ServiceContext:
    return ServiceContext(ws, WEB)


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
            "\n[dns]\n    acme_dir = ['acme']\n"
        )
    config, _ = load_config([str(WEB)], conf_dir=conf)
    return Workspace(config=config)


def test_a_name_goes_into_the_longest_configured_zone(ctx: ServiceContext) -> None:
    assert apex_of(ctx, "*.example.test") == "example.test"
    assert apex_of(ctx, "example.test") == "example.test"
    assert apex_of(ctx, "www.other.test") == "other.test"
    assert apex_of(ctx, "a.b.sub.example.test") == "sub.example.test"
    # (a name in no configured zone is looked up at the primary: test_acme_zone_by_dns.py)


def test_an_acme_service_has_no_local_signer_and_the_local_sign_refuses_it(
    ctx: ServiceContext,
) -> None:
    assert acme_sign.is_acme(ctx)
    assert build.signing_ca_curr(ctx) is None
    build.start_build(ctx)
    build.make_key(ctx)
    build.make_csr(ctx)
    with pytest.raises(PermanentError, match="is an ACME CA"):
        build.sign(ctx)


def test_the_acme_steps_are_stated_once_in_rfc_order() -> None:
    assert [step.name for step in pipeline.ACME_SIGN] == [
        "acme_order",
        "acme_publish",
        "acme_propagated",
        "acme_answer",
        "acme_validated",
        "acme_finalize",
    ]
    waiting = [step.name for step in pipeline.ACME_SIGN if step.kind is Kind.WAIT]
    assert waiting == ["acme_propagated", "acme_validated", "acme_finalize"]
    assert all(step.patient for step in pipeline.ACME_SIGN)
    renew = [step.name for step in pipeline.renew(acme=False).steps]
    assert renew == ["check", "keygen", "csr", "sign", "store"]


def test_waiting_tasks_count_down_front_weighted_and_give_up_after_the_bound() -> None:
    countdowns = [countdown(n) for n in range(12)]
    assert countdowns == [0.25] * 4 + [0.5, 1, 2, 4, 8, 16, 32, COUNTDOWN_MAX_S]
    assert pipeline.max_retries(DEFAULT_ACME_WAIT_S) == 46
    assert pipeline.max_retries(5) > 8


def test_a_pause_honours_the_cas_retry_after_cut_at_the_bound() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=30)
    # The walker's own pause, unless the CA asked for a later look
    assert pipeline.pause(0.5, Verdict(False), left_s=600) == 0.5
    assert 29 < pipeline.pause(0.5, Verdict(False, retry_after=soon), left_s=600) <= 30
    # never sooner than the walker's own, never past the bound
    past = datetime.now(UTC) - timedelta(seconds=30)
    assert pipeline.pause(2.0, Verdict(False, retry_after=past), left_s=600) == 2.0
    # the CA's wait is cut at the bound; the walker's own countdowns are what they were
    assert pipeline.pause(0.5, Verdict(False, retry_after=soon), left_s=10) == 10
    assert pipeline.pause(4.0, Verdict(False), left_s=1) == 4.0


def test_dns_check_delay_is_the_first_wait_of_a_dns01_propagation_check_only(
    ctx: ServiceContext,
) -> None:
    propagated, validated = pipeline.ACME_SIGN[2], pipeline.ACME_SIGN[4]

    def first(step: Step, *, delay: float, over_dns: bool) -> float:
        return first_pause(step, 0, dns_check_delay=delay, over_dns=over_dns)

    # dns-01: the first wait is dns_check_delay, capped; the later ones do not change
    assert first(propagated, delay=20, over_dns=True) == 20
    assert first(propagated, delay=240, over_dns=True) == COUNTDOWN_MAX_S
    later = first_pause(propagated, 1, dns_check_delay=20, over_dns=True)
    assert later == countdown(1)
    # without a delay, for another step, or for http-01 tokens: the usual countdown
    assert first(propagated, delay=0, over_dns=True) == countdown(0)
    assert first(validated, delay=20, over_dns=True) == countdown(0)
    assert first(propagated, delay=20, over_dns=False) == countdown(0)
    # and the service of this workspace validates over DNS
    assert acme_sign.validates_over_dns(ctx)


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


def _failing(err: Exception, *, patient: bool) -> Step:
    def run(ctx: ServiceContext) -> Verdict:
        raise err

    return Step("acme_order", Kind.ACT, run, patient=patient)


def test_a_patient_step_tries_again_after_transient_errors_but_not_after_a_rate_limit(
    ctx: ServiceContext,
) -> None:
    storm = AcmeTransientError("creating the order: badNonce: ...", code="badNonce")
    assert pipeline.look(ctx, _failing(storm, patient=True)) == Verdict(False, str(storm))
    with pytest.raises(AcmeTransientError):
        pipeline.look(ctx, _failing(storm, patient=False))
    # A transient error that says when to ask again: the wait honours it
    later = NOW + timedelta(seconds=3)
    busy = AcmeTransientError("finalizing: still being issued", retry_after=later)
    assert pipeline.look(ctx, _failing(busy, patient=True)) == Verdict(False, str(busy), later)
    # The CA's rate limit is no "not yet": the attempt fails, carrying its Retry-After
    limited = AcmeRateLimited("creating the order: rateLimited: ...", retry_after=later)
    with pytest.raises(AcmeRateLimited) as err:
        pipeline.look(ctx, _failing(limited, patient=True))
    assert err.value.retry_after == later
    done = Step("acme_order", Kind.ACT, lambda ctx: Verdict(), patient=True)
    assert pipeline.look(ctx, done) == Verdict()


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


def _order(url: str, status: str) -> OrderState:
    return OrderState(url=url, status=status, identifiers=("example.test",), authorizations=())


def test_an_orders_first_record_is_durable_and_its_later_states_are_not(
    ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a build and its step's view of the order (no CA needed to record one)
    stamp = build.start_build(ctx)
    step = acme_sign.Order(ctx, cast(Any, None), stamp, cast(Any, None), cast(Any, None))
    state, service_dir = ctx.layout.state_file(ctx.ref), ctx.layout.service_dir(ctx.ref)
    events = record_disk_order(monkeypatch)
    # When the order the CA created is recorded
    step.keep(_order("https://ca.test/order/1", "pending"))
    # Then the record is durable, its directory synced after the rename: an order at the CA
    # that no build knows of would be lost with it
    renamed = events.index(("rename", os.path.realpath(state)))
    assert ("fsync", os.path.realpath(service_dir)) in events[renamed:]
    # When a later state of the same order is recorded
    events.clear()
    step.keep(_order("https://ca.test/order/1", "ready"))
    # Then it is written (fsynced before its rename) but the directory is not synced: lost, it
    # is a crash just before it, and the next step polls the order again
    assert ("rename", os.path.realpath(state)) in events
    assert ("fsync", os.path.realpath(service_dir)) not in events
    assert ctx.reload().order is not None and ctx.record.order.order.status == "ready"
    # And a state recorded already is not written again
    events.clear()
    step.keep(_order("https://ca.test/order/1", "ready"))
    assert events == []


def test_an_acme_certificate_goes_in_chain_first_and_store_syncs_it_before_next(
    ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a build with its key and CSR, and a CA that issues at once
    stamp = build.start_build(ctx)
    build.make_key(ctx)
    build.make_csr(ctx)
    now = datetime.now(UTC)
    ca_key = generate_private_key(KeySpec(ktype="ec", ec_curve="secp256r1"))
    ca_csr = build_csr(ca_key, SubjectSpec(CN="Test CA"), [], is_ca=True)
    ca_cert = self_sign(ca_csr, ca_key, SigningPolicy(days=30, is_ca=True), now=now)
    csr = load_csr((ctx.layout.version_dir(ctx.ref, stamp) / "csr.pem").read_bytes())
    leaf = sign_with_ca(csr, ca_key, ca_cert, SigningPolicy(days=30), now=now)
    issued = _order("https://ca.test/order/1", "valid")
    step = SimpleNamespace(
        stamp=stamp,
        client=None,
        ca=SimpleNamespace(ca_preferred_chain=""),
        current=lambda: issued,
        csr_pem=lambda: b"csr",
        keep=lambda order: None,
    )
    monkeypatch.setattr(acme_sign, "_begin", lambda ctx: step)
    monkeypatch.setattr(orders, "finalize", lambda client, order, csr_pem: order)
    monkeypatch.setattr(
        orders,
        "fetch_certificate",
        lambda *a, **k: (leaf.public_bytes(Encoding.PEM), ca_cert.public_bytes(Encoding.PEM)),
    )
    version = ctx.layout.version_dir(ctx.ref, stamp)
    events = record_disk_order(monkeypatch)
    # When the finalize step downloads the certificate
    assert acme_sign.finalize(ctx)[0] is True
    # Then each file was fsynced before it got its name, the chain named before the
    # certificate (a certificate present means the build signed: has_cert)
    for name in ("chain.pem", "cert.pem"):
        assert any(
            Path(path).name.startswith(f"{name}.tmp-")
            for path in synced_before(events, version / name)
        )
    renames = [path for kind, path in events if kind == "rename"]
    assert renames.index(str(version / "chain.pem")) < renames.index(str(version / "cert.pem"))
    # And the version directory waits for store, which syncs it before next leads there
    assert ("fsync", str(version)) not in events
    events.clear()
    build.store(ctx)
    assert str(version) in synced_before(events, ctx.layout.link(ctx.ref, "next"))
