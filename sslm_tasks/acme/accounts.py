"""ACME accounts: one per service and server, stored under ``cb/`` exactly as certbot stores them.

Upstream ssl-mgr ran ``certbot --config-dir <service>/cb``, so an existing installation has its
accounts in certbot's ``AccountFileStorage`` layout (certbot 5.8,
``certbot/_internal/account.py``); we read and write that layout unchanged, so those accounts
keep working here and ours keep working with certbot::

    cb/accounts/<host[:port]><directory path>/<id>/
        private_key.json   the account key: a JWK with its private part, mode 0600
        regr.json          {"body": {}, "uri": "<account URL>"}
        meta.json          {"creation_dt": "<RFC 3339, UTC>", "creation_host": "<host name>"}

For Let's Encrypt that is ``cb/accounts/acme-v02.api.letsencrypt.org/directory/<id>/`` (staging:
``acme-staging-v02...``). ``<id>`` is certbot's account id: the MD5 hex digest of the public key
as PEM SubjectPublicKeyInfo (a name, not a security measure).

New accounts get an ECDSA P-256 key (ES256): Let's Encrypt accepts it and certbot reads it.
A CA that requires External Account Binding (``ca_eab_kid``, :mod:`sslm_tasks.config.eab`)
gets the binding with the registration, and only then: an account on disk is used as it is.

Concurrency: callers hold the service's lock. Two unlocked first runs would each register an
account; neither would be lost or corrupted, but the service would own two.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import acme.client
import acme.errors
import acme.messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.errors import DeserializationError
from josepy.jwk import JWK, JWKEC

from sslm_tasks.acme.directory import DEFAULT_TIMEOUT_S, AcmeServer, connect
from sslm_tasks.acme.network import AcmePermanentError, translate
from sslm_tasks.config.eab import KEY_FILE_KEY, KID_KEY, AccountBinding
from sslm_tasks.errors import StoreError
from sslm_tasks.store.atomic import ensure_dir, write_atomic, write_files_atomic

log = logging.getLogger(__name__)

ACCOUNTS: Final = "accounts"
PRIVATE_KEY: Final = "private_key.json"
REGR: Final = "regr.json"
META: Final = "meta.json"

#: Directories on the way to an account hold its key: owner only, as certbot makes them.
_DIR_MODE: Final = 0o700
_KEY_MODE: Final = 0o600
_JSON_MODE: Final = 0o644


@dataclass(frozen=True)
class Account:
    """A registered account, as loaded from or written to disk.

    Attributes:
      id(str): certbot's account id, the name of its directory.
      key(JWK): the private account key; kept out of ``repr`` so it never reaches a log.
      uri(str): the account URL the server assigned (the JWS ``kid``).
      path(Path): the account's directory.
    """

    id: str
    key: JWK = field(repr=False)
    uri: str
    path: Path


def accounts_dir(cb_dir: Path, directory_url: str) -> Path:
    """``cb/accounts/<host[:port]><path>``: where certbot keeps accounts for that server.

    Raises:
      StoreError: the URL has no host, or a path component that could leave the tree.
    """
    parts = urlsplit(directory_url)
    components = [parts.netloc, *parts.path.split("/")]
    # certbot joins netloc and path as they are; empty components ("a//b", a trailing "/")
    # name the same directory on POSIX, so dropping them changes nothing.
    components = [part for part in components if part]
    if not parts.netloc or any(part in {".", ".."} or "\0" in part for part in components):
        raise StoreError(f"ACME directory URL {directory_url!r} cannot name an accounts dir")
    return cb_dir.joinpath(ACCOUNTS, *components)


def account_id(key: JWK) -> str:
    """certbot's id for an account key: MD5 hex of the public key's PEM SubjectPublicKeyInfo."""
    pem = key.public_key().key.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return hashlib.md5(pem, usedforsecurity=False).hexdigest()


def _read_key(account_dir: Path) -> JWK:
    path = account_dir / PRIVATE_KEY
    try:
        return JWK.json_loads(path.read_text())
    except (OSError, ValueError, DeserializationError) as err:
        # The cause names the failure only; the message never quotes the file's content.
        raise StoreError(f"reading ACME account key {path}: not a readable JWK") from err


def _read_uri(account_dir: Path) -> str | None:
    """The account URL from ``regr.json``; None when the file is missing."""
    path = account_dir / REGR
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreError(f"reading {path}: {err.strerror or err}") from err
    try:
        uri = acme.messages.RegistrationResource.json_loads(text).uri
    except (ValueError, DeserializationError) as err:
        raise StoreError(f"reading {path}: not a certbot registration record") from err
    if not isinstance(uri, str) or not uri:
        raise StoreError(f"reading {path}: no account URL in it")
    return uri


def _created(account_dir: Path) -> str:
    """``meta.json``'s creation time as text, for picking the oldest account; '' if unknown."""
    try:
        meta = json.loads((account_dir / META).read_text())
    except (OSError, ValueError):
        return ""
    created = meta.get("creation_dt") if isinstance(meta, dict) else None
    return created if isinstance(created, str) else ""


def _candidates(cb_dir: Path, directory_url: str) -> list[Path]:
    """Account directories holding a key, oldest first (certbot's ``find_all``, ordered)."""
    base = accounts_dir(cb_dir, directory_url)
    try:
        entries = [entry for entry in base.iterdir() if (entry / PRIVATE_KEY).is_file()]
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StoreError(f"listing {base}: {err.strerror or err}") from err
    return sorted(entries, key=lambda entry: (_created(entry), entry.name))


def find_account(cb_dir: Path, directory_url: str) -> Account | None:
    """The service's account for that server, from disk only; None if it has none yet.

    An account is complete when its key and ``regr.json`` exist. Upstream's installs may hold
    several (certbot registers a new one per ``register`` run); the oldest is used, so the choice
    is stable from run to run.

    Raises:
      StoreError: an account file exists but cannot be read.
    """
    for entry in _candidates(cb_dir, directory_url):
        uri = _read_uri(entry)
        if uri is not None:
            return Account(id=entry.name, key=_read_key(entry), uri=uri, path=entry)
    return None


def _new_key() -> JWK:
    return JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def _write_key(cb_dir: Path, directory_url: str, key: JWK) -> Path:
    account_dir = accounts_dir(cb_dir, directory_url) / account_id(key)
    ensure_dir(account_dir, mode=_DIR_MODE)
    write_atomic(account_dir / PRIVATE_KEY, key.json_dumps().encode(), mode=_KEY_MODE)
    return account_dir


def _write_records(account_dir: Path, uri: str, *, now: datetime) -> None:
    """``regr.json`` as certbot writes it, and ``meta.json`` unless one is there already, in
    one batch (one directory fsync for both)."""
    regr = acme.messages.RegistrationResource(body=acme.messages.Registration(), uri=uri)
    records = {account_dir / REGR: (regr.json_dumps().encode(), _JSON_MODE)}
    if not (account_dir / META).exists():
        meta = {
            "creation_dt": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "creation_host": socket.gethostname(),
        }
        records[account_dir / META] = (json.dumps(meta).encode(), _JSON_MODE)
    write_files_atomic(records)


def _register(
    client: acme.client.ClientV2,
    key: JWK,
    email: str | None,
    *,
    ca: str,
    binding: AccountBinding | None,
) -> str:
    """Register ``key`` (the client's) with CA ``ca`` and return the account URL.

    A key the server already knows is not an error: RFC 8555 §7.3.1 has the server answer 200
    with the existing account's URL, which the library raises as ``ConflictError(url)``. That
    is what makes registration safe to repeat after a crash between the request and
    ``regr.json``.

    With a ``binding`` the request carries the External Account Binding (RFC 8555 §7.3.4): the
    account's public key signed with the CA's HMAC key, so the key itself never leaves this
    process. A refusal that concerns the binding says what to check in ``ca-info.conf``.
    """
    step = f"registering an ACME account with CA {ca!r}"
    eab = None
    if binding is not None:
        step += f" (External Account Binding, kid {binding.kid!r})"
        eab = acme.messages.ExternalAccountBinding.from_data(
            account_public_key=key.public_key(),
            kid=binding.kid,
            hmac_key=binding.hmac_key(),
            directory=client.directory,
        )
    registration = acme.messages.NewRegistration.from_data(
        email=email or None, terms_of_service_agreed=True, external_account_binding=eab
    )
    try:
        with translate(step, client.net):
            try:
                return client.new_account(registration).uri
            except acme.errors.ConflictError as existing:
                return existing.location
    except AcmePermanentError as err:
        hint = _binding_hint(err.code, ca=ca, bound=binding is not None)
        if hint is None:
            raise
        raise AcmePermanentError(f"{err}: {hint}", code=err.code) from err


#: Problem codes with which a CA refuses a binding it was sent: a kid it does not know or a MAC
#: that does not verify (Pebble, Boulder: ``unauthorized``), a binding it cannot read
#: (``malformed``). One it was not sent is ``externalAccountRequired``, whatever was sent.
_BINDING_REFUSALS: Final = frozenset({"unauthorized", "malformed"})


def _binding_hint(code: str | None, *, ca: str, bound: bool) -> str | None:
    """What to change in ``ca-info.conf`` after a refused registration; None when the problem
    is not about the binding (a bad contact address, a rate limit)."""
    if code == "externalAccountRequired":
        return (
            f"CA {ca!r} requires External Account Binding: set {KID_KEY} and {KEY_FILE_KEY} in "
            f"its table of ca-info.conf to the key identifier and HMAC key it gave"
        )
    if bound and code in _BINDING_REFUSALS:
        return (
            f"CA {ca!r} refused the External Account Binding: check {KID_KEY} and the key in "
            f"{KEY_FILE_KEY} against what the CA gave"
        )
    return None


def ensure_account(
    cb_dir: Path,
    server: AcmeServer,
    *,
    ca: str,
    email: str | None,
    binding: AccountBinding | None = None,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    now: datetime | None = None,
) -> Account:
    """Load the service's account for ``server``, registering one on first use.

    Idempotent: a complete account on disk is returned without a single request, so calling
    this again never registers again. A key left without ``regr.json`` (a crash mid-way, or an
    upstream install that lost it) is registered again with the same key, which gets the same
    account back. A new key is written (0600) *before* registering, so a crash can never leave a
    registered account whose key is lost.

    Parameters:
      cb_dir(Path): the service's ``cb/`` directory (``Layout.cb_dir``).
      server(AcmeServer): the ACME server.
      ca(str): the CA's table in ``ca-info.conf``, which errors name.
      email(str | None): the service's contact address; empty or None registers none.
      binding(AccountBinding | None): the CA's External Account Binding, sent (and its HMAC
        key read) only when an account is registered.
      timeout_s(int): per-request timeout.
      now(datetime | None): creation time for ``meta.json``; the clock when None.

    Raises:
      AcmeTransientError: the server was unreachable.
      AcmeRateLimited: the server rate-limited the registration.
      AcmePermanentError: the server refused it (``invalidContact``, an External Account
        Binding missing or refused: then naming the CA and the kid, and what to check).
      ConfigError: the binding's HMAC key file became unfit since the configuration loaded.
      StoreError: the account files cannot be read or written.
    """
    found = find_account(cb_dir, server.directory_url)
    if found is not None:
        return found
    candidates = _candidates(cb_dir, server.directory_url)
    if candidates:
        account_dir = candidates[0]
        key = _read_key(account_dir)
        log.info("registering the existing ACME key %s again (no regr.json)", account_dir.name)
    else:
        key = _new_key()
        account_dir = _write_key(cb_dir, server.directory_url, key)
        log.info(
            "registering a new ACME account %s with %s", account_dir.name, server.directory_url
        )
    client = connect(server, key, timeout_s=timeout_s)
    uri = _register(client, key, email, ca=ca, binding=binding)
    _write_records(account_dir, uri, now=now or datetime.now(UTC))
    log.info("ACME account %s registered: %s", account_dir.name, uri)
    return Account(id=account_dir.name, key=key, uri=uri, path=account_dir)


def connect_as(
    server: AcmeServer, account: Account, *, timeout_s: int = DEFAULT_TIMEOUT_S
) -> acme.client.ClientV2:
    """A client that signs as ``account``: one directory fetch, no registration.

    Raises:
      AcmeTransientError, AcmePermanentError: as ``directory.fetch_directory``.
    """
    return connect(server, account.key, account_uri=account.uri, timeout_s=timeout_s)
