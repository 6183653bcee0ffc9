"""The http-01 token files on a web server (``deploy.webroot``), through the real local
transport: the same ``sh`` script an ssh session runs (tests/integration/test_acme_http01.py
runs it over a real sshd)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from sslm_tasks.deploy.transport import LocalTransport
from sslm_tasks.deploy.webroot import CHALLENGE_DIR, TokenFile, WebRoot, is_token_path
from sslm_tasks.errors import PermanentError, StoreError

TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
KEY_AUTHZ = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
OTHER = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


def token(root: Path, name: str = TOKEN, apex: str = "example.test") -> TokenFile:
    return TokenFile(PurePosixPath(root), apex, name, f"{name}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "www"
    path.mkdir()
    return path


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """A umask that would make files 0600 and directories 0700 if the script trusted it."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def web() -> WebRoot:
    return WebRoot("localhost", LocalTransport(), timeout_s=10)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_token_lives_under_the_apex_whatever_the_name(root: Path) -> None:
    file = TokenFile(PurePosixPath(root), "example.test", TOKEN, KEY_AUTHZ)
    assert file.path == PurePosixPath(root, "example.test", CHALLENGE_DIR, TOKEN)
    assert is_token_path(str(file.path))


@pytest.mark.parametrize(
    ("server_dir", "apex", "name", "authz", "problem"),
    [
        ("srv/www", "example.test", TOKEN, KEY_AUTHZ, "not an absolute path"),
        ("/srv/www", "../etc", TOKEN, KEY_AUTHZ, "not a lower-case host name"),
        ("/srv/www", "example.test", "../../etc/passwd", KEY_AUTHZ, "not base64url"),
        ("/srv/www", "example.test", TOKEN, "x y; rm -rf /", "malformed"),
    ],
)
def test_a_token_that_could_leave_its_directory_is_refused(
    server_dir: str, apex: str, name: str, authz: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        TokenFile(PurePosixPath(server_dir), apex, name, authz)


def test_put_writes_every_token_0644_in_new_0755_directories(
    root: Path, web: WebRoot, strict_umask: None
) -> None:
    # Given a web root with no .well-known yet, and a umask that would hide the files
    files = [token(root), token(root, OTHER)]

    # When the tokens are put
    web.put(files)

    # Then each holds its key authorization and a newline, readable by any web server user
    for file in files:
        path = Path(file.path)
        assert path.read_text() == f"{file.key_authorization}\n"
        assert mode(path) == 0o644
    for directory in (root / "example.test", root / "example.test/.well-known"):
        assert mode(directory) == 0o755
    assert mode(root / "example.test" / CHALLENGE_DIR) == 0o755
    # and no temp file is left beside them
    assert sorted(p.name for p in (root / "example.test" / CHALLENGE_DIR).iterdir()) == sorted(
        [TOKEN, OTHER]
    )


def test_missing_names_absent_and_wrong_files_until_they_are_put(root: Path, web: WebRoot) -> None:
    files = [token(root), token(root, OTHER)]
    assert web.missing(files) == [str(f.path) for f in files]
    web.put(files)
    assert web.missing(files) == []
    # A file someone else changed counts as missing
    Path(files[1].path).write_text("something else\n")
    assert web.missing(files) == [str(files[1].path)]
    # A repeated put rewrites it
    web.put(files)
    assert web.missing(files) == []


def test_remove_deletes_only_the_given_tokens_and_is_idempotent(root: Path, web: WebRoot) -> None:
    mine, theirs = token(root), token(root, OTHER)
    web.put([mine, theirs])
    web.remove([str(mine.path)])
    assert not Path(mine.path).exists()
    assert Path(theirs.path).exists()
    web.remove([str(mine.path)])  # already gone: fine
    assert (root / "example.test" / CHALLENGE_DIR).is_dir()  # the operator's tree stays


def test_remove_refuses_paths_that_are_not_tokens(root: Path, web: WebRoot) -> None:
    victim = root / "index.html"
    victim.write_text("keep me\n")
    with pytest.raises(StoreError, match="not http-01 token paths"):
        web.remove([str(victim), str(root / ".well-known/acme-challenge/../../index.html")])
    assert victim.exists()


def test_a_web_root_that_does_not_exist_fails_naming_host_and_path(
    tmp_path: Path, web: WebRoot
) -> None:
    missing = tmp_path / "no-such-www"
    with pytest.raises(PermanentError) as failed:
        web.put([token(missing)])
    message = str(failed.value)
    assert message.startswith("writing http-01 tokens on localhost:"), message
    assert f"web root {missing} is not a directory" in message
    assert not missing.exists()


def test_nothing_to_put_or_check_runs_nothing(root: Path, web: WebRoot) -> None:
    web.put([])
    web.remove([])
    assert web.missing([]) == []
    assert list(root.iterdir()) == []
