"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from doorstep.agent.sdnotify import FrameWatchdog, Notifier
from doorstep.core.clock import FakeClock


class Systemd:
    """The receiving end of $NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def env(self, watchdog_usec: int | None = None, pid: int | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.env_value}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        if pid is not None:
            env["WATCHDOG_PID"] = str(pid)
        return env

    def received(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[Systemd]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.setblocking(False)
    yield Systemd(sock, str(path))
    sock.close()


def test_ready_status_and_stopping_reach_the_socket(systemd: Systemd) -> None:
    with Notifier(systemd.env()) as n:
        assert n.enabled
        assert n.ready()
        assert n.status("recording\nclip 3")
        assert n.stopping()
    assert systemd.received() == ["READY=1", "STATUS=recording clip 3", "STOPPING=1"]


def test_abstract_socket_names_work() -> None:
    name = f"doorstep-test-{os.getpid()}-{os.urandom(4).hex()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_outside_systemd_everything_is_a_quiet_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready()
    assert not n.watchdog()
    FrameWatchdog(n).frame_processed(1.0)


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.ready()
    assert not n.ready()
    assert len([r for r in caplog.records if "cannot notify" in r.message]) == 1


def test_watchdog_pings_at_most_every_half_interval(systemd: Systemd) -> None:
    clock = FakeClock()
    n = Notifier(systemd.env(watchdog_usec=10_000_000), clock=clock)
    assert n.watchdog_interval == 10.0
    sent = []
    for _ in range(40):  # 20 s of calls every 0.5 s
        sent.append(n.watchdog())
        clock.advance(0.5)
    assert sent.count(True) == 4  # at 0, 5, 10, 15 s
    assert systemd.received() == ["WATCHDOG=1"] * 4


def test_watchdog_meant_for_another_pid_is_ignored(systemd: Systemd) -> None:
    n = Notifier(systemd.env(watchdog_usec=1_000_000, pid=os.getpid() + 1))
    assert n.watchdog_interval is None
    assert not n.watchdog()
    mine = Notifier(systemd.env(watchdog_usec=1_000_000, pid=os.getpid()))
    assert mine.watchdog()


def test_ready_only_after_the_first_frame_and_pings_only_while_frames_flow(
        systemd: Systemd) -> None:
    clock = FakeClock()
    n = Notifier(systemd.env(watchdog_usec=4_000_000), clock=clock)
    wd = FrameWatchdog(n)
    wd.alive(clock.monotonic())  # the loop is alive but no frame yet: say nothing
    assert systemd.received() == []
    for _ in range(10):  # 30 fps for a third of a second
        wd.frame_processed(clock.monotonic())
        clock.advance(1 / 30)
    assert wd.is_ready
    assert systemd.received() == ["READY=1", "WATCHDOG=1"]
    clock.advance(2.5)  # frames keep coming
    wd.frame_processed(clock.monotonic())
    assert systemd.received() == ["WATCHDOG=1"]
    for _ in range(10):  # the camera is stuck: the loop idles without frames
        clock.advance(1.0)
        wd.alive(clock.monotonic())
    # one ping while the last frame was still younger than the interval, then silence
    assert systemd.received() == ["WATCHDOG=1"]
