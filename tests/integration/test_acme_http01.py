"""ACME http-01 issuance end to end: Pebble fetches each token over HTTP from a real web server
on 127.0.0.1:<pebble.http_port>, the certificate's names resolving there through the lab's BIND
(its zones give the apexes and ``www`` the loopback address).

The web server serves ``<server_dir>/example.test`` for every name: sslm puts every token under
the group's (the apex's) directory, as upstream. With ``servers = ['web1.test']`` the tokens
travel over a real sshd into a directory only ssh sessions see (``sshd.py``), and the web server
serves that directory: the CA finds them only if they arrived, at the right path, over ssh.

Run under the lab lock:
``flock /tmp/sslm-lab.lock .venv/bin/pytest -q tests/integration/test_acme_http01.py``.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from lab_acme import enqueue, ordered_build, service_text, use_pebble
from lab_dns import DnsLab
from lab_pebble import Pebble
from services import RedisServer, Services, WorkerStarter
from sshd import start_sshd
from support import REPO, run_tool

from sslm_tasks.cli.local import run_in_process
from sslm_tasks.cli.run import RunRequest
from sslm_tasks.config.load import load_config
from sslm_tasks.config.settings import load_settings
from sslm_tasks.deploy.transport import SshTransport
from sslm_tasks.deploy.webroot import CHALLENGE_DIR, TokenFile, WebRoot
from sslm_tasks.lifecycle import acme_sign
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import RunOptions, Workspace

pytestmark = pytest.mark.integration

APEX = "example.test"
SVC = "example.test/web"
#: ``www.other.test`` is in another zone: its token still goes under ``example.test``.
NAMES = ("example.test", "www.example.test", "www.other.test")
#: The sshd alias that stands in for a remote web server.
REMOTE_HOST = "web1.test"


class WebServer:
    """A real HTTP server on 127.0.0.1:``port`` serving ``directory``; it notes every path
    asked for, so a test can tell that the CA really fetched its tokens."""

    def __init__(self, directory: Path, port: int) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                seen.append(self.path)

        self._server = ThreadingHTTPServer(
            ("127.0.0.1", port), partial(Handler, directory=str(directory))
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """The local ``[web] server_dir`` (the operator's document roots)."""
    path = tmp_path / "www"
    path.mkdir()
    return path


@pytest.fixture
def topdir(tmp_path: Path, dns_lab: DnsLab, pebble: Pebble, www: Path) -> Path:
    """An http-01 CA (Pebble) and one web server on this host; no ``[dns]`` section at all."""
    top = tmp_path / "top"
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    (top / "conf.d/example.test").mkdir()
    (top / "conf.d/example.test/web").write_text(service_text(NAMES))
    use_pebble(top, pebble, validation="http-01")
    main = top / "conf.d/ssl-mgr.conf"
    main.write_text(
        main.read_text()
        + f"""
[[groups]]
    active = true
    domain = 'example.test'
    services = ['web']

[web]
    servers = ['localhost']
    server_dir = '{www}'
"""
    )
    return top


@pytest.fixture
def web_server(www: Path, pebble: Pebble) -> Iterator[WebServer]:
    """Serves ``<www>/example.test`` where Pebble fetches http-01 tokens."""
    (www / APEX).mkdir()
    server = WebServer(www / APEX, pebble.http_port)
    try:
        yield server
    finally:
        server.close()


def token_dir(root: Path) -> Path:
    return root / APEX / CHALLENGE_DIR


def fetched_tokens(server: WebServer) -> list[str]:
    prefix = f"/{CHALLENGE_DIR}/"
    return [path.removeprefix(prefix) for path in server.requests if path.startswith(prefix)]


def state_of(topdir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((topdir / "certs" / SVC / "state.json").read_text())
    return data


def workspace(topdir: Path, *, force: bool = False) -> tuple[Workspace, list[Any]]:
    config, refs = load_config(["example.test:web"], conf_dir=topdir / "conf.d")
    return Workspace(config=config, options=RunOptions(force=force)), list(refs)


def test_http01_certificate_is_issued_and_its_tokens_are_removed(
    topdir: Path, pebble: Pebble, web_server: WebServer, www: Path
) -> None:
    # When the service is renewed the first time, without a broker
    done = run_tool("sslm-mgr", "-renew", "example.test:web", cwd=topdir, timeout=300)

    # Then Pebble issued it for every name, and the chain verifies to Pebble's root
    assert done.returncode == 0, done.stdout + done.stderr
    curr = topdir / "certs" / SVC / "curr"
    assert pebble.verify_output(curr).strip().endswith("OK")
    sans = subprocess.run(
        ["openssl", "x509", "-in", str(curr / "cert.pem"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(f"DNS:{name}" in sans for name in NAMES), sans
    # and it did so by fetching one token per name from the web server
    assert len(set(fetched_tokens(web_server))) == len(NAMES), web_server.requests
    # and the tokens are gone again, the directories the web server serves from stay
    assert token_dir(www).is_dir() and list(token_dir(www).iterdir()) == []
    assert state_of(topdir)["web_tokens"] == {}


def test_a_web_root_pebble_cannot_see_fails_the_order_keeps_curr_and_removes_tokens(
    topdir: Path, web_server: WebServer, tmp_path: Path
) -> None:
    # Given a current certificate
    first = run_tool("sslm-mgr", "-renew", "example.test:web", cwd=topdir, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    curr = topdir / "certs" / SVC / "curr"
    before = (curr / "cert.pem").read_bytes()
    # and a server_dir the web server does not serve (it exists: the write succeeds)
    unseen = tmp_path / "not-served"
    unseen.mkdir()
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text().replace(str(tmp_path / "www"), str(unseen)))

    # When a forced renewal runs
    ws, refs = workspace(topdir, force=True)
    report = run_in_process(ws, refs, RunRequest(renew=True))

    # Then it fails with Pebble's reason, in the report and in the service's status
    assert not report.ok
    failure = " ".join(report.outcomes[0].actions)
    assert "unauthorized" in failure and "404" in failure, failure
    last_error = state_of(topdir)["last_error"]
    assert "unauthorized" in last_error and "404" in last_error, last_error
    # and curr is what it was, with no next
    assert (curr / "cert.pem").read_bytes() == before
    assert not (topdir / "certs" / SVC / "next").exists()
    # and the tokens it wrote are gone, and so is their record
    assert token_dir(unseen).is_dir() and list(token_dir(unseen).iterdir()) == []
    assert state_of(topdir)["web_tokens"] == {}


def test_a_killed_runs_tokens_are_removed_by_the_next_run(
    topdir: Path, web_server: WebServer, www: Path
) -> None:
    # Given a run killed after it published its tokens (order and publish only)
    ws, refs = workspace(topdir)
    ref = refs[0]
    ordered_build(ws, ref)
    acme_sign.publish(ServiceContext(ws, ref))
    left = sorted(p.name for p in token_dir(www).iterdir())
    assert len(left) == len(NAMES)
    assert state_of(topdir)["web_tokens"] == {
        "localhost": sorted(str(token_dir(www) / name) for name in left)
    }

    # When a forced run builds anew and orders again
    ws, refs = workspace(topdir, force=True)
    report = run_in_process(ws, refs, RunRequest(renew=True))

    # Then it succeeds and removes its own tokens and the killed run's
    assert report.ok, report.outcomes[0].actions
    assert list(token_dir(www).iterdir()) == []
    assert state_of(topdir)["web_tokens"] == {}


def test_workers_issue_over_http01_through_the_same_acme_tasks(
    topdir: Path,
    pebble: Pebble,
    web_server: WebServer,
    www: Path,
    redis_server: RedisServer,
    workers: WorkerStarter,
) -> None:
    # Given a worker on every queue
    worker = workers.start(
        "all@acme", pool="prefork", concurrency=2, env={"SSL_MGR_TOPDIR": str(topdir)}
    )

    # When the CLI enqueues the renewal
    done = enqueue(topdir, redis_server, "-renew", "example.test:web")

    # Then the worker's ACME tasks put the tokens where the CA fetched them, then removed them
    assert done.returncode == 0, done.stdout + done.stderr
    assert pebble.verify_output(topdir / "certs" / SVC / "curr").strip().endswith("OK")
    assert len(set(fetched_tokens(web_server))) == len(NAMES), web_server.requests
    log = worker.service.log_text()
    for step in ("publish", "propagated", "finalize"):
        assert f"example.test:web: step acme_{step}" in log, step
    assert list(token_dir(www).iterdir()) == []
    assert state_of(topdir)["web_tokens"] == {}


def test_tokens_travel_over_ssh_to_the_web_server_the_ca_asks(
    topdir: Path,
    services: Services,
    pebble: Pebble,
    www: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a web server on another host (sshd shows `remote` at the server_dir's path), and
    # the HTTP server serving that host's directory, not this host's
    remote = tmp_path / "remote-www"
    (remote / APEX).mkdir(parents=True)
    sshd = start_sshd(services, remote_roots={www: remote}, aliases=(REMOTE_HOST,))
    for name, value in sshd.env().items():
        monkeypatch.setenv(name, value)
    main = topdir / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text().replace("['localhost']", f"['{REMOTE_HOST}']"))
    server = WebServer(remote / APEX, pebble.http_port)
    try:
        # When the service is renewed
        ws, refs = workspace(topdir)
        report = run_in_process(ws, refs, RunRequest(renew=True))
    finally:
        server.close()

    # Then the CA found every token where the remote web server serves it
    assert report.ok, report.outcomes[0].actions
    assert len(set(fetched_tokens(server))) == len(NAMES), server.requests
    assert (topdir / "certs" / SVC / "curr" / "cert.pem").is_file()
    # and they were removed there again; this host's server_dir was never written
    assert token_dir(remote).is_dir() and list(token_dir(remote).iterdir()) == []
    assert list(www.iterdir()) == []
    assert sshd.sessions() >= 3  # put, check, remove


def test_the_web_root_over_ssh_puts_checks_and_removes_at_the_same_path(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a remote host whose /srv-like web root is a different directory than ours
    local, remote = tmp_path / "www", tmp_path / "remote-www"
    local.mkdir()
    remote.mkdir()
    sshd = start_sshd(services, remote_roots={local: remote}, aliases=(REMOTE_HOST,))
    for name, value in sshd.env().items():
        monkeypatch.setenv(name, value)
    web = WebRoot(REMOTE_HOST, SshTransport.from_settings(REMOTE_HOST, load_settings()))
    token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
    file = TokenFile(PurePosixPath(local), APEX, token, f"{token}.thumbprint_-x")

    # When the token is put
    web.put([file])

    # Then it is on the remote side at <server_dir>/<apex>/.well-known/acme-challenge/<token>
    landed = token_dir(remote) / token
    assert landed.read_text() == f"{file.key_authorization}\n"
    assert stat.S_IMODE(landed.stat().st_mode) == 0o644
    assert list(local.iterdir()) == []
    assert web.missing([file]) == []

    # When it is removed, it is gone there
    web.remove([str(file.path)])
    assert not landed.exists()
    assert web.missing([file]) == [str(file.path)]
