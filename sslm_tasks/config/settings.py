"""Runtime settings: how this process reaches its broker, and the limits its tasks run under.

These come from the environment (``SSLM_*`` and ssl-mgr's own ``SSL_MGR_TOPDIR``), not from
``conf.d``: they differ per container or per host, while ``conf.d`` describes certificates and
is shared by every worker. pydantic-settings reads them; :func:`load_settings` is the one entry
point, and it turns every bad value into a :class:`~sslm_tasks.errors.ConfigError` that names the
variable, so an operator sees ``environment: SSLM_VISIBILITY_TIMEOUT_S = 'ten': ...`` rather
than a pydantic traceback.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sslm_tasks.config.models import DEFAULT_SITE, SITE_NAME
from sslm_tasks.errors import ConfigError
from sslm_tasks.logs import LogFormat, LogLevel

#: Where configuration errors about these settings say they came from.
ENV_SOURCE = "environment"

#: The default of ``SSLM_ACME_WAIT_S`` (:attr:`RuntimeSettings.acme_wait_s`).
DEFAULT_ACME_WAIT_S = 600.0

#: Broker URL schemes we know how to configure. Anything else is almost always a typo, and
#: kombu would only say "No such transport" at the first publish, long after start-up.
REDIS_SCHEMES = frozenset({"redis", "rediss"})
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``**``, fit for logs and error messages."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon or not password:
        return url
    return urlunsplit(parts._replace(netloc=f"{user}:**@{host}"))


def url_scheme(url: str) -> str:
    """Return the lower-cased scheme of ``url`` (``""`` when it has none)."""
    return urlsplit(url).scheme.lower()


def is_redis_url(url: str | None) -> bool:
    """Say whether ``url`` points at Redis, whose transport needs options RabbitMQ rejects."""
    return url is not None and url_scheme(url) in REDIS_SCHEMES


def url_with_password(url: str, password: str) -> str:
    """Return ``url`` with ``password`` (percent-encoded) as the password of its user part.

    Raises:
        ValueError: ``url`` holds a password already.
    """
    parts = urlsplit(url)
    if parts.password is not None:
        raise ValueError("holds a password already")
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def read_secret(key: str, path: Path) -> str:
    """Return the content of the secret file ``path`` that variable ``key`` names, without
    the line end an editor or ``echo`` leaves.

    Raises:
        ConfigError: the file cannot be read or is empty; the error names the file, never
            its content.
    """
    try:
        secret = path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(ENV_SOURCE, key, str(path), f"cannot read it: {err}") from err
    if not secret:
        raise ConfigError(ENV_SOURCE, key, str(path), "the file is empty")
    return secret


def _broker_url_from(path: Path) -> str:
    url = read_secret("SSLM_BROKER_URL_FILE", path)
    if url_scheme(url) not in REDIS_SCHEMES | AMQP_SCHEMES:
        # Named by its file only: a password pasted there by mistake must not be shown.
        raise ConfigError(ENV_SOURCE, "SSLM_BROKER_URL_FILE", str(path), "holds no broker URL")
    return url


def _with_password_from(url: str | None, path: Path) -> str:
    if not url:
        raise ConfigError(
            ENV_SOURCE,
            "SSLM_BROKER_PASSWORD_FILE",
            str(path),
            "needs SSLM_BROKER_URL (without the password) to put the password into",
        )
    password = read_secret("SSLM_BROKER_PASSWORD_FILE", path)
    try:
        return url_with_password(url, password)
    except ValueError as err:
        raise ConfigError(ENV_SOURCE, "SSLM_BROKER_URL", redact_url(url), str(err)) from err


def _check_site(site: str) -> str:
    if not SITE_NAME.fullmatch(site):
        raise ValueError(
            f"site {site!r} must be 1-63 letters, digits, '-' or '_', starting with a letter"
            " or digit (it becomes the queue name deploy.<site>)"
        )
    return site


class RuntimeSettings(BaseSettings):
    """The environment of one sslm process (CLI, worker, beat).

    Construct it through :func:`load_settings`. Field names are the variables without their
    ``SSLM_`` prefix; ``topdir`` reads ``SSL_MGR_TOPDIR`` as ssl-mgr did. Empty variables count
    as unset, so compose files may pass ``${VAR:-}`` through.

    Cross-field rules (checked on every construction, raising :class:`ConfigError`):
    the soft time limit is below the hard one, and on Redis the hard limit is below the
    visibility timeout, because Redis delivers a task again to another worker once it has been
    unacknowledged that long, even while the first worker is still running it.
    """

    model_config = SettingsConfigDict(
        env_prefix="SSLM_", env_ignore_empty=True, extra="ignore", validate_by_name=True
    )

    #: ``None`` means no broker: the CLI runs the workflows in-process. Kept out of ``repr``
    #: (it holds the password), like the result backend.
    broker_url: str | None = Field(default=None, repr=False)
    #: Docker's and systemd's way to keep the secret out of the environment: a file holding
    #: the whole broker URL (``SSLM_BROKER_URL_FILE``) instead of ``SSLM_BROKER_URL``, or one
    #: holding only the password (``SSLM_BROKER_PASSWORD_FILE``), which is put into the URL.
    broker_url_file: Path | None = None
    broker_password_file: Path | None = None
    #: Defaults to the broker when that is Redis, and to ``rpc://`` (replies over the broker)
    #: on RabbitMQ, so a caller can always wait for what it enqueued.
    result_backend: str | None = Field(default=None, repr=False)
    #: ssl-mgr's top directory (``conf.d/``, ``certs/``, ``prod-certs/``); ``None`` lets the
    #: config loader search as ssl-mgr does.
    topdir: Path | None = Field(default=None, validation_alias="SSL_MGR_TOPDIR")
    #: How long a task taken by a worker that died stays invisible before Redis hands it to
    #: another worker. Redis's default is an hour; the issue asks for minutes.
    visibility_timeout_s: int = Field(default=300, ge=1)
    #: Hard limit: the pool kills a task's process after this long.
    task_time_limit_s: int = Field(default=240, ge=1)
    #: Soft limit: the task gets ``SoftTimeLimitExceeded`` and a chance to clean up.
    task_soft_time_limit_s: int = Field(default=210, ge=1)
    #: How long task results stay in the result backend.
    result_expires_s: int = Field(default=86_400, ge=60)
    #: The deploy site this host serves (its deploy worker consumes ``deploy.<site>``).
    site: str = DEFAULT_SITE
    #: Further sites whose deploy queues a plain ``celery worker`` here consumes
    #: (``SSLM_SITES=paris,berlin``). The configuration will name them once it knows sites.
    sites: Annotated[frozenset[str], NoDecode] = frozenset()
    #: Beat's renew scan of every service runs this often (twice a day: ARI asks for at least
    #: that).
    renew_check_every_s: int = Field(default=43_200, ge=1)
    #: Beat looks for rolls whose due time has come this often.
    roll_check_every_s: int = Field(default=60, ge=1)
    #: The ssh program and its options, as one shell-quoted string (``SSLM_SSH_COMMAND="ssh -F
    #: /etc/sslm/ssh_config"``): rsync's remote shell and the runner of remote restart
    #: commands. Identity file, known_hosts, user and port are best given per host in that
    #: ssh_config. sslm puts ``-o BatchMode=yes -o ConnectTimeout=...`` ahead of these options,
    #: and ssh keeps the first value it sees, so nothing here can make a worker wait at a prompt.
    ssh_command: Annotated[tuple[str, ...], NoDecode] = ("ssh",)
    #: Seconds ssh waits for a server to accept its connection (ssh's ``ConnectTimeout``).
    ssh_connect_timeout_s: int = Field(default=10, ge=1)
    #: Seconds an idle ssh connection to a server stays open for the next command (ssh's
    #: ``ControlPersist``): a deploy's copy and restarts, and the next deploy within this
    #: time, share one connection, one key exchange and one login. 0 turns the sharing off
    #: (each command connects anew); ssh itself would read 0 as "forever".
    ssh_control_persist_s: int = Field(default=60, ge=0, le=3600)
    #: Seconds between ssh's keepalive probes through an open connection (ssh's
    #: ``ServerAliveInterval``; ``ServerAliveCountMax`` is 3): a connection whose server went
    #: away without closing it (a host that died, a network that dropped it) is given up after
    #: 3 unanswered probes, and a shared master with it, instead of leaving the next commands
    #: to wait on it until their timeout.
    ssh_server_alive_s: int = Field(default=15, ge=1, le=3600)
    #: How long one ACME step may keep failing for a reason that passes (DNS not there yet on
    #: every name server, the CA validating or issuing, the CA unreachable, a badNonce storm)
    #: before the build fails, naming the last thing seen: on workers through retries with
    #: countdowns, in-process through short sleeps. One bound for both, so both give the same
    #: verdict; a real secondary can take minutes to catch up.
    acme_wait_s: float = Field(default=DEFAULT_ACME_WAIT_S, gt=0)
    #: How long a broker (or result backend) that went away may take to come back: a worker
    #: keeps trying to publish the next step of a workflow, and to store a result, this long
    #: before the task fails; the CLI keeps following its workflows this long. A Redis restart
    #: takes seconds; an upgrade of its host, minutes.
    broker_outage_s: float = Field(default=300.0, gt=0, le=86_400)
    #: ``text`` (one line per record) or ``json`` (one JSON object per line), for the log file
    #: and the workers' stdout alike.
    log_format: LogFormat = "text"
    #: The least severe lines the log keeps, for ``sslm-mgr`` and the workers alike. A step
    #: that found nothing to do (an upkeep with no drift, a roll not due yet) logs at DEBUG,
    #: so a run over thousands of services writes one line per service at INFO.
    log_level: LogLevel = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _broker_secrets_from_files(cls, data: Any) -> Any:
        # Before field validation, so a URL read from a file is checked like any other. A
        # ConfigError is not a ValueError, so pydantic lets it through unwrapped.
        if isinstance(data, dict) and data.get("broker_url_file"):
            if data.get("broker_url"):
                raise ConfigError(
                    ENV_SOURCE,
                    "SSLM_BROKER_URL_FILE",
                    str(data["broker_url_file"]),
                    "set SSLM_BROKER_URL or SSLM_BROKER_URL_FILE, not both",
                )
            data["broker_url"] = _broker_url_from(Path(data["broker_url_file"]))
        if isinstance(data, dict) and data.get("broker_password_file"):
            password_file = Path(data["broker_password_file"])
            data["broker_url"] = _with_password_from(data.get("broker_url"), password_file)
        return data

    @field_validator("broker_url")
    @classmethod
    def _known_broker_scheme(cls, url: str | None) -> str | None:
        if url is not None and url_scheme(url) not in REDIS_SCHEMES | AMQP_SCHEMES:
            known = ", ".join(sorted(REDIS_SCHEMES | AMQP_SCHEMES))
            raise ValueError(f"unknown broker scheme {url_scheme(url)!r}; use one of: {known}")
        return url

    @field_validator("ssh_command", mode="before")
    @classmethod
    def _shell_words(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            # shlex's own ValueError ("No closing quotation") becomes the ConfigError's problem.
            raw = tuple(shlex.split(raw))
            if not raw:
                raise ValueError("must name the ssh program")
        return raw

    @field_validator("site")
    @classmethod
    def _valid_site(cls, site: str) -> str:
        return _check_site(site)

    @field_validator("sites", mode="before")
    @classmethod
    def _comma_list(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return frozenset(part.strip() for part in raw.split(",") if part.strip())
        return raw

    @field_validator("sites")
    @classmethod
    def _valid_sites(cls, sites: frozenset[str]) -> frozenset[str]:
        for site in sites:
            _check_site(site)
        return sites

    @model_validator(mode="after")
    def _consistent(self) -> RuntimeSettings:
        # ConfigError is not a ValueError, so pydantic lets it through unwrapped.
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ConfigError(
                file=ENV_SOURCE,
                key="SSLM_TASK_SOFT_TIME_LIMIT_S",
                value=self.task_soft_time_limit_s,
                problem=f"must be below SSLM_TASK_TIME_LIMIT_S ({self.task_time_limit_s})",
            )
        if is_redis_url(self.broker_url) and self.task_time_limit_s >= self.visibility_timeout_s:
            raise ConfigError(
                file=ENV_SOURCE,
                key="SSLM_TASK_TIME_LIMIT_S",
                value=self.task_time_limit_s,
                problem=(
                    f"must be below SSLM_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}):"
                    " Redis hands a task still running after that long to a second worker"
                ),
            )
        if self.result_backend is None and self.broker_url is not None:
            self.result_backend = self.broker_url if is_redis_url(self.broker_url) else "rpc://"
        return self

    @classmethod
    def env_var(cls, field: str) -> str:
        """Return the environment variable that sets ``field``."""
        alias = cls.model_fields[field].validation_alias
        return alias if isinstance(alias, str) else f"SSLM_{field.upper()}"


def load_settings() -> RuntimeSettings:
    """Read the runtime settings from the environment.

    Returns:
        The validated settings. Reading them has no side effects and contacts no service.

    Raises:
        ConfigError: a variable holds a bad value; the error names the variable and the value
            (URLs with their password masked). Permanent: the environment must change.
    """
    try:
        return RuntimeSettings()
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        key = RuntimeSettings.env_var(field) if field in RuntimeSettings.model_fields else field
        value = first.get("input")
        if isinstance(value, str) and "://" in value:
            value = redact_url(value)
        # A ValueError from our own validators carries the whole message; pydantic's "msg"
        # would prefix it with "Value error, ".
        problem = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
        raise ConfigError(file=ENV_SOURCE, key=key, value=value, problem=problem) from err
