"""The per-service state record: typed round trip, the first release's format upgraded, a
corrupt file set aside and rebuilt from the files, a newer format refused, no keys stored."""

from __future__ import annotations

import json
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import REPO

from sslm_tasks.acme.order_state import AuthorizationState, ChallengeState, OrderState
from sslm_tasks.config.load import load_config
from sslm_tasks.dns.servers import NsHost, SerialTarget
from sslm_tasks.errors import StoreError
from sslm_tasks.lifecycle import steps
from sslm_tasks.lifecycle.context import ServiceContext, load_record
from sslm_tasks.lifecycle.record import (
    RECORD_VERSION,
    AriPlan,
    Backoff,
    DaneRoll,
    DnsPublication,
    DnsUpdates,
    KeyPlan,
    OrderRecord,
    Phase,
    Revocation,
    ServiceRecord,
    UpdatedTxt,
    in_flight,
)
from sslm_tasks.lifecycle.workspace import RunOptions, Workspace
from sslm_tasks.store.layout import ServiceRef

REF = ServiceRef("example.com", "mail-ec")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ORDER = OrderState(
    url="https://acme.test/order/1",
    status="pending",
    identifiers=("mail.example.com",),
    authorizations=(
        AuthorizationState(
            url="https://acme.test/authz/1",
            identifier="mail.example.com",
            wildcard=False,
            status="pending",
            challenges=(ChallengeState("dns-01", "https://acme.test/chall/1", "tok", "pending"),),
        ),
    ),
)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    shutil.copytree(REPO / "conf.d", tmp_path / "conf.d")
    config, _ = load_config([str(REF)], conf_dir=tmp_path / "conf.d")
    return Workspace(config=config, clock=lambda: NOW)


def full_record() -> ServiceRecord:
    return ServiceRecord(
        phase=Phase.RENEWING,
        stamp="20260101-00:00:00",
        build_signer="20251201-00:00:00",
        roll_due=NOW + timedelta(minutes=90),
        prod_since=NOW,
        last_error="acme_propagated: not done",
        order=OrderRecord(
            "20260101-00:00:00",
            ORDER,
            DnsPublication(
                apexes=["example.com"],
                tickets={"example.com": 7},
                serials={
                    "example.com": SerialTarget(42, [NsHost("ns1.example.com.", ["127.0.0.53"])])
                },
                pushed=NOW,
            ),
        ),
        web_tokens={"web1": ["/srv/www/example.com/.well-known/acme-challenge/tok"]},
        dns_updates=DnsUpdates(
            records=[
                UpdatedTxt(
                    "example.com",
                    "_acme-challenge.mail.example.com.",
                    "digest",
                    "127.0.0.53",
                    5353,
                    "/etc/ssl-mgr/example.com.key",
                )
            ],
            order=ORDER.url,
            serials={"example.com": SerialTarget(43, [NsHost("ns1.example.com.", ["127.0.0.53"])])},
        ),
        dane=DaneRoll(
            next_seen=NOW,
            next_ns="2 of 2",
            retire_prev=True,
            next_stamp="20260101-00:00:00",
            ttl_before=60,
            ttl_served=4,
            retire_after=NOW + timedelta(minutes=2),
            retire_ttl=60,
        ),
        ari=AriPlan(curr="20251201-00:00:00", next_check=NOW, replaces="a.b"),
        backoff=Backoff(failures=2, retry_at=NOW + timedelta(minutes=10), ca_asked=True),
        revocations=[
            Revocation("20251201-00:00:00", "0A1B", "keyCompromise", NOW, "crl:my-int"),
        ],
        keys=KeyPlan(
            curr_key="ab" * 32,
            curr_key_since=NOW - timedelta(days=3),
            standby_key="cd" * 32,
            standby_created=NOW - timedelta(days=2),
            standby_ttl_before=300,
            standby_seen=NOW - timedelta(days=1),
            standby_ns="2 of 2",
            standby_ttl_served=60,
            standby_owners=["_25._tcp.mx1.example.com."],
        ),
    )


def test_missing_record_is_idle(ws: Workspace) -> None:
    assert load_record(ws, REF) == ServiceRecord()


def test_every_part_round_trips_in_a_private_file(ws: Workspace) -> None:
    # Given a record with every part filled
    ctx = ServiceContext(ws, REF)
    ctx._record = full_record()
    # When it is saved and loaded
    ctx.save()
    loaded = load_record(ws, REF)
    # Then it comes back equal, stamped with the save time, in a file the group may read
    assert loaded == ServiceRecord(**{**full_record().__dict__, "updated": NOW})
    assert stat.S_IMODE(ws.layout.state_file(REF).stat().st_mode) == 0o640
    assert json.loads(ws.layout.state_file(REF).read_text())["version"] == RECORD_VERSION == 6


def test_a_record_of_the_release_before_reads_with_no_records_added_by_update(
    ws: Workspace,
) -> None:
    # Given a record of format 2, which had no dns_updates part
    v2 = full_record().to_json()
    del v2["dns_updates"]
    v2["version"] = 2
    ws.layout.service_dir(REF).mkdir(parents=True)
    ws.layout.state_file(REF).write_text(json.dumps(v2))
    # When it is loaded, then nothing is lost and no record added by update is invented
    loaded = load_record(ws, REF)
    assert loaded.notice is None
    assert loaded.dns_updates == DnsUpdates()
    assert loaded.order == full_record().order and loaded.web_tokens == full_record().web_tokens


def test_a_record_of_the_release_before_reads_with_no_revocations(ws: Workspace) -> None:
    # Given a record of format 3, which had no revocations
    v3 = full_record().to_json()
    del v3["revocations"], v3["keys"]
    v3["version"] = 3
    ws.layout.service_dir(REF).mkdir(parents=True)
    ws.layout.state_file(REF).write_text(json.dumps(v3))
    # When it is loaded, then every other part is kept and none is revoked
    loaded = load_record(ws, REF)
    assert loaded.notice is None and loaded.revocations == []
    assert loaded == ServiceRecord(
        **{**full_record().__dict__, "revocations": [], "keys": KeyPlan()}
    )
    # and a version is found revoked only by its own stamp
    assert full_record().revoked("20251201-00:00:00") is not None
    assert (
        full_record().revoked("20260101-00:00:00") is None and full_record().revoked(None) is None
    )


def test_a_record_of_format_4_reads_with_no_key_plan(ws: Workspace) -> None:
    # Given a record of format 4, which knew nothing of key ages and standby keys
    v4 = full_record().to_json()
    del v4["keys"]
    v4["version"] = 4
    ws.layout.service_dir(REF).mkdir(parents=True)
    ws.layout.state_file(REF).write_text(json.dumps(v4))
    # When it is loaded, then every other part is kept and the key plan starts empty
    loaded = load_record(ws, REF)
    assert loaded.notice is None
    assert loaded == ServiceRecord(**{**full_record().__dict__, "keys": KeyPlan()})


def test_a_record_of_the_first_release_is_read_without_loss(ws: Workspace) -> None:
    # Given a state.json exactly as the first release wrote it
    v1 = {
        "phase": "renewing",
        "stamp": "20260101-00:00:00",
        "roll_due": None,
        "last_error": None,
        "updated": "2026-01-01T00:00:00+00:00",
        "extra": {
            "acme_order": ORDER.to_json(),
            "acme_order_stamp": "20260101-00:00:00",
            "acme_apexes": ["example.com"],
            "acme_tickets": {"example.com": 7},
            "acme_serials": {
                "example.com": {"serial": 42, "ns": {"ns1.example.com.": ["127.0.0.53"]}}
            },
            "acme_pushed": "2026-01-01T00:00:00+00:00",
            "acme_web_tokens": {"web1": ["/srv/www/example.com/.well-known/acme-challenge/tok"]},
            "tlsa_next_seen": "2026-01-01T00:00:00+00:00",
            "tlsa_next_ns": "2 of 2",
            "tlsa_retire_prev": True,
            "acme_ari": AriPlan(curr="20251201-00:00:00", next_check=NOW, replaces="a.b").to_json(),
            "acme_failures": {
                "failures": 2,
                "retry_at": "2026-01-01T00:10:00+00:00",
                "ca_asked": True,
            },
        },
    }
    ws.layout.service_dir(REF).mkdir(parents=True)
    ws.layout.state_file(REF).write_text(json.dumps(v1))
    # When it is loaded
    loaded = load_record(ws, REF)
    # Then every entry is in its typed place
    expected = full_record()
    assert loaded.order == expected.order
    assert loaded.web_tokens == expected.web_tokens
    assert loaded.dane == DaneRoll(next_seen=NOW, next_ns="2 of 2", retire_prev=True)
    assert loaded.ari == expected.ari and loaded.backoff == expected.backoff
    assert (loaded.phase, loaded.stamp) == (Phase.RENEWING, "20260101-00:00:00")
    assert loaded.notice is None


def test_a_roll_due_time_of_release_two_gives_way_to_the_setting(ws: Workspace) -> None:
    # Given a record of the release before, which recorded min_roll_mins as it was at the renew
    old = {**full_record().to_json(), "version": 2}
    ws.layout.service_dir(REF).mkdir(parents=True)
    ws.layout.state_file(REF).write_text(json.dumps(old))
    # When it is loaded, that time goes (the roll follows min_roll_mins as set now), the rest stays
    loaded = load_record(ws, REF)
    assert loaded.roll_due is None
    assert loaded.order == full_record().order and loaded.notice is None


def test_a_corrupt_record_is_set_aside_and_rebuilt_from_the_files(ws: Workspace) -> None:
    # Given a truncated state file
    ws.layout.service_dir(REF).mkdir(parents=True)
    ws.layout.state_file(REF).write_text('{"phase": "ren')
    # When it is loaded by a run (repair) and by -s (no repair)
    look = load_record(ws, REF, repair=False)
    assert ws.layout.state_file(REF).read_text() == '{"phase": "ren'  # -s changed nothing
    loaded = load_record(ws, REF)
    # Then the file is kept beside a rebuilt record that says so
    kept = list(ws.layout.service_dir(REF).glob("state.json.corrupt-*"))
    assert [path.read_text() for path in kept] == ['{"phase": "ren']
    assert (
        loaded.phase is Phase.IDLE and loaded.notice is not None and kept[0].name in loaded.notice
    )
    assert "unreadable" in (look.notice or "")
    assert load_record(ws, REF).notice == loaded.notice  # the rebuilt record was saved


@pytest.mark.parametrize(
    "content",
    [
        {"version": 2, "phase": "exploded"},
        {"version": 2, "stamp": 7},
        {"version": 2, "colour": "red"},
        {"extra": []},
        {"extra": {"mystery": 1}},
        [],
        {"version": 3, "roll_due": "yesterday"},
        {"version": 3, "dns_updates": {"records": [{"apex": "example.com"}]}},
        {"version": 3, "dns_updates": {"serials": {"example.com": {"serial": 1}}}},
        {"version": 3, "dane": {"ttl_before": "60"}},
    ],
)
def test_a_malformed_record_is_treated_as_corrupt(ws: Workspace, content: object) -> None:
    ws.layout.service_dir(REF).mkdir(parents=True)
    ws.layout.state_file(REF).write_text(json.dumps(content))
    assert load_record(ws, REF).notice is not None
    assert list(ws.layout.service_dir(REF).glob("state.json.corrupt-*"))


def test_a_record_of_a_newer_release_is_refused_and_kept(ws: Workspace) -> None:
    ws.layout.service_dir(REF).mkdir(parents=True)
    ws.layout.state_file(REF).write_text(json.dumps({"version": 99}))
    with pytest.raises(StoreError, match="newer sslm"):
        load_record(ws, REF)
    assert json.loads(ws.layout.state_file(REF).read_text()) == {"version": 99}


def test_a_private_key_is_never_stored(ws: Workspace) -> None:
    ctx = ServiceContext(ws, REF)
    ctx.record.last_error = "-----BEGIN EC PRIVATE KEY-----\nMHc..."
    with pytest.raises(StoreError, match="private key"):
        ctx.save()
    assert not ws.layout.state_file(REF).exists()


def test_in_flight_names_the_version_a_build_or_a_waiting_roll_needs() -> None:
    for phase, kept in [
        (Phase.RENEWING, True),
        (Phase.ISSUED, True),
        (Phase.FAILED, True),
        (Phase.IDLE, False),
        (Phase.ROLLED, False),
    ]:
        record = ServiceRecord(phase=phase, stamp="20260101-00:00:00")
        assert (in_flight(record) is not None) is kept, phase


def test_a_forced_check_delivered_again_in_its_workflow_starts_no_second_build(
    ws: Workspace,
) -> None:
    # Given a forced renew of a self-signed service in workflow "w1", built to next
    (ws.config.conf_dir / "example.com/mail-ec").write_text(
        (ws.config.conf_dir / "example.com/mail-ec")
        .read_text()
        .replace("signing_ca = 'my-int'", "signing_ca = 'self'")
    )
    config, _ = load_config([str(REF)], conf_dir=ws.config.conf_dir)
    forced = Workspace(config=config, options=RunOptions(force=True), clock=lambda: NOW)
    ctx = ServiceContext(forced, REF, workflow="w1")
    for step in (steps.check, steps.keygen, steps.csr, steps.sign, steps.store):
        step(ServiceContext(forced, REF, workflow="w1"))
    built = load_record(ws, REF).stamp
    # When its check is delivered again (a worker died before acknowledging a later step)
    again = steps.check(ctx)
    # Then it starts nothing; another forced workflow does
    assert not again.go and f"build {built} of this run is done" in again.detail
    assert steps.check(ServiceContext(forced, REF, workflow="w2")).go
