"""Issue 12 on workers: a failed deploy is announced once (a real SMTP server and a real webhook
receiver), beat's roll scan tries it again when its time comes, without a new certificate, and
its recovery is one more message. The in-process half is tests/e2e/test_notify.py.

The deploys of one run coalesce into one per server: the CAs' changes send the server's deploy
first (no restart: they do not concern its class), and mail-ec's change, which does, must make
that waiting deploy restart. Without that the restart never fails, and nothing here would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lab_acme import enqueue
from notify_receivers import MAIL, Inbox, configure, inbox, make_retry_due, webhook
from services import (
    REPO,
    RedisServer,
    Service,
    Services,
    WorkerStarter,
    celery_env,
    wait_for,
)

pytestmark = pytest.mark.integration

__all__ = ["inbox", "webhook"]  # fixtures, used by name

SERVER = "smtp:localhost"


def ledger(topdir: Path) -> dict[str, dict[str, object]]:
    path = topdir / "certs/.deploys.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def three_more_scans(beat: Service) -> None:
    """Wait until beat has sent three more roll scans than it had now."""
    scans = beat.log_text().count("sslm.roll.scan")
    wait_for(
        "three more roll scans",
        lambda: beat.log_text().count("sslm.roll.scan") >= scans + 3,
        timeout_s=30,
        log=beat.log,
    )


def test_beat_retries_a_failed_deploy_and_announces_failure_and_recovery_once(
    tmp_path: Path,
    services: Services,
    redis_server: RedisServer,
    workers: WorkerStarter,
    inbox: tuple[Inbox, int],
    webhook: tuple[list[dict[str, object]], int],
) -> None:
    box, mail_port = inbox
    hooks, hook_port = webhook
    # Given a mail service deployed to a server whose restart fails, a worker and beat
    topdir = tmp_path / "top"
    shutil.copytree(REPO / "conf.d", topdir / "conf.d")
    configure(topdir, restart="/bin/false", mail_port=mail_port, hook_port=hook_port)
    fast = {"SSLM_ROLL_CHECK_EVERY_S": "1", "SSLM_RENEW_CHECK_EVERY_S": "3600"}
    env = {"SSL_MGR_TOPDIR": str(topdir), **fast}
    workers.start("all@retry", pool="prefork", concurrency=2, env=env)

    # When the CLI renews and rolls through the broker
    first = enqueue(topdir, redis_server, "-renew", "-roll")

    # Then the run fails naming the server, whose deploy failed in its restart
    assert first.returncode == 1, first.stdout + first.stderr
    assert "localhost" in first.stdout + first.stderr, first.stdout + first.stderr
    entry = ledger(topdir)[SERVER]
    assert entry["ok"] is False and "/bin/false" in str(entry["detail"]), entry
    curr = (topdir / "certs/example.com/mail-ec/curr").readlink()

    # When beat runs its scans
    beat = services.spawn(
        "beat",
        ["sh", "beat/beat.sh", "--loglevel", "INFO"],
        env={
            **celery_env(redis_server.url(), **env),
            "SSLM_BEAT_SCHEDULE": str(tmp_path / "schedule"),
        },
    )
    # Then each target gets one failure message naming the service and the server
    wait_for("the failure is announced", lambda: len(hooks) >= 1, timeout_s=60, log=beat.log)
    wait_for("the failure is mailed", lambda: len(box.messages) >= 1, timeout_s=30)
    assert hooks[0]["type"] == "failure", hooks
    assert MAIL in str(hooks[0]["title"]) and SERVER in str(hooks[0]["message"]), hooks
    # and, while the retry is not due, later scans say nothing more
    three_more_scans(beat)
    assert len(hooks) == 1 and len(box.messages) == 1, (hooks, box.messages)

    # When the restart is fixed and the retry time has come
    configure(topdir, restart="/bin/true", mail_port=mail_port, hook_port=hook_port)
    make_retry_due(topdir)

    # Then beat's scan deploys the server again, with the certificate it had
    wait_for(
        "the retried deploy succeeds",
        lambda: ledger(topdir).get(SERVER, {}).get("ok") is True,
        timeout_s=60,
        log=beat.log,
    )
    assert (topdir / "certs/example.com/mail-ec/curr").readlink() == curr
    # and the recovery is announced once to each target
    wait_for("the recovery is announced", lambda: len(hooks) >= 2, timeout_s=30, log=beat.log)
    wait_for("the recovery is mailed", lambda: len(box.messages) >= 2, timeout_s=30)
    assert [hook["type"] for hook in hooks] == ["failure", "success"], hooks
    assert "recovered" in box.messages[1]
    three_more_scans(beat)
    assert len(hooks) == 2 and len(box.messages) == 2, (hooks, box.messages)
