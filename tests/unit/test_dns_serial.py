"""SOA serial comparison (RFC 1982 serial arithmetic) and the result's summary line."""

from __future__ import annotations

import pytest

from sslm_tasks.dns.propagation import SERIAL_MODULUS, PropagationResult, serial_at_least

TOP = SERIAL_MODULUS - 1


@pytest.mark.parametrize(
    ("served", "target"),
    [
        (2026010101, 2026010101),  # the primary's own serial
        (2026010102, 2026010101),  # a secondary already one change ahead: upstream said no
        (2026020100, 2026010101),
        (0, TOP),  # wrapped past 2**32 - 1
        (5, TOP - 5),
        (2**31 - 1, 0),  # the farthest ahead that still counts as newer
    ],
)
def test_same_or_newer_serial_counts_as_caught_up(served: int, target: int) -> None:
    assert serial_at_least(served, target)


@pytest.mark.parametrize(
    ("served", "target"),
    [
        (2026010100, 2026010101),
        (1, 2026010101),
        (TOP, 0),  # 2**32 - 1 is one step *behind* 0 after the wrap
        (2**31, 0),  # exactly half the circle apart: undefined, so not caught up
        (0, 2**31),
    ],
)
def test_older_or_undefined_serial_lags(served: int, target: int) -> None:
    assert not serial_at_least(served, target)


@pytest.mark.parametrize(("served", "target"), [(-1, 0), (0, SERIAL_MODULUS)])
def test_serial_outside_32_bits_is_rejected(served: int, target: int) -> None:
    with pytest.raises(ValueError, match="32-bit"):
        serial_at_least(served, target)


def test_summary_names_every_lagging_server_and_what_it_served() -> None:
    # Given one server caught up and one that lags
    result = PropagationResult(
        ok=False,
        expected="example.test SOA serial >= 7 (the primary's)",
        caught_up=["ns1.example.test (127.0.0.53)"],
        lagging=["ns2.example.test (127.0.0.54): serial 6"],
    )
    # Then the summary says who lags with what, and how many servers are current
    assert result.summary() == (
        "example.test SOA serial >= 7 (the primary's): served by 1 of 2 servers; "
        "lagging: ns2.example.test (127.0.0.54): serial 6"
    )
