"""A broker that goes away mid-run loses no workflow: Redis (with its append-only file, as a
production broker keeps it) is stopped for 5 s while workers renew a dozen services; every
service still ends with exactly one new version, no workflow keeps its claim, and the CLI says
once that it lost the broker and follows again when it is back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from services import REPO, Services, WorkerStarter, start_redis, wait_for
from support import chain_verifies

EXTRA = [f"web{n:02d}" for n in range(1, 10)]
#: A step that finishes while Redis is away waits, inside its time limit, to publish the next
#: one; a task the outage cut off comes back after the visibility timeout.
OUTAGE_LIMITS = {
    "SSLM_VISIBILITY_TIMEOUT_S": "30",
    "SSLM_TASK_TIME_LIMIT_S": "25",
    "SSLM_TASK_SOFT_TIME_LIMIT_S": "20",
}


def topdir_with_a_dozen_services(top: Path) -> Path:
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    template = (top / "conf.d/example.com/web-ec").read_text()
    for name in EXTRA:
        (top / "conf.d/example.com" / name).write_text(
            template.replace("service = 'web-ec'", f"service = '{name}'")
        )
    main = top / "conf.d/ssl-mgr.conf"
    services = ", ".join(f"'{name}'" for name in ["mail-ec", "mail-rsa", "web-ec", *EXTRA])
    main.write_text(
        main.read_text().replace(
            "services = ['mail-ec', 'mail-rsa', 'web-ec']", f"services = [{services}]"
        )
    )
    return top


def test_a_broker_restart_mid_run_loses_no_workflow(tmp_path: Path, services: Services) -> None:
    # Given a persistent Redis, two worker processes and a tree of 14 services
    redis = start_redis(services, appendonly=True)
    top = topdir_with_a_dozen_services(tmp_path / "top")
    # and workers whose "tlsa" step takes 2 s: Redis goes away while steps run, so they end,
    # and publish what follows them, during the outage
    marker = tmp_path / "slow-step"
    workers = WorkerStarter(services, redis.url())
    worker = workers.start(
        "all@outage",
        pool="prefork",
        concurrency=2,
        include=["slow_steps"],
        env={
            "SSL_MGR_TOPDIR": str(top),
            "SLOW_STEP": "tlsa",
            "SLOW_S": "2",
            "SLOW_MARKER": str(marker),
            **OUTAGE_LIMITS,
        },
    )
    # When the CLI renews them all through the broker, and Redis stops for 5 s meanwhile
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLM_")}
    env.update(SSLM_BROKER_URL=redis.url(), SSL_MGR_TOPDIR=str(top))
    cli = subprocess.Popen(
        [str(Path(sys.executable).parent / "sslm-mgr"), "-renew", "-roll"],
        cwd=top,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(
        "the CAs are issued and a leaf's step is under way",
        lambda: (
            len(list((top / "certs").glob("ca/*/curr"))) == 2
            and len(list((top / "certs").glob("example.com/*/db/*"))) >= 2
            and marker.exists()
        ),
        timeout_s=120,
    )
    redis.service.terminate()
    time.sleep(5)
    start_redis(services, port=redis.port, password=redis.password, appendonly=True)
    out, err = cli.communicate(timeout=300)
    # Then the run succeeded, saying once that it lost the broker, without a traceback
    assert cli.returncode == 0, out + err
    assert err.count("lost the broker") == 1, err
    assert "Traceback" not in err
    # and every service has exactly one version, its chain verifying
    refs = ["ca/my-root", "ca/my-int"] + [
        f"example.com/{name}" for name in ["mail-ec", "mail-rsa", "web-ec", *EXTRA]
    ]
    for ref in refs:
        assert len(list((top / "certs" / ref / "db").iterdir())) == 1, ref
        assert chain_verifies(top, ref), ref
    # and no workflow holds a service any more
    assert redis.client().keys("sslm:claim:workflow:*") == []
    # and the worker that held messages when Redis went away outlived the outage
    assert worker.service.alive, "the worker stopped during the outage"
