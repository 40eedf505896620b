"""Drop logging: one line per kind of reason, every drop counted, and a bounded memory even when
the sender varies every value it can."""

from __future__ import annotations

import logging

import pytest

from doorstep.core.droplog import DropLog


def test_one_line_per_kind_and_a_bounded_number_of_kinds(
        caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.droplog")
    drops = DropLog(log, "dropped", limit=3)
    with caplog.at_level(logging.WARNING, logger="test.droplog"):
        for n in range(100):
            drops(f"counter {n} is not above 7 (replayed)")     # one kind, many values
        drops("version 'x' unsupported")
        for n in range(100):
            drops(f"kind{chr(97 + n % 26)} of reason")          # attacker-made kinds
    assert drops.count == 201
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "dropped: counter 0 is not above 7 (replayed)"
    assert sum("replayed" in line for line in lines) == 1
    reasons = [line for line in lines if "only counting new ones" not in line]
    assert len(reasons) == 3
    assert any("only counting new ones" in line for line in lines)


def test_a_flood_from_elsewhere_cannot_hide_a_known_devices_anomaly(
        caplog: pytest.LogCaptureFixture) -> None:
    # issue 13 item 6: 256 drops on distinct topics used to spend every kind, and a forged
    # manifest on the real device's topic was then not logged at all
    log = logging.getLogger("test.droplog")
    drops = DropLog(log, "inbox: dropped", limit=8, reserved={"frontdoor"}, sources=4)
    with caplog.at_level(logging.WARNING, logger="test.droplog"):
        for n in range(1000):
            drops(f"unknown device on topic level {chr(65 + n % 26)}x{n}", source=f"dev{n}")
            drops(f"reason kind {chr(65 + n % 26)}{chr(97 + n % 7)}", source=f"dev{n}")
        caplog.clear()
        drops("manifest seq 5: bad signature", source="frontdoor")
    assert [r.getMessage() for r in caplog.records] == [
        "inbox: dropped (frontdoor): manifest seq 5: bad signature"]
    counts = drops.counts()
    assert counts["frontdoor"] == 1 and sum(counts.values()) == 2001 == drops.count
    assert len(counts) <= 4 + 2                  # memory stays bounded: 4 told apart, rest lumped


def test_the_periodic_report_says_what_was_dropped_since_the_last(
        caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.droplog")
    drops = DropLog(log, "uplink: dropped")
    with caplog.at_level(logging.WARNING, logger="test.droplog"):
        for _ in range(5):
            drops("receipt: bad signature")
        caplog.clear()
        drops.report()
        drops.report()                                   # nothing new: silent
        drops("receipt: bad signature")
        drops.report()
    assert [r.getMessage() for r in caplog.records] == [
        "uplink: dropped: 5 dropped since the last report (all: 5)",
        "uplink: dropped: 1 dropped since the last report (all: 1)"]
