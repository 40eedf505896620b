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
    reasons = [line for line in lines if "logging no new ones" not in line]
    assert len(reasons) == 3
    assert any("logging no new ones" in line for line in lines)
