"""ARI (RFC 9773) and the retry schedule, against a tiny RenewalInfo server on 127.0.0.1.

The server is ``http.server`` in a thread: it answers ``GET /renewalInfo/<cert ID>`` with what
each test sets (status, headers, body) and records the paths it was asked for.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import acme.client
import acme.messages
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sslm_tasks.acme.directory import AcmeServer, new_network
from sslm_tasks.acme.network import AcmeRateLimited, AcmeTransientError
from sslm_tasks.acme.renewal_info import (
    LONG_TERM_RECHECK,
    MAX_RECHECK,
    MIN_RECHECK,
    TEMPORARY_RECHECK,
    cert_id,
    fetch_renewal_info,
    plan_renewal,
    random_time_in,
)
from sslm_tasks.acme.timing import RenewalWindow, retry_time_after_failure

#: The real clock: a relative Retry-After is counted from when the answer arrives.
NOW = datetime.now(UTC).replace(microsecond=0)
LIFETIME_RENEW_AT = NOW + timedelta(days=30)
#: RFC 9773 §4.1's example: this key identifier and serial give this certificate ID.
RFC_AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
RFC_SERIAL = 0x87654321
RFC_CERT_ID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class AriServer:
    """What the endpoint answers, and which paths it was asked for."""

    url: str
    reply: Reply = field(default_factory=Reply)
    asked: list[str] = field(default_factory=list)

    def window(self, start: datetime, end: datetime, *, retry_after: str | None = "21600") -> None:
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        body = {
            "suggestedWindow": {"start": _rfc3339(start), "end": _rfc3339(end)},
            "explanationURL": "https://ca.example/incident/42",
        }
        self.reply = Reply(200, headers, body)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def ari() -> Iterator[AriServer]:
    state: AriServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.asked.append(self.path)
            reply = state.reply
            payload = b"" if reply.body is None else json.dumps(reply.body).encode()
            if isinstance(reply.body, str):
                payload = reply.body.encode()
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: pytest shows failures, not every request."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = AriServer(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _client(directory: dict[str, Any]) -> acme.client.ClientV2:
    """A client for unauthenticated GETs (renewal info needs no account)."""
    net = new_network(AcmeServer(directory_url="https://unused.example/dir"), None, timeout_s=2)
    return acme.client.ClientV2(acme.messages.Directory.from_json(directory), net)


def _ari_client(ari: AriServer) -> acme.client.ClientV2:
    return _client({"renewalInfo": f"{ari.url}/renewalInfo/"})


def _certificate(
    *,
    aki: bytes = RFC_AKI,
    serial: int = RFC_SERIAL,
    not_before: datetime = NOW - timedelta(days=10),
    days: int = 45,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "example.test")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(
            x509.AuthorityKeyIdentifier(
                key_identifier=aki, authority_cert_issuer=None, authority_cert_serial_number=None
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --------------------------------------------------------------------------- certificate ID


def test_cert_id_matches_the_rfc_example() -> None:
    assert cert_id(_certificate()) == RFC_CERT_ID


def test_cert_id_of_a_serial_without_the_high_bit_has_no_padding_byte() -> None:
    assert cert_id(_certificate(serial=0x7F01)).endswith(".fwE")


# --------------------------------------------------------------------------- the window


def test_window_is_parsed_and_retry_after_kept(ari: AriServer) -> None:
    # Given a CA that suggests a window and asks to be asked again in an hour
    start, end = NOW + timedelta(days=20), NOW + timedelta(days=22)
    ari.window(start, end, retry_after="3600")

    # When the renewal info is fetched
    info = fetch_renewal_info(_ari_client(ari), _certificate(), now=NOW)

    # Then the window, the next check and the explanation come back, from the RFC's path
    assert info is not None
    assert info.window == RenewalWindow(start=start, end=end)
    assert info.next_check == NOW + timedelta(hours=1)
    assert info.explanation_url == "https://ca.example/incident/42"
    assert ari.asked == [f"/renewalInfo/{RFC_CERT_ID}"]


def test_renewal_time_is_random_and_inside_the_window(ari: AriServer) -> None:
    start, end = NOW + timedelta(days=20), NOW + timedelta(days=22)
    ari.window(start, end)
    client = _ari_client(ari)
    pem = _pem(_certificate())

    plans = [
        plan_renewal(
            client, pem, now=NOW, rng=random.Random(seed), lifetime_renew_at=LIFETIME_RENEW_AT
        )
        for seed in range(12)
    ]

    assert all(plan.source == "ari" and start <= plan.renew_at <= end for plan in plans)
    assert len({plan.renew_at for plan in plans}) == len(plans)  # a fleet spreads out
    assert all(plan.replaces == RFC_CERT_ID for plan in plans)  # renew with 'replaces'
    assert all(plan.next_check == NOW + timedelta(hours=6) for plan in plans)


def test_window_in_the_past_means_renew_now() -> None:
    past = RenewalWindow(start=NOW - timedelta(days=2), end=NOW - timedelta(days=1))
    assert random_time_in(past, now=NOW, rng=random.Random(1)) == NOW


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("10", MIN_RECHECK),  # under a minute counts as a minute
        (str(5 * 86400), MAX_RECHECK),  # over a day counts as a day
        ("7200", timedelta(hours=2)),
        (format_datetime(NOW + timedelta(hours=3), usegmt=True), timedelta(hours=3)),  # a date
        (None, LONG_TERM_RECHECK),  # absent: ask again in 6 hours
    ],
    # Fixed ids: the HTTP date is made from the clock, and parallel workers must collect the
    # same test names.
    ids=["seconds-under-a-minute", "seconds-over-a-day", "seconds", "http-date", "absent"],
)
def test_retry_after_is_honoured_within_limits(
    ari: AriServer, header: str | None, expected: timedelta
) -> None:
    ari.window(NOW + timedelta(days=20), NOW + timedelta(days=22), retry_after=header)
    info = fetch_renewal_info(_ari_client(ari), _certificate(), now=NOW)
    assert info is not None and info.next_check == NOW + expected


# --------------------------------------------------------------------------- fallbacks


def test_directory_without_renewal_info_falls_back_to_the_lifetime_rule() -> None:
    plan = plan_renewal(
        _client({"newOrder": "https://unused.example/new-order"}),
        _pem(_certificate()),
        now=NOW,
        rng=random.Random(1),
        lifetime_renew_at=LIFETIME_RENEW_AT,
    )
    assert (plan.source, plan.renew_at, plan.replaces) == ("lifetime", LIFETIME_RENEW_AT, None)
    assert plan.next_check == NOW + LONG_TERM_RECHECK


def test_invalid_window_falls_back(ari: AriServer) -> None:
    # RFC 9773 §4.2: an end that does not follow the start counts as no answer
    ari.window(NOW + timedelta(days=22), NOW + timedelta(days=20))
    plan = plan_renewal(
        _ari_client(ari),
        _pem(_certificate()),
        now=NOW,
        rng=random.Random(1),
        lifetime_renew_at=LIFETIME_RENEW_AT,
    )
    assert (plan.source, plan.renew_at) == ("lifetime", LIFETIME_RENEW_AT)
    assert plan.next_check == NOW + LONG_TERM_RECHECK


def test_rate_limited_answer_says_when_to_come_back(ari: AriServer) -> None:
    # Given a CA that rate-limits renewal-info requests
    problem = {
        "type": "urn:ietf:params:acme:error:rateLimited",
        "detail": "too many renewalInfo requests",
    }
    headers = {"Content-Type": "application/problem+json", "Retry-After": "1800"}
    ari.reply = Reply(429, headers, problem)

    # When it is asked directly, Then the error is the CA's rate limit and says when to come
    # back (Retry-After in seconds counts from when the answer arrived: the real clock.)
    asked = datetime.now(UTC)
    with pytest.raises(AcmeRateLimited, match="too many") as raised:
        fetch_renewal_info(_ari_client(ari), _certificate(), now=NOW)
    answered = datetime.now(UTC)
    assert raised.value.code == "rateLimited"
    assert raised.value.retry_after is not None
    window = timedelta(minutes=30)
    assert asked + window - timedelta(seconds=1) <= raised.value.retry_after <= answered + window

    # And the renewal plan falls back to the lifetime rule until then
    asked = datetime.now(UTC)
    plan = plan_renewal(
        _ari_client(ari),
        _pem(_certificate()),
        now=NOW,
        rng=random.Random(1),
        lifetime_renew_at=LIFETIME_RENEW_AT,
    )
    answered = datetime.now(UTC)
    assert (plan.source, plan.renew_at) == ("lifetime", LIFETIME_RENEW_AT)
    assert plan.next_check is not None
    assert asked + window - timedelta(seconds=1) <= plan.next_check <= answered + window


def test_server_error_without_problem_document_is_temporary(ari: AriServer) -> None:
    ari.reply = Reply(502, {"Content-Type": "text/html"}, "<h1>bad gateway</h1>")
    with pytest.raises(AcmeTransientError, match="502"):
        fetch_renewal_info(_ari_client(ari), _certificate(), now=NOW)
    plan = plan_renewal(
        _ari_client(ari),
        _pem(_certificate()),
        now=NOW,
        rng=random.Random(1),
        lifetime_renew_at=LIFETIME_RENEW_AT,
    )
    assert (plan.source, plan.next_check) == ("lifetime", NOW + TEMPORARY_RECHECK)


def test_expired_certificate_is_renewed_now_without_asking(ari: AriServer) -> None:
    expired = _certificate(not_before=NOW - timedelta(days=50), days=45)
    plan = plan_renewal(
        _ari_client(ari),
        _pem(expired),
        now=NOW,
        rng=random.Random(1),
        lifetime_renew_at=LIFETIME_RENEW_AT,
    )
    assert (plan.source, plan.renew_at, plan.next_check) == ("expired", NOW, None)
    assert ari.asked == []


# --------------------------------------------------------------------------- failed orders


@pytest.mark.parametrize(
    ("failures", "wait"),
    [
        (1, timedelta(minutes=1)),
        (2, timedelta(minutes=10)),
        (3, timedelta(minutes=100)),
        (4, timedelta(days=1)),
        (9, timedelta(days=1)),
    ],
)
def test_backoff_after_failed_orders(failures: int, wait: timedelta) -> None:
    assert retry_time_after_failure(failures, now=NOW) == NOW + wait


def test_backoff_follows_the_cas_retry_after() -> None:
    later = NOW + timedelta(hours=3)
    assert retry_time_after_failure(1, now=NOW, retry_after=later) == later
    with pytest.raises(ValueError, match="starts at 1"):
        retry_time_after_failure(0, now=NOW)
