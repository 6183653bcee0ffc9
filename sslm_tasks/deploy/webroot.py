"""http-01 token files in the web servers' document roots (RFC 8555 §8.3).

The CA fetches ``http://<name>/.well-known/acme-challenge/<token>`` from whatever address the
name resolves to, so every host in ``[web] servers`` gets every token of an order: with DNS
round robin or a load balancer, any of them may be the one asked. Each token is the file
``<server_dir>/<apex>/.well-known/acme-challenge/<token>``, always under the apex's directory
(also for ``www.<apex>``), as upstream; its content is the key authorization and a newline
(the CA ignores trailing whitespace, §8.3; Pebble trims ``\\n\\r\\t``).

How a host is reached is :mod:`sslm_tasks.deploy.transport`'s business: this host's servers
through :class:`~sslm_tasks.deploy.transport.LocalTransport`, any other over ssh, with the
deploy's rule for "this host" and its time limits. Every change is one small POSIX ``sh``
script run through :meth:`Transport.run`, the same one for both, so the local path that the
unit tests exercise is the path a remote server takes, and one ssh session per host carries
all of an order's tokens. Files are written to a temp name and renamed (the web server never
serves half a token), 0644 in 0755 directories (readable by whatever user the web server runs
as) and never chowned.

Upstream bugs not repeated (ssl-mgr-behaviour §4.b): its local/remote test was inverted (this
host got ``scp``, other hosts a local write); ``servers = []`` wrote nothing without a word
(callers refuse it, see :mod:`sslm_tasks.lifecycle.acme_issue`); ``chown http:http`` crashed
where no ``http`` user exists; and the remote ``rm`` never had its path filled in, so tokens
stayed on every remote server.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

from sslm_tasks.commands import CommandResult
from sslm_tasks.deploy.transport import Transport
from sslm_tasks.errors import PermanentError, StoreError, TransientError

#: Where tokens live below an apex's web root (RFC 8555 §8.3).
CHALLENGE_DIR: Final = PurePosixPath(".well-known/acme-challenge")
#: Seconds one host may take to write, check or remove all of an order's tokens.
TOKEN_TIMEOUT_S: Final = 30.0

#: A token is base64url (RFC 8555 §8.3); anything else could climb out of the directory.
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
#: A key authorization is ``<token>.<base64url thumbprint>`` (§8.1).
_KEY_AUTHZ_RE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_APEX_RE: Final = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")

# Arguments: triples of web root, token path, content. The web root must exist (a typo in
# server_dir fails here, not as a failed authorization that counts against the CA's limits);
# below it, directories are made as needed. ``umask 022`` gives 0755 directories.
_PUT_SCRIPT: Final = (
    "set -eu; umask 022; "
    "while [ $# -gt 0 ]; do "
    '[ -d "$1" ] || { echo "web root $1 is not a directory" >&2; exit 1; }; '
    'mkdir -p -- "${2%/*}"; '
    'printf \'%s\\n\' "$3" > "$2.sslm-tmp"; '
    'chmod 0644 -- "$2.sslm-tmp"; '
    'mv -f -- "$2.sslm-tmp" "$2"; '
    "shift 3; done"
)
# Arguments: pairs of token path, content; prints each path that is missing or differs.
# ``$(cat)`` drops the trailing newline, as the CA does.
_CHECK_SCRIPT: Final = (
    "while [ $# -gt 0 ]; do "
    '[ "$(cat -- "$1" 2>/dev/null)" = "$2" ] || printf "%s\\n" "$1"; '
    "shift 2; done"
)


@dataclass(frozen=True)
class TokenFile:
    """One http-01 token as the web servers must serve it.

    Raises:
      ValueError: ``server_dir`` is not absolute, ``apex`` not a lower-case host name, or the
        token or key authorization not base64url (a CA's token is never trusted as a path).
    """

    server_dir: PurePosixPath
    apex: str
    token: str
    key_authorization: str

    def __post_init__(self) -> None:
        if not self.server_dir.is_absolute():
            raise ValueError(f"web root {self.server_dir} is not an absolute path")
        if not _APEX_RE.fullmatch(self.apex):
            raise ValueError(f"apex {self.apex!r} is not a lower-case host name")
        if not _TOKEN_RE.fullmatch(self.token):
            raise ValueError(f"http-01 token {self.token!r} is not base64url")
        if not _KEY_AUTHZ_RE.fullmatch(self.key_authorization):
            raise ValueError(f"key authorization {self.key_authorization!r} is malformed")

    @property
    def path(self) -> PurePosixPath:
        """``<server_dir>/<apex>/.well-known/acme-challenge/<token>``."""
        return self.server_dir / self.apex / CHALLENGE_DIR / self.token


def is_token_path(path: str) -> bool:
    """Whether ``path`` is one :attr:`TokenFile.path` could be: the only files we remove."""
    candidate = PurePosixPath(path)
    return (
        candidate.is_absolute()
        and ".." not in candidate.parts
        and candidate.parent.parts[-len(CHALLENGE_DIR.parts) :] == CHALLENGE_DIR.parts
        and bool(_TOKEN_RE.fullmatch(candidate.name))
    )


class WebRoot:
    """The token files of one web server.

    Every method is one :meth:`Transport.run` bounded by ``timeout_s`` and idempotent: a
    repeated :meth:`put` rewrites the same bytes, a repeated :meth:`remove` finds nothing.
    Errors are the transport's, prefixed with what was done on which host.

    Parameters:
      host(str): the server's name in ``[web] servers``, for messages.
      transport(Transport): how to reach it (``transport_for(host, settings)``).
      timeout_s(float): limit for each call.
    """

    def __init__(
        self, host: str, transport: Transport, *, timeout_s: float = TOKEN_TIMEOUT_S
    ) -> None:
        self._host = host
        self._transport = transport
        self._timeout_s = timeout_s

    def put(self, files: Sequence[TokenFile]) -> None:
        """Write ``files`` (mode 0644), making the directories below each web root.

        Raises:
          PermanentError: a web root does not exist, or a file could not be written.
          TransientError: the host was unreachable, or it timed out.
        """
        args = [str(arg) for f in files for arg in (f.server_dir, f.path, f.key_authorization)]
        if args:
            self._run(["sh", "-c", _PUT_SCRIPT, "sh", *args], "writing http-01 tokens")

    def missing(self, files: Sequence[TokenFile]) -> list[str]:
        """The paths of ``files`` this server does not hold with the right content.

        Raises:
          PermanentError, TransientError: as for :meth:`put`.
        """
        args = [str(arg) for f in files for arg in (f.path, f.key_authorization)]
        if not args:
            return []
        done = self._run(["sh", "-c", _CHECK_SCRIPT, "sh", *args], "checking http-01 tokens")
        return done.output.splitlines()

    def remove(self, paths: Sequence[str]) -> None:
        """Delete the token files at ``paths``; missing ones are fine.

        Raises:
          StoreError: a path is not a token path (the record it came from is damaged; we
            delete nothing rather than something that is not ours).
          PermanentError, TransientError: as for :meth:`put`.
        """
        strangers = [path for path in paths if not is_token_path(path)]
        if strangers:
            raise StoreError(f"not http-01 token paths, not removed: {', '.join(strangers)}")
        if paths:
            self._run(["rm", "-f", "--", *paths], "removing http-01 tokens")

    def _run(self, argv: list[str], what: str) -> CommandResult:
        try:
            return self._transport.run(argv, timeout_s=self._timeout_s)
        except TransientError as err:
            raise TransientError(f"{what} on {self._host}: {err}") from err
        except PermanentError as err:
            raise PermanentError(f"{what} on {self._host}: {err}") from err
