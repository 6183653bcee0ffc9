"""A real ``sslm-metrics --listen`` process on a test's tree, and what its endpoint says,
parsed by prometheus_client's own parser of the text format."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from services import START_TIMEOUT_S, VENV_BIN, Service, Services, wait_for
from support import free_port, openssl

from sslm_tasks.cli.scrape import Family

#: A sample: its name and its labels.
Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass
class Exporter:
    url: str
    service: Service

    def scrape(self) -> dict[Key, float]:
        """Every sample the endpoint serves now."""
        with urllib.request.urlopen(self.url, timeout=30) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return samples(answer.read().decode())


def samples(text: str) -> dict[Key, float]:
    found: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def key(family: Family | str, **labels: str) -> Key:
    name = family if isinstance(family, str) else family[0]
    return name, frozenset(labels.items())


def clean_env(topdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSLM_", "SSL_MGR_"))}
    return {**env, "SSL_MGR_TOPDIR": str(topdir), **extra}


def start_exporter(
    services: Services, topdir: Path, *, wrapper: Sequence[str] = (), name: str = "sslm-metrics"
) -> Exporter:
    """``sslm-metrics --listen`` on a free loopback port, once it answers."""
    port = free_port()
    argv = [*wrapper, str(VENV_BIN / "sslm-metrics"), "--listen", f"127.0.0.1:{port}"]
    service = services.spawn(name, argv, env=clean_env(topdir), cwd=topdir)
    url = f"http://127.0.0.1:{port}/metrics"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return True
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_for(
        "sslm-metrics answers",
        answers,
        timeout_s=START_TIMEOUT_S,
        log=service.log,
        alive=lambda: service.alive,
    )
    return Exporter(url, service)


def run_metrics(
    topdir: Path, *args: str, wrapper: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*wrapper, str(VENV_BIN / "sslm-metrics"), *args],
        env=clean_env(topdir, **(env or {})),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=topdir,
    )


def not_after(cert: Path) -> float:
    """The certificate's notAfter as openssl reads it (GNU date makes it seconds)."""
    end = openssl("x509", "-noout", "-enddate", "-in", str(cert)).stdout.strip()
    seconds = subprocess.run(
        ["date", "-u", "-d", end.removeprefix("notAfter="), "+%s"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(seconds.stdout)
