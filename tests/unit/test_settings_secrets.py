"""The broker's secret from a file (SSLM_BROKER_URL_FILE, SSLM_BROKER_PASSWORD_FILE), as Docker
and systemd hand secrets over; every problem one line naming the variable, never the secret."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from sslm_tasks.config.settings import load_settings
from sslm_tasks.errors import ConfigError

#: Characters a URL's password must carry percent-encoded.
AWKWARD_PASSWORD = "p/w@x:y%z#q?"


@pytest.fixture(autouse=True)
def _no_broker_of_the_developers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSLM_BROKER_URL", "SSLM_BROKER_URL_FILE", "SSLM_BROKER_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)


def secret(tmp_path: Path, text: str, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_password_file_goes_into_the_url_encoded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a URL without password and a password file as `echo` writes it (line end)
    monkeypatch.setenv("SSLM_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("SSLM_BROKER_PASSWORD_FILE", str(secret(tmp_path, AWKWARD_PASSWORD + "\n")))

    # Then the broker URL and the result backend carry exactly that password
    settings = load_settings()
    assert settings.broker_url is not None
    parts = urlsplit(settings.broker_url)
    assert (parts.hostname, parts.port, parts.path) == ("redis", 6379, "/0")
    assert parts.password is not None
    assert unquote(parts.password) == AWKWARD_PASSWORD
    assert settings.result_backend == settings.broker_url


def test_url_file_replaces_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(
        "SSLM_BROKER_URL_FILE", str(secret(tmp_path, "amqp://sslm:s3cret@rabbit:5672//\n"))
    )
    assert load_settings().broker_url == "amqp://sslm:s3cret@rabbit:5672//"


@pytest.mark.parametrize(
    ("variables", "key", "problem"),
    [
        (
            {"SSLM_BROKER_URL": "redis://h/0", "SSLM_BROKER_PASSWORD_FILE": "{missing}"},
            "SSLM_BROKER_PASSWORD_FILE",
            "cannot read",
        ),
        (
            {"SSLM_BROKER_URL": "redis://h/0", "SSLM_BROKER_PASSWORD_FILE": "{empty}"},
            "SSLM_BROKER_PASSWORD_FILE",
            "empty",
        ),
        ({"SSLM_BROKER_PASSWORD_FILE": "{secret}"}, "SSLM_BROKER_PASSWORD_FILE", "needs"),
        (
            {"SSLM_BROKER_URL": "redis://:oldpw7f3@h/0", "SSLM_BROKER_PASSWORD_FILE": "{secret}"},
            "SSLM_BROKER_URL",
            "holds a password already",
        ),
        (
            {"SSLM_BROKER_URL": "redis://h/0", "SSLM_BROKER_URL_FILE": "{secret}"},
            "SSLM_BROKER_URL_FILE",
            "not both",
        ),
        ({"SSLM_BROKER_URL_FILE": "{secret}"}, "SSLM_BROKER_URL_FILE", "holds no broker URL"),
    ],
)
def test_bad_secret_files_are_one_line_without_the_secret(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    variables: dict[str, str],
    key: str,
    problem: str,
) -> None:
    # Given a secret file whose content must never be shown
    files = {
        "{missing}": str(tmp_path / "missing"),
        "{empty}": str(secret(tmp_path, "", name="empty")),
    }
    files["{secret}"] = str(secret(tmp_path, "hunter2-not-a-url\n"))
    for name, value in variables.items():
        monkeypatch.setenv(name, files.get(value, value))

    # When the settings are read, Then one error names the variable and the problem only
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.key == key
    assert problem in str(err.value)
    assert "hunter2" not in str(err.value)
    assert "oldpw7f3" not in str(err.value)
    assert "\n" not in str(err.value)
