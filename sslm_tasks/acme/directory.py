"""Which ACME server a CA means, how we trust its HTTPS, and the client that talks to it.

A CA of ``ca_type = 'certbot'`` (``'letsencrypt'``, ``'acme'``) in ``ca-info.conf`` names its
server with ``ca_acme_directory`` (default: Let's Encrypt production; with ``-t``, Let's Encrypt
staging) and, optionally, a PEM bundle to trust for that server's HTTPS with
``ca_acme_ca_bundle`` (Pebble and private ACME CAs use their own roots). Without a bundle the
usual ``requests`` trust applies, ``REQUESTS_CA_BUNDLE`` included.

Every request has a timeout (a worker must never hang on a silent server) and says who we are
in its User-Agent, as RFC 8555 §6.1 asks.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Final

import acme.client
import acme.messages
from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

import sslm_tasks
from sslm_tasks.acme.network import AcmeNetwork, AcmePermanentError, translate
from sslm_tasks.config.models import CaInfo
from sslm_tasks.errors import ConfigError

log = logging.getLogger(__name__)

LETSENCRYPT_PRODUCTION: Final = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING: Final = "https://acme-staging-v02.api.letsencrypt.org/directory"

#: Seconds one HTTP request may take (connect and each read). The library's default is 45.
DEFAULT_TIMEOUT_S: Final = 30
USER_AGENT: Final = f"sslm/{sslm_tasks.__version__} acme-python/{version('acme')}"

_CA_INFO: Final = "ca-info.conf"


@dataclass(frozen=True)
class AcmeServer:
    """One ACME server: its directory URL and the CA bundle its HTTPS is checked against.

    Attributes:
      directory_url(str): the RFC 8555 directory resource.
      ca_bundle(Path | None): PEM file of roots to trust; None for the system's trust.
    """

    directory_url: str
    ca_bundle: Path | None = None


def server_for(ca: CaInfo, *, test: bool) -> AcmeServer:
    """The server a ``ca-info.conf`` entry names; ``test`` is ``-t``.

    ``-t`` switches the Let's Encrypt production directory (given or defaulted) to staging. An
    explicit directory of any other CA is used as written, since no general rule maps a CA to
    its test server.

    Raises:
      ConfigError: ``ca_acme_directory`` is not an https URL, or ``ca_acme_ca_bundle`` names no
        readable file.
    """
    url = ca.ca_acme_directory or LETSENCRYPT_PRODUCTION
    if test and url == LETSENCRYPT_PRODUCTION:
        url = LETSENCRYPT_STAGING
    if not url.startswith("https://"):
        raise ConfigError(_CA_INFO, "ca_acme_directory", url, "an ACME directory is an https URL")
    bundle = None
    if ca.ca_acme_ca_bundle:
        bundle = Path(ca.ca_acme_ca_bundle)
        if not bundle.is_file():
            raise ConfigError(_CA_INFO, "ca_acme_ca_bundle", str(bundle), "no such file")
    return AcmeServer(directory_url=url, ca_bundle=bundle)


def signing_algorithm(key: JWK) -> JWASignature:
    """The JWS algorithm for an account key, as certbot picks it (RS256, ES256/384/512).

    Raises:
      AcmePermanentError: the key is of a kind ACME servers do not accept.
    """
    if isinstance(key, JWKRSA):
        return RS256
    if isinstance(key, JWKEC):
        size = key.public_key().key.curve.key_size
        by_size = {256: ES256, 384: ES384, 521: ES512}
        if size in by_size:
            return by_size[size]
    raise AcmePermanentError(f"unsupported ACME account key type {type(key).__name__}")


def new_network(
    server: AcmeServer,
    key: JWK | None,
    *,
    account_uri: str | None = None,
    timeout_s: int = DEFAULT_TIMEOUT_S,
) -> AcmeNetwork:
    """A network for ``server`` that signs with ``key`` as account ``account_uri``.

    ``key`` may be None for unauthenticated GETs only (the directory, renewal info).
    ``account_uri`` is None only while registering.
    """
    account = (
        None
        if account_uri is None
        else acme.messages.RegistrationResource(body=acme.messages.Registration(), uri=account_uri)
    )
    net = AcmeNetwork(
        key,
        account=account,
        alg=RS256 if key is None else signing_algorithm(key),
        user_agent=USER_AGENT,
        timeout_s=timeout_s,
    )
    if server.ca_bundle is not None:
        # requests takes a CA bundle path wherever it takes verify=True, and ClientNetwork hands
        # verify_ssl to requests unchanged (acme 5.9, ClientNetwork._send_request). A path set
        # here also wins over REQUESTS_CA_BUNDLE, which requests consults only for True.
        net.verify_ssl = str(server.ca_bundle)  # type: ignore[assignment]
    return net


def fetch_directory(net: acme.client.ClientNetwork, url: str) -> acme.messages.Directory:
    """GET the directory resource (RFC 8555 §7.1.1). One request; safe to repeat.

    Raises:
      AcmeTransientError: the server is unreachable, slow or failing (5xx).
      AcmePermanentError: TLS verification failed, or the URL serves no ACME directory.
    """
    with translate(f"fetching the ACME directory {url}", net):
        return acme.client.ClientV2.get_directory(url, net)


def connect(
    server: AcmeServer,
    key: JWK | None,
    *,
    account_uri: str | None = None,
    timeout_s: int = DEFAULT_TIMEOUT_S,
) -> acme.client.ClientV2:
    """A ``ClientV2`` for ``server``: for an account, this thread's client of the last
    :data:`CLIENT_TTL_S` when there is one; else a new network, and a directory fetch when this
    process has no recent copy.

    Parameters:
      server(AcmeServer): from :func:`server_for`.
      key(JWK | None): the account key (see ``accounts``); None for GETs only.
      account_uri(str | None): the account URL; None only while registering.
      timeout_s(int): per-request timeout.

    Raises:
      AcmeTransientError, AcmePermanentError: as :func:`fetch_directory`.
    """
    now = time.monotonic()
    reusable = key is not None and account_uri is not None
    ident = (server, key.thumbprint() if key is not None else b"", account_uri, timeout_s)
    clients: dict[object, tuple[float, acme.client.ClientV2]] = _reuse.__dict__.setdefault(
        "clients", {}
    )
    cached = clients.get(ident) if reusable else None
    if cached is not None and now - cached[0] < CLIENT_TTL_S:
        return cached[1]
    net = new_network(server, key, account_uri=account_uri, timeout_s=timeout_s)
    client = acme.client.ClientV2(_directory(net, server.directory_url), net)
    if reusable:
        clients[ident] = (now, client)
    return client


#: How long a directory, and an account's client, are reused. Every ACME step connects afresh
#: (a worker gets only names), and a new client per step cost a TLS handshake, a directory
#: fetch and a newNonce request each time: a third of an order's requests. What a directory
#: says changes rarely (a new resource, a profile); ten minutes late is soon enough to notice.
#: Clients are kept per thread, as a ``requests`` session and the nonces it holds must be;
#: registration and unauthenticated clients are never reused (registering changes the client).
CLIENT_TTL_S: Final = 600.0
_reuse = threading.local()
_fetched: dict[str, tuple[float, acme.messages.Directory]] = {}


def _directory(net: acme.client.ClientNetwork, url: str) -> acme.messages.Directory:
    """The directory at ``url``: fetched through ``net``, or this process's copy when it is
    younger than :data:`CLIENT_TTL_S`."""
    now = time.monotonic()
    cached = _fetched.get(url)
    if cached is not None and now - cached[0] < CLIENT_TTL_S:
        return cached[1]
    directory = fetch_directory(net, url)
    _fetched[url] = (now, directory)
    return directory


def has_resource(directory: acme.messages.Directory, name: str) -> bool:
    """Whether the directory lists ``name`` (``renewalInfo``, ``newOrder``...)."""
    try:
        directory[name]
    except KeyError:
        return False
    return True


def offered_profiles(directory: acme.messages.Directory) -> frozenset[str]:
    """The profile names in ``meta.profiles`` (draft-aaron-acme-profiles); empty if none."""
    return frozenset(directory.meta.profiles or {})
