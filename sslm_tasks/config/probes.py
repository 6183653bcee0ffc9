"""The ``verify`` probe URLs of the server classes: their grammar, checked at load time.

Each server class (``[smtp]``, ``[imap]``, ``[web]``, ``[other]``) may carry ``verify``, a list
of probe URLs in which ``{host}`` stands for each server of the class in turn::

    [smtp]
    servers = ["mx1.example.com", "mx2.example.com"]
    verify = ["smtp://{host}:25"]

The scheme says how TLS starts: ``tls`` (from the first byte), ``smtp`` (``STARTTLS`` after
``EHLO``) or ``imap`` (``a1 STARTTLS``); the port defaults to 443, 25 and 143. The host is the
name clients use: it is sent as SNI and is the base of the TLSA owner name. ``?connect=<IP>``
connects to that address instead of looking the name up. Running a probe is
:mod:`sslm_tasks.deploy.verify`'s; this module only reads the configuration's words.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qsl, urlsplit

from sslm_tasks.config.files import MAIN_FILE
from sslm_tasks.errors import ConfigError
from sslm_tasks.store.layout import host_name_problem

Protocol = Literal["tls", "smtp", "imap"]
#: The protocols by scheme, and the port each one uses when the value names none.
_SCHEMES: Final[dict[str, tuple[Protocol, int]]] = {
    "tls": ("tls", 443),
    "smtp": ("smtp", 25),
    "imap": ("imap", 143),
}
#: The config key this module's errors name.
CONFIG_KEY: Final = "verify"
#: What ``{host}`` in a ``verify`` value stands for: each server of the class in turn.
HOST_PLACEHOLDER: Final = "{host}"


@dataclass(frozen=True)
class VerifyTarget:
    """One probe: where to connect, how TLS starts, and the name the server is known by.

    ``host`` is what the probe connects to: an IP literal, or a name that is looked up at an
    explicit DNS server. ``server_name`` is the name clients use, sent as SNI and the base of
    the TLSA owner name; None when the probe was written with an IP literal.
    """

    host: str
    port: int
    protocol: Protocol
    server_name: str | None

    @property
    def url(self) -> str:
        """The probe in the config syntax, canonical: how reports and errors name it."""
        if self.server_name is None:
            return f"{self.protocol}://{bracketed(self.host)}:{self.port}"
        via = "" if self.host == self.server_name else f"?connect={self.host}"
        return f"{self.protocol}://{self.server_name}:{self.port}{via}"


def parse_verify(value: str, *, default_host: str) -> VerifyTarget:
    """Parse one ``verify`` value: ``<tls|smtp|imap>://<host>[:<port>][?connect=<IP>]``.

    Every ``{host}`` in ``value`` is first replaced by ``default_host``, the server the probe
    is for. Scheme and host are case-insensitive; the port defaults to 443 (tls), 25 (smtp) or
    143 (imap). Pure: no lookup, no connection.

    Parameters:
      value(str): the configured value.
      default_host(str): what ``{host}`` stands for.

    Returns:
      The target. With ``?connect=`` its ``host`` is that address and ``server_name`` the
      written name; without, both are the written name, except that an IP literal as the
      written host gives ``server_name`` None.

    Raises:
      ConfigError: naming the key ``verify`` and ``value``: an unknown scheme, placeholder or
        option, a host that is neither a name nor an IP literal, a bad port, a ``connect`` that
        is not an IP literal, or parts (user, path, fragment) the syntax does not have.
    """
    try:
        return _parse(value.strip().replace(HOST_PLACEHOLDER, default_host))
    except ValueError as err:
        raise ConfigError(MAIN_FILE, CONFIG_KEY, value, str(err)) from None


def _parse(url: str) -> VerifyTarget:
    """:func:`parse_verify` after ``{host}`` expansion; ValueError says what is wrong."""
    if "{" in url or "}" in url:
        raise ValueError(f"unknown placeholder; only {HOST_PLACEHOLDER} is replaced")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise ValueError(f"not <scheme>://<host>[:<port>][?connect=<IP>] ({err})") from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"the scheme must be one of {', '.join(_SCHEMES)}, as in smtp://host:25")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a user or password has no meaning here")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError("a path or fragment has no meaning here")
    if port == 0:
        raise ValueError("port 0 is not a port")
    written = parts.hostname or ""
    if not written:
        raise ValueError(f"no host; write {HOST_PLACEHOLDER} for each server's own name")
    name = None
    own = ip_literal(written)
    if own is None:
        name = own = _host_name(written)
        if own is None:
            raise ValueError(f"host {written!r} is neither a host name nor an IP address")
    protocol, default_port = scheme
    return VerifyTarget(
        host=_connect_option(parts.query) or own,
        port=port or default_port,
        protocol=protocol,
        server_name=name,
    )


def _connect_option(query: str) -> str | None:
    """The normalised address of ``connect=<IP>``, the only option there is; None without."""
    if not query:
        return None
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError(f"query {query!r} is not connect=<IP>") from None
    keys = [key for key, _ in pairs]
    if keys != ["connect"]:
        unknown = [key for key in keys if key != "connect"]
        problem = f"unknown option {unknown[0]!r}" if unknown else "connect is given twice"
        raise ValueError(f"{problem} (the only option is connect=<IP>)")
    address = ip_literal(pairs[0][1])
    if address is None:
        raise ValueError(f"connect={pairs[0][1]!r} must be an IP address, where the probe goes")
    return address


def ip_literal(text: str) -> str | None:
    """``text`` as a normalised IP address (brackets allowed around IPv6), or None."""
    try:
        return ipaddress.ip_address(text.removeprefix("[").removesuffix("]")).compressed
    except ValueError:
        return None


def _host_name(text: str) -> str | None:
    """``text`` as a lower-case host name without a final dot, or None when it is not one."""
    name = text.lower().removesuffix(".")
    return None if host_name_problem(name) else name


def bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def tlsa_owner(target: VerifyTarget) -> str:
    """The TLSA owner name clients of ``target`` look up: ``_<port>._tcp.<server_name>.``.

    Raises:
      ConfigError: the target has no name (it was written with an IP literal).
    """
    if target.server_name is None:
        problem = "DANE needs the server's name: write the name and ?connect=<IP>"
        raise ConfigError(MAIN_FILE, CONFIG_KEY, target.url, problem)
    return f"_{target.port}._tcp.{target.server_name}."
