"""Hostile input (issue 10, item 5): every bad value is one line naming the file, the key and the
value, exit 2, and not one byte of the tree changes; a log that cannot be written is one line,
never a traceback; the log file is 0640 whatever the umask; nothing is created in /var/log unasked.

Each bad configuration is built from the working example (``conf.d/`` of the repo) after the
example was issued once, so "nothing changed" is checked on a tree holding keys, certificates,
production copies and a log, and a forced renew would have changed all of them.

The /var/log and file system tests run sslm-mgr in its own mount namespace (``unshare
--mount``): a tmpfs over /var/log, a read-only bind mount over ``logs/``, a small tmpfs that is
full. They need root, as the rest of the suite; without it they fail, they do not skip.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import REPO, RunMgr, edit, run_tool, tree_snapshot

from sslm_tasks.store.identity import RACY_S

MAIN = "ssl-mgr.conf"
WEB = "example.com/web-ec"
INT = "ca/my-int"
#: A forced renew and roll of everything: with a good configuration it changes every service.
RENEW_ALL = ("-f", "-renew", "-roll")
#: The file a command-line error names.
COMMAND_LINE = "command line"
#: "The error has no value to show" (a parse error, a bad key name).
NO_VALUE = object()


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it from the example, and what the error line must name."""

    id: str
    file: str  # under conf.d/, or COMMAND_LINE; as the line shows it (a newline as \\n)
    make: Callable[[Path], None]  # given conf.d/
    key: str
    value: object = NO_VALUE  # the value as TOML gives it; shown in the line as its repr
    problem: str = ""  # a part of what the line says after the value
    args: tuple[str, ...] = RENEW_ALL


def replace(file: str, old: str, new: str) -> Callable[[Path], None]:
    return lambda conf: edit(conf / file, old, new)


def write_bytes(file: str, data: bytes) -> Callable[[Path], None]:
    return lambda conf: (conf / file).write_bytes(data)


def replace_bytes(file: str, old: bytes, new: bytes) -> Callable[[Path], None]:
    def make(conf: Path) -> None:
        data = (conf / file).read_bytes()
        assert old in data
        (conf / file).write_bytes(data.replace(old, new, 1))

    return make


def nothing(conf: Path) -> None:
    """The configuration stays good: the bad value is on the command line."""


def add_group_file_named(name: str) -> Callable[[Path], None]:
    """A service file called ``name`` in example.com, found by ``services = 'ALL'``."""

    def make(conf: Path) -> None:
        text = (conf / WEB).read_text().replace("service = 'web-ec'", f"service = {name!r}")
        (conf / "example.com" / name).write_text(text)
        edit(conf / MAIN, "services = ['mail-ec', 'mail-rsa', 'web-ec']", "services = 'ALL'")

    return make


def set_main(line: str, section: str = "[globals]") -> Callable[[Path], None]:
    """``line`` added at the top of ``section`` of ssl-mgr.conf (appended if it is new)."""

    def make(conf: Path) -> None:
        text = (conf / MAIN).read_text()
        if section in text:
            edit(conf / MAIN, section, f"{section}\n    {line}")
        else:
            (conf / MAIN).write_text(f"{text}\n{section}\n    {line}\n")

    return make


def deeply_nested(depth: int) -> str:
    return "[" * depth + "]" * depth


FINITE = "Input should be a finite number"
AT_MOST = "Input should be less than or equal to"
DOMAIN = "not a lower-case domain name"
SERVICE = "must be 1 to 255 bytes of printable characters"
NOT_A_NAME = "is neither an IP address nor a DNS name"

ENCODING_AND_SYNTAX = [
    Case("utf8-main", MAIN, write_bytes(MAIN, b"[globals]\n    logdir = 'l\xffgs'\n"),
         "(encoding)", b"\xff", "not UTF-8 text (line 2, column 16)"),
    Case("utf8-ca-info", "ca-info.conf",
         write_bytes("ca-info.conf", b"[my-root]\n    ca_desc = '\xc3\x28'\n"),
         "(encoding)", b"\xc3", "not UTF-8 text (line 2, column 16)"),
    Case("utf8-service", WEB, replace_bytes(WEB, b"Example Company", b"Example \xfeCompany"),
         "(encoding)", b"\xfe", "not UTF-8 text"),
    Case("nested-array-main", MAIN,
         replace(MAIN, "min_roll_mins = 90", f"min_roll_mins = {deeply_nested(5000)}"),
         "(toml)", problem="nested too deeply"),
    Case("nested-array-service", WEB,
         replace(WEB, "sans = [", f"sans = [{deeply_nested(5000)}, "),
         "(toml)", problem="nested too deeply"),
    Case("ca-info-is-a-directory", "ca-info.conf",
         lambda conf: ((conf / "ca-info.conf").unlink(), (conf / "ca-info.conf").mkdir()),
         "(file)", problem="unreadable: Is a directory"),
    Case("key-with-newline", MAIN, set_main('"bad\\nkey" = 1'), "globals.bad\\nkey", 1,
         "unknown key"),
]  # fmt: skip

NAMES = [
    Case("group-slash", MAIN, replace(MAIN, "domain = 'example.com'", "domain = 'a/b'"),
         "groups.1.domain", "a/b", DOMAIN),
    Case("group-dotdot", MAIN, replace(MAIN, "domain = 'example.com'", "domain = '..'"),
         "groups.1.domain", "..", DOMAIN),
    Case("group-nul", MAIN, replace(MAIN, "domain = 'example.com'", 'domain = "a\\u0000b"'),
         "groups.1.domain", "a\x00b", DOMAIN),
    Case("group-dash-rf", MAIN, replace(MAIN, "domain = 'example.com'", "domain = '-rf'"),
         "groups.1.domain", "-rf", f"{DOMAIN}: it has the label '-rf'"),
    Case("group-with-space", MAIN,
         replace(MAIN, "domain = 'example.com'", "domain = 'my group'"),
         "groups.1.domain", "my group", DOMAIN),
    Case("group-upper-case", MAIN,
         replace(MAIN, "domain = 'example.com'", "domain = 'Example.com'"),
         "groups.1.domain", "Example.com", f"{DOMAIN}: it has upper-case letters"),
    Case("group-trailing-dot", MAIN,
         replace(MAIN, "domain = 'example.com'", "domain = 'example.com.'"),
         "groups.1.domain", "example.com.", f"{DOMAIN}: it ends with a dot"),
    Case("service-path", MAIN, replace(MAIN, "'mail-ec', 'mail-rsa'", "'../../etc', 'mail-rsa'"),
         "groups.1.services.0", "../../etc", SERVICE),
    Case("service-nul", MAIN, replace(MAIN, "'mail-ec', 'mail-rsa'", '"mail\\u0000ec", "x"'),
         "groups.1.services.0", "mail\x00ec", SERVICE),
    Case("service-control-char", MAIN,
         replace(MAIN, "'mail-ec', 'mail-rsa'", '"mail\\u001bec", "x"'),
         "groups.1.services.0", "mail\x1bec", SERVICE),
    Case("service-newline", MAIN, replace(MAIN, "'mail-ec', 'mail-rsa'", '"mail-ec\\n", "x"'),
         "groups.1.services.0", "mail-ec\n", SERVICE),
    Case("service-file-name-by-all", "example.com/web\\nec", add_group_file_named("web\nec"),
         "(file name)", "web\nec", f"not a service name: {SERVICE}"),
    Case("svc-depends-group", MAIN,
         set_main("svc_depends = [['-rf', ['mail-ec']]]", section="[smtp]"),
         "smtp.svc_depends.0.0", "-rf", DOMAIN),
    Case("cmdline-group-slash", COMMAND_LINE, nothing, "grps_svcs", "a/b:web-ec",
         f"group 'a/b': {DOMAIN}", args=("-renew", "a/b:web-ec")),
    Case("cmdline-group-dotdot", COMMAND_LINE, nothing, "grps_svcs", "../etc:passwd",
         f"group '../etc': {DOMAIN}", args=("-renew", "../etc:passwd")),
    Case("cmdline-group-space", COMMAND_LINE, nothing, "grps_svcs", "my group:web-ec",
         f"group 'my group': {DOMAIN}", args=("-renew", "my group:web-ec")),
    Case("cmdline-service-dotdot", COMMAND_LINE, nothing, "grps_svcs", "example.com:..",
         f"service '..': {SERVICE}", args=("-renew", "example.com:..")),
    Case("cmdline-service-control-char", COMMAND_LINE, nothing, "grps_svcs",
         "example.com:web\x01ec", SERVICE, args=("-renew", "example.com:web\x01ec")),
    # An argument that is not UTF-8 reaches Python as a lone surrogate.
    Case("cmdline-service-not-utf8", COMMAND_LINE, nothing, "grps_svcs", "example.com:\udcff",
         SERVICE, args=("-renew", "example.com:\udcff")),
]  # fmt: skip

HOSTS = [
    Case("cn-long-s", WEB, replace(WEB, "CN = 'example.com'", "CN = '\u017fmtp.example.com'"),
         "X509.CN", "\u017fmtp.example.com", f"{NOT_A_NAME}: it has non-ASCII characters"),
    Case("cn-dotted-capital-i", WEB,
         replace(WEB, "CN = 'example.com'", "CN = '\u0130.example.com'"),
         "X509.CN", "\u0130.example.com", f"{NOT_A_NAME}: it has non-ASCII characters"),
    Case("cn-longer-than-64", WEB,
         replace(WEB, "CN = 'example.com'", f"CN = '{'a' * 60}.example.com'"),
         "X509.CN", f"{'a' * 60}.example.com", "length must be >= 1 and <= 64"),
    Case("san-two-trailing-dots", WEB,
         replace(WEB, "'www.example.com'", "'www.example.com..'"),
         "X509.sans.1", "www.example.com..", f"{NOT_A_NAME}: it ends with a dot"),
    Case("san-final-newline", WEB, replace(WEB, "'www.example.com'", '"www.example.com\\n"'),
         "X509.sans.1", "www.example.com\n", NOT_A_NAME),
    Case("san-ipv6-zone", WEB, replace(WEB, "'www.example.com'", "'fe80::1%x y'"),
         "X509.sans.1", "fe80::1%x y", "an IPv6 address with a zone index"),
    Case("san-ipv4-with-dot", WEB, replace(WEB, "'www.example.com'", "'1.2.3.4.'"),
         "X509.sans.1", "1.2.3.4.", NOT_A_NAME),
    Case("san-ipv4-out-of-range", WEB, replace(WEB, "'www.example.com'", "'256.1.2.3'"),
         "X509.sans.1", "256.1.2.3", f"{NOT_A_NAME}: it ends with an all-numeric label"),
    Case("san-underscore", WEB, replace(WEB, "'www.example.com'", "'_dmarc.example.com'"),
         "X509.sans.1", "_dmarc.example.com", NOT_A_NAME),
    Case("country-not-letters", WEB, replace(WEB, "C = 'US'", 'C = "U\\n"'), "X509.C", "U\n",
         "a country code is two letters"),
    Case("server-is-an-ssh-option", MAIN,
         set_main("servers = ['-oProxyCommand=touch x']", section="[web]"),
         "web.servers.0", "-oProxyCommand=touch x", "not a host name ssh can connect to"),
]  # fmt: skip

NUMBERS = [
    *(
        Case(f"min-roll-mins-{text}", MAIN,
             replace(MAIN, "min_roll_mins = 90", f"min_roll_mins = {text}"),
             "globals.min_roll_mins", value, problem)
        for text, value, problem in (
            ("inf", float("inf"), FINITE), ("nan", float("nan"), FINITE),
            ("1e300", 1e300, f"{AT_MOST} 525600"),
        )
    ),
    *(
        Case(f"renew-info-{text}", MAIN, replace(MAIN, "target_90 = 30", f"target_90 = {text}"),
             "renew_info.target_90", value, problem)
        for text, value, problem in (
            ("inf", float("inf"), FINITE), ("nan", float("nan"), FINITE),
            ("1e300", 1e300, f"{AT_MOST} 36500"),
        )
    ),
    *(
        Case(f"sign-end-days-{text}", INT,
             replace(INT, "sign_end_days = 90", f"sign_end_days = {text}"),
             "CA.sign_end_days", value, problem)
        for text, value, problem in (
            ("inf", float("inf"), FINITE), ("nan", float("nan"), FINITE),
            ("1e300", 1e300, f"{AT_MOST} 36500"),
            ("1e-9", 1e-9, "Input should be greater than or equal to 0.001"),
        )
    ),
    Case("renew-info-spread-boolean", MAIN,
         replace(MAIN, "rand_adj_120 = 5", "rand_adj_120 = true"), "renew_info.rand_adj_120",
         True, "Input should be a valid number"),
    Case("renew-info-key-1e400", MAIN, replace(MAIN, "target_90 = 30", "target_1e400 = 30"),
         "renew_info.target_1e400", problem="unknown key (expected target_<days>"),
    Case("renew-info-key-huge-lifetime", MAIN,
         replace(MAIN, "target_90 = 30", f"target_{'9' * 400} = 30"),
         f"renew_info.target_{'9' * 400}", problem="a lifetime of more than 36500 days"),
    Case("dns-check-delay-inf", MAIN, set_main("dns_check_delay = inf"),
         "globals.dns_check_delay", float("inf"), FINITE),
    Case("dns-check-delay-minus-1e300", MAIN, set_main("dns_check_delay = -1e300"),
         "globals.dns_check_delay", -1e300, "Input should be greater than or equal to -86400"),
    Case("renew-expire-days-inf", MAIN, set_main("renew_expire_days = inf"),
         "globals.renew_expire_days", float("inf"), FINITE),
    Case("renew-expire-days-spread-nan", MAIN, set_main("renew_expire_days_spread = nan"),
         "globals.renew_expire_days_spread", float("nan"), FINITE),
    Case("service-renew-expire-days-1e300", WEB,
         replace(WEB, "signing_ca = 'my-int'", "signing_ca = 'my-int'\nrenew_expire_days = 1e300"),
         "renew_expire_days", 1e300, f"{AT_MOST} 36500"),
    Case("dane-tls-ttl-2-to-the-32", WEB,
         replace(WEB, "signing_ca = 'my-int'", "signing_ca = 'my-int'\ndane_tls_ttl = 4294967296"),
         "dane_tls_ttl", 2**32, f"{AT_MOST} 2147483647"),
    Case("dane-tls-ttl-negative", WEB,
         replace(WEB, "signing_ca = 'my-int'", "signing_ca = 'my-int'\ndane_tls_ttl = -1"),
         "dane_tls_ttl", -1, "Input should be greater than or equal to 0"),
]  # fmt: skip

IN_THE_STORE = "must not be inside the store"
TREES = [
    Case("prod-cert-dir-root", MAIN,
         replace(MAIN, "prod_cert_dir = 'prod-certs'", "prod_cert_dir = '/'"),
         "globals.prod_cert_dir", "/", "must not be the root directory"),
    Case("prod-cert-dir-in-store", MAIN,
         replace(MAIN, "prod_cert_dir = 'prod-certs'", "prod_cert_dir = 'certs/ca'"),
         "globals.prod_cert_dir", "certs/ca", IN_THE_STORE),
    Case("logdir-root", MAIN, replace(MAIN, "logdir = 'logs'", "logdir = '/'"),
         "globals.logdir", "/", "must not be the root directory"),
    Case("tlsa-dirs-root", MAIN, set_main("tlsa_dirs = ['/']", section="[dns]"),
         "dns.tlsa_dirs[0]", "/", "must not be the root directory"),
    Case("acme-dir-store", MAIN, set_main("acme_dir = 'certs'", section="[dns]"),
         "dns.acme_dir[0]", "certs", IN_THE_STORE),
    Case("logdir-is-a-file", MAIN,
         replace(MAIN, "logdir = 'logs'", "logdir = 'conf.d/ca-info.conf'"),
         "globals.logdir", "conf.d/ca-info.conf", "ca-info.conf exists and is not a directory"),
    Case("prod-cert-dir-under-a-file", MAIN,
         replace(MAIN, "prod_cert_dir = 'prod-certs'", "prod_cert_dir = 'conf.d/ca-info.conf/p'"),
         "globals.prod_cert_dir", "conf.d/ca-info.conf/p",
         "ca-info.conf exists and is not a directory"),
]  # fmt: skip

KINDS = {
    "encoding": ENCODING_AND_SYNTAX,
    "names": NAMES,
    "hosts": HOSTS,
    "numbers": NUMBERS,
    "trees": TREES,
}
CASES = [
    pytest.param(case, id=f"{kind}:{case.id}") for kind, cases in KINDS.items() for case in cases
]


@pytest.fixture(scope="module")
def issued_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example configuration after its first ``-renew -roll``: every service has ``curr``."""
    top = tmp_path_factory.mktemp("issued") / "top"
    shutil.copytree(REPO / "conf.d", top / "conf.d")
    result = run_tool("sslm-mgr", "-renew", "-roll", cwd=top)
    assert result.returncode == 0, result.stdout + result.stderr
    return top


@pytest.fixture
def issued(topdir: Path, issued_example: Path) -> Path:
    """The test's topdir (where the ``mgr`` fixture runs) holding a copy of the issued example."""
    shutil.rmtree(topdir)
    shutil.copytree(issued_example, topdir, symlinks=True)
    return topdir


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused run prints; fails when there is more, or any traceback."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


def test_the_cases_cover_the_issue() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_naming_file_key_and_value_and_changes_nothing(
    issued: Path, mgr: RunMgr, case: Case
) -> None:
    # Given an issued tree and one bad value made from the working example
    case.make(issued / "conf.d")
    before = tree_snapshot(issued)
    # When a forced renew and roll runs (or the bad command line)
    result = mgr(*case.args)
    # Then it exits 2 with one line naming the file, the key and the value, and nothing else
    assert result.returncode == 2, result.stdout + result.stderr
    line = error_line(result)
    source = COMMAND_LINE if case.file == COMMAND_LINE else str(issued / "conf.d" / case.file)
    shown = ":" if case.value is NO_VALUE else f" = {case.value!r}:"
    assert f"Error: {source}: {case.key}{shown} " in line, line
    assert case.problem in line.partition(f"{case.key}{shown} ")[2], line
    assert result.stdout == ""
    # and not one byte of the tree changed (no log line, no lock, no certificate)
    assert tree_snapshot(issued) == before


def test_a_roll_wait_that_is_not_a_number_of_minutes_is_a_usage_error(
    issued: Path, mgr: RunMgr
) -> None:
    # Given a renewed next waiting for its roll
    assert mgr("-f", "-renew", "example.com:web-ec").returncode == 0
    before = tree_snapshot(issued)
    for minutes in ("nan", "inf", "-1", "-5", "1e300"):
        # When the roll is given that wait (nan compared false with every age: it rolled at once)
        result = mgr("-roll", "-roll-mins", minutes, "example.com:web-ec")
        # Then argparse refuses it, naming the value, and nothing changed
        assert result.returncode == 2, result.stdout
        assert f"-roll-mins/--min-roll-mins: {minutes!r}: minutes from 0 to" in result.stderr
        assert tree_snapshot(issued) == before


def test_a_topdir_that_cannot_be_looked_up_is_one_line(issued: Path) -> None:
    # Given SSL_MGR_TOPDIR naming a path longer than the system takes
    before = tree_snapshot(issued)
    result = run_tool("sslm-mgr", "-renew", cwd=issued, env={"SSL_MGR_TOPDIR": "/" + "t" * 5000})
    # Then the run stops with one line saying why
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Error: reading the configuration: [Errno 36] File name too long" in error_line(result)
    assert tree_snapshot(issued) == before


# --------------------------------------------------------------------------- the log


def in_mount_namespace(setup: str, after: str = "") -> list[str]:
    """A wrapper for :func:`run_tool`: run the tool in a new mount namespace after the shell
    commands ``setup`` (mounts seen by nobody else), then ``after``; the tool's exit status is
    kept. A failed ``setup`` exits 97, so a test that could not arrange its file system fails."""
    script = f'{{ {setup}; }} || exit 97; "$@"; status=$?; {after or ":"}; exit $status'
    return ["unshare", "--mount", "sh", "-c", script, "sh"]


def test_an_empty_ssl_mgr_conf_does_not_create_var_log_ssl_mgr(
    topdir: Path, tmp_path: Path
) -> None:
    # Given an empty ssl-mgr.conf, and a /var/log without ssl-mgr (a tmpfs of this test's own)
    (topdir / "conf.d/ssl-mgr.conf").write_text("")
    before = tree_snapshot(topdir)
    listing = tmp_path / "var-log-after"
    wrapper = in_mount_namespace(
        "mount -t tmpfs -o size=1m sslm-test /var/log", f"ls -A /var/log > {listing}"
    )
    # When a run starts
    result = run_tool("sslm-mgr", "-renew", cwd=topdir, wrapper=wrapper)
    # Then it stops naming the missing setting and the default it will not create
    assert result.returncode == 2, result.stdout + result.stderr
    line = error_line(result)
    assert f"{topdir / 'conf.d/ssl-mgr.conf'}: globals.logdir: not set" in line, line
    assert "/var/log/ssl-mgr does not exist" in line
    # and nothing was created, neither in /var/log nor in the topdir
    assert listing.read_text() == ""
    assert tree_snapshot(topdir) == before


def test_an_unset_logdir_logs_to_the_default_when_it_exists(topdir: Path, tmp_path: Path) -> None:
    # Given the example without its logdir line, and an existing /var/log/ssl-mgr (in a tmpfs)
    edit(topdir / "conf.d/ssl-mgr.conf", "logdir = 'logs'", "")
    seen = tmp_path / "seen"
    wrapper = in_mount_namespace(
        "mount -t tmpfs -o size=1m sslm-test /var/log && mkdir /var/log/ssl-mgr",
        f"stat -c %a /var/log/ssl-mgr/sslm > {seen}.mode; cat /var/log/ssl-mgr/sslm > {seen}",
    )
    # When a run issues the example
    result = run_tool("sslm-mgr", "-renew", cwd=topdir, wrapper=wrapper)
    # Then it logged there, 0640, and made no logs/ of its own
    assert result.returncode == 0, result.stdout + result.stderr
    assert "example.com:web-ec" in seen.read_text()
    assert Path(f"{seen}.mode").read_text().strip() == "640"
    assert not (topdir / "logs").exists()


def test_a_read_only_log_directory_is_one_error_line_before_anything_is_written(
    issued: Path, mgr: RunMgr
) -> None:
    # Given an issued tree whose logs/ is a read-only mount (root cannot write there either)
    logs = shlex.quote(str(issued / "logs"))
    wrapper = in_mount_namespace(f"mount --bind {logs} {logs} && mount -o remount,bind,ro {logs}")
    # and old enough for a run to remember its configuration (certs/.config-remembered): a run
    # that stops here must not
    time.sleep(RACY_S + 0.1)
    before = tree_snapshot(issued)
    # When a forced renew and roll runs
    result = run_tool("sslm-mgr", *RENEW_ALL, cwd=issued, wrapper=wrapper)
    # Then it fails with one line naming the log file and why, and wrote nothing at all
    assert result.returncode == 1, result.stdout + result.stderr
    line = error_line(result)
    assert f"{issued / 'logs/sslm'}: cannot write the log: Read-only file system" in line
    assert result.stdout == ""
    assert tree_snapshot(issued) == before


def fill_up(mount_point: str, *, leave_kib: int) -> str:
    """Shell commands: fill the file system at ``mount_point`` up to ``leave_kib`` KiB free."""
    avail = f"$(df -k --output=avail {mount_point} | tail -n 1)"
    return (
        f"dd if=/dev/zero of={mount_point}/.filler bs=1024 count=$(({avail} - {leave_kib}))"
        " status=none"
    )


def test_a_full_log_disk_is_reported_once_and_the_run_goes_on(issued: Path) -> None:
    # Given an issued tree whose logs/ is a file system with no room left
    logs = shlex.quote(str(issued / "logs"))
    wrapper = in_mount_namespace(
        f"mount -t tmpfs -o size=64k sslm-test {logs} && {fill_up(logs, leave_kib=0)}"
    )
    renewed = tree_snapshot(issued / "certs/example.com/web-ec")
    # When a renew runs
    result = run_tool("sslm-mgr", "-f", "-renew", "example.com:web-ec", cwd=issued, wrapper=wrapper)
    # Then one line says the log cannot be written, and the renewal still happened
    assert result.returncode == 0, result.stdout + result.stderr
    line = error_line(result)
    assert f"{issued / 'logs/sslm'}: cannot write the log" in line
    assert "No space left on device" in line
    assert "next is " in result.stdout
    assert tree_snapshot(issued / "certs/example.com/web-ec") != renewed


@pytest.mark.parametrize("leave_kib", [0, 16, 48])
def test_a_full_disk_under_the_store_fails_without_a_traceback(
    issued: Path, tmp_path: Path, leave_kib: int
) -> None:
    # Given the issued tree on a small file system with only a few KiB left (less than a renewal
    # of the five services writes)
    top = tmp_path / "small"
    top.mkdir()
    quoted = shlex.quote(str(top))
    wrapper = in_mount_namespace(
        f"mount -t tmpfs -o size=4m sslm-test {quoted} && cp -a {shlex.quote(str(issued))}/. "
        f"{quoted}/ && {fill_up(quoted, leave_kib=leave_kib)}"
    )
    # When a forced renew and roll runs there
    result = run_tool("sslm-mgr", *RENEW_ALL, cwd=top, wrapper=wrapper)
    output = result.stdout + result.stderr
    # Then it fails naming the full disk, and no traceback reaches the operator
    assert result.returncode == 1, output
    assert "No space left on device" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("umask", [0o077, 0o000, 0o022], ids=["077", "000", "022"])
def test_log_files_are_created_0640_whatever_the_umask(topdir: Path, umask: int) -> None:
    # Given a log that is one line short of rotating
    logs = topdir / "logs"
    logs.mkdir()
    (logs / "sslm").write_text("x" * 204_790 + "\n")
    os.chmod(logs / "sslm", 0o600)
    # When a run under that umask logs (and so rotates)
    wrapper = ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh"]
    result = run_tool("sslm-mgr", "-renew", cwd=topdir, wrapper=wrapper)
    assert result.returncode == 0, result.stdout + result.stderr
    # Then the new log file is 0640 exactly, and the old one kept its mode as it was rotated
    assert (logs / "sslm.1").stat().st_mode & 0o7777 == 0o600
    assert (logs / "sslm").stat().st_mode & 0o7777 == 0o640
    assert "example.com:web-ec" in (logs / "sslm").read_text()
