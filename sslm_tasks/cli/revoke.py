"""``sslm-mgr revoke group:svc``: revoke one certificate of one service.

The revocation itself always runs in this process (one ACME request, or one CRL signed here);
what follows is an ordinary run of :mod:`sslm_tasks.cli.mgr`, in-process or on the workers:
the local CA's upkeep (its new CRL goes to production and to the servers that use it) and, for
``keyCompromise``, a renew and roll of the service (the renew check builds a new key at once,
the roll waits for its usual gate).
"""

from __future__ import annotations

import argparse

from sslm_tasks.config.load import Config, signer_of
from sslm_tasks.crypto.crl import REASONS
from sslm_tasks.lifecycle import revoke
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import Workspace, service_lock
from sslm_tasks.store.layout import LinkName, ServiceRef

from .run import REVOKE_COMMAND, RunRequest, add_follow_arguments

#: The command's name, the first argument of ``sslm-mgr``.
#: The versions that may be revoked.
VERSIONS: tuple[LinkName, ...] = ("curr", "next", "prev")


def build_parser() -> argparse.ArgumentParser:
    """The revoke command's options, in ssl-mgr's style (``-reason`` and ``--reason``)."""
    parser = argparse.ArgumentParser(
        prog=f"sslm-mgr {REVOKE_COMMAND}",
        description="Revoke the certificate of one service (ACME: at the CA; local CA: in "
        "its CRL). keyCompromise also renews the service with a new key at once.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "-reason",
        "--reason",
        choices=list(REASONS),
        default="unspecified",
        help="RFC 5280 reason (default %(default)s)",
    )
    parser.add_argument(
        "-version",
        "--version",
        dest="which",
        choices=list(VERSIONS),
        default="curr",
        help="Which version's certificate (default %(default)s)",
    )
    parser.add_argument("-v", "--verb", action="store_true", help="More verbose output")
    parser.add_argument(
        "-t", "--test", action="store_true", help="The certificate came from the CA's test server"
    )
    add_follow_arguments(parser, what="the renew", no_wait="do not follow the renew")
    parser.add_argument("grps_svcs", metavar="group:svc", nargs=1, help="The one service")
    return parser


def one_service(refs: list[ServiceRef], given: str) -> ServiceRef | str:
    """The one service ``given`` names, or why it does not name exactly one."""
    if len(refs) != 1:
        found = ", ".join(str(ref) for ref in refs) or "none"
        return f"{given!r} must name exactly one service (it names {found})"
    return refs[0]


def follow_up(config: Config, ref: ServiceRef, reason: str) -> tuple[list[ServiceRef], RunRequest]:
    """What runs after the revocation: which services (its local CA first), and how."""
    signer = signer_of(config, ref)
    renew_it = reason == "keyCompromise"
    refs = ([] if signer is None else [signer]) + ([ref] if renew_it else [])
    return refs, RunRequest(renew=renew_it, roll=renew_it)


def revoke_one(ws: Workspace, ref: ServiceRef, args: argparse.Namespace) -> str:
    """Revoke the chosen version; the line to print.

    Raises:
      SslmError: see :func:`sslm_tasks.lifecycle.revoke.revoke`.
    """
    # With workers, one of them may be writing the service's record: wait for its step.
    with ws.lock(service_lock(ref)):
        done = revoke.revoke(ServiceContext(ws, ref), args.which, args.reason)
    return (
        f"{ref}: revoked {args.which} ({done.stamp}, serial {done.serial}): {done.reason}, "
        f"by {done.by}"
    )
