"""The quick benchmark still measures every row: each of the eleven rows yields a finite figure
and a finite baseline, in the printed table and in the JSON. Row 6 needs the labelled motion set
of the shared data; where that is absent it says "no labelled set" and the run still passes.
Speed is never asserted here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from doorstep.bench.inputs import labelled_set
from doorstep.bench.report import Line, Row, Stat, Table, render
from doorstep.bench.shared import ENV


def quick_bench(tmp_path: Path, *args: str, env: dict[str, str] | None = None
                ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "doorstep.cli", "bench", "--quick", "--out",
                           str(tmp_path / "bench-out"), "--json", str(result), *args],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc: dict[str, Any] = json.loads(result.read_text())
    assert doc["quick"] is True
    return done, doc


def test_quick_bench_produces_every_row(tmp_path: Path) -> None:
    labelled = labelled_set()  # what the bench will find: the same rule, the same environment
    done, doc = quick_bench(tmp_path)
    assert [r["number"] for r in doc["rows"]] == list(range(1, 12))
    for row in doc["rows"]:
        if row["number"] == 6 and labelled.path is None:
            assert (row["absent"], row["lines"], row["complete"]) == ("no labelled set", [],
                                                                     False)
            assert labelled.why in row["inputs"]
            continue
        head = row["lines"][0]
        assert row["inputs"], row["title"]
        assert head["figure"]["median"] is not None and math.isfinite(head["figure"]["median"]), \
            row["title"]
        assert head["baseline"] is not None and head["baseline"]["median"] is not None, \
            row["title"]
        assert row["complete"], row["title"]
    for number in range(1, 12):
        assert any(line.startswith(f"{number} ") for line in done.stdout.splitlines()), number


def test_without_the_labelled_set_row_6_says_so_and_the_run_passes(tmp_path: Path) -> None:
    nowhere = tmp_path / "no-shared-data"
    done, doc = quick_bench(tmp_path, "--rows", "6", env={ENV: str(nowhere)})
    [row] = doc["rows"]
    assert (row["number"], row["absent"], row["complete"]) == (6, "no labelled set", False)
    assert f"{ENV}={nowhere} is not a folder" in row["inputs"]
    assert any(line.startswith("6 ") and "Motion onset: no labelled set" in line
               for line in done.stdout.splitlines()), done.stdout


def test_a_row_without_a_baseline_is_incomplete_and_shows_no_ratio() -> None:
    measured = Line("x", "ms", Stat.of([2.0, 4.0, 3.0]), Stat.of([]))
    assert measured.figure.median == 3.0 and (measured.figure.low, measured.figure.high) == (2, 4)
    assert measured.ratio is None
    assert not Row(1, "t", "b", "i", (measured,)).complete
    zero = Line("idle", "bytes/hour", Stat.of([0.0]), Stat.of([0.0]))
    assert zero.ratio is None and Row(7, "t", "b", "i", (zero,)).complete
    table = Table({"cpu": "test"}, quick=True, rows=[Row(1, "t", "b", "i", (measured,))])
    assert "n/a" in render(table)
    assert json.loads(json.dumps(table.to_json(), default=str))["rows"][0]["complete"] is False
    assert not Row(1, "t", "b", "i", (measured,)).passed


def test_a_row_whose_input_is_absent_passes_and_says_why() -> None:
    row = Row.not_measured(6, "Motion onset", "no labelled set", "no shared data folder at x")
    assert row.passed and not row.complete
    text = render(Table({"cpu": "test"}, quick=True, rows=[row]))
    assert "Motion onset: no labelled set" in text
    assert "6. not measured, no labelled set: no shared data folder at x" in text
    assert table_row(Table({}, quick=True, rows=[row]))["absent"] == "no labelled set"


def table_row(table: Table) -> dict[str, Any]:
    row: dict[str, Any] = table.to_json()["rows"][0]
    return row


def test_peak_memory_is_the_childs_own_not_the_bench_processs() -> None:
    # Linux counts the image a child had before exec() (the bench's own) in its ru_maxrss:
    # a small child started from a big bench must still report its own, small peak.
    from doorstep.bench.child import peak_rss_kb, run_child
    from doorstep.bench.worker import vm_hwm_kb

    assert peak_rss_kb(200_000, parent_hwm=90_000, sampled_hwm=199_000) == 200_000
    assert peak_rss_kb(90_000, parent_hwm=90_000, sampled_hwm=12_000) == 12_000
    ballast = bytearray(b"x" * (96 << 20))  # this process now holds 96 MiB more
    child = run_child([sys.executable, "-c", "import os, socket, time; "
                       "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
                       "s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(0.3)"],
                      timeout=30)
    assert child.returncode == 0
    assert 0 < child.maxrss_kb < 64 << 10 < vm_hwm_kb()
    del ballast
