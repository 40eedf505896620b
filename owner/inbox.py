"""The owner's inbox: receives artifacts from every device over MQTT, verifies them, stores the
ciphertext and answers each with a signed receipt. It never holds a decryption key.

It subscribes with an MQTT v5 shared subscription ($share/<group>/...), so several workers can
split one fleet's load on a clustered broker. Malformed or forged messages on any topic are
logged (once per reason) and dropped; nothing a message contains can stop the worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.core.droplog import DropLog
from doorstep.core.errors import DoorstepError, KeyFileError, SealError
from doorstep.core.handoff import Handoff
from doorstep.owner.store import InboxStore, Stored, verify_store
from doorstep.protocol.connect import (
    INBOX_MAX_PACKET,
    add_broker_arguments,
    broker_from_args,
    connect_properties,
    make_client,
)
from doorstep.protocol.keys import SigningKey, parse_public_key
from doorstep.protocol.seal import identity_of
from doorstep.protocol.wire import InboxStatus, Receipt, inbox_topic, unpack_head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """What the worker did with one message, for callers that watch (the demo, tests)."""

    stored: Stored


_CANONICAL = re.compile(r"0|[1-9][0-9]{0,18}")


def canonical_int(text: str, what: str, *, lo: int) -> int:
    """A topic level as the device writes numbers: ASCII digits, no sign, no leading zero, no
    underscores, at most 19 digits. ``int()`` alone takes "-1", "1_000" and fullwidth digits,
    so one artifact could be named many ways."""
    if not _CANONICAL.fullmatch(text) or int(text) < lo:
        raise SealError(f"bad {what}: not a plain decimal number of at least {lo}")
    return int(text)


class Inbox:
    """One inbox worker. ``base`` is the topic root that holds ``<device>/...`` (default
    ``doorstep``)."""

    def __init__(self, store: InboxStore, key: SigningKey, *, host: str, port: int,
                 base: str = "doorstep", group: str = "doorstep-inbox", protocol: str = "5",
                 client_id: str = "", on_stored: Callable[[Stored], None] | None = None,
                 client: mqtt.Client | None = None) -> None:
        """``client``: a paho client made by ``protocol.connect.make_client`` (TLS, username and
        password); by default a plain one."""
        self.store = store
        self.key = key
        self.identity = identity_of(key)   # opens heads; no artifact is ever sealed to it
        self.host, self.port = host, port
        self.base = base.rstrip("/")
        self.group = group
        self.on_stored = on_stored
        proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        self.client = client or mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                            protocol=proto)
        self._shared = self.client.protocol == mqtt.MQTTv5
        self.client.on_connect = self._cb_connect
        self.client.on_disconnect = self._cb_disconnect
        self.client.on_message = self._cb_message
        self.client.on_subscribe = self._cb_subscribe
        # Devices resend at once when they see a new "online" (wire.md, inbox status); the
        # will says "offline" for them if this worker vanishes without a word.
        self.status_topic = inbox_topic(self.base)
        self.client.will_set(self.status_topic, InboxStatus("offline", time.time()).sign(key),
                             qos=1, retain=True)
        self._subscribe_mid: int | None = None
        self.client.max_inflight_messages_set(1000)
        # Every second the inbox is away, the broker drops what devices send: come back fast.
        # One or a few workers per broker, so retrying every 2 s costs it nothing.
        self.client.reconnect_delay_set(1, 2)
        self._refused = ""
        # Bounded by count and bytes: a flood waits in at most 64 MiB, the rest is dropped and
        # counted (a genuine device sends it again when no receipt comes).
        self._work: Handoff[mqtt.MQTTMessage | None] = Handoff(max_items=4096,
                                                               max_bytes=64 * 1024 * 1024)
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        # kinds of drop reason are kept per device: the devices we know keep their own budget,
        # so nothing sent on other topics can stop a genuine device's anomalies being logged
        self._dropped = DropLog(log, "inbox: dropped a message", reserved=store.devices)

    def topics(self) -> list[str]:
        filters = [f"{self.base}/+/a/#"]
        if self._shared:
            return [f"$share/{self.group}/{f}" for f in filters]
        return filters

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30,
                                  properties=connect_properties(self.client, INBOX_MAX_PACKET))
        self.client.loop_start()
        self._thread = threading.Thread(target=self._worker, name="inbox-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self.connected.is_set():
            try:
                info = self.client.publish(self.status_topic, self._status("offline"), qos=1,
                                           retain=True)
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as exc:
                log.warning("inbox: could not publish offline status: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()
        self._work.put_control(None)
        if self._thread is not None:
            self._thread.join(5)

    # paho callbacks: hand off only
    def _cb_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any,
                    properties: object = None) -> None:
        try:
            if reason.is_failure:
                if str(reason) != self._refused:     # once, not at every retry
                    log.error("inbox: the broker refused the connection: %s", reason)
                self._refused = str(reason)
                return
            self._refused = ""
            _, self._subscribe_mid = client.subscribe([(t, 1) for t in self.topics()])
            self.connected.set()
            log.info("inbox: connected to %s:%d", self.host, self.port)
        except Exception:  # an exception here would stop paho's loop
            log.exception("inbox: on_connect failed")

    def _cb_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: Any,
                      properties: object = None) -> None:
        """Subscribed: what devices publish from now on reaches us, so tell them."""
        try:
            if mid != self._subscribe_mid:
                return
            refused = [str(r) for r in reasons if getattr(r, "is_failure", False)]
            if refused:
                log.error("inbox: the broker refused the subscriptions (%s); not announcing "
                          "online", ", ".join(refused))
            else:
                client.publish(self.status_topic, self._status("online"), qos=1,
                               retain=True)
                log.info("inbox: announced online on %s", self.status_topic)
        except Exception:  # an exception here would stop paho's loop
            log.exception("inbox: on_subscribe failed")

    def _status(self, state: str) -> bytes:
        return InboxStatus(state, time.time()).sign(self.key)

    def _cb_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason: object, properties: object = None) -> None:
        self.connected.clear()

    def _cb_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        # heads first: a ring's head (its event inside) is not stored after the chunks of a
        # clip that were queued before it (on loopback a 2.5 MB clip is 150 chunks)
        if not self._work.offer(msg, len(msg.payload), urgent=msg.topic.endswith("/m")):
            self._dropped(f"flooded: over {self._work.max_bytes} bytes or "
                          f"{self._work.max_items} messages waiting", source="flood")

    def _worker(self) -> None:
        while True:
            msg = self._work.get()
            if msg is None:
                return
            try:
                self.handle(msg.topic, bytes(msg.payload))
            except (DoorstepError, OSError, ValueError) as exc:
                self._drop(msg.topic, str(exc))
            except Exception as exc:  # the worker must outlive any message
                log.exception("inbox: unexpected failure on %s", msg.topic)
                self._drop(msg.topic, f"unexpected {type(exc).__name__}")

    def handle(self, topic: str, payload: bytes) -> Stored | None:
        """Process one message. Raises SealError (or OSError) for one that must be dropped."""
        parts = topic.split("/")
        base = self.base.split("/")
        if parts[:len(base)] != base or len(parts) < len(base) + 2:
            raise SealError(f"unexpected topic {topic!r}")
        device, rest = parts[len(base)], parts[len(base) + 1:]
        stored: Stored | None
        if rest[:1] != ["a"] or len(rest) not in (3, 4):
            raise SealError(f"unexpected topic {topic[:120]!r}")
        if device not in self.store.devices:
            raise SealError(f"message from unknown device {device[:40]!r}")
        seq = canonical_int(rest[1], f"sequence in topic {topic[:120]!r}", lo=1)
        if len(rest) == 3 and rest[2] == "m":
            envelope, transfer, inline = unpack_head(payload, self.identity)
            stored = self.store.accept_head(device, seq, envelope, transfer, inline)
        elif len(rest) == 4:
            chunk_bytes = canonical_int(rest[2], f"chunk size in topic {topic[:120]!r}", lo=1)
            index = canonical_int(rest[3], f"chunk index in topic {topic[:120]!r}", lo=0)
            stored = self.store.accept_chunk(device, seq, chunk_bytes, index, payload)
        else:
            raise SealError(f"unexpected topic {topic[:120]!r}")
        if stored is not None:
            self._receipt(stored)
            if self.on_stored is not None and not stored.duplicate:
                self.on_stored(stored)
        return stored

    def _receipt(self, stored: Stored) -> None:
        receipt = Receipt(stored.device, stored.manifest.seq, stored.manifest.sha256)
        self.client.publish(f"{self.base}/{stored.device}/receipt", receipt.sign(self.key),
                            qos=1)

    def _drop(self, topic: str, reason: str) -> None:
        rest = topic[len(self.base) + 1:] if topic.startswith(self.base + "/") else topic
        device, _, sub = rest.partition("/")
        if device in self.store.devices:
            self._dropped(f"on {sub}: {reason}", source=device)
        else:       # one source, and no device name in the kind, however many are made up
            self._dropped(f"from an unknown device (topic {topic[:80]!r}): {reason}",
                          source="unknown devices")

    @property
    def dropped(self) -> int:
        return self._dropped.count


def load_devices(entries: list[str], files: list[str]) -> dict[str, Ed25519PublicKey]:
    """Devices from ``ID=ed25519:...`` arguments and files of ``ID ed25519:...`` lines."""
    devices: dict[str, Ed25519PublicKey] = {}
    lines = [(e, "--device") for e in entries]
    for f in files:
        try:
            text = Path(f).read_text()
        except OSError as exc:
            raise KeyFileError(f"{f}: cannot read the device list: {exc.strerror}") from exc
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append((line, f"{f}:{n}"))
    for line, where in lines:
        # "ID ed25519:..." or "ID=ed25519:...": the key's base64 padding is "=" too
        fields = line.split() if len(line.split()) == 2 else line.split("=", 1)
        if len(fields) != 2:
            raise KeyFileError(f"{where}: expected 'DEVICE-ID ed25519:...', got {line!r}")
        devices[fields[0]] = parse_public_key(fields[1])
    return devices


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("inbox", help="receive, verify and store sealed artifacts (no keys to "
                       "decrypt)", description="Receive artifacts from devices over MQTT, "
                       "verify their signatures and hash chain, store the ciphertext and send "
                       "signed receipts. `doorstep inbox verify DIR` checks a store.")
    p.add_argument("action", nargs="?", choices=["run", "verify"], default="run",
                   help="run the inbox (default) or verify a store's chains")
    p.add_argument("dir", nargs="?", help="the store to verify (for `verify`)")
    p.add_argument("--store", default="inbox", metavar="DIR", help="where to keep artifacts")
    p.add_argument("--key", default="inbox.key", metavar="FILE",
                   help="the inbox's Ed25519 key for signing receipts (see `doorstep keys`)")
    p.add_argument("--device", action="append", default=[], metavar="ID=ed25519:...",
                   help="a device and its public key (repeatable)")
    p.add_argument("--devices", action="append", default=[], metavar="FILE",
                   help="a file of 'ID ed25519:...' lines")
    add_broker_arguments(p)
    p.add_argument("--base", default="doorstep", help="topic root above the device ids")
    p.add_argument("--group", default="doorstep-inbox", help="shared subscription group")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "verify":
        root = Path(args.dir or args.store)
        if not root.is_dir():
            print(f"doorstep inbox verify: {root} is not a directory", file=sys.stderr)
            return 2
        bad = 0
        for report in verify_store(root):
            state = "OK" if not report.problems else f"{len(report.problems)} problem(s)"
            print(f"{report.device}: {report.artifacts} artifacts, last seq {report.last_seq}: "
                  f"{state}")
            for problem in report.problems:
                print(f"  - {problem}")
            bad += bool(report.problems)
        return 1 if bad else 0
    try:
        devices = load_devices(args.device, args.devices)
        if not devices:
            print("doorstep inbox: name at least one device with --device or --devices",
                  file=sys.stderr)
            return 2
        key = SigningKey.load(args.key)
        store = InboxStore(Path(args.store), devices)
    except (DoorstepError, OSError) as exc:
        print(f"doorstep inbox: {exc}", file=sys.stderr)
        return 2
    try:
        mqtt_cfg = broker_from_args(args)
        client = make_client(mqtt_cfg, f"doorstep-inbox-{os.getpid()}",
                             reconnect_on_failure=True)
    except DoorstepError as exc:
        print(f"doorstep inbox: {exc}", file=sys.stderr)
        return 2
    inbox = Inbox(store, key, host=mqtt_cfg.host, port=mqtt_cfg.port, base=args.base,
                  group=args.group,
                  client=client,
                  protocol=args.protocol)
    inbox.start()
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        inbox.stop()
    return 0
