"""Topdirs whose zones take sslm's records by RFC 2136 update: what the ``[[dns_update]]``
tests share (``test_dns_update``, ``bench/bench_dns_update.py``).

The zones must be among the lab's ``updatable`` ones (``start_dns_lab(updatable=...)``); the
key file is the lab's update key unless a test gives another (a wrong or rightless one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import dns.query
import dns.rcode
import dns.tsigkeyring
import dns.update
from lab_dns import DnsLab
from redis import Redis


def dns_update_tables(lab: DnsLab, zones: Iterable[str], *, key_file: Path | None = None) -> str:
    """``[[dns_update]]`` tables for ``zones``: the lab's primary, port 53, the key file."""
    key = key_file or lab.update_key_file
    return "".join(
        f"""
[[dns_update]]
    domain = '{zone}'
    server = '{lab.primary}'
    key_file = '{key}'
"""
        for zone in zones
    )


def use_dns_update(
    top: Path, lab: DnsLab, zones: Sequence[str], *, key_file: Path | None = None
) -> None:
    """Let ``zones`` of ``top``'s configuration take sslm's records by update."""
    main = top / "conf.d/ssl-mgr.conf"
    main.write_text(main.read_text() + dns_update_tables(lab, zones, key_file=key_file))


def drop_dns_section(top: Path) -> None:
    """Remove ``[dns]`` (and everything after it) from ``top``'s ``ssl-mgr.conf``: a setup
    whose zones all take updates needs no include directory and no refresh command."""
    main = top / "conf.d/ssl-mgr.conf"
    text = main.read_text()
    cut = re.search(r"^\[dns\]$", text, flags=re.MULTILINE)
    assert cut is not None, f"no [dns] section in {main}"
    main.write_text(text[: cut.start()])


def update_by_hand(
    lab: DnsLab,
    zone: str,
    *,
    add: Sequence[tuple[str, str, str]] = (),
    delete: Sequence[tuple[str, str, str]] = (),
) -> None:
    """What an operator's ``nsupdate`` does: delete, then add ``(owner, type, data)`` records
    of ``zone`` with the lab's update key (TTL 300)."""
    ring = dns.tsigkeyring.from_file(lab.update_key_file)
    message = dns.update.UpdateMessage(zone, keyring=ring, keyname=next(iter(ring)))
    for owner, rdtype, data in delete:
        message.delete(owner, rdtype, data)
    for owner, rdtype, data in add:
        message.add(owner, 300, rdtype, data)
    response = dns.query.tcp(message, lab.primary, timeout=5, port=lab.port)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())


def secret_of(key_file: Path) -> str:
    """The base64 secret of a ``tsig-keygen`` file: what must never show anywhere."""
    found = re.search(r'secret "([^"]+)"', key_file.read_text())
    assert found is not None, f"no secret in {key_file}"
    return found.group(1)


def texts_under(top: Path) -> str:
    """Every readable text file under ``top`` (logs, state records, the store), joined."""
    parts = []
    for path in sorted(top.rglob("*")):
        if path.is_file() and not path.is_symlink():
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


def redis_texts(url: str) -> str:
    """Every value the broker and result backend at ``url`` hold (messages not yet taken,
    task results, locks), joined: what a secret must never be part of."""
    client = Redis.from_url(url)
    parts: list[bytes] = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            parts.append(client.get(key) or b"")
        elif kind == b"list":
            parts.extend(client.lrange(key, 0, -1))
        elif kind == b"hash":
            parts.extend(v for pair in client.hgetall(key).items() for v in pair)
        elif kind == b"set":
            parts.extend(client.smembers(key))
        elif kind == b"zset":
            parts.extend(client.zrange(key, 0, -1))
    return b"\n".join(parts).decode("utf-8", "replace")
