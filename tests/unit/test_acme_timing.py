"""When the renew check of an ACME service starts an order: the remembered ARI plan (one draw
per window, the CA's recheck time) and the backoff after failed builds. The clock is injected;
no test here talks to a CA (``connect`` is replaced where the check would)."""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from support import REPO

from sslm_tasks.acme.network import AcmeTransientError
from sslm_tasks.acme.renewal_info import TEMPORARY_RECHECK, RenewalPlan
from sslm_tasks.acme.timing import RenewalWindow
from sslm_tasks.config.load import load_config
from sslm_tasks.errors import PermanentError
from sslm_tasks.lifecycle import acme_timing, build, failures
from sslm_tasks.lifecycle.acme_plan import ari_verdict, backoff_waiting
from sslm_tasks.lifecycle.acme_timing import after_failure, merge_plan
from sslm_tasks.lifecycle.context import ServiceContext, load_record
from sslm_tasks.lifecycle.record import AriPlan, Backoff
from sslm_tasks.lifecycle.workspace import RunOptions, Workspace
from sslm_tasks.store import layout as files
from sslm_tasks.store.layout import ServiceRef
from sslm_tasks.store.versions import new_version, point

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WEB = ServiceRef("example.test", "web")
WINDOW = RenewalWindow(NOW + timedelta(days=20), NOW + timedelta(days=22))

SERVICE = """name = 'Web'
group = 'example.test'
service = 'web'
signing_ca = 'le'

[X509]
    CN = 'example.test'
    O = 'Example'
    C = 'US'
    sans = ['example.test']
"""


def ari_answer(window: RenewalWindow, renew_at: datetime, next_check: datetime) -> RenewalPlan:
    return RenewalPlan(
        renew_at=renew_at, next_check=next_check, source="ari", replaces="aki.serial", window=window
    )


def lifetime_answer(next_check: datetime) -> RenewalPlan:
    return RenewalPlan(renew_at=NOW + timedelta(days=30), next_check=next_check, source="lifetime")


# --------------------------------------------------------------------------- the plan


def test_the_time_drawn_in_a_window_is_kept_while_the_window_stays() -> None:
    # Given a plan drawn inside the CA's window
    first = merge_plan(
        None, ari_answer(WINDOW, WINDOW.start + timedelta(hours=5), NOW), curr="s1", answered=True
    )

    # When the CA gives the same window again with another draw and a later recheck
    later = NOW + timedelta(hours=6)
    again = merge_plan(
        first,
        ari_answer(WINDOW, WINDOW.start + timedelta(hours=40), later),
        curr="s1",
        answered=True,
    )

    # Then the first draw stands, with the new recheck time
    assert again.renew_at == WINDOW.start + timedelta(hours=5)
    assert again.next_check == later and again.replaces == "aki.serial"


def test_a_moved_window_is_drawn_anew() -> None:
    first = merge_plan(None, ari_answer(WINDOW, WINDOW.start, NOW), curr="s1", answered=True)
    moved = RenewalWindow(NOW - timedelta(days=1), NOW)

    again = merge_plan(first, ari_answer(moved, NOW, NOW), curr="s1", answered=True)

    assert again.window == moved and again.renew_at == NOW


def test_a_failed_ask_keeps_the_last_window_and_asks_again_at_the_new_time() -> None:
    # Given a window the CA gave for curr
    first = merge_plan(None, ari_answer(WINDOW, WINDOW.start, NOW), curr="s1", answered=True)

    # When the next ask fails (the lifetime rule's plan, asking again within the hour)
    retry = NOW + TEMPORARY_RECHECK
    again = merge_plan(first, lifetime_answer(retry), curr="s1", answered=False)

    # Then the window and its draw stand
    assert again.window == WINDOW and again.renew_at == WINDOW.start
    assert again.next_check == retry


def test_a_ca_without_ari_and_a_new_curr_drop_the_window() -> None:
    first = merge_plan(None, ari_answer(WINDOW, WINDOW.start, NOW), curr="s1", answered=True)

    no_ari = merge_plan(first, lifetime_answer(NOW), curr="s1", answered=True)
    new_curr = merge_plan(first, lifetime_answer(NOW), curr="s2", answered=False)

    assert no_ari.window is None and no_ari.renew_at is None
    assert new_curr == AriPlan(curr="s2", next_check=NOW)


def test_the_verdict_follows_the_drawn_time_and_the_lifetime_rule_without_a_window() -> None:
    plan = AriPlan(curr="s1", next_check=NOW, window=WINDOW, renew_at=WINDOW.start)

    not_yet = ari_verdict(plan, now=NOW)
    due = ari_verdict(plan, now=WINDOW.start)

    assert not_yet is not None and not not_yet[0]
    assert "renew at 2026-06-21 12:00:00 UTC" in not_yet[1] and "(ARI)" in not_yet[1]
    assert due is not None and due[0] and due[1].startswith("due: in the CA's renewal window")
    assert ari_verdict(AriPlan(curr="s1", next_check=NOW), now=NOW) is None


def test_the_plan_is_asked_again_only_from_its_recheck_time_and_survives_json() -> None:
    plan = AriPlan(
        curr="s1",
        next_check=NOW,
        window=WINDOW,
        renew_at=WINDOW.start,
        replaces="aki.serial",
        explanation_url="https://ca.example/incident",
    )

    assert not plan.must_ask(now=NOW - timedelta(seconds=1))
    assert plan.must_ask(now=NOW)
    assert not AriPlan(curr="s1", next_check=None).must_ask(now=NOW)
    assert AriPlan.from_json(plan.to_json()) == plan


# --------------------------------------------------------------------------- the backoff


def test_failures_back_off_1_10_100_minutes_then_daily() -> None:
    backoff: Backoff | None = None
    waits = []
    for _ in range(5):
        backoff = after_failure(backoff, now=NOW, retry_after=None)
        waits.append(backoff.retry_at - NOW)

    assert waits == [
        timedelta(minutes=1),
        timedelta(minutes=10),
        timedelta(minutes=100),
        timedelta(days=1),
        timedelta(days=1),
    ]


def test_the_cas_retry_after_wins_and_the_reason_names_the_time() -> None:
    backoff = after_failure(None, now=NOW, retry_after=NOW + timedelta(hours=1))

    text = backoff_waiting(backoff, now=NOW)

    assert backoff.failures == 1 and backoff.ca_asked
    assert text is not None
    assert "next attempt after 2026-06-01 13:00:00 UTC (the CA's Retry-After)" in text
    assert backoff_waiting(backoff, now=NOW + timedelta(hours=1)) is None
    assert Backoff.from_json(backoff.to_json()) == backoff


def test_the_retry_after_is_found_through_the_errors_causes() -> None:
    when = NOW + timedelta(hours=1)
    limited = AcmeTransientError("creating the order: rateLimited", retry_after=when)
    try:
        raise PermanentError("acme_order: the CA asks to wait") from limited
    except PermanentError as err:
        wrapped = err

    assert acme_timing.retry_after_in(wrapped) == when
    assert acme_timing.retry_after_in(PermanentError("no cause")) is None
    assert acme_timing.retry_after_in(None) is None


# --------------------------------------------------------------------------- the renew check


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
            "\n[dns]\n    acme_dir = ['acme']\n"
        )
    config, _ = load_config([str(WEB)], conf_dir=conf)
    return Workspace(config=config, clock=lambda: NOW, rng=random.Random(7))


def at(ws: Workspace, moment: datetime, *, force: bool = False) -> ServiceContext:
    """The web service in the same workspace, its clock at ``moment``."""
    return ServiceContext(
        Workspace(
            config=ws.config, options=RunOptions(force=force), clock=lambda: moment, rng=ws.rng
        ),
        WEB,
    )


def web(ws: Workspace) -> ServiceContext:
    return ServiceContext(ws, WEB)


def fail_build(ws: Workspace, *, retry_after: datetime | None) -> str:
    """A build that started and failed with a rate limit."""
    stamp = build.start_build(web(ws))
    error = AcmeTransientError("creating the order: rateLimited", retry_after=retry_after)
    failures.record_step_failure(web(ws), str(error), error=error)
    return stamp


def test_a_failed_build_is_not_resumed_before_the_cas_retry_after(ws: Workspace) -> None:
    # Given a build that failed on a 429 asking for an hour
    stamp = fail_build(ws, retry_after=NOW + timedelta(hours=1))

    # When the service is checked within the hour, with -f, and after it
    waiting = build.check_renew(at(ws, NOW + timedelta(minutes=59)))
    forced = build.check_renew(at(ws, NOW + timedelta(minutes=59), force=True))
    later = build.check_renew(at(ws, NOW + timedelta(hours=1)))

    # Then it waits, naming the time, but keeps the build; the time passing resumes it, and
    # -f starts a fresh one at once
    assert not waiting.build and waiting.stamp == stamp
    assert "next attempt after 2026-06-01 13:00:00 UTC (the CA's Retry-After)" in waiting.reason
    assert forced.build and forced.stamp is None and "fresh" in forced.reason
    assert later.build and later.reason == f"resuming build {stamp}"


def test_failures_count_up_and_a_stored_version_resets_them(ws: Workspace) -> None:
    # Given two failed attempts of the same build without a Retry-After
    fail_build(ws, retry_after=None)
    error = PermanentError("acme_propagated: not done after 120 s")
    failures.record_step_failure(at(ws, NOW + timedelta(minutes=2)), str(error), error=error)
    backoff = load_record(ws, WEB).backoff
    assert backoff is not None and backoff.failures == 2
    assert backoff.retry_at == NOW + timedelta(minutes=12)

    # When a build succeeds (what build.store clears)
    ctx = web(ws)
    ctx.record.backoff = None
    ctx.save()

    # Then nothing holds the next check back
    assert acme_timing.waiting(web(ws)) is None


def test_a_failure_outside_a_build_is_not_counted(ws: Workspace) -> None:
    ws.layout.service_dir(WEB).mkdir(parents=True)

    failures.record_step_failure(web(ws), "deploy failed", error=PermanentError("deploy failed"))

    assert load_record(ws, WEB).backoff is None


def _give_curr(ws: Workspace) -> str:
    """A ``curr`` certificate of 90 days, issued 10 days before NOW, with an AKI (ARI needs one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "example.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(4711)
        .not_valid_before(NOW - timedelta(days=10))
        .not_valid_after(NOW + timedelta(days=80))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    for directory in (ws.layout.service_dir(WEB), ws.layout.db_dir(WEB)):
        directory.mkdir(parents=True, exist_ok=True)
    stamp = new_version(ws.layout, WEB, now=NOW - timedelta(days=10))
    (ws.layout.version_dir(WEB, stamp) / files.CERT).write_bytes(cert.public_bytes(Encoding.PEM))
    point(ws.layout, WEB, "curr", stamp)
    return stamp


def test_a_ca_that_cannot_be_reached_leaves_the_lifetime_rule_and_a_recheck_time(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a current certificate and a CA whose directory does not answer
    curr = _give_curr(ws)
    asked: list[str] = []

    def unreachable(server: object, key: object) -> None:
        asked.append("directory")
        raise AcmeTransientError("fetching the ACME directory: ACME server unreachable")

    monkeypatch.setattr(acme_timing, "connect", unreachable)

    # When the service is checked twice within the hour, and once after it
    first = build.check_renew(web(ws))
    second = build.check_renew(at(ws, NOW + timedelta(minutes=30)))
    after = build.check_renew(at(ws, NOW + TEMPORARY_RECHECK))

    # Then the check does not fail: the lifetime rule decides (not due, 50 days to go)
    assert not first.build and first.reason.startswith("renew in 50.0 days"), first.reason
    assert not second.build and not after.build
    # and the CA is asked again only once its hour has passed
    assert asked == ["directory", "directory"]
    plan = load_record(ws, WEB).ari
    assert plan == AriPlan(curr=curr, next_check=NOW + 2 * TEMPORARY_RECHECK)


def test_the_dry_run_asks_but_remembers_nothing(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    _give_curr(ws)

    def unreachable(server: object, key: object) -> None:
        raise AcmeTransientError("fetching the ACME directory: ACME server unreachable")

    monkeypatch.setattr(acme_timing, "connect", unreachable)

    check = build.check_renew(web(ws), record=False)

    assert not check.build
    assert load_record(ws, WEB).ari is None
