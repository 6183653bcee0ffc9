"""The TSIG key file as ``tsig-keygen`` writes it, and the updater's view of servers that do
not answer: transient errors that name the zone, the server and the key, never the secret.
(What BIND answers, REFUSED and BADSIG among it, is tested against BIND in
tests/integration/test_dns_update.py.)"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sslm_tasks.config.tsig import read_tsig_key
from sslm_tasks.dns.lookup import DnsNoAnswer
from sslm_tasks.dns.servers import Nameserver
from sslm_tasks.dns.update import Record, ZoneUpdater, txt_rdata
from sslm_tasks.errors import TransientError


def tsig_keygen(path: Path, name: str = "sslm-example.test") -> Path:
    binary = shutil.which("tsig-keygen", path="/usr/sbin:/usr/bin:/sbin:/bin")
    assert binary is not None, "tsig-keygen is needed (Debian: apt-get install bind9-utils)"
    text = subprocess.run(
        [binary, "-a", "hmac-sha512", name], capture_output=True, text=True, check=True
    ).stdout
    path.touch(mode=0o600)
    path.write_text(text)
    return path


def test_a_tsig_keygen_file_gives_its_name_and_algorithm_and_hides_the_secret(
    tmp_path: Path,
) -> None:
    path = tsig_keygen(tmp_path / "k.key")
    key = read_tsig_key(path)
    assert (key.name, key.algorithm) == ("sslm-example.test", "hmac-sha512")
    secret = path.read_text().split('secret "')[1].split('"')[0]
    assert secret not in repr(key) and secret not in str(key)
    assert "sslm-example.test" in repr(key)


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP listener on loopback that accepts and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def updater(tmp_path: Path, address: str, port: int) -> ZoneUpdater:
    key = read_tsig_key(tsig_keygen(tmp_path / "k.key"))
    return ZoneUpdater("example.test", Nameserver(address, port), key, timeout_s=0.5)


ADD = [Record("_acme-challenge.example.test.", 60, txt_rdata("value"))]


def test_a_server_that_never_answers_is_transient_and_named(
    tmp_path: Path, silent_server: tuple[str, int]
) -> None:
    address, port = silent_server
    with pytest.raises(DnsNoAnswer) as caught:
        updater(tmp_path, address, port).apply(add=ADD)
    assert isinstance(caught.value, TransientError)
    message = str(caught.value)
    assert "no answer in 0.5 s" in message
    assert f"zone example.test at 127.0.0.1#{port} with key sslm-example.test" in message


def test_a_server_that_is_not_there_is_transient(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens once it is closed
    with pytest.raises(DnsNoAnswer, match="ConnectionRefusedError"):
        updater(tmp_path, "127.0.0.1", port).apply(add=ADD)
