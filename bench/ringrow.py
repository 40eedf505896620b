"""Row 5 of the table: ring latency idle on loopback, and on a 2 Mbit/s uplink, idle and while a
clip uploads. The uplink is the kernel's (bench/netns.py: a namespace, a veth pair, tc tbf)
where this machine allows it, else bench/link.py's token bucket; each line names the one it
used (issue 13 item 13)."""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from doorstep.bench.netns import LinkBroker, NetnsUnavailable, Shape, ShapedLink, probe
from doorstep.bench.report import Line, Row, Stat
from doorstep.bench.rig import Keys, inbox_process
from doorstep.bench.ring import LINK_BPS, RingRun, ring_agent, ring_bare

log = logging.getLogger(__name__)

LINK_ENV = "DOORSTEP_BENCH_LINK"   # "bucket": use bench/link.py even where tc is available


def _p50(x: list[float]) -> Stat:
    return Stat(statistics.median(x), min(x), max(x), len(x)) if x else Stat.of([])


def _pct(x: list[float], q: float) -> Stat:
    return Stat.of([float(np.percentile(x, q))] if x else [])


@dataclass
class Uplink:
    """The 2 Mbit/s uplink of rows 5 and 12, as :func:`shaped_uplink` set it up."""

    shape: Shape
    shaped: ShapedLink | None   # the kernel's link, or None: bench/link.py's token bucket
    port: int                   # the broker a device reaches over it
    store: Path                 # the inbox store that receives what crosses it
    why: str | None             # why the kernel's link is not used

    @property
    def kind(self) -> str:
        return "tc tbf" if self.shaped else "token bucket"


def shaped_uplink(stack: contextlib.ExitStack, keys: Keys, work: Path, broker_port: int,
                  store: str, number: int) -> Uplink:
    """The kernel's shaped link (a namespace, a veth pair, tc tbf) with its own broker and an
    inbox on it (what crosses the link leaves the outbox on its receipts), where this machine
    allows it; else the bench's own broker and inbox, behind bench/link.py's token bucket.
    Everything it starts is left to ``stack``."""
    shape = Shape(rate=LINK_BPS)
    why = probe()
    if os.environ.get(LINK_ENV) == "bucket":
        why = f"{LINK_ENV}=bucket"
    if why is None:
        try:
            shaped = stack.enter_context(ShapedLink(shape))
            port = stack.enter_context(LinkBroker(shaped.host)).port
            stack.enter_context(inbox_process(keys, work / store, port))
            return Uplink(shape, shaped, port, work / store, None)
        except NetnsUnavailable as exc:
            why = str(exc)
    log.warning("bench: row %d's 2 Mbit/s link is bench/link.py's token bucket, not the "
                "kernel's: %s", number, why)
    return Uplink(shape, None, broker_port, work / "inbox", why)


def ring_row(broker_port: int, keys: Keys, work: Path, source: Path, presses: int,
             number: int = 5) -> Row:
    lines: list[Line] = []
    with contextlib.ExitStack() as stack:
        up = shaped_uplink(stack, keys, work, broker_port, "inbox-link", number)
        shaped, link_port, shape, why, kind = up.shaped, up.port, up.shape, up.why, up.kind
        cases = (("idle, loopback", None, False, "< 100 ms p99"),
                 (f"2 Mbit/s ({kind}), idle", LINK_BPS, False, "p50 near the floor"),
                 (f"2 Mbit/s ({kind}), clip uploading", LINK_BPS, True, "< 300 ms p99"))
        for n, (label, link, upload, target) in enumerate(cases):
            port = broker_port if link is None else link_port
            # the inbox that stores this case's rings: the bench's own, or the shaped link's
            store = work / "inbox" if link is None else up.store
            agent = ring_agent(port, keys, work / f"ring-{n}", source, presses,
                               link_bps=link, upload=upload, shaped=shaped, store=store)
            size = int(statistics.median(agent.sizes)) if agent.sizes else 20000
            bare = ring_bare(port, presses, size, link_bps=link, upload=upload, shaped=shaped)
            lines += _lines(label, agent, bare, presses, size, target, link)
        drops = shaped.drops() if shaped else 0
    where = (shape.describe() + f"; {drops} packets dropped by the qdisc in all" if shaped
             else f"bench/link.py (asyncio token bucket, 2 Mbit/s each way; no kernel link: "
             f"{why})")
    return Row(number, "Ring latency", "a bare paho client publishing a same-size QoS 1 "
               "payload over the same path (when uploading, its own naive fixed window of 4 x "
               "64 KiB QoS 1 chunks on the same connection)",
               "mock button press (gpiozero MockFactory) -> sealed ring event at a subscriber "
               "of the ring head (doorstep/<id>/a/<seq>/m) on a real Mosquitto, and -> the "
               "event stored by a real `doorstep inbox` process on that broker; "
               f"{presses} "
               f"presses per case, each a "
               "first ring (repeat window 0), the next one after its event and snapshot have "
               "left the outbox; the agent plays the 720p input in real time with motion on, "
               "each press 0-0.5 s after a fresh motion start (clips end after 1 s of quiet); "
               f"the 2 Mbit/s link: {where}; the upload case keeps 2 MiB clips queued in the "
               "outbox; the agent's shipped defaults: 16 KiB chunks, a window that adapts to "
               "keep queueing under mqtt.queue_delay_ms = 100 (at most 16 chunks), "
               "TCP_NODELAY and TCP_NOTSENT_LOWAT on its socket", tuple(lines))


def _lines(label: str, agent: RingRun, bare: RingRun, presses: int, size: int, target: str,
           link: float | None) -> list[Line]:
    missed = f"; missed {agent.missed}/{presses}" if agent.missed else ""
    note = f"{len(agent.latencies_ms)} presses, ring event {size} bytes{missed}"
    if agent.picture_ms:
        note += (f"; its picture (the thumbnail's head, after the event): p50 "
                 f"{statistics.median(agent.picture_ms):.0f} ms, p99 "
                 f"{float(np.percentile(agent.picture_ms, 99)):.0f} ms")
    if link:
        note += (f"; the link's floor for {size} bytes: {size * 8 / link * 1000:.0f} ms "
                 f"(for 1 KB: {1000 * 8 / link * 1000:.0f} ms)")
    a, b, s = agent.latencies_ms, bare.latencies_ms, agent.stored_ms
    return [Line(f"{label}: p50", "ms", _p50(a), _p50(b),
                target=target if target.startswith("p50") else "", note=note),
            Line(f"{label}: p99", "ms", _pct(a, 99), _pct(b, 99),
                target="" if target.startswith("p50") else target),
            Line(f"{label}, stored at the inbox: p50", "ms", _p50(s), _p50(b),
                note=f"{len(s)} of the presses; the file's ctime (its rename, after the fsync)"),
            Line(f"{label}, stored at the inbox: p99", "ms", _pct(s, 99), _pct(b, 99))]
