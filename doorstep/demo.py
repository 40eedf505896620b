"""`doorstep demo`: the whole pipeline on a bundled real clip, on this machine, in one command.

Throwaway keys, a private Mosquitto, the agent on `doorstep/data/vtest.mp4` (OpenCV sample data:
pedestrians on a plaza) with a simulated doorbell press, the owner's inbox on the same broker,
and then the owner's side: verify, decrypt, and a summary of what arrived.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doorstep.broker import Mosquitto
from doorstep.capture.frames import Frame
from doorstep.config import parse_config
from doorstep.config.schema import Config
from doorstep.core.errors import DoorstepError
from doorstep.core.fsutil import write_atomic
from doorstep.owner.inbox import Inbox
from doorstep.owner.keys import make_owner, make_signing
from doorstep.owner.open import EXTENSIONS, join_clips, open_artifact
from doorstep.owner.store import InboxStore, Stored
from doorstep.protocol.age import load_identities
from doorstep.protocol.manifest import Manifest

log = logging.getLogger(__name__)

BUNDLED_CLIP = Path(__file__).parent / "data" / "vtest.mp4"
PREROLL = 3.0


@dataclass
class DemoResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)
    snapshots: int = 0
    thumbnails: int = 0      # each ring's and motion start's picture, after its event
    ring_latency_ms: float | None = None
    stored: int = 0
    outbox_left: int = 0
    agent_events: list[tuple[str, int]] = field(default_factory=list)


def demo_config(out: Path, clip: Path, port: int, recipient: str, command: str,
                inbox_key: str, realtime: bool, segment_seconds: float = 2.0) -> str:
    """The demo doorbell's config. ``segment_seconds``: the shipped default, 2, stores each
    clip as segments while it records; 0 as one artifact after it ends (the one-file path)."""
    return f"""
[device]
id = "demo"
data_dir = "{out / 'device'}"
key_file = "{out / 'device' / 'device.key'}"

[owner]
recipients = ["{recipient}"]
command_key = "{command}"
inbox_key = "{inbox_key}"

[camera]
source = "{clip}"
realtime = {str(realtime).lower()}

[encoder]
name = "libx264"
gop_seconds = 1.0

[clip]
preroll_seconds = {PREROLL}
postroll_seconds = 3.0
max_seconds = 30.0
segment_seconds = {segment_seconds}

[mqtt]
host = "127.0.0.1"
port = {port}
tls = false

[button]
pin = "GPIO17"
"""


def run_demo(out: Path, *, clip: Path = BUNDLED_CLIP, press_at: float = 4.0,
             realtime: bool = True) -> DemoResult:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "device").mkdir(exist_ok=True)
    recipient, command = make_owner(out)
    device_key = make_signing(out / "device" / "device.key")
    inbox_key = make_signing(out / "inbox.key")
    result = DemoResult()
    stored_at: dict[int, float] = {}
    with Mosquitto() as broker:
        cfg = parse_config(demo_config(out, clip, broker.port, recipient, command,
                                       inbox_key.public_text(), realtime), source="demo config")
        store = InboxStore(out / "inbox", {"demo": device_key.public_key})

        def on_stored(s: Stored) -> None:
            stored_at[s.manifest.seq] = time.time()

        inbox = Inbox(store, inbox_key, host="127.0.0.1", port=broker.port, on_stored=on_stored)
        inbox.start()
        try:
            inbox.connected.wait(10)
            pressed = _run_agent(cfg, press_at, result)
        finally:
            inbox.stop()
        ring_seqs = [seq for kind, seq in result.agent_events if kind == "ring"]
        if ring_seqs and ring_seqs[0] in stored_at and "wall" in pressed:
            result.ring_latency_ms = (stored_at[ring_seqs[0]] - pressed["wall"]) * 1000
    result.stored = len(stored_at)
    _open_all(out, result)
    return result


def _run_agent(cfg: Config, press_at: float, result: DemoResult) -> dict[str, float]:
    """The agent, as `doorstep run` wires it, with a mock doorbell pressed at ``press_at``
    seconds into the clip. Returns when the clip has ended and the uploads are confirmed."""
    from gpiozero.pins.mock import MockFactory

    from doorstep.agent.wiring import build

    factory = MockFactory()
    service = build(cfg, pin_factory=factory)
    pin = factory.pin(int(cfg.button.pin.removeprefix("GPIO")))
    pressed: dict[str, float] = {}

    def on_frame(frame: Frame) -> None:
        if "wall" not in pressed and frame.pts >= press_at:
            pressed["wall"] = time.time()
            pin.drive_low()
        elif "wall" in pressed and "released" not in pressed and \
                time.time() - pressed["wall"] > 0.2:
            pressed["released"] = time.time()
            pin.drive_high()

    service.run(on_frame=on_frame, connect_timeout=10.0, drain_timeout=30.0)
    result.outbox_left = service.outbox.depth
    result.agent_events = list(service.agent.events)
    return pressed


def _open_all(out: Path, result: DemoResult) -> None:
    identities = load_identities(out / "owner.key")
    plain = out / "decrypted"
    plain.mkdir(mode=0o700, exist_ok=True)
    opened: dict[int, tuple[Manifest, bytes]] = {}
    for path in sorted((out / "inbox" / "demo").glob("*.age")):
        manifest, data = open_artifact(path, identities)
        opened[manifest.seq] = (manifest, data)
        if manifest.kind == "segment":       # joined into their clip below
            continue
        target = plain / (path.name.removesuffix(".age") + EXTENSIONS[manifest.kind])
        write_atomic(target, data, mode=0o600, durable=False)   # plaintext: the owner's only
        if manifest.kind == "event":
            body = json.loads(data)
            body.pop("thumbnail", None)
            result.events.append({"seq": manifest.seq, **body})
        elif manifest.kind == "snapshot":
            result.snapshots += 1
        elif manifest.kind == "thumbnail":
            result.thumbnails += 1
        elif manifest.kind == "clip":
            _add_clip(result, manifest.seq, target, [])
    for joined in join_clips(opened):     # clips stored as segments (issue 15)
        target = plain / f"{joined.first:010d}.clip.mp4"
        write_atomic(target, joined.mp4, mode=0o600, durable=False)
        _add_clip(result, joined.first, target, joined.joined)
    for clip in result.clips:
        meta = next((e for e in result.events if e.get("type") == "clip"
                     and e.get("clip_seq") == clip["seq"]), None)
        if meta is not None:
            clip["preroll"] = meta["preroll"]
            clip["trigger"] = meta["trigger"]
            clip["trigger_pts"] = meta["trigger_pts"]


def _add_clip(result: DemoResult, seq: int, target: Path, segments: list[int]) -> None:
    import av

    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        frames = [f.time for f in container.decode(stream) if f.time is not None]
        rate = float(stream.average_rate or 10)
    duration = max(frames) - min(frames) + 1 / rate if frames else 0.0
    result.clips.append({"seq": seq, "file": target.name, "frames": len(frames),
                         "duration": duration, "segments": segments})


def print_summary(result: DemoResult, out: Path) -> None:
    kinds: dict[str, int] = {}
    for e in result.events:
        kinds[e["type"]] = kinds.get(e["type"], 0) + 1
    print()
    print("Doorstep demo: summary")
    print(f"  artifacts stored by the inbox: {result.stored} (left in the device outbox: "
          f"{result.outbox_left})")
    print("  events received: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
    print(f"  snapshots received: {result.snapshots}, thumbnails: {result.thumbnails}")
    print(f"  clips received: {len(result.clips)}")
    for c in result.clips:
        preroll = c.get("preroll", float("nan"))
        note = ""
        if c.get("trigger_pts", PREROLL) < PREROLL:
            note = f" (all the video there was: the trigger came {c['trigger_pts']:.1f} s in)"
        print(f"    seq {c['seq']}: {c['duration']:.1f} s, {c['frames']} frames, trigger "
              f"{c.get('trigger', '?')}, pre-roll {preroll:.1f} s of {PREROLL:.0f}{note} "
              f"-> {c['file']}")
    if result.ring_latency_ms is not None:
        print(f"  ring: button press to ring event stored at the inbox: "
              f"{result.ring_latency_ms:.1f} ms")
    print(f"  files: {out}/owner.key, {out}/inbox/demo/*.age, {out}/decrypted/")
    print(f"  check one yourself: age -d -i {out}/owner.key FILE.segment.age > out.mp4 (each "
          "segment of a clip plays on its own; `doorstep open` joins them)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a bundled real clip",
                       description="Throwaway keys, a private Mosquitto, the agent on a bundled "
                       "clip with a simulated doorbell press, the owner's inbox, decryption and "
                       "a summary.")
    p.add_argument("--out", metavar="DIR", help="keep everything here (default: a temp dir)")
    p.add_argument("--clip", metavar="VIDEO", default=str(BUNDLED_CLIP),
                   help="video to play instead of the bundled one")
    p.add_argument("--press-at", type=float, default=4.0, metavar="SECONDS",
                   help="when the simulated doorbell press happens (default 4)")
    p.add_argument("--fast", action="store_true", help="play the clip as fast as possible "
                   "instead of in real time")
    p.add_argument("--serve", action="store_true", help="then serve what arrived with the "
                   "owner's hub (`doorstep home`) on loopback, print its URL and an enrolment "
                   "code, and keep serving until Ctrl-C")
    p.add_argument("--port", type=int, default=8750, help="the hub's port with --serve")
    p.set_defaults(func=run)


def serve(out: Path, port: int, stop: threading.Event | None = None) -> int:
    """The demo's inbox store served by the hub, with an enrolment code a new browser can
    redeem; the owner's key can be imported in the app's settings to open the demo's
    recordings (they were sealed before any browser was enrolled)."""
    from doorstep.owner.hub.enrol import new_code
    from doorstep.owner.hub.server import HubConfig, HubServer
    from doorstep.protocol.keys import SigningKey, parse_public_key

    home = out / "home"
    home.mkdir(exist_ok=True)
    store = home / "store"
    if not store.is_symlink():
        # relative to home/, so it holds whether --out was relative (as `make demo` gives it)
        # or absolute, and when the folder is moved
        store.symlink_to(Path("..") / "inbox")
    device = parse_public_key((out / "inbox" / "demo" / "device.pub").read_text())
    server = HubServer(HubConfig(home=home, devices={"demo": device},
                                 inbox_key=SigningKey.load(out / "inbox.key"),
                                 port=port)).start()
    code, _ = new_code(home / "hub" / "enrol", seconds=3600)
    print()
    print(f"The hub is serving the demo's recordings at {server.url}")
    print(f"Enrolment code (good for an hour, once): {code}")
    print(f"  open {server.url}#enrol={code}")
    print(f"  then Settings -> import the owner's key from {out / 'owner.key'} to open them")
    print("Ctrl-C to stop.", flush=True)
    stop = stop or threading.Event()
    server.serve_until(stop)
    return 0


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="doorstep-demo-"))
    if args.out and any(out.glob("*.key")):
        print(f"doorstep demo: {out} already holds keys; use an empty directory",
              file=sys.stderr)
        return 2
    try:
        result = run_demo(out, clip=Path(args.clip), press_at=args.press_at,
                          realtime=not args.fast)
    except DoorstepError as exc:
        print(f"doorstep demo: {exc}", file=sys.stderr)
        return 1
    print_summary(result, out)
    ok = bool(result.clips and result.events)
    if ok and args.serve:
        return serve(out, args.port)
    return 0 if ok else 1
