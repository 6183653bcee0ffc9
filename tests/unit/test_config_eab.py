"""External Account Binding in ``ca-info.conf``: ``ca_eab_kid`` and ``ca_eab_hmac_key_file``,
checked when the configuration loads, and the HMAC key never shown in an error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import REPO

from sslm_tasks.config.load import account_binding, load_config
from sslm_tasks.errors import ConfigError

KID = "kid-1"
#: A 32-byte key in base64url without padding, as the CAs hand them out.
HMAC_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "conf.d", tmp_path / "conf.d")
    return tmp_path / "conf.d"


def key_file(conf: Path, text: str | bytes = HMAC_KEY + "\n", *, mode: int = 0o600) -> Path:
    path = conf.parent / "eab.key"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    return path


def with_acme_ca(conf: Path, *lines: str, ca_type: str = "acme") -> None:
    """Add CA ``zerossl`` to ``ca-info.conf`` with ``lines`` in its table."""
    table = "".join(f"    {line}\n" for line in lines)
    path = conf / "ca-info.conf"
    path.write_text(
        path.read_text()
        + "\n[zerossl]\n"
        + f"    ca_type = '{ca_type}'\n"
        + "    ca_acme_directory = 'https://acme.zerossl.com/v2/DV90'\n"
        + table
    )


def refused(conf: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config([], conf_dir=conf)
    assert HMAC_KEY not in str(caught.value)
    return caught.value


def test_a_binding_loads_and_its_key_is_read_from_its_file(conf: Path) -> None:
    # Given an ACME CA with a kid and a 0600 key file named relative to the topdir
    key_file(conf)
    with_acme_ca(conf, f"ca_eab_kid = '{KID}'", "ca_eab_hmac_key_file = 'eab.key'")
    # When the configuration loads
    config, _ = load_config([], conf_dir=conf)
    # Then the binding names the kid and the file, and the key is read (line end dropped)
    binding = account_binding(config, "zerossl")
    assert binding is not None
    assert (binding.ca, binding.kid, binding.key_file) == ("zerossl", KID, conf.parent / "eab.key")
    assert binding.hmac_key() == HMAC_KEY
    assert HMAC_KEY not in repr(binding)
    assert account_binding(config, "my-int") is None


def test_padding_is_accepted_and_dropped(conf: Path) -> None:
    key_file(conf, "YWJjZA==")
    with_acme_ca(conf, f"ca_eab_kid = '{KID}'", "ca_eab_hmac_key_file = 'eab.key'")
    config, _ = load_config([], conf_dir=conf)
    binding = account_binding(config, "zerossl")
    assert binding is not None and binding.hmac_key() == "YWJjZA"


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o620], ids=lambda mode: f"{mode:04o}")
def test_a_key_file_others_may_read_or_write_is_refused(conf: Path, mode: int) -> None:
    path = key_file(conf, mode=mode)
    with_acme_ca(conf, f"ca_eab_kid = '{KID}'", f"ca_eab_hmac_key_file = '{path}'")
    error = refused(conf)
    assert error.file == str(conf / "ca-info.conf")
    assert (error.key, error.value) == ("zerossl.ca_eab_hmac_key_file", str(path))
    assert f"(mode {mode:04o})" in error.problem and "must be mode 0600" in error.problem


@pytest.mark.parametrize(
    ("given", "missing", "present"),
    [
        (f"ca_eab_kid = '{KID}'", "ca_eab_hmac_key_file", "ca_eab_kid"),
        ("ca_eab_hmac_key_file = 'eab.key'", "ca_eab_kid", "ca_eab_hmac_key_file"),
    ],
)
def test_one_key_without_the_other_is_refused(
    conf: Path, given: str, missing: str, present: str
) -> None:
    key_file(conf)
    with_acme_ca(conf, given)
    error = refused(conf)
    assert error.key == f"zerossl.{missing}"
    assert f"needs both ca_eab_kid and ca_eab_hmac_key_file, and {present} is set" in str(error)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        ("directory", "is not a regular file"),
        (b"\xff\xfe" + HMAC_KEY.encode(), "is not ASCII text"),
        ("\n", "is empty"),
        (HMAC_KEY[:-1] + "/", "does not hold one base64url key"),
        (HMAC_KEY + " second-key", "does not hold one base64url key"),
        (HMAC_KEY + "=a", "does not hold one base64url key"),
        (HMAC_KEY[:5], "of a length no key has"),
    ],
    ids=["missing", "directory", "binary", "empty", "plain-base64", "two", "padding", "length"],
)
def test_a_file_without_one_base64url_key_is_refused_without_quoting_it(
    conf: Path, content: str | bytes | None, problem: str
) -> None:
    path = conf.parent / "eab.key"
    if content == "directory":
        path.mkdir()
    elif content is not None:
        key_file(conf, content)
    with_acme_ca(conf, f"ca_eab_kid = '{KID}'", "ca_eab_hmac_key_file = 'eab.key'")
    error = refused(conf)
    assert (error.key, error.value) == ("zerossl.ca_eab_hmac_key_file", str(path))
    assert error.problem.startswith("HMAC key file ") and problem in error.problem
    assert HMAC_KEY[:5] not in str(error)


def test_a_binding_for_a_local_ca_is_refused(conf: Path) -> None:
    key_file(conf)
    with_acme_ca(conf, f"ca_eab_kid = '{KID}'", "ca_eab_hmac_key_file = 'eab.key'", ca_type="local")
    error = refused(conf)
    assert (error.key, error.value) == ("zerossl.ca_eab_kid", KID)
    assert "External Account Binding is for ACME CAs" in error.problem


def test_an_empty_kid_is_refused(conf: Path) -> None:
    key_file(conf)
    with_acme_ca(conf, "ca_eab_kid = ''", "ca_eab_hmac_key_file = 'eab.key'")
    assert refused(conf).key == "zerossl.ca_eab_kid"


def test_the_key_is_read_again_when_used(conf: Path) -> None:
    # Given a configuration loaded while the key file was fit
    path = key_file(conf)
    with_acme_ca(conf, f"ca_eab_kid = '{KID}'", "ca_eab_hmac_key_file = 'eab.key'")
    config, _ = load_config([], conf_dir=conf)
    binding = account_binding(config, "zerossl")
    assert binding is not None
    # When the file becomes readable by others before an account is registered
    path.chmod(0o644)
    # Then using the key fails, naming the CA's key and the file
    with pytest.raises(ConfigError, match=r"zerossl\.ca_eab_hmac_key_file = .*mode 0644"):
        binding.hmac_key()
