"""A real authoritative DNS on loopback for the ACME (dns-01) and DANE tests: BIND, signed.

:func:`start_dns_lab` runs two ``named`` processes under the test's :class:`Services`: a
primary on 127.0.0.53 and a secondary on 127.0.0.54 (127.0.N.53/54 for pytest-xdist's worker
N), both on port 53, because sslm's
propagation check asks every NS of an apex on port 53 and that is what upstream does. The
primary signs its zones (``dnssec-policy default; inline-signing yes``) and NOTIFYs the
secondary, which transfers the signed zones, as in a real deployment.

Each zone file ``$INCLUDE``s ``<acme_dir>/acme-challenge.<apex>`` and
``<tlsa_dir>/tlsa.<apex>``: the files sslm writes (``[dns] acme_dir`` and ``tlsa_dirs``).
:attr:`DnsLab.refresh_script` is a ``[dns] restart_cmd``: ``--serial_bump <apex ...>`` bumps
each zone's serial, checks the zone with ``named-checkzone`` (which reads the includes) and
reloads the primary; a broken include fails the script and the old zone keeps serving.

Zones named in ``updatable`` also accept RFC 2136 updates signed with the lab's TSIG keys
(written by ``tsig-keygen``, as an operator would make them): :attr:`DnsLab.update_key_file`
may change ``_acme-challenge.<host>`` TXT and ``_<port>._<proto>.<host>`` TLSA records of the
zone's hosts (its ``update-policy`` grants nothing else), :attr:`DnsLab.rightless_key_file` is
known to the server but may change none of them. Such a zone is dynamic: BIND keeps its changes
in a journal and refuses ``rndc reload`` for it, so the refresh script is for the other zones.

Port 53 on those two addresses is one per network namespace, so a lab holds a lock
(:data:`LOCK_FILE`) from start to :meth:`DnsLab.close`: concurrent test runs take turns instead
of answering each other's queries (a run in its own namespace, ``unshare -n``, need not wait).
The loopback aliases the lab adds it also removes. Nothing here asks the system resolver:
every query names its server (and ``named-checkzone -i local`` checks only in-zone names,
where ``-i full`` would look the others up through it).
"""

from __future__ import annotations

import base64
import errno
import fcntl
import os
import secrets
import shlex
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from services import START_TIMEOUT_S, Service, Services, free_port, require_binary, wait_for

_R = TypeVar("_R", bound=dns.rdata.Rdata)

#: Which of pytest-xdist's parallel workers this is (0 without xdist): each has a lab of its
#: own on its own pair of loopback addresses, 127.0.<slot>.53 and .54, since port 53 is fixed.
SLOT = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
PRIMARY = f"127.0.{SLOT}.53"
SECONDARY = f"127.0.{SLOT}.54"
#: The propagation check asks every NS here; so do we.
DNS_PORT = 53
#: Held (flock) while a lab owns PRIMARY:53 and SECONDARY:53 of this network namespace (named
#: by its inode): in /tmp, so that every test run in the namespace sees the same file.
LOCK_FILE = Path(f"/tmp/sslm-dns-lab.netns-{os.stat('/proc/self/ns/net').st_ino}.slot-{SLOT}.lock")
#: How long a lab waits for another test run's lab to finish before it fails.
LOCK_TIMEOUT_S = 180.0
#: Per query: loopback answers in a millisecond, a stopped server never does.
QUERY_TIMEOUT_S = 1.0
#: Time for a zone change to reach the secondary (measured: about 0.2 s).
PROPAGATION_TIMEOUT_S = 10.0
#: Flags of a DNSKEY with the SEP bit: the KSK (with dnssec-policy default, the CSK).
KSK_FLAGS = 257
#: Where the A records of the apexes, ``www`` and the MX hosts point: the test's own listeners.
HOST_ADDRESS = "127.0.0.1"

_SERIAL_MARK = "; serial"

#: SOA timers: long refresh and retry, so that a secondary that cannot reach the primary really
#: lags (see :meth:`DnsLab.start_secondary`); NOTIFY keeps a healthy one current in a second.
_ZONE_TEMPLATE = """\
$TTL 300
@ IN SOA ns1.{apex}. hostmaster.{apex}. (
    1 {serial_mark}
    3600 ; refresh
    600 ; retry
    86400 ; expire
    60 ; negative TTL
)
@ NS ns1.{apex}.
@ NS ns2.{apex}.
ns1 A {primary}
ns2 A {secondary}
@ A {host}
www A {host}
{mx_records}
$INCLUDE {acme_file}
$INCLUDE {tlsa_file}
"""

_OPTIONS = """\
key "lab-rndc" {{ algorithm hmac-sha256; secret "{secret}"; }};
controls {{ inet {address} port {rndc_port} allow {{ 127.0.0.0/8; }} keys {{ "lab-rndc"; }}; }};
logging {{
    channel to_stderr {{ stderr; severity info; print-time yes; print-category yes; }};
    category default {{ to_stderr; }};
    category lame-servers {{ null; }};
}};
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    lock-file "{directory}/named.lock";
    session-keyfile "{directory}/session.key";
    managed-keys-directory "{directory}";
    listen-on port {port} {{ {address}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ 127.0.0.0/8; }};
    allow-transfer {{ 127.0.0.0/8; }};
    query-source address {address};
    notify-source {address};
    transfer-source {address};
{extra}}};
"""

_PRIMARY_ZONE = """\
zone "{apex}" {{
    type primary;
    file "{zone_file}";
    dnssec-policy default;
    inline-signing yes;
{update_policy}}};
"""

#: The TSIG key that may publish sslm's records in an updatable zone, and one without rights.
UPDATE_KEY = "sslm-update"
RIGHTLESS_KEY = "lab-rightless"

_SECONDARY_ZONE = """\
zone "{apex}" {{
    type secondary;
    primaries {{ {primary} port {primary_port}; }};
    file "db.{apex}";
}};
"""

_RNDC_CONF = """\
key "lab-rndc" {{ algorithm hmac-sha256; secret "{secret}"; }};
options {{ default-key "lab-rndc"; default-server {address}; default-port {rndc_port}; }};
"""

#: The refresh script. Every zone is checked before any is replaced, so one broken include
#: leaves every zone as it was; ``flock`` serialises concurrent calls, as an operator's
#: script must when several workers publish at once.
_REFRESH_SCRIPT = """\
#!/bin/sh
# DNS refresh of the sslm test lab, a [dns] restart_cmd: $0 --serial_bump <apex ...>
# Bumps each zone's serial in a copy, checks every copy with named-checkzone (which reads the
# $INCLUDEd challenge and TLSA files), then puts them in place and reloads the primary.
# A check that fails leaves every zone file, and what the primary serves, unchanged.
set -eu
zones={zones}
printf '%s\\n' "$*" >> {calls_log}
if [ "${{1:-}}" != --serial_bump ] || [ $# -lt 2 ]; then
    echo "usage: $0 --serial_bump <apex ...>" >&2
    exit 2
fi
shift
exec 9>> "$zones/refresh.lock"
{flock} 9
trap 'rm -f "$zones"/*.next' EXIT
for apex in "$@"; do
    if [ ! -f "$zones/db.$apex" ]; then
        echo "$0: no zone $apex in this lab" >&2
        exit 2
    fi
    awk '/{serial_mark}$/ && !done {{ sub(/[0-9]+/, $1 + 1); done = 1 }} {{ print }}' \\
        "$zones/db.$apex" > "$zones/db.$apex.next"
    {checkzone} -i local "$apex" "$zones/db.$apex.next" >&2
done
for apex in "$@"; do
    mv "$zones/db.$apex.next" "$zones/db.$apex"
    {rndc} -c {rndc_conf} -s {primary} -p {rndc_port} reload "$apex"
done
"""


class _LabLock:
    """The lock on the lab's addresses in this network namespace (see :data:`LOCK_FILE`)."""

    def __init__(self) -> None:
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = LOCK_FILE.open("a")
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    pytest.fail(
                        f"another DNS lab has held {LOCK_FILE} for {LOCK_TIMEOUT_S:.0f} s "
                        f"({PRIMARY}:53 and {SECONDARY}:53 serve one lab at a time)"
                    )
                time.sleep(0.2)
            else:
                self._file = handle
                return

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None


def _run_ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("ip"), *args], capture_output=True, text=True, timeout=10, check=False
    )


def _lo_has(address: str) -> bool:
    shown = _run_ip("-4", "-o", "addr", "show", "dev", "lo")
    if shown.returncode != 0:
        pytest.fail(f"ip addr show dev lo failed: {shown.stderr.strip()}")
    return any(f"inet {address}/" in line for line in shown.stdout.splitlines())


def _add_alias(address: str) -> bool:
    """Put ``address`` on ``lo``: named listens only on addresses an interface has.

    Returns whether we added it, so that we remove only what we added.
    """
    if _lo_has(address):
        return False
    added = _run_ip("addr", "add", f"{address}/32", "dev", "lo")
    if added.returncode != 0:
        pytest.fail(
            f"cannot add {address}/32 to lo (the DNS lab needs root or CAP_NET_ADMIN): "
            f"{added.stderr.strip()}"
        )
    return True


def _remove_alias(address: str) -> None:
    removed = _run_ip("addr", "del", f"{address}/32", "dev", "lo")
    if removed.returncode != 0 and _lo_has(address):
        raise AssertionError(f"cannot remove {address}/32 from lo: {removed.stderr.strip()}")


def _require_port_free(address: str) -> None:
    """Fail when something already serves ``address``:53 (a stray named, systemd-resolved's
    stub on 127.0.0.53): named would only log the clash, and the stranger would answer."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((address, DNS_PORT))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                pytest.fail(f"{address}:{DNS_PORT} is already in use (ss -lnup shows by whom)")


def _secret() -> str:
    """A fresh rndc key (HMAC-SHA256, base64)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class _Server:
    """One named: its name, address, directory and rndc channel."""

    name: str
    address: str
    directory: Path
    rndc_port: int
    rndc_secret: str

    @property
    def config(self) -> Path:
        return self.directory / "named.conf"

    @property
    def rndc_conf(self) -> Path:
        """An ``rndc -c`` file that reaches this server's control channel: a file of our own,
        not ``-k``, which rndc ignores whenever ``/etc/bind/rndc.conf`` exists."""
        return self.directory / "rndc.conf"

    def write_rndc_conf(self) -> None:
        self.rndc_conf.write_text(
            _RNDC_CONF.format(
                secret=self.rndc_secret, address=self.address, rndc_port=self.rndc_port
            )
        )
        self.rndc_conf.chmod(0o600)

    def options(self, extra: str) -> str:
        """The key, controls, logging and options statements, ``extra`` added to options."""
        return _OPTIONS.format(
            secret=self.rndc_secret,
            address=self.address,
            rndc_port=self.rndc_port,
            directory=self.directory,
            port=DNS_PORT,
            extra=extra,
        )


def _records(records: list[dns.rdata.Rdata], kind: type[_R]) -> list[_R]:
    return [record for record in records if isinstance(record, kind)]


@dataclass
class DnsLab:
    """The running primary and secondary, the include directories and the refresh script.

    Built by :func:`start_dns_lab`; :meth:`close` (the fixture's teardown) stops both servers,
    removes the loopback aliases the lab added and releases the lock.
    """

    services: Services
    workdir: Path
    #: The zones served; the first is the default ``apex`` of every helper.
    apexes: tuple[str, ...]
    mx_hosts: tuple[str, ...]
    _primary: _Server
    _secondary: _Server
    #: The zones that accept TSIG-signed updates, and the first labels of the hosts (beside the
    #: apex, ``www`` and the MX hosts) whose challenge and TLSA records the update key may change.
    updatable: tuple[str, ...] = ()
    update_hosts: tuple[str, ...] = ()
    _running: dict[str, Service] = field(default_factory=dict)
    _aliases_added: list[str] = field(default_factory=list)
    _lock: _LabLock = field(default_factory=_LabLock)

    primary = PRIMARY
    secondary = SECONDARY
    port = DNS_PORT

    @property
    def apex(self) -> str:
        """The first zone: what every helper means when no apex is named."""
        return self.apexes[0]

    @property
    def servers(self) -> tuple[str, str]:
        """The authoritative servers of every zone (its NS records): primary, secondary."""
        return (self.primary, self.secondary)

    @property
    def acme_dir(self) -> Path:
        """``[dns] acme_dir``: holds ``acme-challenge.<apex>`` for each apex."""
        return self.workdir / "acme"

    @property
    def tlsa_dir(self) -> Path:
        """A ``[dns] tlsa_dirs`` entry: holds ``tlsa.<apex>`` for each apex."""
        return self.workdir / "tlsa"

    @property
    def refresh_script(self) -> Path:
        """``[dns] restart_cmd``: ``<refresh_script> --serial_bump <apex ...>``."""
        return self.workdir / "refresh-zones"

    @property
    def refresh_log(self) -> Path:
        """One line per call of the refresh script: its arguments, space-separated."""
        return self.workdir / "refresh-zones.calls"

    @property
    def update_key_file(self) -> Path:
        """The ``tsig-keygen`` file of :data:`UPDATE_KEY` (mode 0600): sslm's ``key_file``."""
        return self.workdir / "keys" / f"{UPDATE_KEY}.key"

    @property
    def rightless_key_file(self) -> Path:
        """A key the primary knows but whose ``update-policy`` grants none of sslm's names."""
        return self.workdir / "keys" / f"{RIGHTLESS_KEY}.key"

    def write_key(self, path: Path, name: str = UPDATE_KEY) -> Path:
        """Write a fresh ``tsig-keygen`` key named ``name`` to ``path`` (0600) and return it:
        another secret under the update key's name is a key the primary rejects (BADSIG)."""
        made = subprocess.run(
            [require_binary("tsig-keygen"), "-a", "hmac-sha256", name],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(made.stdout)
        return path

    def granted_hosts(self, apex: str) -> list[str]:
        """The hosts of updatable ``apex`` whose sslm records the update key may change."""
        hosts = [apex, f"www.{apex}", *(h for h in self.mx_hosts if _in_zone(h, apex))]
        return [*hosts, *(f"{label}.{apex}" for label in self.update_hosts)]

    def acme_file(self, apex: str | None = None) -> Path:
        """The challenge include of ``apex``: sslm writes its ``_acme-challenge`` TXT here."""
        return self.acme_dir / f"acme-challenge.{apex or self.apex}"

    def tlsa_file(self, apex: str | None = None) -> Path:
        """The TLSA include of ``apex``."""
        return self.tlsa_dir / f"tlsa.{apex or self.apex}"

    def zone_file(self, apex: str | None = None) -> Path:
        """The primary's unsigned zone file of ``apex``, the one the refresh script bumps."""
        return self._primary.directory / f"db.{apex or self.apex}"

    def refresh(self, *apexes: str) -> subprocess.CompletedProcess[str]:
        """Run the refresh script as sslm does, for ``apexes`` (default: the first apex).

        Returns the finished process whatever its exit status: the caller checks it.
        """
        return subprocess.run(
            [str(self.refresh_script), "--serial_bump", *(apexes or (self.apex,))],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def refresh_calls(self) -> list[list[str]]:
        """The arguments of every call of the refresh script so far, oldest first."""
        if not self.refresh_log.exists():
            return []
        return [line.split() for line in self.refresh_log.read_text().splitlines()]

    # --- queries -------------------------------------------------------------------------

    def query(self, name: str, rdtype: str, server: str | None = None) -> list[dns.rdata.Rdata]:
        """The records of ``rdtype`` at ``name`` that ``server`` (default: the primary) answers
        authoritatively (no recursion asked); empty for NXDOMAIN or no data.

        Raises:
            dns.exception.Timeout: no answer within :data:`QUERY_TIMEOUT_S` (server stopped).
            AssertionError: another rcode, such as REFUSED or SERVFAIL (zone not served).
        """
        where = server or self.primary
        request = dns.message.make_query(name, rdtype)
        request.flags &= ~dns.flags.RD
        response, _ = dns.query.udp_with_fallback(
            request, where, timeout=QUERY_TIMEOUT_S, port=self.port
        )
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise AssertionError(f"{where}: {name} {rdtype}: {dns.rcode.to_text(rcode)}")
        rrset = response.get_rrset(
            response.answer,
            dns.name.from_text(name),
            dns.rdataclass.IN,
            dns.rdatatype.from_text(rdtype),
        )
        return list(rrset) if rrset is not None else []

    def txt(self, name: str, server: str | None = None) -> set[str]:
        """The TXT values at ``name`` on ``server``, each one's strings joined and decoded."""
        return {
            b"".join(record.strings).decode()
            for record in _records(self.query(name, "TXT", server), TXT)
        }

    def serial(self, server: str | None = None, apex: str | None = None) -> int:
        """The SOA serial that ``server`` (default: the primary) serves for ``apex``.

        Inline signing runs it ahead of the zone file's: compare servers, never the file.
        """
        zone = apex or self.apex
        soa = _records(self.query(zone, "SOA", server), SOA)
        if not soa:
            raise AssertionError(f"{server or self.primary} has no SOA for {zone}")
        return int(soa[0].serial)

    def serves_at_least(self, server: str, serial: int, apex: str | None = None) -> bool:
        """Whether ``server`` answers ``apex`` with ``serial`` or newer (no answer: no)."""
        try:
            return self.serial(server, apex) >= serial
        except (dns.exception.Timeout, OSError, AssertionError):
            return False

    def wait_until_secondary_has(
        self, serial: int, apex: str | None = None, *, timeout_s: float = PROPAGATION_TIMEOUT_S
    ) -> float:
        """Wait until the secondary serves ``serial`` or newer for ``apex``; the seconds it took.

        Raises:
            AssertionError: not within ``timeout_s``; the message ends with its named's log.
        """
        zone = apex or self.apex
        return wait_for(
            f"{self.secondary} serves {zone} with serial >= {serial}",
            lambda: self.serves_at_least(self.secondary, serial, zone),
            timeout_s=timeout_s,
            log=self._log(self._secondary),
        )

    # --- DNSSEC --------------------------------------------------------------------------

    def ksk(self, apex: str | None = None) -> DNSKEY:
        """The zone's key-signing DNSKEY (flags 257), as the primary serves it."""
        zone = apex or self.apex
        for key in _records(self.query(zone, "DNSKEY"), DNSKEY):
            if key.flags == KSK_FLAGS:
                return key
        raise AssertionError(f"{zone} has no DNSKEY with flags {KSK_FLAGS}: not signed yet?")

    def trust_anchor_file(self) -> Path:
        """Write, and return, a ``trust-anchors`` file of every zone's KSK, for ``delv -a``.

        The zones have no signed parent, so validation starts at their own key:
        ``delv @127.0.0.53 -a <file> +root=<apex> <name> <type>``.
        """
        lines = ["trust-anchors {"]
        for apex in self.apexes:
            key = self.ksk(apex)
            material = base64.b64encode(key.key).decode()
            lines.append(
                f'    {apex}. static-key {key.flags} {key.protocol} {key.algorithm} "{material}";'
            )
        lines.append("};")
        path = self.workdir / "trust-anchors.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def dnskey_file(self, apex: str | None = None) -> Path:
        """Write, and return, the KSK of ``apex`` as a zone-file DNSKEY record: the trust
        anchor ``ldns-dane -k`` takes."""
        zone = apex or self.apex
        path = self.workdir / f"dnskey.{zone}"
        path.write_text(f"{zone}. 300 IN DNSKEY {self.ksk(zone).to_text()}\n")
        return path

    # --- process control -----------------------------------------------------------------

    def stop_secondary(self) -> None:
        """Stop the secondary: it answers nothing (queries time out) until restarted."""
        service = self._running.pop(self._secondary.name, None)
        if service is not None:
            service.terminate()

    def start_secondary(self, *, lagging: bool = False) -> None:
        """(Re)start the secondary; return once it serves what the primary serves.

        With ``lagging`` it returns once it answers, with the zones it has, and it can no
        longer transfer from the primary (its ``primaries`` names a port nobody listens on;
        SOA refresh and retry are long): a secondary that answers, but with every later
        change missing, until it is started again without the flag.
        """
        self.stop_secondary()
        self._write_secondary_config(lagging=lagging)
        self._start(self._secondary, current=not lagging)

    def close(self) -> None:
        """Stop both servers, remove the aliases we added, release the lock. Idempotent."""
        for server in (self._secondary, self._primary):
            service = self._running.pop(server.name, None)
            if service is not None:
                service.terminate()
        while self._aliases_added:
            _remove_alias(self._aliases_added.pop())
        self._lock.release()

    def _start(self, server: _Server, *, current: bool = True) -> None:
        """Spawn ``server``'s named and wait until it serves every zone signed and, when
        ``current``, at the primary's serial (the secondary's first transfer included).

        A secondary restarted with its old copies does not ask the primary at start-up (it
        waits for the SOA refresh time; seen: nothing within 20 s), so one that is behind is
        told to (``rndc refresh``).
        """
        service = self.services.spawn(
            f"named-{server.name}-{len(self.services.started)}",
            [require_binary("named"), "-4", "-f", "-c", str(server.config)],
            cwd=server.directory,
        )
        self._running[server.name] = service

        def wait_serving(current: bool) -> None:
            wait_for(
                f"named {server.name} on {server.address} serves {', '.join(self.apexes)} "
                + ("signed, at the primary's serial" if current else "signed"),
                lambda: self._serves_signed(server.address, current=current),
                timeout_s=START_TIMEOUT_S,
                log=service.log,
                alive=lambda: service.alive,
            )

        wait_serving(current=False)
        if current and not self._serves_signed(server.address, current=True):
            for apex in self.apexes:
                self._rndc(server, "refresh", apex)
            wait_serving(current=True)

    def _rndc(self, server: _Server, *args: str) -> None:
        """Run ``rndc`` on ``server``'s control channel; fail with its output if it fails."""
        done = subprocess.run(
            [require_binary("rndc"), "-c", str(server.rndc_conf), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"rndc {' '.join(args)} on {server.address}: {done.stderr}")

    def _serves_signed(self, server: str, *, current: bool) -> bool:
        try:
            for apex in self.apexes:
                keys = _records(self.query(apex, "DNSKEY", server), DNSKEY)
                if not any(key.flags == KSK_FLAGS for key in keys):
                    return False
                if current and self.serial(server, apex) < self.serial(self.primary, apex):
                    return False
        except (dns.exception.Timeout, OSError, AssertionError):
            return False
        return True

    def _log(self, server: _Server) -> Path | None:
        service = self._running.get(server.name)
        return service.log if service is not None else None

    # --- files ---------------------------------------------------------------------------

    def _write_files(self) -> None:
        """The includes (comments only), zone files, both configs, rndc.conf, the script."""
        for server in (self._primary, self._secondary):
            server.directory.mkdir(parents=True, exist_ok=True)
            server.write_rndc_conf()
        self.acme_dir.mkdir(parents=True, exist_ok=True)
        self.tlsa_dir.mkdir(parents=True, exist_ok=True)
        zones = []
        for apex in self.apexes:
            self.acme_file(apex).write_text(f"; _acme-challenge TXT records of {apex}\n")
            self.tlsa_file(apex).write_text(f"; TLSA records of {apex}\n")
            self.zone_file(apex).write_text(self._zone_text(apex))
            zones.append(
                _PRIMARY_ZONE.format(
                    apex=apex, zone_file=self.zone_file(apex), update_policy=self._policy(apex)
                )
            )
        keys = ""
        if self.updatable:
            for path, name in (
                (self.update_key_file, UPDATE_KEY),
                (self.rightless_key_file, RIGHTLESS_KEY),
            ):
                self.write_key(path, name)
                keys += f'include "{path}";\n'
        extra = (
            f"    notify explicit;\n    also-notify {{ {self.secondary}; }};\n    notify-delay 0;\n"
        )
        self._primary.config.write_text(keys + self._primary.options(extra) + "".join(zones))
        self._write_secondary_config(lagging=False)
        self.refresh_script.write_text(
            _REFRESH_SCRIPT.format(
                zones=shlex.quote(str(self._primary.directory)),
                calls_log=shlex.quote(str(self.refresh_log)),
                flock=shlex.quote(require_binary("flock")),
                serial_mark=_SERIAL_MARK,
                checkzone=shlex.quote(require_binary("named-checkzone")),
                rndc=shlex.quote(require_binary("rndc")),
                rndc_conf=shlex.quote(str(self._primary.rndc_conf)),
                primary=self._primary.address,
                rndc_port=self._primary.rndc_port,
            )
        )
        self.refresh_script.chmod(0o755)

    def _policy(self, apex: str) -> str:
        """The ``update-policy`` of an updatable zone (empty for the others): the update key
        may change the TXT records at ``_acme-challenge.<host>`` and the TLSA records under
        ``_tcp.<host>`` of the granted hosts, nothing else; the rightless key one unused name.
        BIND matches a wildcard rule's name at any depth below ``*``, so ``*._tcp.<host>``
        covers every port of the host, as the example in docs/configuration.md does."""
        if apex not in self.updatable:
            return ""
        grants = [f"grant {RIGHTLESS_KEY} name rightless.{apex}. TXT;"]
        for host in self.granted_hosts(apex):
            grants.append(f"grant {UPDATE_KEY} name _acme-challenge.{host}. TXT;")
            grants.append(f"grant {UPDATE_KEY} wildcard *._tcp.{host}. TLSA;")
        rules = "".join(f"        {grant}\n" for grant in grants)
        return f"    update-policy {{\n{rules}    }};\n"

    def _zone_text(self, apex: str) -> str:
        """The unsigned zone of ``apex``: SOA, NS, A, MX records and the two includes.

        Every zone has MX records for all MX hosts (one mail system for every domain); each
        MX host's A record goes in the zone it belongs to.
        """
        mx = [f"@ MX {10 * rank} {host}." for rank, host in enumerate(self.mx_hosts, start=1)]
        mx += [f"{host}. A {HOST_ADDRESS}" for host in self.mx_hosts if _in_zone(host, apex)]
        return _ZONE_TEMPLATE.format(
            apex=apex,
            serial_mark=_SERIAL_MARK,
            primary=self.primary,
            secondary=self.secondary,
            host=HOST_ADDRESS,
            mx_records="\n".join(mx),
            acme_file=self.acme_file(apex),
            tlsa_file=self.tlsa_file(apex),
        )

    def _write_secondary_config(self, *, lagging: bool) -> None:
        # A NOTIFY from the primary's address is accepted whatever the port; the transfer
        # it triggers then fails, so the secondary keeps serving what it has.
        primary_port = free_port() if lagging else DNS_PORT
        zones = "".join(
            _SECONDARY_ZONE.format(apex=apex, primary=self.primary, primary_port=primary_port)
            for apex in self.apexes
        )
        extra = "    notify no;\n"
        self._secondary.config.write_text(self._secondary.options(extra) + zones)


def _in_zone(name: str, apex: str) -> bool:
    return name == apex or name.endswith(f".{apex}")


def start_dns_lab(
    services: Services,
    workdir: Path,
    *,
    apex: str = "example.test",
    mx_hosts: Sequence[str] = ("mx1.example.test", "mx2.example.test"),
    other_apexes: Sequence[str] = (),
    updatable: Sequence[str] = (),
    update_hosts: Sequence[str] = (),
) -> DnsLab:
    """Start the signing primary and its secondary for ``apex`` and ``other_apexes``.

    The zones among ``updatable`` accept TSIG-signed updates (see the module doc); the update
    key may change the records of their apex, ``www``, their MX hosts and ``<label>.<zone>``
    for each of ``update_hosts``.

    Returns once both serve every zone, signed, at the same serial; the include files hold
    comments only. :meth:`DnsLab.close` must follow, also when the test fails (the
    ``dns_lab`` fixture sees to it): it removes the loopback aliases and releases the lock.

    Raises:
        ValueError: an MX host is in none of the zones (its A record would have no home), or
            an updatable zone is not among them.
    """
    apexes = (apex, *other_apexes)
    strangers = set(updatable) - set(apexes)
    if strangers:
        raise ValueError(f"updatable zones {sorted(strangers)} are not among {apexes}")
    for host in mx_hosts:
        if not any(_in_zone(host, zone) for zone in apexes):
            raise ValueError(f"MX host {host} is in none of the lab's zones {apexes}")
    for binary in ("named", "named-checkzone", "rndc", "flock", "ip"):
        require_binary(binary)
    if updatable:
        require_binary("tsig-keygen")
    lab = DnsLab(
        services=services,
        workdir=workdir,
        apexes=apexes,
        mx_hosts=tuple(mx_hosts),
        _primary=_Server("primary", PRIMARY, workdir / "primary", free_port(), _secret()),
        _secondary=_Server("secondary", SECONDARY, workdir / "secondary", free_port(), _secret()),
        updatable=tuple(updatable),
        update_hosts=tuple(update_hosts),
    )
    lab._lock.acquire()
    try:
        for address in lab.servers:
            if _add_alias(address):
                lab._aliases_added.append(address)
            _require_port_free(address)
        lab._write_files()
        # The primary first: a secondary that finds no primary retries only minutes later.
        lab._start(lab._primary)
        lab._start(lab._secondary)
    except BaseException:
        lab.close()
        raise
    return lab
