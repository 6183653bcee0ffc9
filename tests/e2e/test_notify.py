"""Never fail silently: a failed deploy is one message to each target (a real SMTP server and a
real HTTP webhook receiver on loopback), stays quiet while nothing changes, is retried when its
time comes without a new certificate, and its recovery is one more message."""

from __future__ import annotations

import json
from pathlib import Path

from notify_receivers import MAIL, Inbox, configure, inbox, make_retry_due, webhook
from support import RunMgr

__all__ = ["inbox", "webhook"]  # fixtures, used by name


def test_a_failed_deploy_is_announced_once_retried_and_its_recovery_announced(
    topdir: Path,
    mgr: RunMgr,
    inbox: tuple[Inbox, int],
    webhook: tuple[list[dict[str, object]], int],
) -> None:
    box, mail_port = inbox
    hooks, hook_port = webhook
    # Given a mail service deployed to a server whose restart fails
    configure(topdir, restart="/bin/false", mail_port=mail_port, hook_port=hook_port)
    first = mgr("-renew", "-roll")
    # Then the run fails naming the server, and each target got one failure message about it
    assert first.returncode == 1, first.stdout + first.stderr
    assert "smtp] localhost" in first.stdout
    assert len(hooks) == 1 and len(box.messages) == 1, (hooks, box.messages)
    assert hooks[0]["type"] == "failure"
    assert MAIL in str(hooks[0]["title"]) and "smtp:localhost" in str(hooks[0]["message"])
    assert "smtp:localhost" in box.messages[0]
    # When runs come while nothing changes and the retry is not due yet
    assert mgr().returncode == 0
    # Then nothing more is said
    assert len(hooks) == 1 and len(box.messages) == 1
    # When the restart is fixed and the retry time has come
    configure(topdir, restart="/bin/true", mail_port=mail_port, hook_port=hook_port)
    make_retry_due(topdir)
    curr = (topdir / "certs/example.com/mail-ec/curr").readlink()
    fixed = mgr()
    # Then the server is deployed again without a new certificate, and its recovery announced
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert (topdir / "certs/example.com/mail-ec/curr").readlink() == curr
    ledger = json.loads((topdir / "certs/.deploys.json").read_text())
    assert ledger["smtp:localhost"]["ok"] is True
    assert [hook["type"] for hook in hooks] == ["failure", "success"]
    assert len(box.messages) == 2 and "recovered" in box.messages[1]
    # and later runs stay quiet
    assert mgr().returncode == 0
    assert len(hooks) == 2 and len(box.messages) == 2


def test_a_revoked_curr_is_announced_as_a_failure_and_its_replacement_as_a_recovery(
    topdir: Path,
    mgr: RunMgr,
    inbox: tuple[Inbox, int],
    webhook: tuple[list[dict[str, object]], int],
) -> None:
    box, mail_port = inbox
    hooks, hook_port = webhook
    # Given the example tree deployed, with notifications, and web-ec's curr revoked for a
    # reason that renews nothing
    configure(topdir, restart="/bin/true", mail_port=mail_port, hook_port=hook_port)
    assert mgr("-renew", "-roll").returncode == 0
    assert mgr("revoke", "example.com:web-ec", "-reason", "superseded").returncode == 0
    before = len(hooks)

    # When the next run looks at it
    mgr("-renew", "-roll")

    # Then one failure is announced for web-ec, saying it was revoked
    new = hooks[before:]
    assert [hook["type"] for hook in new] == ["failure"], new
    message = str(new[0]["message"])
    assert "example.com:web-ec is failing" in message
    assert "- revoked since" in message and "was revoked for superseded" in message
    assert "attempts" not in message
    # When it is renewed and rolled, Then its recovery is announced
    assert mgr("-renew", "-f", "example.com:web-ec").returncode == 0
    assert mgr("-roll", "-f", "example.com:web-ec").returncode == 0
    assert [hook["type"] for hook in hooks[before:]] == ["failure", "success"]
    assert len(box.messages) == len(hooks)
