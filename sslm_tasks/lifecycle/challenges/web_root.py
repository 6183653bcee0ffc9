"""http-01 by token files in the web servers' document roots, written locally or over ssh.

Every token goes to ``<server_dir>/<apex>/.well-known/acme-challenge/<token>`` on every host of
``[web] servers`` (always under the group's apex, whatever the name, as upstream), through the
deploy's transport (:mod:`sslm_tasks.deploy.webroot`). The paths are recorded by host before
they are written, and removal follows the record, not the configuration: a server may have left
``[web] servers`` since.

"Served" is a read-back through the same transport, not an HTTP fetch: the names may resolve
differently here than for the CA (split horizon, internal hosts), and the CA's own fetch is the
real test. The read-back catches what the write cannot: a web root that another process cleans,
or a server that no longer holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import PurePosixPath

from sslm_tasks.acme.order_state import ChallengeToPublish, OrderState
from sslm_tasks.config.load import web_roots
from sslm_tasks.config.models import ChallengeKind
from sslm_tasks.config.settings import load_settings
from sslm_tasks.deploy.transport import transport_for
from sslm_tasks.deploy.webroot import TokenFile, WebRoot
from sslm_tasks.errors import PermanentError, SslmError
from sslm_tasks.lifecycle.context import ServiceContext

log = logging.getLogger("sslm")


def _web_root(host: str) -> WebRoot:
    """One web server, through the deploy's transport: local for this host, ssh otherwise."""
    return WebRoot(host, transport_for(host, load_settings()))


class WebRootPublisher:
    """http-01 for one service through the web servers' document roots."""

    kind: ChallengeKind = "http-01"

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def _tokens(
        self, challenges: Sequence[ChallengeToPublish]
    ) -> tuple[list[TokenFile], list[str]]:
        """The token files for ``challenges``, and the hosts they go to.

        Raises:
          ConfigError: no usable ``[web]`` section (checked at load time already).
          PermanentError: the CA sent a token that is not base64url.
        """
        server_dir, hosts = web_roots(self._ctx.ws.config, self._ctx.ref)
        group = self._ctx.ref.group.lower()
        try:
            tokens = [
                TokenFile(PurePosixPath(server_dir), group, c.token, c.value) for c in challenges
            ]
        except ValueError as err:
            raise PermanentError(f"{self._ctx.ref}: {err}") from err
        return tokens, hosts

    def publish(self, order: OrderState, challenges: Sequence[ChallengeToPublish]) -> None:
        """Record, then write, the token files on every web server. Idempotent."""
        ctx = self._ctx
        tokens, hosts = self._tokens(challenges)
        if tokens:
            paths = {str(token.path) for token in tokens}
            recorded = ctx.record.web_tokens
            for host in hosts:
                recorded[host] = sorted(set(recorded.get(host, [])) | paths)
            ctx.save()
            for host in hosts:
                _web_root(host).put(tokens)
        names = ", ".join(c.identifier for c in challenges) or "no name"
        log.info("%s: http-01 tokens for %s on %s", ctx.ref, names, ", ".join(hosts))

    def served(
        self, order: OrderState, challenges: Sequence[ChallengeToPublish]
    ) -> tuple[bool, str]:
        """Whether every web server holds every token file with the right content."""
        tokens, hosts = self._tokens(challenges)
        if not tokens:
            return True, "nothing to publish"
        lagging = [
            f"{host} lacks {', '.join(missing)}"
            for host in hosts
            if (missing := _web_root(host).missing(tokens))
        ]
        if lagging:
            return False, "; ".join(lagging)
        return True, f"{len(tokens)} http-01 token files on {', '.join(hosts)}"

    def withdraw(self, order: OrderState | None, *, refresh: bool) -> None:
        """Remove every recorded token file from the host it was written to. Hosts done are
        dropped from the record, so a retry asks only those that failed.

        Raises:
          SslmError: the first host that failed (the others are logged).
        """
        ctx = self._ctx
        recorded = dict(ctx.record.web_tokens)
        if not recorded:
            return
        left: dict[str, list[str]] = {}
        errors: list[SslmError] = []
        for host, paths in sorted(recorded.items()):
            try:
                _web_root(host).remove(paths)
            except SslmError as err:
                log.warning("%s: %s", ctx.ref, err)
                left[host] = paths
                errors.append(err)
        ctx.record.web_tokens = left
        ctx.save()
        if errors:
            raise errors[0]
        log.info("%s: http-01 tokens removed from %s", ctx.ref, ", ".join(sorted(recorded)))
