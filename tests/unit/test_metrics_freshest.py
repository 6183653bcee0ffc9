"""A scrape gets a fresh reading, or the last complete one when reading takes longer than it
may wait; the reading it started is served to a later scrape."""

from __future__ import annotations

import itertools
import threading

from sslm_tasks.cli.metrics import Freshest
from sslm_tasks.cli.scrape import Survey

#: Far longer than any of these readings takes: only a reading that waits on the test hits it.
PATIENT_S = 60.0


class Readings(Survey):
    """Readings numbered 0, 1, 2, ...; the one numbered ``held`` waits until released."""

    def __init__(self, held: int | None = None) -> None:
        super().__init__()
        self._numbers = itertools.count()
        self.held = held
        self.release = threading.Event()

    def collect(self) -> bytes:
        number = next(self._numbers)
        if number == self.held:
            self.release.wait()
        return str(number).encode()


def scrape_within(metrics: Freshest, timeout_s: float = PATIENT_S) -> bytes:
    """One scrape, in a thread, so that a scrape that never returns fails the test."""
    got: list[bytes] = []
    scraper = threading.Thread(target=lambda: got.append(metrics.scrape()), daemon=True)
    scraper.start()
    scraper.join(timeout_s)
    assert not scraper.is_alive(), "the scrape did not return"
    return got[0]


def test_a_scrape_gets_the_reading_it_asked_for() -> None:
    metrics = Freshest(Readings(), wait_s=PATIENT_S)  # reading 0 is made at start
    assert scrape_within(metrics) == b"1"
    assert scrape_within(metrics) == b"2"


def test_a_scrape_that_cannot_wait_gets_the_last_reading_and_a_later_one_the_new() -> None:
    # Given an exporter whose next reading (1) will not finish until released
    readings = Readings(held=1)
    metrics = Freshest(readings, wait_s=0.05)

    # When a scrape comes: it gets reading 0, and does not wait for reading 1
    assert scrape_within(metrics) == b"0"

    # When reading 1 may finish, later scrapes get it or a newer one
    readings.release.set()
    seen = b"0"
    for _ in range(1000):
        seen = scrape_within(metrics)
        if seen != b"0":
            break
    assert int(seen) >= 1
