"""Measure how fast outages end (issue 18 item 2), with real parts on this machine: a Mosquitto
on a free port, the device's Outbox and Uplink, and the owner's Inbox, in one process.

    inbox:  the inbox is away for --outage seconds while the device commits a backlog (rings
            with an 18 KB event, motion events, 110 KB snapshots, 300 KB clips); it comes back.
            Figure: from the inbox's return (its connect) to the whole backlog stored, and to
            the first ring stored.
    broker: the broker is killed; --outage seconds later it starts again on the same port. A
            ring is committed while it is down. Figure: from the broker listening again to that
            ring stored.

Run from the repository with the project installed: ``python tools/outage.py``. Times are wall
clock on loopback (the backlog's transfer time is negligible here); nothing asserts them.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from doorstep.broker import Mosquitto
from doorstep.config.schema import MqttConfig
from doorstep.owner.inbox import Inbox
from doorstep.owner.store import InboxStore, Stored
from doorstep.protocol.age import X25519Identity, encrypt
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.wire import Topics
from doorstep.uplink.mqtt import Uplink
from doorstep.uplink.outbox import Outbox
from doorstep.uplink.sender import Sealing

DEVICE = "porch"


class Rig:
    """One household on one broker: device keys and outbox, inbox key and store."""

    def __init__(self, root: Path, broker: Mosquitto, receipt_timeout: float) -> None:
        self.root = root
        self.broker = broker
        self.owner = X25519Identity.generate()
        self.device = SigningKey.generate()
        self.inbox_key = SigningKey.generate()
        self.box = Outbox(root / "outbox", device=DEVICE, key=self.device, quota_bytes=1 << 30)
        cfg = MqttConfig(host="127.0.0.1", port=broker.port,
                         receipt_timeout_seconds=receipt_timeout)
        self.uplink = Uplink(cfg, Topics(f"doorstep/{DEVICE}/"), self.box,
                             client_id=f"doorstep-{DEVICE}",
                             sealing=Sealing(self.device, self.inbox_key.public_key),
                             status=lambda: {"outbox": self.box.stats()})
        self.box.on_commit = self.uplink.notify
        self.stored: dict[int, float] = {}
        self.kinds: dict[int, str] = {}
        self._cond = threading.Condition()
        self.inbox: Inbox | None = None

    def start_inbox(self) -> float:
        """Start an inbox worker; returns when it connected (monotonic)."""
        store = InboxStore(self.root / "store", {DEVICE: self.device.public_key})
        self.inbox = Inbox(store, self.inbox_key, host="127.0.0.1", port=self.broker.port,
                           on_stored=self._on_stored)
        self.inbox.start()
        if not self.inbox.connected.wait(30):
            raise SystemExit("the inbox did not connect")
        return time.monotonic()

    def stop_inbox(self) -> None:
        if self.inbox is not None:
            self.inbox.stop()
            self.inbox = None

    def _on_stored(self, stored: Stored) -> None:
        with self._cond:
            self.stored.setdefault(stored.manifest.seq, time.monotonic())
            self._cond.notify_all()

    def wait_stored(self, seqs: set[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not seqs <= set(self.stored):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def put(self, kind: str, size: int, priority: int) -> int:
        body = os.urandom(size)
        item = self.box.put("event" if kind in ("ring", "motion") else kind,
                            encrypt(body, [self.owner.recipient]), priority=priority)
        self.kinds[item.seq] = kind
        return item.seq


def backlog(rig: Rig, n: int, seconds: float) -> list[int]:
    """``n`` artifacts over ``seconds``: a door's worth of motion, snapshots, clips and rings."""
    pattern = [("motion", 18_000, 1), ("snapshot", 110_000, 2), ("clip", 300_000, 3),
               ("ring", 18_000, 0), ("snapshot", 110_000, 0)]
    seqs = []
    for i in range(n):
        kind, size, priority = pattern[i % len(pattern)]
        seqs.append(rig.put(kind, size, priority))
        time.sleep(seconds / n)
    return seqs


def inbox_outage(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        rig = Rig(Path(tmp), broker, args.receipt_timeout)
        rig.start_inbox()
        rig.uplink.start()
        rig.uplink.wait_connected(10)
        first = rig.put("ring", 18_000, 0)
        rig.wait_stored({first}, 30)
        rig.stop_inbox()
        seqs = backlog(rig, args.backlog, args.outage)
        back = rig.start_inbox()
        ok = rig.wait_stored(set(seqs), args.give_up)
        rings = [s for s in seqs if rig.kinds[s] == "ring"]
        times = [rig.stored[s] - back for s in seqs if s in rig.stored]
        print(f"inbox away {args.outage:g} s, backlog of {len(seqs)}: "
              f"{'all stored' if ok else 'NOT all stored'} "
              f"{max(times) if times else float('nan'):.2f} s after the inbox returned; "
              f"first ring {min(rig.stored[s] - back for s in rings if s in rig.stored):.2f} s, "
              f"median artifact {statistics.median(times) if times else float('nan'):.2f} s")
        rig.uplink.stop()
        rig.stop_inbox()


def broker_outage(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto().start()
        try:
            rig = Rig(Path(tmp), broker, args.receipt_timeout)
            rig.start_inbox()
            rig.uplink.start()
            rig.uplink.wait_connected(10)
            first = rig.put("motion", 18_000, 1)
            rig.wait_stored({first}, 30)
            broker.kill()
            time.sleep(args.outage / 2)
            ring = rig.put("ring", 18_000, 0)
            time.sleep(args.outage / 2)
            broker.start()
            back = time.monotonic()
            ok = rig.wait_stored({ring}, args.give_up)
            took = rig.stored[ring] - back if ok else float("nan")
            print(f"broker down {args.outage:g} s, a ring committed meanwhile: "
                  f"{'stored' if ok else 'NOT stored'} {took:.2f} s after the broker returned")
            rig.uplink.stop()
            rig.stop_inbox()
        finally:
            broker.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["inbox", "broker"])
    p.add_argument("--outage", type=float, default=120.0, metavar="SECONDS")
    p.add_argument("--backlog", type=int, default=90, metavar="N")
    p.add_argument("--receipt-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="mqtt.receipt_timeout_seconds (default 30, the shipped default)")
    p.add_argument("--give-up", type=float, default=900.0, metavar="SECONDS")
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    for _ in range(args.runs):
        (inbox_outage if args.scenario == "inbox" else broker_outage)(args)


if __name__ == "__main__":
    main()
