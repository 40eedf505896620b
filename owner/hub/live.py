"""The hub's live side: the doorbells' retained status and their signed answers to commands
(from MQTT), commands from the browsers out to the doorbells, and the fan-out of news to every
open app (Server-Sent Events). paho's thread only hands messages to the asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.droplog import DropLog
from doorstep.core.errors import SealError
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.connect import Broker, make_client
from doorstep.protocol.wire import (
    Topics,
    counter_of,
    device_prefix,
    open_sealed_answer,
    open_sealed_status,
    seal_command,
)

log = logging.getLogger(__name__)

ANSWER_SECONDS = 20.0


class Bus:
    """News for the open apps: each subscriber has a small queue; a slow one misses news
    rather than holding the hub's memory (it reloads the timeline when it reconnects)."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(q)

    def publish(self, news: dict[str, Any]) -> None:
        for q in list(self._subscribers):
            if not q.full():
                q.put_nowait(news)

    def __len__(self) -> int:
        return len(self._subscribers)


class Relay:
    """Status and answers in, commands out. ``base``: the topic root above the device ids;
    ``prefix``: the devices' mqtt.prefix template."""

    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop, *,
                 devices: dict[str, Ed25519PublicKey], identity: X25519Identity,
                 base: str = "doorstep", prefix: str = "doorstep/{device}/",
                 on_status: Callable[[str, dict[str, Any]], None] = lambda d, b: None,
                 client_id: str = "") -> None:
        self.broker = broker
        self.loop = loop
        self.devices = devices       # whose signed status is believed
        self.identity = identity     # the inbox key's X25519 form: statuses are sealed to it
        self.base = base.rstrip("/")
        self.prefix = prefix
        self.on_status = on_status
        # live view's segments (device, session, ciphertext): owner/hub/livefeed.py
        self.on_live: Callable[[str, str, bytes], None] | None = None
        self.status: dict[str, dict[str, Any]] = {}       # device -> body + "received"
        self._waiting: dict[tuple[str, int], asyncio.Future[bytes]] = {}
        self._dropped = DropLog(log, "hub: dropped a message")
        self.client = make_client(broker, client_id or f"doorstep-hub-{int(time.time())}",
                                  reconnect_on_failure=True)
        self.client.on_connect = self._cb_connect
        self.client.on_message = self._cb_message

    def start(self) -> None:
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _cb_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any,
                    properties: object = None) -> None:
        try:
            if reason.is_failure:
                log.error("hub: the broker refused the connection: %s", reason)
                return
            client.subscribe([(f"{self.base}/+/status", 1), (f"{self.base}/+/ack", 1),
                              (f"{self.base}/+/live/+", 0)])
        except Exception:  # an exception here would stop paho's loop
            log.exception("hub: on_connect failed")

    def _cb_message(self, client: mqtt.Client, userdata: object,
                    msg: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(RuntimeError):     # a closed loop: the hub is stopping
            self.loop.call_soon_threadsafe(self._message, msg.topic, bytes(msg.payload))

    def _message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        base = self.base.split("/")
        if parts[:len(base)] == base and len(parts) == len(base) + 3 and \
                parts[-2] == "live" and self.on_live is not None:
            self.on_live(parts[len(base)], parts[-1], payload)      # ciphertext, passed on
            return
        if parts[:len(base)] != base or len(parts) != len(base) + 2:
            return
        device, what = parts[len(base)], parts[-1]
        if what == "status":
            public = self.devices.get(device)
            try:
                if public is None:
                    raise SealError("from a device this hub does not know")
                doc = open_sealed_status(payload, self.identity, public)
            except SealError as exc:        # unsealed, unsigned, forged or unknown: never shown
                self._dropped(f"status from {device[:40]}: {exc}")
                return
            # an offline status (the last will) says only that: keep the last health known
            self.status[device] = {**self.status.get(device, {}), **doc,
                                   "received": time.time()}
            self.on_status(device, self.status[device])
        elif what == "ack":
            try:
                signed = open_sealed_answer(payload, self.identity)
            except SealError as exc:
                self._dropped(f"answer from {device[:40]}: {exc}")
                return
            counter = counter_of(signed)
            waiter = self._waiting.pop((device, counter), None) if counter is not None \
                else None
            if waiter is not None and not waiter.done():
                waiter.set_result(signed)      # the browser checks the device's signature

    async def command(self, device: str, payload: bytes, counter: int,
                      timeout: float = ANSWER_SECONDS,
                      then: Callable[[Ed25519PublicKey], list[bytes]] | None = None
                      ) -> bytes | None:
        """Publish a browser's signed command; the doorbell's signed answer, or None.
        ``then``: more messages for the ``cmd`` topic, made with the device's key and sent
        right after the command (a quick reply's sealed parts)."""
        public = self.devices.get(device)
        if public is None:
            return None
        waiter: asyncio.Future[bytes] = self.loop.create_future()
        self._waiting[(device, counter)] = waiter
        topics = Topics(device_prefix(self.prefix, device))
        # sealed to the doorbell, the answer to come sealed to this hub's key
        self.client.publish(topics.cmd, seal_command(payload, public, self.identity.recipient),
                            qos=1)
        for more in then(public) if then is not None else ():
            self.client.publish(topics.cmd, more, qos=1)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop((device, counter), None)
