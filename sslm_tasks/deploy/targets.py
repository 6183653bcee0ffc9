"""Which servers take part in a deploy, and what each one needs after a change.

Upstream restarted a server class when its ``depends`` tags met what changed or when the last
``svc_depends`` entry named a changed service; sslm honours every ``svc_depends`` entry, and
decides per server so each becomes one deploy task on its site's queue.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

# ANY_DOMAIN is re-exported for the lifecycle; the config checks svc_depends with it.
from sslm_tasks.config.models import ANY_DOMAIN as ANY_DOMAIN
from sslm_tasks.config.models import MainConfig, ServerSection
from sslm_tasks.store.layout import ServiceRef


@dataclass(frozen=True)
class DeployTarget:
    """One server of one class: where its task runs, the ``post_copy_cmd`` commands that run
    for it once it has its copy, and whether it restarts after them."""

    server_class: str
    host: str
    site: str
    restart: bool
    post_copy: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "server_class": self.server_class,
            "host": self.host,
            "site": self.site,
            "restart": self.restart,
            "post_copy": list(self.post_copy),
        }

    @classmethod
    def from_json(cls, data: dict[str, object], *, site: str) -> DeployTarget:
        commands = data.get("post_copy") or []
        return cls(
            server_class=str(data["server_class"]),
            host=str(data["host"]),
            site=site,
            restart=bool(data["restart"]),
            post_copy=tuple(str(c) for c in commands) if isinstance(commands, list) else (),
        )


def is_local_host(host: str) -> bool:
    """Upstream's rule: this machine's short name or full ``gethostname()``; plus localhost."""
    name = socket.gethostname()
    return host in {name, name.split(".")[0], "localhost"}


def depends_on(section: ServerSection, changed: Iterable[ServiceRef], tags: Iterable[str]) -> bool:
    """True when a change concerns this server class (any matching entry counts)."""
    if set(section.depends) & set(tags):
        return True
    changed = list(changed)
    for domain, services in section.svc_depends:
        for ref in changed:
            if (domain.lower() in ANY_DOMAIN or domain == ref.group) and ref.service in services:
                return True
    return False


def deploy_targets(
    main: MainConfig, changed: Iterable[ServiceRef], tags: Iterable[str], *, force: bool = False
) -> list[DeployTarget]:
    """Every server of every class, in upstream's order (smtp, imap, web, other).

    ``restart`` says whether its ``restart_cmd`` should run for this change (always, with
    ``force``: ``dev -fsr``). A server listed in two classes appears once per class: each
    class has its own restart command.
    """
    changed, tags = list(changed), list(tags)
    targets: list[DeployTarget] = []
    seen: set[str] = set()
    for name, section in main.server_sections():
        restart = bool(section.restart_cmd) and (force or depends_on(section, changed, tags))
        for host in section.servers:
            # A host's post-copy commands run once, with its first class: after the copy,
            # before any restart (upstream's order: copy, post_copy_cmd, restarts).
            commands = () if host in seen else _post_copy_commands(main, host)
            seen.add(host)
            targets.append(DeployTarget(name, host, main.site_of(host), restart, commands))
    return targets


def _post_copy_commands(main: MainConfig, host: str) -> tuple[str, ...]:
    return tuple(
        command for entry_host, command in main.globals.post_copy_cmd if entry_host == host
    )


def unattached_post_copies(main: MainConfig) -> list[tuple[str, str]]:
    """``post_copy_cmd`` entries for hosts that are no server of any class: they run on their
    own, after the deploys."""
    servers = {host for _, section in main.server_sections() for host in section.servers}
    return [(host, command) for host, command in main.globals.post_copy_cmd if host not in servers]
