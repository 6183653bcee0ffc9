"""Loading the configuration: discovery, selection, aliases of keys upstream ignored, order."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from support import REPO

from sslm_tasks.config import load as load_module
from sslm_tasks.config.load import Config, find_conf_dir, load_config, scan_group, zone_of
from sslm_tasks.errors import ConfigError
from sslm_tasks.store.layout import ServiceRef


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "conf.d", tmp_path / "conf.d")
    return tmp_path / "conf.d"


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_conf_dir_is_found_from_the_environment_then_the_working_directory(
    conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert find_conf_dir({"SSL_MGR_TOPDIR": str(tmp_path)}) == conf
    monkeypatch.chdir(tmp_path)
    assert find_conf_dir({}) == conf.absolute()
    monkeypatch.chdir(conf)  # no conf.d below it, and no /etc/ssl-mgr here
    if not Path("/etc/ssl-mgr/conf.d").is_dir():
        with pytest.raises(ConfigError, match=r"no conf\.d found"):
            find_conf_dir({})


def test_a_symlinked_conf_d_keeps_its_topdir(tmp_path: Path, conf: Path) -> None:
    top = tmp_path / "elsewhere"
    top.mkdir()
    (top / "conf.d").symlink_to(conf)
    config, _ = load_config(conf_dir=top / "conf.d")
    assert config.topdir == top


def test_selection_order_puts_each_ca_before_what_it_signs(conf: Path) -> None:
    _, refs = load_config(["example.com:web-ec", "ca:my-int", "ca:my-root"], conf_dir=conf)
    assert refs == [
        ServiceRef("ca", "my-root"),
        ServiceRef("ca", "my-int"),
        ServiceRef("example.com", "web-ec"),
    ]


def test_all_star_and_a_bare_group_select_every_service_file(conf: Path) -> None:
    (conf / "example.com" / "notes.txt").write_text("not a service\n")
    expected = [ServiceRef("example.com", s) for s in ("mail-ec", "mail-rsa", "web-ec")]
    for spec in ("example.com:ALL", "example.com:*", "example.com"):
        _, refs = load_config([spec], conf_dir=conf)
        assert refs == expected, spec


def test_signing_cas_are_loaded_though_not_selected(conf: Path) -> None:
    config, refs = load_config(["example.com:web-ec"], conf_dir=conf)
    assert refs == [ServiceRef("example.com", "web-ec")]
    assert ServiceRef("ca", "my-int") in config.services
    assert ServiceRef("ca", "my-root") in config.services


def test_keys_upstream_ignored_now_work(conf: Path) -> None:
    main = conf / "ssl-mgr.conf"
    main.write_text(
        main.read_text()
        .replace("[renew_info]", "[renew_info]\n    renew_target_45 = 12")
        .replace(
            "min_roll_mins = 90", "min_roll_mins = 90\n    preferred_acme_profile = 'shortlived'"
        )
    )
    append(
        conf / "ca-info.conf", "\n[le]\n    ca_type = 'letsencrypt'\n    ca_validation = 'dns-01'\n"
    )
    rsa = conf / "example.com" / "mail-rsa"
    rsa.write_text(rsa.read_text().replace("rsa_bits = 3072", "bits = 2048"))
    config, _ = load_config(["example.com:mail-rsa"], conf_dir=conf)
    assert config.main.renew_info.targets[45.0] == 12
    assert config.cas["le"].ca_preferred_acme_profile == "shortlived"
    assert config.cas["my-int"].ca_preferred_acme_profile is None  # local CAs have none
    assert config.services[ServiceRef("example.com", "mail-rsa")].keyopts.rsa_bits == 2048


def test_bits_and_rsa_bits_that_disagree_are_an_error(conf: Path) -> None:
    rsa = conf / "example.com" / "mail-rsa"
    rsa.write_text(rsa.read_text().replace("rsa_bits = 3072", "rsa_bits = 3072\n    bits = 4096"))
    with pytest.raises(ConfigError, match="disagree"):
        load_config(["example.com:mail-rsa"], conf_dir=conf)


def test_sites_name_hosts_once_and_default_to_default(conf: Path) -> None:
    append(conf / "ssl-mgr.conf", "\n[sites]\n    berlin = ['smtp2.example.com']\n")
    config, _ = load_config([], conf_dir=conf)
    assert config.main.site_of("smtp2.example.com") == "berlin"
    assert config.main.site_of("smtp1.example.com") == "default"
    append(conf / "ssl-mgr.conf", "    paris = ['smtp2.example.com']\n")
    with pytest.raises(ConfigError, match="in sites 'berlin' and 'paris'"):
        load_config([], conf_dir=conf)


def test_a_private_ca_setup_needs_no_dns_primary(conf: Path) -> None:
    config, refs = load_config([], conf_dir=conf)
    assert config.main.dns_primary == [] and len(refs) == 5


def test_no_extra_resolver_is_asked_unless_named(conf: Path) -> None:
    main = conf / "ssl-mgr.conf"
    main.write_text(main.read_text().replace("dns_xtra_ns = []", ""))
    config, _ = load_config([], conf_dir=conf)
    assert config.main.globals.dns_xtra_ns == []


def test_renew_info_points_are_read_by_kind_and_lifetime(conf: Path) -> None:
    main = conf / "ssl-mgr.conf"
    main.write_text(
        main.read_text().replace(
            "target_90 = 30",
            'target_90 = 30\n    "target_6.5" = 3\n    renew_rand_adj_45 = 2.5\n    target_0 = 0',
        )
    )
    config, _ = load_config([], conf_dir=conf)
    info = config.main.renew_info
    assert info.targets == {90.0: 30, 6.5: 3, 0.0: 0}
    assert info.spreads == {120.0: 5, 45.0: 2.5}


def test_the_log_directory_is_the_setting_or_an_existing_default(
    conf: Path, tmp_path: Path
) -> None:
    config, _ = load_config([], conf_dir=conf)
    assert config.log_dir() == tmp_path / "logs"
    main = conf / "ssl-mgr.conf"
    main.write_text(main.read_text().replace("logdir = 'logs'", ""))
    config, _ = load_config([], conf_dir=conf)
    default = Path(config.main.globals.logdir)
    if default.is_dir():
        assert config.log_dir() == default
    else:
        with pytest.raises(ConfigError, match=r"globals\.logdir: not set, and the default"):
            config.log_dir()


def test_a_file_that_is_not_utf8_is_named_with_its_place(conf: Path) -> None:
    (conf / "ca-info.conf").write_bytes(b"# ok\n[my-root]\n  ca_desc = 'caf\xe9'\n")
    with pytest.raises(ConfigError) as caught:
        load_config([], conf_dir=conf)
    assert caught.value.key == "(encoding)" and caught.value.value == b"\xe9"
    assert "line 3, column 17" in caught.value.problem


@pytest.mark.parametrize(
    ("lines", "key", "value", "problem"),
    [
        ("key_standby = true\n", "key_standby", True, "needs dane_tls"),
        (
            "dane_tls = [[25, 'tcp', 3, 0, 1]]\nkey_standby = true\n",
            "key_standby",
            True,
            "needs selector 1 in every dane_tls entry, and [25, 'tcp', 3, 0, 1] hashes",
        ),
        ("key_rollover_days = 30\n", "key_rollover_days", 30, "needs key_standby = true"),
        (
            "dane_tls = [[25, 'tcp', 3, 1, 1]]\nkey_standby = true\nkey_rollover_days = 0\n",
            "key_rollover_days",
            0,
            "greater than 0",
        ),
        ("key_standby = 'yes'\n", "key_standby", "yes", "valid boolean"),
    ],
    ids=["no-dane", "selector-0", "rollover-alone", "rollover-0", "not-a-bool"],
)
def test_a_standby_key_needs_dane_with_key_records(
    conf: Path, lines: str, key: str, value: object, problem: str
) -> None:
    # Given a service that asks for a standby key where it cannot have one
    service = conf / "example.com" / "web-ec"
    text = service.read_text()
    head, tail = text.split("[KeyOpts]", 1)
    head = "\n".join(line for line in head.splitlines() if not line.startswith("dane_tls"))
    service.write_text(f"{head}\n{lines}\n[KeyOpts]{tail}")
    # When it is loaded, then the error names the file, the key and the value
    with pytest.raises(ConfigError) as caught:
        load_config(["example.com:web-ec"], conf_dir=conf)
    assert caught.value.file == str(service)
    assert (caught.value.key, caught.value.value) == (key, value)
    assert problem in caught.value.problem


def test_a_standby_key_defaults_to_a_90_day_rollover(conf: Path) -> None:
    service = conf / "example.com" / "mail-ec"
    standby = "dane_tls = [[25, 'tcp', 3, 1, 1]]\nkey_standby = true\n[KeyOpts]"
    service.write_text(service.read_text().replace("[KeyOpts]", standby, 1))
    config, _ = load_config(["example.com:mail-ec"], conf_dir=conf)
    loaded = config.services[ServiceRef("example.com", "mail-ec")]
    assert loaded.key_standby and loaded.rollover_days == 90


def test_each_file_is_parsed_once_though_a_wildcard_scans_it_first(
    conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a selection whose wildcard reads every service file of its group
    parsed: list[str] = []
    parse = tomllib.loads

    def counted(text: str) -> dict[str, Any]:
        parsed.append(text)
        return parse(text)

    monkeypatch.setattr(tomllib, "loads", counted)
    # When the configuration is loaded
    config, _ = load_config(["example.com:ALL"], conf_dir=conf)
    # Then each file was parsed once: the main files, the services and their CAs
    assert len(config.services) == 5
    assert len(parsed) == len(set(parsed)) == 2 + 5


def test_a_name_goes_into_the_longest_zone_of_many_groups(conf: Path) -> None:
    # Given 100 groups, some of them inside others
    groups = [f"g{i:03d}.example.net" for i in range(98)] + ["example.net", "a.g001.example.net"]
    append(
        conf / "ssl-mgr.conf",
        "".join(
            f"\n[[groups]]\n    active = false\n    domain = '{g}'\n    services = ['ALL']\n"
            for g in groups
        ),
    )
    config, _ = load_config(["example.com:web-ec"], conf_dir=conf)
    # Then each name's zone is its longest configured suffix (a wildcard counts as its base)
    assert zone_of(config, "example.com", "www.b.a.g001.example.net") == "a.g001.example.net"
    assert zone_of(config, "example.com", "*.g001.example.net.") == "g001.example.net"
    assert zone_of(config, "example.com", "G097.Example.NET") == "g097.example.net"
    assert zone_of(config, "example.com", "g200.example.net") == "example.net"
    # the service's own group counts, the ca group never does, and no suffix is no zone
    assert zone_of(config, "other.org", "mx.other.org") == "other.org"
    assert zone_of(config, "example.com", "host.ca") is None
    assert zone_of(config, "example.com", "example.org") is None


def test_a_service_file_has_each_marker_at_the_start_of_a_line(conf: Path) -> None:
    # Given upstream's five markers, written with spaces and in any case, in one file
    group = conf / "example.com"
    marked = "Name = 'x'\n  GROUP= 'example.com'\nservice ='{}'\n[ KeyOpts ]\n[X509]\n"
    (group / "spaced").write_text(marked.format("spaced"))
    # and files where one of them is only in a comment, or inside another line
    (group / "commented").write_text(marked.format("commented").replace("[X509]", "# [X509]"))
    (group / "inline").write_text(marked.format("inline").replace("[X509]", "x = '[x509]'"))
    # Then only the first is a service file
    found = scan_group(group)
    assert "spaced" in found.services
    assert "commented" not in found.services and "inline" not in found.services


def test_many_services_are_ordered_each_after_its_signer_once(
    conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 300 leaves of the intermediate, selected before the CAs, the intermediate first
    group = conf / "example.com"
    web = (group / "web-ec").read_text()
    for i in range(300):
        (group / f"w{i:03d}").write_text(web.replace("service = 'web-ec'", f"service = 'w{i:03d}'"))
    looked: list[ServiceRef] = []
    signer = load_module.signer_of

    def counted(config: Config, ref: ServiceRef) -> ServiceRef | None:
        looked.append(ref)
        return signer(config, ref)

    monkeypatch.setattr(load_module, "signer_of", counted)
    # When they are loaded and ordered
    _, refs = load_config(["example.com:ALL", "ca:my-int,my-root"], conf_dir=conf)
    # Then the root comes first, then the intermediate, then the leaves in the order selected
    leaves = sorted(["mail-ec", "mail-rsa", "web-ec", *(f"w{i:03d}" for i in range(300))])
    assert refs == [
        ServiceRef("ca", "my-root"),
        ServiceRef("ca", "my-int"),
        *(ServiceRef("example.com", name) for name in leaves),
    ]
    # and each service's signer was looked up once
    assert sorted(looked, key=str) == sorted(refs, key=str)
