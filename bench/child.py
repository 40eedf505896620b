"""Runs a measured process the way systemd would: with $NOTIFY_SOCKET pointing at our own
socket, so its READY=1 (sent after the first processed frame) marks the end of start-up. Reads
its CPU time and disk writes from /proc while it runs, and its own peak RSS (see peak_rss_kb)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorstep.bench.worker import disk_writes, proc_io, vm_hwm_kb
from doorstep.core.errors import DoorstepError


@dataclass(frozen=True)
class ChildRun:
    """What one measured process did. Times are seconds; ``cpu_share`` is CPU seconds per wall
    second over the window (1.0 = one core); ``write_bytes`` is over the window."""

    startup: float
    cpu_share: float | None
    write_bytes: int | None
    window: float | None
    maxrss_kb: int          # the child's own peak RSS (see peak_rss_kb)
    returncode: int


def peak_rss_kb(ru_maxrss: int, parent_hwm: int, sampled_hwm: int) -> int:
    """The child's own peak RSS.

    Linux folds the memory image a child had before exec() (the parent's, after fork or vfork)
    into its ``ru_maxrss``, so ``ru_maxrss`` is never below the bench's own peak at spawn time.
    Above that it is exact; at or below it, it may be only the bench's, and the child's own
    VmHWM, sampled from /proc while it ran, is used instead.
    """
    return ru_maxrss if ru_maxrss > parent_hwm else sampled_hwm


def doorstep_command() -> list[str]:
    """The installed `doorstep` console script, as a user runs it."""
    script = Path(sys.executable).parent / "doorstep"
    return [str(script)] if script.exists() else [sys.executable, "-m", "doorstep.cli"]


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` (from schedstat, in ns; /proc/PID/stat otherwise)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
        if total:
            return total / 1e9
    except OSError:
        pass
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_bytes(pid: int) -> int:
    """Bytes ``pid`` sent towards the disk: write_bytes - cancelled_write_bytes."""
    io = proc_io(pid)
    if "write_bytes" not in io:
        raise DoorstepError(f"/proc/{pid}/io has no write_bytes")
    return disk_writes(io)


def run_child(argv: Sequence[str], *, cpu: int | None = None,
              window: tuple[float, float] | None = None, stop_after_ready: float | None = None,
              timeout: float = 120.0, log: Path | None = None) -> ChildRun:
    """Start ``argv`` and wait for READY=1. With ``window`` = (a, b), sample CPU and disk writes
    at a and b seconds after READY. Then SIGTERM it ``stop_after_ready`` s after READY (or at b),
    or let it end by itself when both are None."""
    tmp = Path(tempfile.mkdtemp(prefix="dsb-"))
    path = tmp / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    env = {**os.environ, "NOTIFY_SOCKET": str(path)}
    env.pop("WATCHDOG_USEC", None)
    env.setdefault("GPIOZERO_PIN_FACTORY", "mock")  # no doorbell wired to this machine

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        parent_hwm = vm_hwm_kb()
        t0 = time.monotonic()
        proc = subprocess.Popen(list(argv), env=env, stdout=out, stderr=out,
                                preexec_fn=pin if cpu is not None else None)
        try:
            ready = _wait_ready(sock, proc, t0 + timeout)
            startup = ready - t0
            cpu_share = wrote = span = None
            if window is not None:
                _sleep_until(ready + window[0])
                c0, w0, m0 = cpu_seconds(proc.pid), write_bytes(proc.pid), time.monotonic()
                _sleep_until(ready + window[1])
                c1, w1, m1 = cpu_seconds(proc.pid), write_bytes(proc.pid), time.monotonic()
                cpu_share, wrote, span = (c1 - c0) / (m1 - m0), w1 - w0, m1 - m0
            if stop_after_ready is not None or window is not None:
                _sleep_until(ready + (stop_after_ready or 0.0))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            status, rusage, sampled = _wait4(proc, time.monotonic() + timeout)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
    finally:
        sock.close()
        path.unlink(missing_ok=True)
        tmp.rmdir()
        if log is not None and not isinstance(out, int):
            out.close()
    return ChildRun(startup, cpu_share, wrote, span,
                    peak_rss_kb(int(rusage.ru_maxrss), parent_hwm, sampled),
                    os.waitstatus_to_exitcode(status))


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _wait_ready(sock: socket.socket, proc: subprocess.Popen[bytes], deadline: float) -> float:
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            if proc.poll() is not None:
                raise DoorstepError(f"{proc.args!r} exited with {proc.returncode} before its "
                                    "first frame") from None
            continue
        if b"READY=1" in data.split(b"\n"):
            return time.monotonic()
    raise DoorstepError(f"{proc.args!r} sent no READY=1 within the timeout")


def _wait4(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, Any, int]:
    """Reap the child ourselves: wait4 gives its peak RSS and CPU times. Also returns the
    last VmHWM read from /proc while it ran (every 5 ms)."""
    sampled = 0
    while True:
        sampled = max(sampled, vm_hwm_kb(proc.pid))
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return status, rusage, sampled
        if time.monotonic() > deadline:
            proc.kill()
            deadline = time.monotonic() + 10
        time.sleep(0.005)
