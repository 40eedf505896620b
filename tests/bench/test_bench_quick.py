"""The quick benchmark still measures every row: each of the eight rows yields a finite figure
and a finite baseline, in the printed table and in the JSON. Speed is never asserted here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from doorstep.bench.report import Line, Row, Stat, Table, render


def test_quick_bench_produces_all_eight_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench-out"
    result = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "doorstep.cli", "bench", "--quick", "--out",
                           str(out), "--json", str(result)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(result.read_text())
    assert doc["quick"] is True
    assert [r["number"] for r in doc["rows"]] == list(range(1, 9))
    for row in doc["rows"]:
        head = row["lines"][0]
        assert row["inputs"], row["title"]
        assert head["figure"]["median"] is not None and math.isfinite(head["figure"]["median"]), \
            row["title"]
        assert head["baseline"] is not None and head["baseline"]["median"] is not None, \
            row["title"]
        assert row["complete"], row["title"]
    for number in range(1, 9):
        assert any(line.startswith(f"{number} ") for line in done.stdout.splitlines()), number


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
