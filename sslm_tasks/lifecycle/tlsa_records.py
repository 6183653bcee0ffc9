"""The TLSA records DANE publishes for a service: those of each version's certificate, and
those of its standby key, which has no certificate yet and borrows ``curr``'s names.

Computed from the certificates and ``dane_tls`` each time they are needed, never cached in the
record: a ``dane_tls`` edit, a new SAN or a new MX host changes them at the next run.
"""

from __future__ import annotations

from cryptography import x509

from sslm_tasks.config.models import ServiceConfig
from sslm_tasks.crypto.inspect import load_certs
from sslm_tasks.crypto.keys import PublicKey
from sslm_tasks.crypto.tlsa import TlsaSubject
from sslm_tasks.dns.lookup import mx_hosts, primary_for
from sslm_tasks.dns.tlsa import TlsaRecord, service_file_text
from sslm_tasks.dns.tlsa import service_records as tlsa_records
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.store import layout as files
from sslm_tasks.store.atomic import write_atomic
from sslm_tasks.store.layout import LinkName
from sslm_tasks.store.read import read_bytes
from sslm_tasks.store.versions import is_complete

#: A TLSA record as DNS tells records apart: owner and rdata (see ``TlsaRecord.key``).
RecordKey = tuple[str, int, int, int, str]


def _cert(ctx: ServiceContext, which: LinkName) -> tuple[str, x509.Certificate] | None:
    layout, ref = ctx.layout, ctx.ref
    stamp = ctx.link(which)
    if stamp is None or not is_complete(layout, ref, stamp):
        return None
    return stamp, load_certs(read_bytes(layout.version_dir(ref, stamp) / files.CERT))[0]


def _dns_sans(cert: x509.Certificate) -> list[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.DNSName))


def _needs_mx(svc: ServiceConfig) -> bool:
    return any(entry.port == 25 or entry.subtype == "MX" for entry in svc.dane_tls)


def _records(
    ctx: ServiceContext, subject: TlsaSubject, names_from: x509.Certificate
) -> list[TlsaRecord]:
    """The records of ``subject`` at the owners the certificate ``names_from`` names."""
    svc, ref = ctx.service, ctx.ref
    mx: list[str] = []
    if _needs_mx(svc):
        mx = [host.host for host in mx_hosts(primary_for(ctx.ws.config, ref.group), ref.group)]
    records, _warnings = tlsa_records(
        subject,
        svc.dane_tls,
        ttl=svc.dane_tls_ttl,
        apex=ref.group,
        sans=_dns_sans(names_from),
        mx_hosts=mx,
    )
    return records


def version_records(ctx: ServiceContext, which: LinkName) -> list[TlsaRecord]:
    """The TLSA records of one version (none without ``dane_tls`` or without that version).

    Also (re)writes the version's ``tlsa.rr`` when its content changed, unless the context
    only reads (``-d``, ``-s``: they write nothing).

    Raises:
      ConfigError: an MX-based entry but no usable ``[[dns_primary]]`` for the apex.
      DnsNoAnswer (transient) / DnsAnswerError: the MX lookup at the primary failed.
    """
    found = _cert(ctx, which)
    if not ctx.service.dane_tls or found is None:
        return []
    stamp, cert = found
    records = _records(ctx, cert, cert)
    ref = ctx.ref
    text = service_file_text(records, apex=ref.group, service=ref.service, stamp=stamp)
    path = ctx.layout.version_dir(ref, stamp) / files.TLSA_RR
    if ctx.repair and (not path.is_file() or path.read_text() != text):
        write_atomic(path, text.encode(), mode=files.PUBLIC_MODE)
    return records


def key_records(ctx: ServiceContext, key: PublicKey) -> list[TlsaRecord]:
    """The records a certificate for ``key`` will need, at ``curr``'s owners (none without
    ``curr``: a standby key follows a certificate in service). Every ``dane_tls`` entry of a
    service with a standby key has selector 1 (config validation), so the key is enough.

    Raises:
      as :func:`version_records`.
    """
    found = _cert(ctx, "curr")
    if not ctx.service.dane_tls or found is None:
        return []
    return _records(ctx, key, found[1])


def record_keys(records: list[TlsaRecord]) -> set[RecordKey]:
    return {record.key for record in records}
