"""Real notification receivers on loopback for the tests: an SMTP server (aiosmtpd) and an
HTTP webhook receiver; and the configuration of a mail service deployed to a server whose
restart command the test chooses, with both as ``[notify]`` targets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import Envelope, Session
from support import free_port

MAIL = "example.com:mail-ec"


class Inbox:
    """What a local SMTP server received."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        self.messages.append(
            content.decode(errors="replace") if isinstance(content, bytes) else str(content)
        )
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box, port = Inbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def webhook() -> Iterator[tuple[list[dict[str, object]], int]]:
    received: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received, server.server_address[1]
    server.shutdown()


def configure(topdir: Path, *, restart: str, mail_port: int, hook_port: int) -> None:
    main = topdir / "conf.d/ssl-mgr.conf"
    text = main.read_text().split("\n[smtp]")[0]
    main.write_text(
        text
        + f"""
[smtp]
    servers = ['localhost']
    restart_cmd = '{restart}'
    svc_depends = [['example.com', ['mail-ec']]]

[notify]
    urls = ['json://127.0.0.1:{hook_port}/hook',
            'mailto://127.0.0.1:{mail_port}?from=sslm@example.test&to=ops@example.test&mode=insecure']
    remind_hours = 0
"""
    )


def make_retry_due(topdir: Path) -> None:
    """The failed server's retry time has come (the test does not wait the minute)."""
    ledger_file = topdir / "certs/.deploys.json"
    ledger = json.loads(ledger_file.read_text())
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    for entry in ledger.values():
        if not entry["ok"]:
            entry["retry_at"] = past
    ledger_file.write_text(json.dumps(ledger))
