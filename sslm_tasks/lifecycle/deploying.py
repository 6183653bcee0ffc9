"""Deploying to one server: the copy, its commands and restarts, then its ``verify`` probes
(:mod:`sslm_tasks.deploy.verify`): does it serve the ``curr`` of a service it uses, and does that
match the TLSA records the zone's primary serves now? Each outcome goes to the deploy ledger
(:mod:`sslm_tasks.lifecycle.deployment`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from cryptography import x509

from sslm_tasks.commands import DEFAULT_TIMEOUT_S
from sslm_tasks.config.load import list_services
from sslm_tasks.config.models import ServerSection
from sslm_tasks.config.probes import parse_verify
from sslm_tasks.crypto.inspect import load_certs
from sslm_tasks.deploy.server import deploy
from sslm_tasks.deploy.targets import ANY_DOMAIN, DeployTarget
from sslm_tasks.deploy.verify import check_served, published_tlsa
from sslm_tasks.dns.lookup import primary_for
from sslm_tasks.dns.servers import Nameserver
from sslm_tasks.errors import SslmError, TransientError
from sslm_tasks.lifecycle.deployment import DETAIL_KEPT, ServerOutcome, record_outcome, server_key
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.logs import trace
from sslm_tasks.store import layout as files
from sslm_tasks.store.layout import ServiceRef
from sslm_tasks.store.read import read_bytes
from sslm_tasks.store.versions import read_link


def deploy_to(
    ws: Workspace,
    target: DeployTarget,
    changed: Sequence[ServiceRef],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ServerOutcome:
    """Deploy ``target`` (copy, ``post_copy_cmd``, restarts when due), then its ``verify``
    probes; record and return the outcome. Never raises for the server's own failures: they
    are the outcome (its ``error`` keeps the exception, for a caller that retries).

    Raises:
      StoreError: the ledger could not be written.
    """
    key = server_key(target.server_class, target.host)
    started = ws.clock()
    error: SslmError | None = None
    step = "deploy"
    try:
        ran = deploy(ws.config.main, target, prod_dir=ws.layout.prod_dir, timeout_s=timeout_s)
        trace("deploy", key, field="server")
        step = "verify"
        problems = check_server(ws, target, changed, timeout_s=timeout_s)
        trace("verify", key, field="server")
        shown = [" ".join(result.argv) for result in ran]
        detail = "; ".join(problems) or "deployed" + "".join(f"; ran {c}" for c in shown)
        if problems:
            error = SslmError(detail)
    except SslmError as err:
        error = err
        detail = f"[{target.server_class}] {target.host}: {err}"
    outcome = ServerOutcome(
        started,
        ws.clock(),
        error is None,
        detail[-DETAIL_KEPT:],
        failed_step=None if error is None else step,
    )
    return replace(record_outcome(ws, key, outcome), error=error)


# --------------------------------------------------------------------------- verify


def served_services(
    ws: Workspace, section: ServerSection, changed: Sequence[ServiceRef]
) -> list[ServiceRef]:
    """The services whose certificate this class may serve: every service its ``svc_depends``
    names (all of them, not only the changed ones: a mail server picks EC or RSA per client),
    else the services that changed."""
    named: list[ServiceRef] = []
    for domain, services in section.svc_depends:
        groups = {ref.group for ref in changed} if domain.lower() in ANY_DOMAIN else {domain}
        for group in sorted(groups):
            present = set(list_services(ws.config.conf_dir / group))
            named += [ServiceRef(group, svc) for svc in services if svc in present]
    return list(dict.fromkeys(named)) or list(changed)


def _curr_cert(ws: Workspace, ref: ServiceRef) -> x509.Certificate | None:
    stamp = read_link(ws.layout, ref, "curr")
    if stamp is None:
        return None
    path = ws.layout.version_dir(ref, stamp) / files.CERT
    return load_certs(read_bytes(path))[0] if path.is_file() else None


def check_server(
    ws: Workspace, target: DeployTarget, changed: Sequence[ServiceRef], *, timeout_s: float
) -> list[str]:
    """Run the class's ``verify`` probes against ``target``; one line per failed probe. A probe
    passes when the server serves the ``curr`` of one of the services it uses and, for DANE
    services, that certificate matches the TLSA records the primary serves now.

    Raises:
      TransientError: a server or the DNS primary did not answer (retry later).
      ConfigError: a probe needs a name lookup or TLSA records but no ``[[dns_primary]]``
        fits.
    """
    section: ServerSection | None = getattr(ws.config.main, target.server_class, None)
    if section is None or not section.verify:
        return []
    refs = served_services(ws, section, changed)
    expected = [cert for ref in refs if (cert := _curr_cert(ws, ref)) is not None]
    dane = [ref for ref in refs if ws.service(ref).dane_tls]
    nameserver: Nameserver | None = None
    if ws.config.main.dns_primary and refs:
        nameserver = primary_for(ws.config, (dane or refs)[0].group)
    problems: list[str] = []
    for value in section.verify:
        probe = parse_verify(value, default_host=target.host)
        tlsa = published_tlsa(probe, nameserver=nameserver) if dane and nameserver else None
        if tlsa == []:
            # Worth another try: a new zone's records may not be served yet.
            raise TransientError(
                f"[{target.server_class}] {target.host}: verify {probe.url}: "
                f"the DNS primary serves no TLSA records for it yet"
            )
        results = [
            check_served(
                probe, expected=cert, tlsa=tlsa, timeout_s=timeout_s, nameserver=nameserver
            )
            for cert in expected
        ]
        if not any(result.ok for result in results):
            detail = results[0].detail if results else "no service has a current certificate"
            problems.append(f"[{target.server_class}] {target.host}: verify {probe.url}: {detail}")
    return problems
