"""What an http-01 CA needs before anything is ordered: the challenge type from
``ca_validation``'s prefix, ``[web] server_dir`` and ``servers``, and no wildcard name. Each
refusal is a ConfigError naming file, key and value, raised by the order step before any
request (the configuration here names a CA that is never reached)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import REPO

from sslm_tasks.config.load import load_config
from sslm_tasks.config.models import CaInfo
from sslm_tasks.errors import ConfigError
from sslm_tasks.lifecycle import acme_issue, build
from sslm_tasks.lifecycle.workspace import Workspace
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


def workspace(tmp_path: Path, *, web: str, sans: list[str] | None = None) -> Workspace:
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
    config, _ = load_config([str(WEB)], conf_dir=conf)
    ws = Workspace(config=config)
    build.start_build(ws, WEB)
    build.make_key(ws, WEB)
    build.make_csr(ws, WEB)
    return ws


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
    ca = CaInfo(ca_type="acme", ca_validation=value)
    assert acme_issue.challenge_kind("le", ca, source=Path("ca-info.conf")) == kind


def test_an_unknown_challenge_type_names_the_ca_and_value() -> None:
    ca = CaInfo(ca_type="acme", ca_validation="tls-alpn-01")
    with pytest.raises(ConfigError) as failed:
        acme_issue.challenge_kind("le", ca, source=Path("conf.d/ca-info.conf"))
    assert str(failed.value) == (
        "conf.d/ca-info.conf: le.ca_validation = 'tls-alpn-01': "
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
def test_http01_without_a_web_root_or_servers_fails_before_ordering(
    tmp_path: Path, web: str, key: str, shown: str
) -> None:
    ws = workspace(tmp_path, web=web)
    with pytest.raises(ConfigError) as failed:
        acme_issue.order(ws, WEB)
    assert failed.value.key == key
    assert str(failed.value).startswith(f"{ws.config.conf_dir / 'ssl-mgr.conf'}: {shown}")
    assert not (ws.layout.cb_dir(WEB)).exists()  # no account was even made


def test_a_wildcard_with_http01_fails_naming_the_service_file(tmp_path: Path) -> None:
    web = "\n[web]\n    servers = ['localhost']\n    server_dir = '/srv/www'\n"
    ws = workspace(tmp_path, web=web, sans=["example.test", "*.example.test"])
    with pytest.raises(ConfigError) as failed:
        acme_issue.order(ws, WEB)
    assert failed.value.file == str(ws.config.service_file(WEB))
    assert (failed.value.key, failed.value.value) == ("X509.sans", "*.example.test")
    assert "a wildcard needs dns-01" in failed.value.problem
