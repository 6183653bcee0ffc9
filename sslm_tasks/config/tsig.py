"""TSIG keys for RFC 2136 updates (``[[dns_update]] key_file``), read from the file BIND's
``tsig-keygen`` writes::

    key "sslm-example.com" {
        algorithm hmac-sha256;
        secret "base64...";
    };

The file names the key and its algorithm, so ``ssl-mgr.conf`` names only the file, never the
secret. The parsing is dnspython's (``dns.tsigkeyring.from_file``); this module adds what an
operator expects of a secret on disk: a file anybody but its owner may read is refused (as
ssh refuses such a private key), and the secret never appears in an error, a log line or a
``repr``: :class:`TsigKey` shows the key's name and algorithm only.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import dns.exception
import dns.name
import dns.tsig
import dns.tsigkeyring

from sslm_tasks.config.secret_files import secret_file_problem

_FORMAT: Final = 'key "<name>" { algorithm <algorithm>; secret "<base64>"; }; as tsig-keygen writes'


@dataclass(frozen=True)
class TsigKey:
    """One TSIG key. ``name`` and ``algorithm`` may be shown; the secret is only in
    :attr:`key`, which is left out of ``repr`` and comparisons (dnspython's own ``repr`` of a
    key would print the secret)."""

    name: str
    algorithm: str
    key: dns.tsig.Key = field(repr=False, compare=False)


def read_tsig_key(path: Path) -> TsigKey:
    """The key in ``path``, once the file is found fit to hold a secret
    (:func:`~sslm_tasks.config.secret_files.secret_file_problem`).

    Raises:
      ValueError: the file is unfit or does not hold a usable key; the message says why in a
        phrase and never quotes the file's content.
    """
    problem = secret_file_problem(path, "a TSIG secret")
    if problem is not None:
        raise ValueError(problem)
    try:
        ring = dns.tsigkeyring.from_file(path)
    except OSError as err:
        raise ValueError(f"cannot be read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"is not UTF-8 text ({_FORMAT})") from None
    except (binascii.Error, dns.exception.DNSException):
        raise ValueError(
            f"has a key whose name or base64 secret does not parse ({_FORMAT})"
        ) from None
    except Exception:  # dnspython raises a bare Exception for a file its pattern does not match
        raise ValueError(f"holds no key ({_FORMAT})") from None
    name, value = next(iter(ring.items()))
    # A key clause without ``algorithm`` comes back as the secret alone; dnspython's default
    # (hmac-sha256, also tsig-keygen's) applies.
    key = value if isinstance(value, dns.tsig.Key) else dns.tsig.Key(name, value)
    if not key.secret:
        raise ValueError(f"has an empty secret ({_FORMAT})")
    try:
        dns.tsig.get_context(key)  # type: ignore[no-untyped-call]  # dnspython: untyped
    except NotImplementedError:
        algorithm = key.algorithm.to_text(omit_final_dot=True)
        raise ValueError(
            f"names the algorithm {algorithm!r}, which dnspython cannot sign with"
        ) from None
    return TsigKey(name=_text(name), algorithm=_text(key.algorithm), key=key)


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)
