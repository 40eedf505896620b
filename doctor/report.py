"""The doctor's findings: one Result per check (PASS, FAIL or SKIP, what was found, and the fix
for a FAIL), printed for a person or as JSON for a fleet tool. The same Results make both."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO


class Status(enum.StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Result:
    """One check's outcome. ``fix`` says what to do about a FAIL (or why a check was
    skipped); ``data`` carries the measured values for --json."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail,
                "fix": self.fix, "data": self.data}


def passed(name: str, detail: str, **data: Any) -> Result:
    return Result(name, Status.PASS, detail, "", data)


def failed(name: str, detail: str, fix: str, **data: Any) -> Result:
    return Result(name, Status.FAIL, detail, fix, data)


def skipped(name: str, why: str, **data: Any) -> Result:
    return Result(name, Status.SKIP, why, "", data)


def ok(results: Iterable[Result]) -> bool:
    return all(r.status is not Status.FAIL for r in results)


def to_json(results: Sequence[Result], **about: Any) -> str:
    return json.dumps({**about, "ok": ok(results), "checks": [r.to_dict() for r in results]},
                      indent=2, default=str)


def print_result(r: Result, out: TextIO) -> None:
    """``PASS  camera    1280x720 at 30.0 fps`` and, for a FAIL, the fix on the next line."""
    lines = r.detail.splitlines() or [""]
    print(f"{r.status.value:<5} {r.name:<17} {lines[0]}", file=out)
    for line in lines[1:]:
        print(f"{'':<23} {line}", file=out)
    if r.fix and r.status is Status.FAIL:
        for i, line in enumerate(r.fix.splitlines()):
            print(f"{'':<23} {'fix: ' if i == 0 else '     '}{line}", file=out)
    out.flush()


def summary(results: Sequence[Result]) -> str:
    bad = sum(r.status is Status.FAIL for r in results)
    skip = sum(r.status is Status.SKIP for r in results)
    total = len(results)
    head = f"{bad} of {total} checks failed" if bad else f"all {total - skip} checks passed"
    return head + (f" ({skip} skipped)" if skip else "")
