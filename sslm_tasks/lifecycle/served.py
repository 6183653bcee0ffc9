"""After a deploy: does each server serve ``curr``, and does that match what DNS publishes?

A server class with ``verify`` probes (see :mod:`sslm_tasks.deploy.verify`) is connected to
after its restart. It passes when the certificate it serves has the public key of the ``curr``
of one of the services it uses (a mail server may serve the EC or the RSA one) and, for DANE
services, when that certificate matches the TLSA records the zone's primary serves now. A
failure is reported by server and probe; the caller then keeps the old TLSA records published.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from sslm_tasks.config.load import list_services
from sslm_tasks.config.models import ServerSection
from sslm_tasks.crypto.inspect import load_certs
from sslm_tasks.deploy.targets import ANY_DOMAIN, DeployTarget
from sslm_tasks.deploy.verify import check_served, parse_verify, published_tlsa
from sslm_tasks.dns.lookup import Nameserver, primary_for
from sslm_tasks.errors import TransientError
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store import layout as files
from sslm_tasks.store.layout import ServiceRef
from sslm_tasks.store.versions import read_link


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
    return load_certs(path.read_bytes())[0] if path.is_file() else None


def check_server(
    ws: Workspace, target: DeployTarget, changed: Sequence[ServiceRef], *, timeout_s: float
) -> list[str]:
    """Run the class's ``verify`` probes against ``target``; one line per failed probe.

    Raises:
      TransientError: a server or the DNS primary did not answer (retry later).
      ConfigError: a probe needs a name lookup or TLSA records but no ``[[dns_primary]]``
        fits.
    """
    section: ServerSection | None = getattr(ws.config.main, target.server_class, None)
    if section is None or not section.verify:
        return []
    refs = served_services(ws, section, changed)
    expected = [(ref, cert) for ref in refs if (cert := _curr_cert(ws, ref)) is not None]
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
            for _, cert in expected
        ]
        if not any(result.ok for result in results):
            detail = results[0].detail if results else "no service has a current certificate"
            problems.append(f"[{target.server_class}] {target.host}: verify {probe.url}: {detail}")
    return problems
