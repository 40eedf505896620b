"""`doorstep enroll`: on the owner's machine, with the owner's command key. Prints a one-time
code and its QR code; when a browser redeems it at the hub, asks every doorbell, by a command
signed with the owner's key, to seal for that browser from then on, and tells the hub what
each doorbell answered. `--remove ID` takes a browser out the same way (new recordings only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from doorstep.core.errors import DoorstepError
from doorstep.owner.command import next_counter, send_command
from doorstep.owner.hub.cli import DEFAULT_HOME
from doorstep.owner.hub.enrol import CODE_SECONDS, Claim, new_code, wait_claim, write_result
from doorstep.protocol.connect import Broker
from doorstep.protocol.keys import SigningKey, parse_public_key
from doorstep.protocol.kinds import Action


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("enroll", help="add a browser to the household (one-time code + QR)",
                       description="Print a one-time enrolment code for the hub's web app. "
                       "When a browser redeems it, every doorbell is asked (signed with the "
                       "owner's command key) to seal new recordings for that browser too.")
    p.add_argument("--home", default=DEFAULT_HOME, metavar="DIR", help="the hub's folder")
    p.add_argument("--key", default="owner-command.key", metavar="FILE",
                   help="the owner's Ed25519 command key")
    p.add_argument("--remove", metavar="BROWSER-ID",
                   help="remove this browser instead (from new recordings on)")
    p.add_argument("--no-wait", action="store_true",
                   help="print the code and exit (the browser can sign in, but no doorbell "
                   "seals for it until `doorstep enroll` runs again with --finish)")
    p.add_argument("--wait", type=float, default=CODE_SECONDS, metavar="SECONDS",
                   help="how long the code is good for, and how long to wait for it")
    p.add_argument("--no-qr", action="store_true", help="no QR code")
    p.add_argument("--host", default="localhost", help="MQTT broker")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    p.add_argument("--prefix", default="doorstep/{device}/")
    p.add_argument("--counter-file", metavar="FILE")
    p.set_defaults(func=run)


def add_to_doorbells(home: Path, key: SigningKey, broker: Broker, prefix: str,
                     recipient: str, browser_key: str, label: str, action: Action,
                     counter_file: Path | None = None) -> dict[str, str]:
    """Each doorbell in the store, and its signed answer ("added"/"removed" or why not)."""
    answers: dict[str, str] = {}
    for pub in sorted((home / "store").glob("*/device.pub")):
        device = pub.parent.name
        try:
            _, ack = send_command(key, device, action, mqtt_cfg=broker,
                                  counter=next_counter(counter_file), prefix=prefix,
                                  device_public=parse_public_key(pub.read_text()),
                                  params={"recipient": recipient, "key": browser_key,
                                          "label": label}, answer_timeout=20.0)
        except DoorstepError as exc:
            answers[device] = f"no answer: {exc}"
            continue
        done = "added" if action == Action.ADD_RECIPIENT else "removed"
        answers[device] = done if ack is not None and ack.ok else \
            f"refused: {ack.reason if ack else '?'}"
    return answers


def run(args: argparse.Namespace) -> int:
    home = Path(args.home).expanduser()
    folder = home / "hub" / "enrol"
    broker = Broker(host=args.host, port=args.mqtt_port, protocol=args.protocol)
    counter_file = Path(args.counter_file) if args.counter_file else None
    try:
        key = SigningKey.load(args.key)
        if args.remove:
            return remove(home, key, broker, args.prefix, args.remove, counter_file)
        code, digest = new_code(folder, seconds=args.wait)
    except (DoorstepError, OSError) as exc:
        print(f"doorstep enroll: {exc}", file=sys.stderr)
        return 2
    try:
        hub = json.loads((home / "hub" / "url").read_text())
    except (OSError, ValueError):
        hub = {"url": "http://127.0.0.1:8750/", "fingerprint": ""}
    link = f"{hub['url']}#enrol={code}"
    print(f"Enrolment code: {code}   (good for {args.wait / 60:.0f} minutes, once)")
    print(f"Open {link}")
    if hub.get("fingerprint"):
        print(f"The hub's certificate must show SHA-256 {hub['fingerprint']}")
    if not args.no_qr:
        import segno

        segno.make(link, error="m").terminal(compact=True)
    sys.stdout.flush()
    if args.no_wait:
        return 0
    claim = wait_claim(folder, digest, args.wait)
    if claim is None:
        print("doorstep enroll: the code was not used in time", file=sys.stderr)
        return 1
    return finish(home, key, broker, args.prefix, claim, counter_file)


def finish(home: Path, key: SigningKey, broker: Broker, prefix: str, claim: Claim,
           counter_file: Path | None) -> int:
    print(f"Browser {claim.label!r} ({claim.browser}) redeemed the code; its age recipient "
          f"is {claim.recipient}")
    answers = add_to_doorbells(home, key, broker, prefix, claim.recipient, claim.key,
                               claim.label, Action.ADD_RECIPIENT, counter_file)
    write_result(home / "hub" / "enrol", claim.digest, claim.browser, answers)
    for device, answer in answers.items():
        print(f"  {device}: {answer}")
    return 0 if answers and all(a == "added" for a in answers.values()) else 1


def remove(home: Path, key: SigningKey, broker: Broker, prefix: str, browser_id: str,
           counter_file: Path | None) -> int:
    doc = json.loads((home / "hub" / "browsers.json").read_text())
    found = next((b for b in doc["browsers"] if b["id"] == browser_id), None)
    if found is None:
        print(f"doorstep enroll: no browser {browser_id} in the household", file=sys.stderr)
        return 2
    answers = add_to_doorbells(home, key, broker, prefix, found["recipient"], found["key"],
                               found["label"], Action.REMOVE_RECIPIENT, counter_file)
    write_result(home / "hub" / "enrol", f"remove-{browser_id}", browser_id, answers,
                 removed=True)
    for device, answer in answers.items():
        print(f"  {device}: {answer}")
    return 0 if all(a == "removed" for a in answers.values()) else 1
