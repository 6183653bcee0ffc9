"""``sslm-metrics``: sslm's Prometheus metrics (:mod:`sslm_tasks.cli.scrape` says which).

    sslm-metrics --listen ADDR:PORT   serve them at http://ADDR:PORT/metrics
    sslm-metrics --textfile PATH      write them to PATH once, for node_exporter's textfile
                                      collector (cron users), atomically

It reads the configuration tree ``SSL_MGR_TOPDIR`` names, as ``sslm-mgr`` does, and writes
nothing but the text file. Log lines go to stderr.

Exit status: 0 when the file was written, or the server was stopped (SIGTERM, SIGINT); 1 when
the address cannot be listened on or the file cannot be written; 2 for a bad command line,
configuration or environment.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Final

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from sslm_tasks.config.settings import load_settings
from sslm_tasks.errors import ConfigError, StoreError
from sslm_tasks.logs import send_to
from sslm_tasks.store.atomic import write_atomic

from .arg_types import non_negative
from .console import console_script
from .scrape import Survey
from .version import add_version_flag

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: node_exporter reads the file as another user: it is public, as the metrics are.
TEXTFILE_MODE: Final = 0o644
_PATH: Final = "/metrics"
#: How long a scrape waits for a fresh reading (issue 15: answer within a second).
DEFAULT_WAIT_S: Final = 0.5
_INDEX: Final = b'sslm metrics: <a href="/metrics">/metrics</a>\n'

log = logging.getLogger("sslm")


def listen_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:9750`` or ``[::1]:9750`` → (address, port).

    Raises:
      ValueError: not an IP address and a port from 1 to 65535.
    """
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ipaddress.ip_address(host).version != 6:
            raise ValueError("brackets are for an IPv6 address")
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets: [::1]:9750")
    if not colon or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected ADDRESS:PORT with a port from 1 to 65535")
    ipaddress.ip_address(host)  # a name would need the resolver: addresses only
    return host, int(port)


class Freshest:
    """The metrics a scrape gets: read anew for it, or, when reading takes longer than
    ``wait_s`` (after a change that touches thousands of services at once, such as a server
    that every service uses starting to fail), the last complete reading, while the new one
    goes on for the next scrape. One thread reads; scrapes never read twice at once.
    """

    def __init__(self, survey: Survey, *, wait_s: float) -> None:
        self._survey = survey
        self._wait_s = wait_s
        self._changed = threading.Condition()
        self._asked = self._done = 0
        self._latest = survey.collect()
        threading.Thread(target=self._read, name="sslm-metrics-reader", daemon=True).start()

    def scrape(self) -> bytes:
        with self._changed:
            self._asked += 1
            wanted = self._asked
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._done >= wanted, timeout=self._wait_s)
            return self._latest

    def _read(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._asked > self._done)
                target = self._asked
            try:
                latest = self._survey.collect()
            except Exception:  # the reader must live on; the scrape gets the last reading
                log.exception("sslm-metrics: reading failed")
                latest = self._latest
            with self._changed:
                self._latest, self._done = latest, target
                self._changed.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.metrics: Freshest | None = None
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        metrics = self.server.metrics
        if self.path.split("?", 1)[0] == _PATH and metrics is not None:
            body, kind, status = metrics.scrape(), CONTENT_TYPE_PLAIN_0_0_4, 200
        elif self.path == "/":
            body, kind, status = _INDEX, "text/html", 200
        else:
            body, kind, status = b"not found\n", "text/plain", 404
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Not a line per scrape: the log is for what goes wrong."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(address: tuple[str, int], survey: Survey, *, wait_s: float) -> int:
    """Listen, read everything once (so the first scrape is quick), then serve until stopped."""
    shown = f"[{address[0]}]:{address[1]}" if ":" in address[0] else f"{address[0]}:{address[1]}"
    try:
        server = _Server(address)
    except OSError as err:
        print(f"Error: sslm-metrics cannot listen on {shown}: {err.strerror}", file=sys.stderr)
        return EXIT_FAILED
    with server:
        try:
            server.metrics = Freshest(survey, wait_s=wait_s)
        except ConfigError as err:
            print(f"Error: {err}", file=sys.stderr)
            return EXIT_USAGE
        signal.signal(signal.SIGTERM, _stop)
        log.info("sslm-metrics: serving http://%s%s", shown, _PATH)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            log.info("sslm-metrics: stopped")
    return EXIT_OK


def write_textfile(path: Path, survey: Survey) -> int:
    try:
        write_atomic(path, survey.collect(), mode=TEXTFILE_MODE)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _address(text: str) -> tuple[str, int]:
    try:
        return listen_address(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None


@console_script
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sslm-metrics",
        description="Prometheus metrics of sslm's certificates, services, deploys and failures, "
        "read from the store, the records and the deploy ledger.",
    )
    add_version_flag(parser)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--listen",
        type=_address,
        metavar="ADDR:PORT",
        help="serve at http://ADDR:PORT/metrics (an IP address: 127.0.0.1:9750, [::1]:9750)",
    )
    where.add_argument(
        "--textfile",
        type=Path,
        metavar="PATH",
        help="write once to PATH (a *.prom file of node_exporter's textfile directory)",
    )
    parser.add_argument(
        "--wait",
        type=non_negative("seconds"),
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help="with --listen: how long a scrape waits for a fresh reading before it gets the "
        "last complete one (default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_USAGE
    send_to([logging.StreamHandler(sys.stderr)], logging.INFO, settings.log_format)
    survey = Survey()
    if args.listen is not None:
        return serve(args.listen, survey, wait_s=args.wait)
    return write_textfile(args.textfile, survey)


if __name__ == "__main__":
    raise SystemExit(main())
