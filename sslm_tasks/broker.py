"""One quick look at the broker, so the CLI can say in one line why it cannot enqueue.

Celery itself retries a lost broker for as long as it is told to, which is right for workers
and wrong for an operator at a terminal: they should learn within seconds that the broker is
down or refuses the password, and which broker was meant (password masked).
"""

from __future__ import annotations

from typing import Any

from amqp.exceptions import AccessRefused  # type: ignore[import-untyped]
from kombu import connection
from redis.exceptions import AuthenticationError

from sslm_tasks.config.settings import ENV_SOURCE, redact_url
from sslm_tasks.errors import ConfigError, TransientError

# kombu's Connection carries no annotations; typed as Any once here rather than at each call.
_Connection: Any = connection.Connection

#: Errors by which a broker says it was reached and refused our credentials.
_AUTH_ERRORS = (AuthenticationError, AccessRefused)


def check_broker(url: str, *, timeout_s: float = 5.0) -> None:
    """Connect to the broker at ``url`` once (no retries) and log in.

    Parameters:
        url(str): a broker URL as in ``SSLM_BROKER_URL``; it never appears unmasked in errors.
        timeout_s(float): bound on connecting and on the broker's first answer.

    Raises:
        ConfigError: the broker answered and refused the credentials (permanent: the URL or
            the broker's password must change).
        TransientError: the broker could not be reached within ``timeout_s`` (down, wrong
            port, network).
    """
    shown = redact_url(url)
    conn = _Connection(
        url,
        connect_timeout=timeout_s,
        transport_options={"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s},
    )
    try:
        conn.ensure_connection(max_retries=0, timeout=timeout_s)
    except Exception as err:
        # kombu wraps the transport's own error (redis's AuthenticationError) as its cause;
        # amqp raises AccessRefused unwrapped.
        cause = err if isinstance(err, _AUTH_ERRORS) else err.__cause__
        reason = _scrub(str(cause or err), url)
        if isinstance(cause, _AUTH_ERRORS):
            raise ConfigError(
                file=ENV_SOURCE,
                key="SSLM_BROKER_URL",
                value=shown,
                problem=f"the broker refused the credentials: {reason}",
            ) from err
        raise TransientError(f"broker {shown} unreachable: {reason}") from err
    finally:
        conn.release()


def _scrub(text: str, url: str) -> str:
    # Drivers sometimes echo the connection string; never let a password through that way.
    return text.replace(url, redact_url(url))
