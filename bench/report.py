"""The performance table: rows of figures with their same-run baselines, summarised as medians
with min and max, printed as text and written as JSON. No measuring happens here."""

from __future__ import annotations

import json
import math
import platform
import re
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stat:
    """A figure over repeated runs: median, min and max of ``samples``."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stat:
        values = [float(v) for v in samples if v is not None and math.isfinite(float(v))]
        if not values:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    @property
    def finite(self) -> bool:
        return math.isfinite(self.median)


@dataclass(frozen=True)
class Line:
    """One figure of a row: what was measured, its baseline and the ratio figure/baseline."""

    label: str
    unit: str
    figure: Stat
    baseline: Stat | None = None
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.finite or self.baseline.median == 0:
            return None
        if not self.figure.finite:
            return None
        return self.figure.median / self.baseline.median


@dataclass(frozen=True)
class Row:
    """A numbered row of the table. ``lines[0]`` is the headline figure. A row whose input is
    not on this machine has no lines and says so in ``absent`` (e.g. "no labelled set"): it is
    not measured, and that is not a failure."""

    number: int
    title: str
    baseline_name: str
    inputs: str
    lines: tuple[Line, ...]
    absent: str = ""

    @classmethod
    def not_measured(cls, number: int, title: str, absent: str, why: str) -> Row:
        """A row skipped because its input is absent; ``why`` says where it was looked for."""
        return cls(number, title, "-", why, (), absent)

    @property
    def complete(self) -> bool:
        """True when the headline has a finite figure and a finite baseline."""
        head = self.lines[0] if self.lines else None
        return bool(head and head.figure.finite and head.baseline is not None
                    and head.baseline.finite)

    @property
    def passed(self) -> bool:
        """Measured in full, or not measured because its input is absent."""
        return self.complete or bool(self.absent and not self.lines)


@dataclass
class Table:
    machine: dict[str, str]
    quick: bool
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        def line(ln: Line) -> dict[str, Any]:
            d = asdict(ln)
            d["ratio"] = ln.ratio
            return d

        return {"version": 1, "quick": self.quick, "seconds": self.seconds,
                "machine": self.machine,
                "rows": [{"number": r.number, "title": r.title, "baseline": r.baseline_name,
                          "inputs": r.inputs, "complete": r.complete,
                          "absent": r.absent or None,
                          "lines": [line(ln) for ln in r.lines]} for r in self.rows]}

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_nan_to_none(self.to_json()), indent=2) + "\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def fmt(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    mag = abs(value)
    if mag >= 10000:
        return f"{value:,.0f}"
    if mag >= 100:
        return f"{value:.0f}"
    if mag >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_stat(s: Stat | None) -> str:
    if s is None:
        return "-"
    if not s.finite:
        return "n/a"
    if s.n <= 1 or s.low == s.high:
        return fmt(s.median)
    return f"{fmt(s.median)} [{fmt(s.low)}..{fmt(s.high)}]"


def render(table: Table) -> str:
    """The table as fixed-width text: one block per row, one line per figure."""
    header = ("", "figure", "unit", "median [min..max]", "baseline [min..max]", "ratio",
              "target")
    body: list[tuple[str, ...]] = []
    for row in table.rows:
        if row.absent and not row.lines:
            body.append((f"{row.number}", f"{row.title}: {row.absent}", "", "-", "-", "-", ""))
        for i, ln in enumerate(row.lines):
            ratio = ln.ratio
            body.append((f"{row.number}" if i == 0 else "",
                         (row.title + ": " if i == 0 else "  ") + ln.label, ln.unit,
                         fmt_stat(ln.figure), fmt_stat(ln.baseline),
                         "-" if ratio is None else f"{ratio:.2f}x", ln.target))
    widths = [max(len(r[c]) for r in [header, *body]) for c in range(len(header))]

    def out(r: tuple[str, ...]) -> str:
        return "  ".join(r[c].ljust(widths[c]) for c in range(len(r))).rstrip()

    lines = [out(header), "  ".join("-" * w for w in widths)]
    for r in body:
        lines.append(out(r))
    lines.append("")
    for row in table.rows:
        if row.absent and not row.lines:
            lines.append(f"{row.number}. not measured, {row.absent}: {row.inputs}")
            continue
        lines.append(f"{row.number}. baseline: {row.baseline_name}. inputs: {row.inputs}")
        for ln in row.lines:
            if ln.note:
                lines.append(f"   {ln.label}: {ln.note}")
    m = table.machine
    lines.append("")
    lines.append(f"machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, python "
                 f"{m.get('python', '?')}, PyAV {m.get('pyav', '?')}, FFmpeg "
                 f"{m.get('libavcodec', '?')}, {m.get('x264', '?')}, mosquitto "
                 f"{m.get('mosquitto', '?')}{' (quick run)' if table.quick else ''}; "
                 f"{table.seconds:.0f} s")
    return "\n".join(lines)


def machine_info() -> dict[str, str]:
    """CPU model, core count and the versions that shape the figures."""
    import av
    import cv2
    import numpy

    info = {"python": platform.python_version(), "pyav": str(av.__version__),
            "libavcodec": ".".join(str(v) for v in av.library_versions["libavcodec"]),
            "opencv": str(cv2.__version__), "numpy": str(numpy.__version__),
            "kernel": platform.release(), "cpu": platform.processor() or platform.machine()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", info["cpu"]).strip()
        info["cores"] = fields.get("CPU(s)", "").strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if not info.get("cores"):
        import os
        info["cores"] = str(os.cpu_count())
    info["x264"] = x264_version()
    try:
        out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True,
                             timeout=10).stdout
        found = re.search(r"version (\S+)", out)
        info["mosquitto"] = found.group(1) if found else "?"
    except (OSError, subprocess.SubprocessError):
        info["mosquitto"] = "?"
    return info


def x264_version() -> str:
    """The libx264 build PyAV links, read from the SEI banner of one encoded frame."""
    from fractions import Fraction

    import av

    ctx: Any = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 64, 64, "yuv420p"
    ctx.time_base = Fraction(1, 30)
    ctx.open()
    frame = av.VideoFrame(64, 64, "yuv420p")
    frame.pts = 0
    data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    found = re.search(rb"x264 - core (\d+)( r\d+ \w+)?", data)
    return f"x264 core {found.group(1).decode()}{(found.group(2) or b'').decode()}" \
        if found else "x264 ?"
