"""An HTTPS front for the lab's Pebble that adds what Pebble 2.4 lacks: ARI (RFC 9773) with a
window each test chooses, a rate limit (429 ``rateLimited`` with ``Retry-After``) on newOrder,
and ``Retry-After`` on authorizations and orders that are not done yet (Pebble sends none).

Every request is passed on to Pebble with its ``Host`` header unchanged. Pebble writes the URLs
in its answers (directory, order, authorization, ``Location``) and checks each JWS ``url``
against the host it was asked on, so clients that start at :attr:`AcmeFront.directory_url`
talk to Pebble only through the front, and the front sees (and records) every request. The
front presents Pebble's own HTTPS identity: ``ca_acme_ca_bundle`` stays Pebble's.

What the front adds:

* with :attr:`AcmeFront.ari` set, the directory lists ``renewalInfo`` on the front, and
  ``GET <renewalInfo>/<cert ID>`` answers :attr:`AcmeFront.renewal_reply`;
* :attr:`AcmeFront.limit_orders` newOrder requests in a row are answered 429 with
  :attr:`AcmeFront.limit_retry_after`, never reaching Pebble;
* once a challenge was answered, the next :attr:`AcmeFront.hold_authorizations` reads of an
  authorization are answered ``pending`` (whatever Pebble says) with
  ``Retry-After: <hold_retry_after>``, and the next :attr:`AcmeFront.hold_orders` answers of a
  finalized order (its finalize, its reads) say ``processing`` with it: a CA still busy,
  asking to be polled no sooner.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import requests
from lab_pebble import Pebble

#: Where the front serves renewal information (Pebble has no such path).
RENEWAL_INFO_PATH: Final = "/renewal-info"
#: Pebble 2.4's newOrder path.
NEW_ORDER_PATH: Final = "/order-plz"
#: Pebble 2.4's paths of an authorization, a challenge, an order and its finalize.
AUTHORIZATION_PATH: Final = "/authZ/"
CHALLENGE_PATH: Final = "/chalZ/"
ORDER_PATHS: Final = ("/my-order/", "/finalize-order/")
#: Headers that belong to one HTTP connection, not to the answer passed on.
_HOP_BY_HOP: Final = frozenset({"connection", "transfer-encoding", "content-length", "keep-alive"})
HTTP_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Seen:
    """One request the front received: method, path, a POST's JWS payload (decoded), when it
    arrived (``time.monotonic``) and whether the front held its answer back."""

    method: str
    path: str
    payload: dict[str, Any] | None = None
    at: float = 0.0
    held: bool = False


@dataclass
class AcmeFront:
    """What the front answers, and what it was asked."""

    directory_url: str
    ari: bool = True
    renewal_reply: Reply = field(default_factory=lambda: Reply(404))
    limit_orders: int = 0
    limit_retry_after: str = "3600"
    hold_authorizations: int = 0
    hold_orders: int = 0
    hold_retry_after: str = "2"
    seen: list[Seen] = field(default_factory=list)

    def window(self, start: datetime, end: datetime, *, retry_after: str | None = None) -> None:
        """Answer renewal information with this suggested window (and Retry-After)."""
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        body = {"suggestedWindow": {"start": _rfc3339(start), "end": _rfc3339(end)}}
        self.renewal_reply = Reply(200, headers, json.dumps(body).encode())

    def renewal_info_asked(self) -> list[str]:
        """The certificate IDs renewal information was asked for, in order."""
        prefix = RENEWAL_INFO_PATH + "/"
        return [s.path.removeprefix(prefix) for s in self.seen if s.path.startswith(prefix)]

    def held_then_next(self, prefixes: tuple[str, ...]) -> tuple[Seen, Seen]:
        """The last request to a path of ``prefixes`` whose answer was held back, and the first
        such request after it.

        Raises:
            AssertionError: none was held, or none came after.
        """
        asked = [s for s in self.seen if s.path.startswith(prefixes)]
        held = [i for i, s in enumerate(asked) if s.held]
        assert held, f"no answer to {prefixes} was held: {asked}"
        assert held[-1] + 1 < len(asked), f"nothing asked after the held answers: {asked}"
        return asked[held[-1]], asked[held[-1] + 1]

    def new_orders(self) -> list[dict[str, Any]]:
        """The payload of every newOrder the front received (rate-limited ones included)."""
        return [s.payload or {} for s in self.seen if s.path == NEW_ORDER_PATH]


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jws_payload(body: bytes) -> dict[str, Any] | None:
    try:
        encoded = json.loads(body)["payload"]
        if not encoded:  # POST-as-GET
            return None
        decoded = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, KeyError, TypeError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _with_status(reply: Reply, status: str, retry_after: str) -> Reply:
    """``reply`` saying ``status`` (and no certificate yet), with ``Retry-After``."""
    body = json.loads(reply.body)
    body["status"] = status
    body.pop("certificate", None)
    headers = {**reply.headers, "Retry-After": retry_after}
    return Reply(reply.status, headers, json.dumps(body).encode())


def _rate_limited(retry_after: str) -> Reply:
    problem = {
        "type": "urn:ietf:params:acme:error:rateLimited",
        "detail": "too many new orders recently (the lab front's limit)",
        "status": 429,
    }
    headers = {"Content-Type": "application/problem+json", "Retry-After": retry_after}
    return Reply(429, headers, json.dumps(problem).encode())


@contextmanager
def acme_front(pebble: Pebble) -> Iterator[AcmeFront]:
    """Serve the front on a free port of 127.0.0.1 for the duration of the block."""
    base = pebble.directory_url.rsplit("/", 1)[0]
    front: AcmeFront

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, reply: Reply) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        def _forward(self, body: bytes | None) -> Reply:
            headers = {"Host": self.headers["Host"]}
            if self.headers.get("Content-Type"):
                headers["Content-Type"] = self.headers["Content-Type"]
            response = requests.request(
                self.command,
                base + self.path,
                data=body,
                headers=headers,
                verify=str(pebble.ca_bundle),
                timeout=HTTP_TIMEOUT_S,
                allow_redirects=False,
            )
            kept = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP}
            return Reply(response.status_code, kept, response.content)

        def _hold(self, reply: Reply) -> Reply | None:
            """The held-back answer for this request, or None to pass Pebble's on."""
            if reply.status != 200:
                return None
            answered = any(seen.path.startswith(CHALLENGE_PATH) for seen in front.seen)
            polled = self.path.startswith(AUTHORIZATION_PATH) and answered
            if polled and front.hold_authorizations > 0:
                front.hold_authorizations -= 1
                return _with_status(reply, "pending", front.hold_retry_after)
            if (
                self.path.startswith(ORDER_PATHS)
                and front.hold_orders > 0
                and json.loads(reply.body).get("status") in ("processing", "valid")
            ):
                front.hold_orders -= 1
                return _with_status(reply, "processing", front.hold_retry_after)
            return None

        def _handle(self) -> None:
            at = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            payload = None if body is None else _jws_payload(body)
            held = None
            if self.path.startswith(RENEWAL_INFO_PATH + "/"):
                reply = front.renewal_reply
            elif self.path == NEW_ORDER_PATH and front.limit_orders > 0:
                front.limit_orders -= 1
                reply = _rate_limited(front.limit_retry_after)
            else:
                reply = self._forward(body)
                held = self._hold(reply)
                if self.path == "/dir" and front.ari and reply.status == 200:
                    directory = json.loads(reply.body)
                    directory["renewalInfo"] = f"https://{self.headers['Host']}{RENEWAL_INFO_PATH}"
                    reply = Reply(200, reply.headers, json.dumps(directory).encode())
            front.seen.append(Seen(self.command, self.path, payload, at, held is not None))
            self._answer(reply if held is None else held)

        do_GET = do_POST = do_HEAD = _handle

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test asserts on :attr:`AcmeFront.seen`."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pebble.https_cert, pebble.https_key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    front = AcmeFront(directory_url=f"https://127.0.0.1:{httpd.server_address[1]}/dir")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield front
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
