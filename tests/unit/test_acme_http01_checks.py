"""What an ACME CA needs before anything is ordered: the challenge type from
``ca_validation``'s prefix; for http-01 ``[web] server_dir`` and ``servers``, and no wildcard
name; for dns-01 a ``[dns] acme_dir``. Each refusal is a ConfigError naming file, key and value,
raised when the configuration loads, before any request (the configuration here names a CA that
is never reached)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import REPO

from sslm_tasks.config.load import load_config
from sslm_tasks.config.models import CaInfo
from sslm_tasks.errors import ConfigError
from sslm_tasks.store.layout import ServiceRef

WEB = ServiceRef("example.test", "web")
#: Nothing listens here: a check that let the order go on would fail differently.
UNREACHABLE_CA = "https://127.0.0.1:9/dir"


def service(sans: list[str]) -> str:
    return f"""name = 'Web'
group = 'example.test'
service = 'web'
signing_ca = 'le'

[X509]
    CN = 'example.test'
    O = 'Example'
    C = 'US'
    sans = {sans!r}
"""


def load(tmp_path: Path, *, web: str, sans: list[str] | None = None) -> Path:
    """Write the configuration and load it; returns the conf.d."""
    conf = tmp_path / "conf.d"
    shutil.copytree(REPO / "conf.d", conf)
    (conf / "example.test").mkdir()
    (conf / "example.test/web").write_text(service(sans or ["www.example.test"]))
    with (conf / "ca-info.conf").open("a") as ca_info:
        ca_info.write(
            "\n[le]\n    ca_type = 'acme'\n    ca_validation = 'http-01'\n"
            f"    ca_acme_directory = '{UNREACHABLE_CA}'\n"
        )
    with (conf / "ssl-mgr.conf").open("a") as main:
        main.write(
            "\n[[groups]]\n    active = true\n    domain = 'example.test'\n    services = ['web']\n"
            + web
        )
    load_config([str(WEB)], conf_dir=conf)
    return conf


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("http-01", "http-01"),
        ("HTTP", "http-01"),
        ("dns-01", "dns-01"),
        ("", "dns-01"),
        # only the prefix counts, as upstream
        ("dns-persist-01", "dns-01"),
    ],
)
def test_the_challenge_type_is_the_prefix_of_ca_validation(value: str, kind: str) -> None:
    assert CaInfo(ca_type="acme", ca_validation=value).challenge_kind == kind


def test_an_unknown_challenge_type_names_the_ca_and_value(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    shutil.copytree(REPO / "conf.d", conf)
    with (conf / "ca-info.conf").open("a") as ca_info:
        ca_info.write("\n[le]\n    ca_type = 'acme'\n    ca_validation = 'tls-alpn-01'\n")
    with pytest.raises(ConfigError) as failed:
        load_config([], conf_dir=conf)
    assert str(failed.value) == (
        f"{conf / 'ca-info.conf'}: le.ca_validation = 'tls-alpn-01': "
        "must start with 'http' (http-01) or 'dns' (dns-01)"
    )


@pytest.mark.parametrize(
    ("web", "key", "shown"),
    [
        ("", "web.server_dir", "web.server_dir: http-01"),
        ("\n[web]\n    servers = ['localhost']\n", "web.server_dir", "web.server_dir: http-01"),
        (
            "\n[web]\n    servers = ['localhost']\n    server_dir = 'srv/www'\n",
            "web.server_dir",
            "web.server_dir = 'srv/www': must be an absolute path",
        ),
        (
            "\n[web]\n    servers = []\n    server_dir = '/srv/www'\n",
            "web.servers",
            "web.servers = []: http-01",
        ),
    ],
)
def test_http01_without_a_web_root_or_servers_fails_when_the_configuration_loads(
    tmp_path: Path, web: str, key: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as failed:
        load(tmp_path, web=web)
    assert failed.value.key == key
    assert str(failed.value).startswith(f"{tmp_path / 'conf.d/ssl-mgr.conf'}: {shown}")


def test_a_wildcard_with_http01_fails_naming_the_service_file(tmp_path: Path) -> None:
    web = "\n[web]\n    servers = ['localhost']\n    server_dir = '/srv/www'\n"
    with pytest.raises(ConfigError) as failed:
        load(tmp_path, web=web, sans=["example.test", "*.example.test"])
    assert failed.value.file == str(tmp_path / "conf.d/example.test/web")
    assert (failed.value.key, failed.value.value) == ("X509.sans", "*.example.test")
    assert "a wildcard needs dns-01" in failed.value.problem


def test_dns01_without_an_acme_dir_fails_when_the_configuration_loads(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    shutil.copytree(REPO / "conf.d", conf)
    (conf / "example.test").mkdir()
    (conf / "example.test/web").write_text(service(["www.example.test"]))
    with (conf / "ca-info.conf").open("a") as ca_info:
        ca_info.write("\n[le]\n    ca_type = 'acme'\n    ca_validation = 'dns-01'\n")
    with pytest.raises(ConfigError) as failed:
        load_config([str(WEB)], conf_dir=conf)
    assert (failed.value.key, failed.value.file) == ("dns.acme_dir", str(conf / "ssl-mgr.conf"))
