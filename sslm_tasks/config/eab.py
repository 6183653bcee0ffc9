"""External Account Binding (RFC 8555 §7.3.4): what an ACME CA that only serves accounts tied to
a customer account of its own (ZeroSSL, Google Trust Services, SSL.com) needs to see when an
account is registered.

The CA hands out a key identifier and an HMAC key. ``ca-info.conf`` names the identifier
(``ca_eab_kid``) and the file holding the key (``ca_eab_hmac_key_file``), never the key itself:
the key is a secret, so its file must be its owner's alone, and the key never appears in an
error, a log line, a ``repr``, a broker message or a task result. It is read when the
configuration loads (a bad one stops the run before anything is ordered) and again when an
account is registered, the only time it is used.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sslm_tasks.config.secret_files import secret_file_problem
from sslm_tasks.errors import ConfigError

KID_KEY: Final = "ca_eab_kid"
KEY_FILE_KEY: Final = "ca_eab_hmac_key_file"

#: RFC 4648 §5 (base64url), padding optional: the alphabet the CAs hand their keys out in.
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def read_hmac_key(path: Path) -> str:
    """The base64url HMAC key in ``path`` (surrounding white space, such as the line end
    ``echo`` leaves, dropped; padding dropped, as josepy adds its own).

    Raises:
      ValueError: the file is missing, not its owner's alone, not text, empty, or holds no
        base64url key; the message says why in a phrase and never quotes the file's content.
    """
    problem = secret_file_problem(path, "an HMAC key")
    if problem is not None:
        raise ValueError(problem)
    try:
        text = path.read_bytes().decode("ascii").strip()
    except OSError as err:
        raise ValueError(f"cannot be read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError("is not ASCII text (it should hold the base64url key only)") from None
    if not text:
        raise ValueError("is empty (it should hold the base64url key the CA gave)")
    if not _BASE64URL.fullmatch(text):
        # Checked here because the decoder skips what is not in its alphabet, so a mistyped key
        # would sign a binding the CA refuses for no visible reason. Plain base64 (+ and /) is
        # refused too: no CA hands a key out in it, so such a text is not the key it gave.
        raise ValueError("does not hold one base64url key (letters, digits, '-' and '_' only)")
    key = text.rstrip("=")
    try:
        base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    except binascii.Error:
        raise ValueError("holds base64url text of a length no key has") from None
    return key


@dataclass(frozen=True)
class AccountBinding:
    """One CA's External Account Binding as ``ca-info.conf`` states it. Holds no secret: the
    HMAC key stays in its file until :meth:`hmac_key` reads it.

    Attributes:
      ca(str): the CA's table in ``ca-info.conf``.
      kid(str): the key identifier the CA gave (not a secret: it is sent in the clear).
      key_file(Path): the file holding the HMAC key, relative paths resolved.
      conf_file(Path): ``ca-info.conf``, which errors name.
    """

    ca: str
    kid: str
    key_file: Path
    conf_file: Path

    def hmac_key(self) -> str:
        """The HMAC key, read now: a worker reads its own copy, which may have changed since
        the configuration was loaded.

        Raises:
          ConfigError: naming ``ca-info.conf``, ``<ca>.ca_eab_hmac_key_file`` and the file, and
            why the file is unfit (see :func:`read_hmac_key`).
        """
        try:
            return read_hmac_key(self.key_file)
        except ValueError as err:
            raise ConfigError(
                self.conf_file,
                f"{self.ca}.{KEY_FILE_KEY}",
                str(self.key_file),
                f"HMAC key file {err}",
            ) from None
