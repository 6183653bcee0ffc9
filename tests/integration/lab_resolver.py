"""A validating resolver for the DNS lab: ``unbound`` on loopback, as DANE clients use one.

:func:`start_resolver` runs unbound on a free port of 127.0.0.1. It resolves the lab's zones
(``stub-zone``: the primary and the secondary, on port 53, as any recursive resolver would ask
their NS), validates them from the trust anchors the lab serves (the zones' KSKs: they have no
signed parent) and caches what it gets for the TTL the name servers give, as the resolvers of
real clients do. Every other name is forwarded to a loopback port nobody listens on, so the
resolver never asks the root or anything else off this machine.

:meth:`Resolver.flush` empties its cache for a zone (``unbound-control`` over a local socket),
so a test knows when the next lookup fetched and cached what the name servers serve.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
from lab_dns import DnsLab
from services import START_TIMEOUT_S, Service, Services, free_port, require_binary, wait_for

ADDRESS = "127.0.0.1"
#: Per query: the resolver answers from its cache or asks the lab on loopback.
QUERY_TIMEOUT_S = 3.0

_CONFIG = """\
server:
    interface: {address}@{port}
    port: {port}
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    username: ""
    chroot: ""
    directory: "{directory}"
    pidfile: "{directory}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    do-not-query-localhost: no
    module-config: "validator iterator"
    trust-anchor-file: "{anchors}"
    # Caches as long as the name servers say, no longer and no shorter, and never answers
    # from an expired entry: the behaviour the roll gate must outwait.
    cache-min-ttl: 0
    prefetch: no
    serve-expired: no
    qname-minimisation: no
    trust-anchor-signaling: no
    # unbound answers NXDOMAIN for test. itself (RFC 6761) unless told not to.
    local-zone: "test." nodefault
{stubs}
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{dead_port}

remote-control:
    control-enable: yes
    control-interface: "{directory}/unbound.ctl"
    control-use-cert: no
"""

_STUB = """\
stub-zone:
    name: "{apex}"
    stub-addr: {primary}
    stub-addr: {secondary}
"""


@dataclass(frozen=True)
class Answer:
    """What the resolver answered: the records (zone-file rdata, lower case), and whether it
    validated them (the AD flag)."""

    records: list[str]
    validated: bool


@dataclass
class Resolver:
    service: Service
    config: Path
    port: int
    address: str = ADDRESS

    def lookup(self, name: str, rdtype: str) -> Answer:
        """Ask the resolver (recursion desired, DNSSEC OK) for ``name``/``rdtype``.

        Raises:
            dns.exception.Timeout: no answer in time.
            AssertionError: an rcode other than NOERROR or NXDOMAIN (SERVFAIL: bogus data).
        """
        request = dns.message.make_query(name, rdtype, want_dnssec=True)
        response = dns.query.udp(request, self.address, timeout=QUERY_TIMEOUT_S, port=self.port)
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise AssertionError(f"resolver: {name} {rdtype}: {dns.rcode.to_text(rcode)}")
        rrset = response.get_rrset(
            response.answer,
            dns.name.from_text(name),
            dns.rdataclass.IN,
            dns.rdatatype.from_text(rdtype),
        )
        records = [] if rrset is None else [rdata.to_text().lower() for rdata in rrset]
        return Answer(records, bool(response.flags & dns.flags.AD))

    def flush(self, apex: str) -> None:
        """Drop everything the resolver cached for ``apex`` and below."""
        done = subprocess.run(
            [require_binary("unbound-control"), "-c", str(self.config), "flush_zone", apex],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"unbound-control flush_zone {apex}: {done.stdout}{done.stderr}")


def start_resolver(services: Services, workdir: Path, lab: DnsLab) -> Resolver:
    """Start unbound validating the lab's zones; return once it answers with validated data."""
    workdir.mkdir(parents=True, exist_ok=True)
    anchors = workdir / "anchors"
    anchors.write_text("".join(lab.dnskey_file(apex).read_text() for apex in lab.apexes))
    port = free_port()
    stubs = "".join(
        _STUB.format(apex=apex, primary=lab.primary, secondary=lab.secondary) for apex in lab.apexes
    )
    config = workdir / "unbound.conf"
    config.write_text(
        _CONFIG.format(
            address=ADDRESS,
            port=port,
            directory=workdir,
            anchors=anchors,
            stubs=stubs,
            dead_port=free_port(),
        )
    )
    checked = subprocess.run(
        [require_binary("unbound-checkconf"), str(config)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    service = services.spawn(
        f"unbound-{port}", [require_binary("unbound"), "-d", "-c", str(config)]
    )
    resolver = Resolver(service, config, port)

    def validates() -> bool:
        try:
            return resolver.lookup(lab.apex, "SOA").validated
        except (dns.exception.DNSException, OSError, AssertionError):
            return False

    wait_for(
        f"unbound on {ADDRESS}:{port} validates {lab.apex}",
        validates,
        timeout_s=START_TIMEOUT_S,
        log=service.log,
        alive=lambda: service.alive,
    )
    return resolver
