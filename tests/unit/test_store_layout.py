"""The path builder: upstream's tree, and names that cannot escape it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslm_tasks.errors import StoreError
from sslm_tasks.store.layout import (
    Layout,
    ServiceRef,
    check_group,
    group_problem,
    host_name_problem,
    lock_file_name,
)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(topdir=tmp_path / "top", prod_dir=tmp_path / "prod")


def test_paths_follow_the_upstream_tree(layout: Layout, tmp_path: Path) -> None:
    # Given a service
    ref = ServiceRef("example.com", "mail")
    svc = tmp_path / "top" / "certs" / "example.com" / "mail"
    # Then every path is where upstream put it
    assert layout.service_dir(ref) == svc
    assert layout.version_dir(ref, "20260101-00:00:00") == svc / "db" / "20260101-00:00:00"
    assert layout.link(ref, "next") == svc / "next"
    assert layout.cb_dir(ref) == svc / "cb"
    assert layout.state_file(ref) == svc / "state.json"
    assert layout.group_tlsa("example.com") == svc.parent / "tlsa.example.com"
    prod = tmp_path / "prod" / "example.com"
    assert layout.prod_group_dir("example.com") == prod
    assert layout.prod_version_dir(ref, "curr") == prod / "mail" / "curr"
    assert layout.lock_file() == tmp_path / "top" / "certs" / ".sslm.lock"


def test_service_ref_prints_as_group_colon_service() -> None:
    assert str(ServiceRef("example.com", "mail")) == "example.com:mail"


@pytest.mark.parametrize(
    "bad",
    ["", "a/b", "..", "a..b", "x\0y", ".hidden", "/abs", "mail\x07", "web\n", "\udcff", "s" * 256],
)
def test_unsafe_names_are_refused(layout: Layout, bad: str) -> None:
    # When an unsafe name is used as a service, a group or a group path, then it is refused
    with pytest.raises(StoreError, match="unsafe service name"):
        ServiceRef("example.com", bad)
    with pytest.raises(StoreError, match="bad group name"):
        ServiceRef(bad, "svc")
    with pytest.raises(StoreError, match="bad group name"):
        layout.group_dir(bad)


def test_a_service_name_may_be_any_printable_file_name() -> None:
    for name in ("mail-ec", "web ec", "café", "ALL", "s" * 255):
        assert ServiceRef("example.com", name).service == name


@pytest.mark.parametrize("good", ["ca", "example.com", "xn--bcher-kva.example", "a-1.b2", "g"])
def test_a_group_is_a_lower_case_domain_name(good: str) -> None:
    assert check_group(good) == good


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("-rf", "the label '-rf'"),
        ("my group", "the label 'my group'"),
        ("Example.com", "upper-case"),
        ("example.com.", "ends with a dot"),
        ("example..com", "empty label"),
        ("example.com\n", "the label 'com\\n'"),
        ("\u017fmtp.example.com", "non-ASCII"),
        ("\u0130.example.com", "non-ASCII"),
        ("1.2.3.4", "all-numeric"),
        ("a" * 64 + ".com", "at most 63"),
        ("*.example.com", "the label '*'"),
    ],
)
def test_a_group_that_is_no_domain_name_is_refused(bad: str, problem: str) -> None:
    assert problem in (group_problem(bad) or "")
    with pytest.raises(StoreError, match="bad group name"):
        check_group(bad)


def test_host_names_allow_a_wildcard_only_when_asked_and_stop_at_253() -> None:
    assert host_name_problem("*.example.com", wildcard=True) is None
    assert host_name_problem("*.example.com") is not None
    assert host_name_problem("www.*.example.com", wildcard=True) is not None
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(longest) == 253 and host_name_problem(longest) is None
    assert "longer than 253" in (host_name_problem(longest + "b") or "")


@pytest.mark.parametrize(
    "bad",
    [
        "2026-01-01",
        "../../etc",
        "20260101-00:00:0x",
        "",
        "20260101-00:00:00\n",
        "٢" * 8 + "-00:00:00",
    ],
)
def test_bad_stamps_are_refused(layout: Layout, bad: str) -> None:
    with pytest.raises(StoreError, match="stamp"):
        layout.version_dir(ServiceRef("g", "s"), bad)
    assert layout.stamp_of_target(f"db/{bad}") is None


def test_link_target_round_trips(layout: Layout) -> None:
    # Given a stamp, when it is turned into a link target and back, then it is unchanged
    target = layout.link_target("20260101-12:00:00")
    assert target == "db/20260101-12:00:00"
    assert layout.stamp_of_target(target) == "20260101-12:00:00"
    assert layout.stamp_of_target("/elsewhere/20260101-12:00:00") is None


def test_lock_file_names_are_distinct_hidden_and_bounded() -> None:
    # Given names that a lossy sanitiser would merge or that try to escape
    names = ["renew:a.com:mail", "renew:a.com/mail", "renew:a.com%2Fmail", "../x", "x" * 1000]
    files = [lock_file_name(n) for n in names]
    # Then each gets its own single-component, hidden, short file name
    assert len(set(files)) == len(files)
    assert all("/" not in f and f.startswith(".") and len(f) < 255 for f in files)
    assert files[0] == ".renew:a.com:mail.lock"
