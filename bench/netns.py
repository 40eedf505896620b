"""A real slow uplink: a network namespace for the device, joined to the root namespace by a
veth pair, with the kernel's token bucket filter (``tc qdisc ... tbf``) on the device's end.
Bytes queue in the device's own TCP socket and in the qdisc, as behind a home router.

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN), iproute2 (``ip``, ``tc``) and the ``sch_tbf``
module; ``probe()`` says why not, and the bench then falls back to ``bench/link.py``.

``with ShapedLink(2_000_000) as link:`` builds it; ``with link.device():`` puts the calling
thread in the device's namespace (network namespaces are per thread on Linux), and every
thread it starts meanwhile stays there: sockets they open go over the shaped link to
``link.host`` (the root end of the veth pair; bind a server there). Names carry this process's
id and a random tag, so parallel runs do not collide; ``__exit__`` deletes the namespace and
the pair even when setting up failed half-way, and a later run deletes what a killed one
left behind (its process is gone).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorstep.broker import Mosquitto
from doorstep.core.errors import DoorstepError

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
PREFIX = "dsbench"                 # netns names: dsbench-<pid>-<tag>
_STALE = re.compile(rf"^{PREFIX}-(\d+)-([0-9a-f]+)\b")


class NetnsUnavailable(DoorstepError):
    """This machine cannot build the shaped link (not root, no iproute2, no namespaces)."""


@dataclass(frozen=True)
class Shape:
    """The device's uplink: ``rate`` bits/s through a tbf qdisc with ``burst`` bytes of bucket
    and a queue that holds at most ``latency`` seconds of data at that rate (tc-tbf(8));
    ``down``: the same for the other direction, or None for an unshaped downlink (a home's
    downlink is many times faster than its uplink). The defaults are a DSL uplink's: 2 Mbit/s,
    a bucket of two full frames (a modem's line rate has no burst to speak of; a bigger bucket
    would let a lone 19 KB ring event through faster than the line could carry it) and up to
    200 ms of queue in front of it, as in a home router."""

    rate: int = 2_000_000
    burst: int = 3028
    latency: float = 0.2
    down: int | None = None

    def tbf(self, rate: int) -> list[str]:
        return ["tbf", "rate", f"{rate}bit", "burst", str(self.burst),
                "latency", f"{self.latency * 1000:g}ms"]

    def describe(self) -> str:
        down = f"{self.down / 1e6:g} Mbit/s down" if self.down else "unshaped down"
        return (f"network namespace + veth, tc tbf {self.rate / 1e6:g} Mbit/s up (burst "
                f"{self.burst} B, queue {self.latency * 1000:g} ms), {down}")


def _run(*cmd: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsUnavailable(f"`{' '.join(cmd)}` could not run: {exc}") from exc
    if done.returncode != 0:
        raise NetnsUnavailable(f"`{' '.join(cmd)}` failed (exit {done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def probe() -> str | None:
    """None when a shaped link can be built here, else the reason it cannot."""
    if os.geteuid() != 0:
        return f"needs root for network namespaces and tc (running as uid {os.geteuid()})"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    if not os.path.exists("/proc/thread-self/ns/net"):
        return "this kernel has no network namespaces (/proc/thread-self/ns/net)"
    return None


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsUnavailable(f"setns: {os.strerror(err)}")


def sweep_stale() -> list[str]:
    """Delete the namespaces of bench runs whose process is gone (killed before cleaning
    up); deleting a namespace deletes its veth pair. Returns the names deleted."""
    gone = []
    with contextlib.suppress(NetnsUnavailable):
        for line in _run("ip", "netns", "list").splitlines():
            m = _STALE.match(line.strip())
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                name = line.split()[0]
                with contextlib.suppress(NetnsUnavailable):
                    _run("ip", "netns", "del", name)
                    gone.append(name)
    return gone


class ShapedLink:
    """The device's namespace, the veth pair and the qdisc(s); see the module's text."""

    def __init__(self, shape: Shape | None = None, *, rng: random.Random | None = None) -> None:
        self.shape = shape or Shape()
        r = rng or random.SystemRandom()
        tag = f"{r.getrandbits(24):06x}"
        self.netns = f"{PREFIX}-{os.getpid()}-{tag}"
        self.host_if = f"dsh{tag}"          # root end (<= 15 characters)
        self.device_if = f"dsd{tag}"        # device end, inside self.netns
        # a /30 in 10.213.0.0/16, picked at random: two runs at once rarely pick the same one,
        # and one taken already (by another run) is skipped
        taken = self._taken()
        for _ in range(64):
            base = r.randrange(0, 1 << 14) * 4
            if (base >> 8, base & 0xFF) not in taken:
                break
        self.host = f"10.213.{base >> 8}.{(base & 0xFF) + 1}"
        self.device_addr = f"10.213.{base >> 8}.{(base & 0xFF) + 2}"
        self._made = False

    @staticmethod
    def _taken() -> set[tuple[int, int]]:
        taken = set()
        with contextlib.suppress(NetnsUnavailable):
            for m in re.finditer(r"inet 10\.213\.(\d+)\.(\d+)/", _run("ip", "-o", "addr")):
                taken.add((int(m.group(1)), int(m.group(2)) & 0xFC))
        return taken

    def __enter__(self) -> ShapedLink:
        why = probe()
        if why:
            raise NetnsUnavailable(why)
        sweep_stale()
        try:
            self._made = True
            _run("ip", "netns", "add", self.netns)
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name",
                 self.device_if, "netns", self.netns)
            _run("ip", "addr", "add", f"{self.host}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            _run("ip", "-n", self.netns, "addr", "add", f"{self.device_addr}/30", "dev",
                 self.device_if)
            _run("ip", "-n", self.netns, "link", "set", self.device_if, "up")
            _run("ip", "-n", self.netns, "link", "set", "lo", "up")
            _run("tc", "-n", self.netns, "qdisc", "add", "dev", self.device_if, "root",
                 *self.shape.tbf(self.shape.rate))
            if self.shape.down:
                _run("tc", "qdisc", "add", "dev", self.host_if, "root",
                     *self.shape.tbf(self.shape.down))
        except BaseException:
            self.close()
            raise
        log.info("bench: shaped link %s: %s -> %s, %s", self.netns, self.device_addr,
                 self.host, self.shape.describe())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the namespace (which deletes the veth pair with it) and, should the root
        end outlive it, the root end. Safe to call twice and after a failed set-up."""
        if not self._made:
            return
        self._made = False
        for cmd in (("ip", "netns", "del", self.netns), ("ip", "link", "del", self.host_if)):
            try:
                _run(*cmd)
            except NetnsUnavailable as exc:
                if "Cannot find" not in str(exc) and "No such" not in str(exc):
                    log.warning("bench: cleaning up the shaped link: %s", exc)

    @contextlib.contextmanager
    def device(self) -> Iterator[None]:
        """Run the body with this thread in the device's namespace; threads started in it
        stay there for their whole life. Sockets keep the namespace they were opened in."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)

    def qdisc_stats(self) -> str:
        """``tc -s qdisc`` of the device's end: sent, dropped, overlimits, backlog."""
        return _run("tc", "-n", self.netns, "-s", "qdisc", "show", "dev", self.device_if)

    def drops(self) -> int:
        """Packets the device's qdisc dropped (its queue was full): TCP sends them again."""
        m = re.search(r"dropped (\d+)", self.qdisc_stats())
        return int(m.group(1)) if m else 0

    def bytes_sent(self) -> int:
        """Bytes the device's qdisc has passed on (headers included)."""
        m = re.search(r"Sent (\d+) bytes", self.qdisc_stats())
        return int(m.group(1)) if m else 0


class LinkBroker(Mosquitto):
    """The bench's Mosquitto listening on loopback, as usual, and on ``host`` too (the
    shaped link's root end) at the same port, where the device reaches it."""

    def __init__(self, host: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.link_host = host

    def _conf(self) -> Path:
        conf = super()._conf()
        with conf.open("a") as f:
            f.write(f"listener {self.port} {self.link_host}\n")
        return conf
