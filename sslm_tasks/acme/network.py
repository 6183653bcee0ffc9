"""The transport under every ACME call, and the one place where its failures are sorted.

:class:`AcmeNetwork` is certbot's ``acme.client.ClientNetwork`` (signing, nonces, the single
badNonce retry) plus one thing the library drops: the ``Retry-After`` header of the last
response. ``messages.Error`` carries no headers, so a ``rateLimited`` problem would otherwise
lose the one fact that says when to try again.

:func:`translate` wraps each single-request step and turns whatever the library or ``requests``
raised into our error tree (style rule 8). Transient means the same request may succeed later,
and every transient cause below says why; everything else is permanent, so an unknown problem
never turns into a loop of failed requests that eats the CA's rate limits.

Messages name the step and the server's problem text (Pebble's or Let's Encrypt's reason), never
a key, a JWS or a request body.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final

import acme.client
import acme.errors
import acme.messages
import requests
from josepy.errors import DeserializationError
from josepy.jwa import JWASignature
from josepy.jwk import JWK
from requests.adapters import HTTPAdapter

from sslm_tasks.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

#: RFC 8555 §6.7: problem types are URNs under this prefix.
_PROBLEM_PREFIX: Final = "urn:ietf:params:acme:error:"
#: The problem code of a rate limit: neither transient (a retry within the wait would only be
#: refused again) nor like other permanent errors (it says when to try again).
RATE_LIMITED: Final = "rateLimited"

#: Problem codes where the same request may succeed later, and why.
TRANSIENT_CODES: Final = frozenset(
    {
        # The library already retried once with a fresh nonce; a storm of them (Pebble's
        # PEBBLE_WFE_NONCEREJECT, a CA behind a load balancer) passes.
        "badNonce",
        # The CA's own failure, usually brief (Let's Encrypt also answers 503 with Retry-After).
        "serverInternal",
        # Finalize came before the CA finished validating; the order becomes ready by itself.
        "orderNotReady",
    }
)


class AcmeTransientError(TransientError):
    """An ACME request failed in a way that may pass: retry, no sooner than ``retry_after``.

    Attributes:
      code(str | None): the RFC 8555 problem code (``badNonce``, ``orderNotReady``...), None for
        transport failures.
      retry_after(datetime | None): the server's ``Retry-After`` as an aware UTC time, when it
        sent one (``TransientError``'s attribute).
    """

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: datetime | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class AcmePermanentError(PermanentError):
    """An ACME request failed and repeating it gives the same answer.

    Attributes:
      code(str | None): the RFC 8555 problem code (``malformed``, ``caa``...), if there was one.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class AcmeRateLimited(AcmePermanentError):
    """The CA's rate limit (``rateLimited``): permanent for this attempt, since a retry within
    seconds would only be refused again and count against the limit; the next attempt waits
    for ``retry_after`` (the backoff of ``lifecycle.acme_timing``, the ARI recheck).

    Attributes:
      retry_after(datetime | None): the server's ``Retry-After`` as an aware UTC time.
    """

    def __init__(self, message: str, *, retry_after: datetime | None = None) -> None:
        # A default for every keyword: Celery hands a worker's on_failure the error itself
        # only when a pickled copy of it loads (a copy is rebuilt from the message alone).
        super().__init__(message, code=RATE_LIMITED)
        self.retry_after = retry_after


def suggested_retry(error: BaseException) -> datetime | None:
    """The CA's ``Retry-After`` that ``error`` carries (a transient error, a rate limit)."""
    if isinstance(error, AcmeTransientError | AcmeRateLimited):
        return error.retry_after
    return None


#: Each thread's connection pool, shared by all its networks (:class:`AcmeNetwork`).
_pools = threading.local()


def _thread_adapter() -> HTTPAdapter:
    adapter: HTTPAdapter | None = getattr(_pools, "adapter", None)
    if adapter is None:
        adapter = _pools.adapter = HTTPAdapter()
    return adapter


class AcmeNetwork(acme.client.ClientNetwork):
    """``ClientNetwork`` that remembers the ``Retry-After`` header of its latest response.

    One instance serves one thread (as ``requests.Session`` does), so "latest" is well defined:
    right after a request raised, it is that request's header.

    Its connections come from a pool shared by every network of its thread: each account has
    its own network (its key, its nonces, its session's hooks), and a step of another service,
    or a new account's registration, would otherwise open a connection and make a TLS
    handshake of its own with the same CA (two per new account, one per service a worker
    process handles). The pool is therefore not closed with one network.
    """

    def __init__(
        self,
        key: JWK | None,
        *,
        account: acme.messages.RegistrationResource | None,
        alg: JWASignature,
        user_agent: str,
        timeout_s: int,
    ) -> None:
        super().__init__(key, account=account, alg=alg, user_agent=user_agent, timeout=timeout_s)
        self.last_retry_after: str | None = None
        self.session.hooks["response"].append(self._remember_retry_after)
        shared = _thread_adapter()
        self.session.mount("https://", shared)
        self.session.mount("http://", shared)

    def __del__(self) -> None:
        """Leave the thread's pool open for its other networks (``ClientNetwork`` closes the
        session, and with it every adapter mounted there)."""

    def _remember_retry_after(self, response: requests.Response, *_: object, **__: object) -> None:
        self.last_retry_after = response.headers.get("Retry-After")


def parse_retry_after(value: str | None, *, now: datetime) -> datetime | None:
    """An HTTP ``Retry-After`` (delay in seconds, or an HTTP date) as an aware UTC time.

    Returns None when the header is absent or unreadable; a date in the past gives ``now``.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return now + timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as UTC.
        when = when.replace(tzinfo=UTC)
    return max(when.astimezone(UTC), now)


def retry_after_of(net: acme.client.ClientNetwork) -> datetime | None:
    """The ``Retry-After`` of ``net``'s latest response as a UTC time, if it had one."""
    header = net.last_retry_after if isinstance(net, AcmeNetwork) else None
    return parse_retry_after(header, now=datetime.now(UTC))


def problem_code(problem: acme.messages.Error) -> str | None:
    """The problem's RFC 8555 code, including ones the library does not list (alreadyReplaced)."""
    typ = str(problem.typ)
    return typ[len(_PROBLEM_PREFIX) :] if typ.startswith(_PROBLEM_PREFIX) else None


def describe_problem(problem: acme.messages.Error) -> str:
    """``"<identifier>: <code>: <detail>"``: the server's reason, the part an operator acts on."""
    parts = [problem_code(problem) or str(problem.typ), problem.detail or problem.title or ""]
    text = ": ".join(part for part in parts if part)
    if problem.identifier is not None:
        text = f"{problem.identifier.value}: {text}"
    for sub in problem.subproblems or ():
        text += f"; {describe_problem(sub)}"
    return text


def _all_of(problem: acme.messages.Error, codes: frozenset[str]) -> bool:
    """Whether the problem's code is one of ``codes``; a compound one's subproblems all are."""
    code = problem_code(problem)
    if code == "compound":
        subs = problem.subproblems or ()
        return bool(subs) and all(_all_of(sub, codes) for sub in subs)
    return code in codes


def classify(
    step: str, problem: acme.messages.Error, *, retry_after: datetime | None = None
) -> AcmeTransientError | AcmePermanentError:
    """Our error for a problem document the server sent while doing ``step``: the one place
    where a problem is sorted (transient, a rate limit, or permanent)."""
    code = problem_code(problem)
    message = f"{step}: {describe_problem(problem)}"
    if _all_of(problem, TRANSIENT_CODES):
        return AcmeTransientError(message, code=code, retry_after=retry_after)
    if _all_of(problem, frozenset({RATE_LIMITED})):
        return AcmeRateLimited(message, retry_after=retry_after)
    return AcmePermanentError(message, code=code)


def _client_error(
    step: str, err: acme.errors.ClientError
) -> AcmeTransientError | AcmePermanentError:
    """A reply that was no problem document (an HTML 502 from a proxy, a wrong content type)."""
    reply = err.args[0] if err.args else None
    if isinstance(reply, requests.Response):
        message = f"{step}: unexpected HTTP {reply.status_code} reply from {reply.url}"
        if reply.status_code >= 500:  # a gateway or the CA in trouble; it passes
            return AcmeTransientError(message)
        return AcmePermanentError(message)
    return AcmePermanentError(f"{step}: unexpected reply: {err}")


@contextlib.contextmanager
def translate(step: str, net: acme.client.ClientNetwork | None = None) -> Iterator[None]:
    """Run one ACME request and raise our error tree instead of the library's.

    Parameters:
      step(str): what was being done, in domain words ("creating the order"); every message
        starts with it.
      net(ClientNetwork | None): the network the request used; when it is an
        :class:`AcmeNetwork`, a transient error or a rate limit carries its ``Retry-After``.

    Raises:
      AcmeTransientError: ``badNonce`` after the library's own retry, ``serverInternal``,
        ``orderNotReady``, a connection failure or timeout, a 5xx that was not a problem
        document, a missing nonce; with the response's ``Retry-After`` when it had one.
      AcmeRateLimited: ``rateLimited``, with its ``Retry-After``.
      AcmePermanentError: every other problem code (``malformed``, ``unauthorized``,
        ``rejectedIdentifier``, ``caa``...), a TLS verification failure (the configured
        ``ca_acme_ca_bundle`` does not match the server), a reply that cannot be parsed.
    """
    if isinstance(net, AcmeNetwork):
        # A reused network still holds the header of an earlier request's response.
        net.last_retry_after = None
    try:
        yield
    except acme.messages.Error as err:
        raise classify(step, err, retry_after=None if net is None else retry_after_of(net)) from err
    except acme.errors.NonceError as err:
        # The server answered without a usable Replay-Nonce: a front end out of step, it passes.
        raise AcmeTransientError(f"{step}: no usable nonce in the server's reply") from err
    except acme.errors.ClientError as err:
        raise _client_error(step, err) from err
    except requests.exceptions.SSLError as err:
        raise AcmePermanentError(
            f"{step}: TLS verification of the ACME server failed (check ca_acme_ca_bundle): {err}"
        ) from err
    except (requests.ConnectionError, requests.Timeout) as err:
        # The server is down, restarting or slow: the same request may well work later.
        raise AcmeTransientError(f"{step}: ACME server unreachable: {err}") from err
    except (requests.exceptions.JSONDecodeError, DeserializationError) as err:
        # Before RequestException: requests' JSONDecodeError is one too. A reply that is no
        # ACME JSON is a wrong URL or a broken server; repeating the request changes nothing.
        raise AcmePermanentError(f"{step}: the server's reply cannot be read: {err}") from err
    except requests.RequestException as err:
        raise AcmePermanentError(f"{step}: bad request: {err}") from err
