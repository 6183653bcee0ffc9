"""The DNS servers sslm asks, as plain data: one server (:class:`Nameserver`), an apex's NS
hosts (:class:`NsHost`), and the serial they must all serve (:class:`SerialTarget`). Apart from
:mod:`sslm_tasks.dns.lookup` and :mod:`sslm_tasks.dns.propagation`, which ask them, so that a
service's record (read by ``sslm-mgr -s``) does not import dnspython's query machinery.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The port every authoritative NS and every ``dns_xtra_ns`` entry is asked on (as upstream).
DNS_PORT = 53


@dataclass(frozen=True)
class Nameserver:
    """One server to ask: an IP address (normalised), a port, and the NS name it stands for.

    ``recursive`` servers (``dns_xtra_ns`` resolvers) are asked with recursion desired;
    authoritative ones without. Constructing one with anything but an IP literal as
    ``address`` raises ValueError: there is no name lookup behind it.
    """

    address: str
    port: int = DNS_PORT
    name: str | None = None
    recursive: bool = False

    def __post_init__(self) -> None:
        # ValueError on anything but an IP literal; callers turn it into a ConfigError.
        object.__setattr__(self, "address", ipaddress.ip_address(self.address).compressed)

    @property
    def label(self) -> str:
        """How reports name this server: ``ns2.example.test (127.0.0.54)``, ``127.0.0.1#5353``."""
        where = self.address if self.port == DNS_PORT else f"{self.address}#{self.port}"
        return where if self.name is None else f"{self.name} ({where})"


@dataclass(frozen=True)
class NsHost:
    """An authoritative NS of an apex and the addresses the primary serves for it.

    ``addresses`` holds the IPv4 addresses, then the IPv6 ones, each sorted; it is empty when
    the primary has none (an NS host in a zone the primary does not serve).
    """

    name: str
    addresses: list[str] = field(default_factory=list)

    def servers(self) -> list[Nameserver]:
        """One authoritative :class:`Nameserver` per address, on port 53."""
        return [Nameserver(address, name=self.name) for address in self.addresses]


@dataclass(frozen=True)
class SerialTarget:
    """What every NS of an apex must serve: the primary's SOA serial, and its NS hosts with
    their addresses, both as the primary served them at one moment (:func:`serial_target`).

    Taken right after the primary was seen serving some records, it is what those records
    need, and it stays put: the primary's serial moves on with every later change of the zone
    (other orders publishing), and a check against the current one would chase refreshes it
    does not need. Kept as JSON (names and addresses only) between the passes of an order.
    """

    serial: int
    hosts: list[NsHost]

    def to_json(self) -> dict[str, object]:
        return {"serial": self.serial, "ns": {host.name: host.addresses for host in self.hosts}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SerialTarget:
        """Raises: KeyError, TypeError or ValueError for data :meth:`to_json` did not write."""
        ns: Mapping[str, list[str]] = data["ns"]
        return cls(int(data["serial"]), [NsHost(name, list(ns[name])) for name in sorted(ns)])
