"""`doorstep cmd`: the owner's side of device commands. Signs one command with the owner's
Ed25519 key (owner-command.key), with a counter that only ever goes up, and publishes it on the
device's ``cmd`` topic (docs/wire.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.errors import BrokerRefused, BrokerUnavailable, DoorstepError, SealError
from doorstep.core.fsutil import write_atomic
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.connect import (
    DEVICE_MAX_PACKET,
    Broker,
    add_broker_arguments,
    broker_from_args,
    connect_properties,
    make_client,
)
from doorstep.protocol.keys import SigningKey, parse_public_key
from doorstep.protocol.kinds import OWNER_ONLY, Action
from doorstep.protocol.reply import NAME as REPLY_NAME
from doorstep.protocol.wire import (
    COMMAND_ACTIONS,
    Ack,
    Command,
    Topics,
    device_prefix,
    open_sealed_answer,
    seal_command,
)

log = logging.getLogger(__name__)


def next_counter(counter_file: Path | None, now: float | None = None) -> int:
    """A counter above every one sent before: milliseconds since the epoch, or one more than
    the last counter in ``counter_file`` if that is higher (a clock set back). The new value is
    stored before the command leaves, so a crash can never reuse it."""
    counter = int((time.time() if now is None else now) * 1000)
    if counter_file is not None:
        try:
            last = int(json.loads(counter_file.read_text())["counter"])
        except FileNotFoundError:
            last = 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DoorstepError(f"{counter_file}: unreadable command counter ({exc}); fix or "
                                "remove it") from exc
        counter = max(counter, last + 1)
        write_atomic(counter_file, json.dumps({"counter": counter}).encode())
    return counter


def send_command(key: SigningKey, device: str, action: str, *, mqtt_cfg: Broker,
                 counter: int, prefix: str = "doorstep/{device}/", timeout: float = 10.0,
                 device_public: Ed25519PublicKey, wait: bool = True,
                 answer_timeout: float = 20.0,
                 params: dict[str, str] | None = None) -> tuple[Command, Ack | None]:
    """Sign ``action`` for ``device``, seal it to the doorbell's key and publish it (QoS 1,
    not retained). With ``wait``, wait up to ``answer_timeout`` s for the doorbell's signed
    answer, sealed to a one-time key made here, and return it (refusals included: ``ack.ok``
    is False and ``ack.reason`` says why). Raises BrokerRefused or BrokerUnavailable when the
    command could not be handed to the broker, and NoAnswer when the doorbell did not answer
    in time."""
    if action not in COMMAND_ACTIONS:
        raise DoorstepError(f"unknown action {action!r} (allowed: "
                            f"{', '.join(sorted(COMMAND_ACTIONS))})")
    cmd = Command(device=device, counter=counter, action=Action(action), issued=time.time(),
                  params=tuple(sorted((params or {}).items())))
    topics = Topics(device_prefix(prefix, device))
    reply = X25519Identity.generate()      # only this run can read the answer
    client = make_client(mqtt_cfg, f"doorstep-owner-{device}-{counter}")
    state: dict[str, Any] = {}
    connected, subscribed, answered = threading.Event(), threading.Event(), threading.Event()

    def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: Any,
                   properties: object = None) -> None:
        state["reason"] = reason
        connected.set()

    def on_subscribe(client: mqtt.Client, userdata: object, mid: int, reasons: Any,
                     properties: object = None) -> None:
        subscribed.set()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:      # anything else on the topic (forged, another command's) is ignored
            ack = Ack.open(open_sealed_answer(bytes(msg.payload), reply), device_public)
        except SealError:
            return
        if ack.device == device and ack.counter == counter:
            state["ack"] = ack
            answered.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(mqtt_cfg.host, mqtt_cfg.port, keepalive=mqtt_cfg.keepalive,
                       properties=connect_properties(client, DEVICE_MAX_PACKET))
    except OSError as exc:
        raise BrokerUnavailable(f"broker {mqtt_cfg.host}:{mqtt_cfg.port}: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(timeout):
            raise BrokerUnavailable(f"broker {mqtt_cfg.host}:{mqtt_cfg.port} did not answer")
        if state["reason"].is_failure:
            raise BrokerRefused(f"broker {mqtt_cfg.host}:{mqtt_cfg.port} refused us: "
                                f"{state['reason']}")
        if wait:                           # listen before asking, so no answer is missed
            client.subscribe(topics.ack, qos=1)
            if not subscribed.wait(timeout):
                raise BrokerUnavailable(f"the broker did not confirm our subscription to "
                                        f"{topics.ack}")
        info = client.publish(topics.cmd, seal_command(cmd.sign(key), device_public,
                                                       reply.recipient), qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise BrokerUnavailable(f"the broker did not acknowledge the command on "
                                    f"{topics.cmd}")
        log.info("sent %s to %s (counter %d) on %s", action, device, counter, topics.cmd)
        if wait and not answered.wait(answer_timeout):
            raise NoAnswer(f"{device} did not answer {action} (counter {counter}) within "
                           f"{answer_timeout:.0f} s: it may be offline, or not have the "
                           "owner's command key")
    finally:
        client.disconnect()
        client.loop_stop()
    return cmd, state.get("ack")


class NoAnswer(BrokerUnavailable):
    """The command reached the broker, but the doorbell's signed answer never came."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cmd", help="send a signed command to a doorbell",
                       description="Sign a command with the owner's command key and publish "
                       "it on the device's cmd topic. The device accepts it only if the "
                       "signature verifies and the counter is above every one it has seen.")
    # adding and removing recipients is `doorstep enroll`'s (it knows the member's keys);
    # a WebRTC session is a WebRTC peer's, which signs its own SDP (docs/rtc.md), and live
    # view is the app's (a session needs a viewer to renew and watch it)
    # and a reply's upload (`reply_put`) is the app's: its audio follows in sealed parts
    p.add_argument("action", choices=sorted(COMMAND_ACTIONS - OWNER_ONLY - {
        Action.RTC_OFFER, Action.RTC_HANGUP, Action.LIVE, Action.REPLY_PUT}))
    p.add_argument("--name", metavar="REPLY",
                   help="for reply_play and reply_delete: the stored quick reply's name "
                   "(1-32 of a-z, 0-9, _ and -, as the app shows it)")
    p.add_argument("--key", default="owner-command.key", metavar="FILE",
                   help="the owner's Ed25519 command key (from `doorstep keys owner`)")
    p.add_argument("--device", required=True, metavar="ID", help="the device id")
    p.add_argument("--device-key", required=True, metavar="ed25519:...",
                   help="the doorbell's public key (as given to `doorstep inbox --device`): "
                   "the command is sealed to it, and its signed answer checked against it")
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait for the doorbell's answer (exit 0 once the broker has "
                   "the command; nothing confirms it was carried out)")
    p.add_argument("--wait", type=float, default=20.0, metavar="SECONDS",
                   help="how long to wait for the answer (default 20)")
    add_broker_arguments(p)
    p.add_argument("--prefix", default="doorstep/{device}/",
                   help="topic prefix, as in the device's mqtt.prefix")
    p.add_argument("--counter-file", metavar="FILE",
                   help="keeps the last counter, so commands stay in order even if this "
                   "machine's clock goes back")
    p.set_defaults(func=run)


NAMED = frozenset({Action.REPLY_PLAY, Action.REPLY_DELETE})    # act on one stored reply


def params_of(action: str, name: str | None) -> dict[str, str]:
    """The command's params from the command line; DoorstepError naming what is wrong."""
    if action not in NAMED:
        if name is not None:
            raise DoorstepError(f"--name is only for {' and '.join(sorted(NAMED))}, "
                                f"not {action}")
        return {}
    if name is None:
        raise DoorstepError(f"{action} needs --name REPLY: the quick reply to "
                            f"{'play' if action == Action.REPLY_PLAY else 'delete'}")
    if not REPLY_NAME.fullmatch(name):
        raise DoorstepError(f"--name {name[:40]!r}: a reply's name is 1-32 of a-z, 0-9, _ "
                            "and -, starting with a letter or digit")
    return {"name": name}


def run(args: argparse.Namespace) -> int:
    try:
        params = params_of(args.action, args.name)
        cfg = broker_from_args(args)
        device_public = parse_public_key(args.device_key)
        key = SigningKey.load(args.key)
        counter = next_counter(Path(args.counter_file) if args.counter_file else None)
        cmd, ack = send_command(key, args.device, args.action, mqtt_cfg=cfg, counter=counter,
                                prefix=args.prefix, device_public=device_public,
                                wait=not args.no_wait, answer_timeout=args.wait,
                                params=params)
    except (DoorstepError, OSError) as exc:
        print(f"doorstep cmd: {exc}", file=sys.stderr)
        return 1
    if ack is None:
        print(f"sent {cmd.action} to {cmd.device} (counter {cmd.counter}); not confirmed")
        return 0
    if not ack.ok:
        print(f"doorstep cmd: {cmd.device} refused {cmd.action}: {ack.reason}",
              file=sys.stderr)
        return 1
    print(f"{cmd.device} did {cmd.action} (counter {cmd.counter})")
    return 0
