"""The launchers' command lines (the processes themselves run in test_compose.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sslm_tasks.cli.launch import CELERY, beat_schedule, worker_command
from sslm_tasks.errors import ConfigError


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SSLM_", "XDG_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SSLM_BROKER_URL", "redis://127.0.0.1:6379/0")
    # set, so that what a launcher writes there is undone after each test
    monkeypatch.setenv("SSLM_SITE", "default")


def options(argv: list[str]) -> dict[str, str]:
    assert argv[: len(CELERY) + 1] == [*CELERY, "worker"]
    rest = argv[len(CELERY) + 1 :]
    return dict(zip(rest[::2], rest[1::2], strict=True))


def test_the_issue_worker_by_default_and_a_sites_deploy_worker_with_site(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSLM_SITE", "elsewhere")
    monkeypatch.setenv("SSLM_DEPLOY_CONCURRENCY", "5")
    assert options(worker_command(None, None)) == {
        "--queues": "issue,dns",
        "--hostname": "issue@%h",
        "--pool": "prefork",
        "--concurrency": "2",
        "--loglevel": "INFO",
    }
    deploy = options(worker_command("paris", None))
    assert (deploy["--queues"], deploy["--hostname"], deploy["--concurrency"]) == (
        "deploy.paris",
        "deploy-paris@%h",
        "5",
    )
    # deploys wait on ssh and servers: threads, eight unless the setting says
    assert deploy["--pool"] == "threads"
    monkeypatch.delenv("SSLM_DEPLOY_CONCURRENCY")
    assert options(worker_command("paris", None))["--concurrency"] == "8"
    # the worker's own settings see the site it serves, whatever SSLM_SITE said
    assert os.environ["SSLM_SITE"] == "paris"
    assert options(worker_command("paris", "deploy.paris,deploy.lyon"))["--queues"] == (
        "deploy.paris,deploy.lyon"
    )


@pytest.mark.parametrize(
    ("site", "variables", "key"),
    [
        ("-rf", {}, "--site"),
        ("paris", {"SSLM_DEPLOY_CONCURRENCY": "0"}, "SSLM_DEPLOY_CONCURRENCY"),
        (None, {"SSLM_BROKER_URL": ""}, "SSLM_BROKER_URL"),
    ],
)
def test_bad_settings_stop_before_celery(
    monkeypatch: pytest.MonkeyPatch, site: str | None, variables: dict[str, str], key: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        worker_command(site, None)
    assert err.value.key == key


def test_beats_schedule_defaults_to_the_users_state_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert beat_schedule() == tmp_path / ".local/state/sslm/celerybeat-schedule"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert beat_schedule() == tmp_path / "state/sslm/celerybeat-schedule"
    monkeypatch.setenv("SSLM_BEAT_SCHEDULE", "/var/lib/sslm/beat/celerybeat-schedule")
    assert beat_schedule() == Path("/var/lib/sslm/beat/celerybeat-schedule")
