"""The paho-mqtt adapter: one connection per device, reconnects with jittered exponential
backoff, a retained status with an offline last will, and the Sender's decisions carried out.

Threads: paho's callbacks run on our network thread ("uplink-net") and only put events on a
queue. The "uplink-send" thread owns the Sender and the Outbox bookkeeping, and is the only
caller of ``publish`` for the outbox. The exceptions: answers to owner commands
(``publish_reply``, from whichever thread carried the command out) and live view's QoS 0
segments (``publish_live``, from the live thread, paced by uplink/live.py).
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from doorstep.config import resolve_secret
from doorstep.config.schema import MqttConfig
from doorstep.core.droplog import DropLog
from doorstep.core.errors import BrokerRefused, SealError
from doorstep.protocol.age import X25519Recipient
from doorstep.protocol.connect import DEVICE_MAX_PACKET, Broker, connect_properties, make_client
from doorstep.protocol.reply import PART_MAGIC
from doorstep.protocol.seal import identity_of
from doorstep.protocol.wire import (
    InboxStatus,
    Receipt,
    Topics,
    counter_of,
    open_sealed_command,
    seal_answer,
    seal_status,
)
from doorstep.uplink.live import LiveLane
from doorstep.uplink.outbox import Item, Outbox
from doorstep.uplink.sender import Publish, Sealing, Sender, is_ring

log = logging.getLogger(__name__)

MAX_WAITING_MESSAGES = 256    # commands and receipts waiting for the send thread, at most
RING_RETRY = 2.0   # seconds at most between connect attempts while a fresh ring waits
RING_FRESH = 300.0  # a ring this recent (seconds) still has someone at the door
# Data the kernel may hold unsent in the connection's send buffer (TCP_NOTSENT_LOWAT), in
# bytes: about 65 ms at 2 Mbit/s. Without it the buffer autotunes to megabytes, and on a slow
# uplink whatever was handed to it goes out before anything later, a ring included. Bytes
# already on the wire (in flight) are not limited, so a fast link is not slowed down. See
# docs/performance.md, issue 13 item 13.
NOTSENT_LOWAT = 16384
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)   # 25: its number on Linux


def tune_socket(sock: Any) -> list[str]:
    """Set the device connection's TCP options: TCP_NODELAY (a ring's last segment does not
    wait for the ACK of what went before: Nagle) and TCP_NOTSENT_LOWAT. Returns the options
    that could not be set, with why (a Unix socket, a websocket wrapper, a kernel without
    them); the connection works without them, only a ring may queue longer."""
    failed = []
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is None:
        return [f"socket options: {type(sock).__name__} has no setsockopt"]
    for name, level, option, value in (
            ("TCP_NODELAY", socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
            ("TCP_NOTSENT_LOWAT", socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)):
        try:
            setsockopt(level, option, value)
        except OSError as exc:
            failed.append(f"{name}: {exc.strerror or exc}")
    return failed


def device_client(cfg: MqttConfig, client_id: str, *,
                  secrets_dir: Path | None = None) -> mqtt.Client:
    """A paho client from the device's [mqtt] section; a relative password file is looked up
    in ``secrets_dir`` (systemd's credentials, or the data dir)."""
    password = cfg.password_file
    if password and secrets_dir is not None:
        password = str(resolve_secret(password, secrets_dir))
    return make_client(Broker(host=cfg.host, port=cfg.port, protocol=cfg.protocol,
                              keepalive=cfg.keepalive, tls=cfg.tls, ca_file=cfg.ca_file,
                              cert_file=cfg.cert_file, key_file=cfg.key_file,
                              username=cfg.username, password_file=password), client_id)


@dataclass(frozen=True)
class _Event:
    kind: str              # "connected", "disconnected", "puback", "message", "wake", "evicted"
    mid: int = 0
    topic: str = ""
    payload: bytes = b""
    reason: str = ""


class Backoff:
    """Exponential backoff with jitter: the n-th delay is uniform in
    [base, min(cap, base * 2**n)]."""

    def __init__(self, base: float = 0.5, cap: float = 60.0,
                 rng: random.Random | None = None) -> None:
        self.base, self.cap = base, cap
        self._n = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        high = min(self.cap, self.base * (2 ** self._n))
        self._n = min(self._n + 1, 30)
        return self._rng.uniform(self.base, max(self.base, high))

    def reset(self) -> None:
        self._n = 0


class Uplink:
    """Uploads the outbox over MQTT and hands owner commands to ``on_command``."""

    def __init__(self, cfg: MqttConfig, topics: Topics, outbox: Outbox, *, client_id: str,
                 sealing: Sealing, status: Callable[[], dict[str, Any]],
                 require_receipt: bool = True,
                 on_command: Callable[[bytes], None] | None = None,
                 on_part: Callable[[bytes], None] | None = None,
                 secrets_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.topics = topics
        self.outbox = outbox
        self.sealing = sealing
        self._inbox_public = sealing.inbox_public
        self._identity = identity_of(sealing.key)    # opens the owner's sealed commands
        # each command's answer goes sealed to the recipient it named, by counter
        self._reply_to: OrderedDict[int, X25519Recipient] = OrderedDict()
        self._status = status
        self._on_command = on_command
        self._on_part = on_part          # a quick reply's sealed parts (protocol/reply.py)
        self.client = device_client(cfg, client_id, secrets_dir=secrets_dir)
        self.client.will_set(topics.status, self._status_payload("offline"), qos=1, retain=True)
        self.client.on_connect = self._cb_connect
        self.client.on_disconnect = self._cb_disconnect
        self.client.on_publish = self._cb_publish
        self.client.on_message = self._cb_message
        self.client.on_socket_open = self._cb_socket_open
        self.live = LiveLane(self.client.socket)     # live view's segments (issue 15)
        self.sender = Sender(topics, sealing, chunk_bytes=cfg.chunk_bytes,
                             in_flight=cfg.chunks_in_flight,
                             queue_delay=cfg.queue_delay_ms / 1000,
                             receipt_timeout=cfg.receipt_timeout_seconds,
                             require_receipt=require_receipt)
        self._events: queue.Queue[_Event] = queue.Queue()
        # "message" events may wait at most MAX_WAITING_MESSAGES at once (see _cb_message)
        self._inflow = threading.Semaphore(MAX_WAITING_MESSAGES)
        self._mids: dict[int, Publish] = {}
        self._mids_lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._nudge = threading.Event()     # cuts a reconnect wait short: a ring, or stop()
        self._threads: list[threading.Thread] = []
        self.refused: str | None = None
        self._dropped = DropLog(log, "uplink: dropped a message")
        self._inbox_time = float("-inf")   # the newest inbox announcement acted on
        outbox.on_evict = self._evicted

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        for item in self.outbox.items():
            self.sender.add(item, self.outbox.acked_chunks(item.seq))
        for target, name in ((self._net_loop, "uplink-net"), (self._send_loop, "uplink-send")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Publish offline status, disconnect cleanly and join the threads."""
        if self._connected.is_set():
            try:
                info = self.client.publish(self.topics.status, self._status_payload("offline"),
                                           qos=1, retain=True)
                info.wait_for_publish(timeout=min(timeout, 2.0))
            except (RuntimeError, ValueError) as exc:
                log.warning("uplink: could not publish offline status: %s", exc)
        self._stop.set()
        self._nudge.set()
        self._events.put(_Event("wake"))
        self.client.disconnect()
        for t in self._threads:
            t.join(timeout)

    def _evicted(self, seq: int) -> None:
        """The outbox evicted ``seq`` (any thread, under the outbox's lock): stop sending it."""
        self._events.put(_Event("evicted", mid=seq))

    def notify(self, item: Item | None = None) -> None:
        """A new artifact is in the outbox (safe to call from any thread)."""
        self._events.put(_Event("wake", mid=item.seq if item else 0))
        if item is not None and is_ring(item):
            self.live.ring_busy(True)       # live view yields before the send thread wakes
            self._nudge.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish_status(self) -> None:
        if self._connected.is_set():
            self.client.publish(self.topics.status, self._status_payload("online"), qos=1,
                                retain=True)

    def publish_reply(self, payload: bytes) -> None:
        """A signed answer to an owner command (QoS 1, not retained), sealed to the recipient
        its command named. While offline it is not kept: the owner's `doorstep cmd` times out
        and says it got no answer."""
        reply_to = self._reply_to.get(counter_of(payload) or -1)
        if reply_to is None:
            log.warning("uplink: an answer to no command we hold a reply recipient for; "
                        "not sent")
            return
        if self._connected.is_set():
            self.client.publish(self.topics.ack, seal_answer(payload, reply_to), qos=1)

    def publish_live(self, topic: str, payload: bytes, timeout: float = 0.3) -> bool:
        """One live view segment, QoS 0, from the live thread, once ``LiveLane`` admits it
        (no ring in flight, the socket nearly drained). False when it was not handed to the
        broker within ``timeout`` s, or the connection is down: it is not kept."""
        if not self._connected.is_set():
            return False
        if not self.live.admit(timeout):
            return False
        info = self.client.publish(topic, payload, qos=0)
        ok = info.rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        self.live.published(info if ok else None)
        return ok

    def _status_payload(self, state: str) -> bytes:
        body = {"v": 1, "state": state, "time": time.time()}
        if state == "online":
            body.update(self._status())
        return seal_status(self.sealing.key, body, self.sealing.inbox)

    # -- paho callbacks: network thread; hand off and never raise ----------------------------
    def _cb_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any = None) -> None:
        try:
            if reason.is_failure:
                # set here, on the network thread, so its next wait is already the long one
                self.refused = str(reason)
                self._events.put(_Event("refused", reason=str(reason)))
            else:
                self._events.put(_Event("connected"))
        except Exception:
            log.exception("uplink: on_connect handler failed")

    def _cb_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        try:
            failed = tune_socket(sock)
            if failed:
                log.warning("uplink: could not tune the connection (%s); rings may wait behind "
                            "clip data on a slow uplink", "; ".join(failed))
        except Exception:
            log.exception("uplink: on_socket_open handler failed")

    def _cb_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any = None) -> None:
        self._events.put(_Event("disconnected", reason=str(reason)))

    def _cb_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any = None) -> None:
        self._events.put(_Event("puback", mid=mid))

    def _cb_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Bounded: a flood of messages (commands, receipts) waits in at most this many; the
        # rest are dropped and counted. PUBACKs and connection events are never dropped.
        if not self._inflow.acquire(blocking=False):
            self._dropped(f"flooded: more than {MAX_WAITING_MESSAGES} messages waiting",
                          source="flood")
            return
        self._events.put(_Event("message", topic=msg.topic, payload=bytes(msg.payload)))

    # -- network thread -----------------------------------------------------------------------
    def _net_loop(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                self.client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive,
                                    properties=connect_properties(self.client,
                                                                  DEVICE_MAX_PACKET))
            except (OSError, ssl.SSLError) as exc:
                delay = backoff.next()
                log.warning("uplink: broker %s:%d unreachable (%s); retrying in %.1f s",
                            self.cfg.host, self.cfg.port, exc, delay)
                self._pause(delay)
                continue
            rc = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            while not self._stop.is_set() and rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
                rc = self.client.loop(timeout=1.0)
            if self._connected.is_set():
                backoff.reset()
            self._connected.clear()
            self._events.put(_Event("disconnected", reason=str(rc)))
            if not self._stop.is_set():
                delay = backoff.next()
                if self.refused:
                    delay = max(delay, 30.0)
                log.info("uplink: connection lost (%s); reconnecting in %.1f s", rc, delay)
                self._pause(delay)

    def _pause(self, delay: float) -> None:
        """Wait ``delay`` s before the next connect, but at most RING_RETRY s while a ring of
        the last RING_FRESH s waits in the outbox (one committed meanwhile cuts the wait
        short): someone is at the door now, and fresh rings are rare, so a fleet retrying
        faster for them costs a broker little. Not when the broker refused us: that needs a
        person, not haste."""
        start = time.monotonic()
        while not self._stop.is_set():
            fresh = time.time() - RING_FRESH
            hurry = not self.refused and any(is_ring(i) and i.manifest.created > fresh
                                             for i in self.outbox.items())
            if hurry and delay > RING_RETRY:
                log.info("uplink: a ring is waiting; trying the broker again within %.0f s",
                         RING_RETRY)
                delay = RING_RETRY
            left = start + delay - time.monotonic()
            if left <= 0:
                return
            self._nudge.wait(left)
            self._nudge.clear()

    # -- sender thread ------------------------------------------------------------------------
    def _send_loop(self) -> None:
        # Messages (commands, receipts) are handled one per turn, after every other event and
        # a send round: a flood of commands (forged ones cost a decryption and a signature
        # check each) must not hold a ring's "wake" or a PUBACK behind up to
        # MAX_WAITING_MESSAGES of them (bench row 13, docs/rtc.md).
        messages: deque[_Event] = deque()
        while not self._stop.is_set():
            deadline = self.sender.next_deadline()
            timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            try:
                event: _Event | None = self._events.get(timeout=0.0 if messages else timeout)
            except queue.Empty:
                event = None
            try:
                while event is not None:
                    if event.kind == "message":
                        messages.append(event)
                    else:
                        self._handle(event)
                    try:
                        event = self._events.get_nowait()
                    except queue.Empty:
                        event = None
                self._pump()
                if messages:
                    event = messages.popleft()
                    self._handle(event)
            except Exception:  # this thread must outlive any one event: log it and go on
                log.exception("uplink: handling %s failed", event.kind if event else "a send")
                self._stop.wait(0.5)

    def _handle(self, ev: _Event) -> None:
        now = time.monotonic()
        if ev.kind == "connected":
            self.refused = None
            self._connected.set()
            log.info("uplink: connected to %s:%d", self.cfg.host, self.cfg.port)
            with self._mids_lock:
                self._mids.clear()
            again = self.sender.on_connect()  # everything unreceipted goes again, backoff reset
            if again:
                log.info("uplink: resending %d unreceipted artifact(s) after connecting", again)
            topics = [(self.topics.receipt, 1), (self.topics.cmd, 1)]
            topics.append((self.topics.inbox, 1))
            self.client.subscribe(topics)
            self.publish_status()
        elif ev.kind == "refused":
            log.error("uplink: broker refused the connection: %s (%s)", ev.reason,
                      BrokerRefused.__doc__)
        elif ev.kind == "disconnected":
            if self.sender.connected:
                log.warning("uplink: disconnected (%s)", ev.reason)
            self._connected.clear()
            self.sender.on_disconnect()
            self.live.reset()
        elif ev.kind == "puback":
            with self._mids_lock:
                pub = self._mids.pop(ev.mid, None)
            if pub is not None:
                acked = self.sender.on_puback(pub, now)
                if acked is not None:
                    self.outbox.set_acked_chunks(pub.seq, acked)
        elif ev.kind == "message":
            self._inflow.release()
            self._on_message(ev.topic, ev.payload)
        elif ev.kind == "evicted":
            self.sender.drop(ev.mid)
        elif ev.kind == "wake" and ev.mid:
            item = self.outbox.get(ev.mid)
            if item is not None:
                self.sender.add(item)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.receipt:
            try:
                receipt = Receipt.open(payload, self._inbox_public)
            except SealError as exc:
                self._dropped(f"receipt: {exc}")
                return
            if receipt.device != self.outbox.device:
                self._dropped(f"receipt for another device {receipt.device!r}")
                return
            if self.sender.on_receipt(receipt.seq, receipt.sha256):
                self.outbox.remove(receipt.seq)
                log.info("uplink: inbox confirmed seq %d; removed from the outbox", receipt.seq)
        elif topic == self.topics.inbox:
            self._on_inbox_status(payload)
        elif topic == self.topics.cmd and self._on_part is not None and \
                payload[:4] == PART_MAGIC:
            self._on_part(payload)
        elif topic == self.topics.cmd and self._on_command is not None:
            try:
                signed, reply_to = open_sealed_command(payload, self._identity)
            except SealError as exc:
                self._dropped(f"command: {exc}")
                return
            counter = counter_of(signed)
            if counter is not None:       # where the answer goes; a forgery gets none
                self._reply_to[counter] = reply_to
                while len(self._reply_to) > 64:
                    self._reply_to.popitem(last=False)
            self._on_command(signed)

    def _on_inbox_status(self, payload: bytes) -> None:
        """The inbox announces itself when it (re)subscribes: what was published while it was
        away is gone, so everything unreceipted goes again now, whole, rings first."""
        try:
            status = InboxStatus.open(payload, self._inbox_public)
        except SealError as exc:
            self._dropped(f"inbox status: {exc}")
            return
        if status.time <= self._inbox_time:
            return                       # one acted on already, or a replay of an old one
        self._inbox_time = status.time
        if status.state == "online":
            n = self.sender.resend(whole=True)
            if n:
                log.info("uplink: the inbox is online; resending %d unreceipted artifact(s) "
                         "now", n)
            else:
                log.info("uplink: the inbox is online")
        else:
            log.info("uplink: the inbox went offline; the outbox keeps everything until it "
                     "returns")

    @property
    def dropped_messages(self) -> int:
        return self._dropped.count

    @property
    def drops(self) -> DropLog:
        """What this uplink dropped, by kind (for the status and the periodic drop report)."""
        return self._dropped

    def _pump(self) -> None:
        for seq in self.sender.finished(time.monotonic()):
            self.outbox.remove(seq)
        vanished: set[int] = set()
        for pub in self.sender.next_publishes(time.monotonic()):
            if pub.seq in vanished:
                continue            # its other chunks: one line per artifact, not per chunk
            try:
                payload = self.sender.payload(pub)
            except (OSError, KeyError) as exc:
                vanished.add(pub.seq)
                log.warning("uplink: seq %d vanished before it was sent (%s)", pub.seq, exc)
                self.sender.drop(pub.seq)
                continue
            with self._mids_lock:
                info = self.client.publish(pub.topic, payload, qos=1)
                if info.rc != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self.sender.forget_in_flight(pub)
                    continue
                self._mids[info.mid] = pub
        self.live.ring_busy(self.sender.ring_busy)
