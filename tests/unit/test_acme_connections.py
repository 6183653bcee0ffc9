"""ACME networks of one thread share its connection pool (one TLS connection to a CA, not one
per account or step); each keeps its own session hooks, and dropping one leaves the pool open."""

from __future__ import annotations

import gc
import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from josepy.jwa import ES256

from sslm_tasks.acme.network import AcmeNetwork


def network() -> AcmeNetwork:
    return AcmeNetwork(None, account=None, alg=ES256, user_agent="test", timeout_s=5)


class Counting(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and a Retry-After naming the connection it came on."""

    protocol_version = "HTTP/1.1"  # keep-alive
    connections: ClassVar[list[object]] = []

    def setup(self) -> None:
        super().setup()
        Counting.connections.append(self.connection)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.send_header("Retry-After", str(len(Counting.connections)))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[str]:
    Counting.connections = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_networks_of_a_thread_share_one_connection(server: str) -> None:
    # Given two networks of one thread (two accounts, or two steps' clients)
    first, second = network(), network()
    # When each asks the CA, and one of them is dropped before the other asks again
    first.session.get(server)
    second.session.get(server)
    del first
    gc.collect()
    second.session.get(server)
    # Then one connection carried every request (the pool outlived the dropped network)
    assert len(Counting.connections) == 1
    # And each network remembers its own responses only
    assert second.last_retry_after == "1"


def test_another_thread_has_a_pool_of_its_own(server: str) -> None:
    network().session.get(server)
    other = threading.Thread(target=lambda: network().session.get(server))
    other.start()
    other.join()
    assert len(Counting.connections) == 2
