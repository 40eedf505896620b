"""Shared pieces for the broker, inbox and fault tests: throwaway keys on disk, an agent config,
an in-process inbox, polling with a deadline, and the owner-side check of a whole store."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from doorstep.config.schema import MqttConfig
from doorstep.owner.inbox import Inbox
from doorstep.owner.open import open_artifact
from doorstep.owner.store import InboxStore, Stored, verify_store
from doorstep.protocol.age import X25519Identity, encrypt
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.manifest import open_envelope
from doorstep.protocol.wire import Topics
from doorstep.uplink.mqtt import Uplink
from doorstep.uplink.outbox import Item, Outbox
from doorstep.uplink.sender import Sealing, Sender

REPO = Path(__file__).resolve().parents[2]
VTEST = REPO / "doorstep" / "data" / "vtest.mp4"
DEVICE = "porch"


@dataclass
class Party:
    """Every key of one household, with the files the agent and the owner read."""

    root: Path
    owner: X25519Identity
    command: SigningKey
    device: SigningKey
    inbox: SigningKey

    @property
    def device_key_file(self) -> Path:
        return self.root / "device" / "device.key"

    @property
    def command_key_file(self) -> Path:
        return self.root / "owner-command.key"


def make_party(root: Path) -> Party:
    root.mkdir(parents=True, exist_ok=True)
    (root / "device").mkdir(exist_ok=True)
    party = Party(root, X25519Identity.generate(), SigningKey.generate(), SigningKey.generate(),
                  SigningKey.generate())
    party.device.save(party.device_key_file)
    party.command.save(party.command_key_file)
    (root / "owner.key").write_text(f"{party.owner}\n")
    return party


def agent_toml(party: Party, port: int, *, source: Path = VTEST, realtime: bool = True,
               loop: bool = True, motion: bool = True, button: bool = False,
               clip: tuple[float, float, float] = (1.0, 1.0, 3.0), chunk_bytes: int = 16384,
               in_flight: int = 2, receipt_timeout: float = 2.0, quota_mb: float = 64.0,
               protocol: str = "5", extra_mqtt: str = "", segment_seconds: float = 2.0) -> str:
    preroll, postroll, max_seconds = clip
    return f"""
[device]
id = "{DEVICE}"
data_dir = "{party.root / 'device'}"
key_file = "{party.device_key_file}"

[owner]
recipients = ["{party.owner.recipient}"]
command_key = "{party.command.public_text()}"
inbox_key = "{party.inbox.public_text()}"

[camera]
source = "{source}"
realtime = {str(realtime).lower()}
loop = {str(loop).lower()}

[encoder]
name = "libx264"
gop_seconds = 0.5
bitrate_kbps = 800
preset = "ultrafast"

[clip]
preroll_seconds = {preroll}
postroll_seconds = {postroll}
max_seconds = {max_seconds}
segment_seconds = {segment_seconds}

[motion]
enabled = {str(motion).lower()}

[mqtt]
host = "127.0.0.1"
port = {port}
tls = false
protocol = "{protocol}"
chunk_bytes = {chunk_bytes}
chunks_in_flight = {in_flight}
receipt_timeout_seconds = {receipt_timeout}
keepalive = 5
{extra_mqtt}

[outbox]
quota_mb = {quota_mb}

[button]
enabled = {str(button).lower()}
"""


def wait_for(condition: Callable[[], object], timeout: float, what: str,
             step: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds. Only
    liveness: no test asserts how fast anything happened."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


@contextmanager
def running_inbox(store_dir: Path, party: Party, port: int, *, protocol: str = "5",
                  client_id: str = "", on_stored: Callable[[Stored], None] | None = None
                  ) -> Iterator[Inbox]:
    store = InboxStore(store_dir, {DEVICE: party.device.public_key})
    inbox = Inbox(store, party.inbox, host="127.0.0.1", port=port, protocol=protocol,
                  client_id=client_id, on_stored=on_stored)
    inbox.start()
    try:
        wait_for(inbox.connected.is_set, 10, "the inbox to connect")
        yield inbox
    finally:
        inbox.stop()


def stored_seqs(store_dir: Path, device: str = DEVICE) -> list[int]:
    """Sequence numbers as the store's index lists them (one line per store operation)."""
    index = store_dir / device / "index.jsonl"
    if not index.exists():
        return []
    return [json.loads(line)["seq"] for line in index.read_text().splitlines() if line]


def check_store(store_dir: Path, party: Party, *, last_seq: int | None = None,
                decode: bool = True) -> dict[str, int]:
    """The owner's view of a store: the chain is whole, every artifact is in the index exactly
    once, every artifact verifies and decrypts, and every clip decodes with PyAV. Returns the
    count of artifacts per kind."""
    reports = verify_store(store_dir)
    assert [(r.device, r.problems) for r in reports] == [(DEVICE, [])], reports
    seqs = stored_seqs(store_dir)
    assert len(seqs) == len(set(seqs)), f"an artifact was stored twice: {sorted(seqs)}"
    files = sorted((store_dir / DEVICE).glob("*.age"))
    assert sorted(seqs) == list(range(1, len(files) + 1))
    if last_seq is not None:
        assert len(files) == last_seq, f"{len(files)} stored, the device made {last_seq}"
    kinds: dict[str, int] = {}
    for path in files:
        manifest, plain = open_artifact(path, [party.owner])
        assert open_envelope(path.with_suffix(".env").read_bytes(),
                             party.device.public_key) == manifest
        kinds[manifest.kind] = kinds.get(manifest.kind, 0) + 1
        if manifest.kind in ("clip", "clip_partial") and decode:
            frames = decode_frames(plain, store_dir.parent / f"check-{manifest.seq}.mp4",
                                   cut_short=manifest.kind == "clip_partial")
            if manifest.kind == "clip":
                assert frames > 0, f"clip seq {manifest.seq} has no decodable frame"
        elif manifest.kind == "snapshot" and decode:
            assert plain.startswith(b"\xff\xd8"), f"snapshot seq {manifest.seq} is no JPEG"
    return kinds


def decode_frames(mp4: bytes, scratch: Path, *, cut_short: bool = False) -> int:
    """Decode every video frame PyAV can get out of a fragmented MP4. ``cut_short``: a clip
    salvaged after a crash, whose last packet may be incomplete: decoding stops there."""
    scratch.write_bytes(mp4)
    frames = 0
    try:
        with av.open(str(scratch)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                try:
                    frames += len(packet.decode())
                except av.error.InvalidDataError:
                    if not cut_short:
                        raise
                    break
    finally:
        scratch.unlink()
    return frames


def partial_chunks(store_dir: Path, seq: int, device: str = DEVICE) -> int:
    """Chunks of artifact ``seq`` the inbox holds while it is still arriving (any chunking)."""
    base = store_dir / ".partial" / device
    parts = base.glob(f"{seq}.*") if base.is_dir() else []
    return sum(1 for part in parts for p in part.iterdir() if p.name.isdigit())


def wire_messages(item: Item, party: Party, chunk_bytes: int = 16384) -> list[tuple[str, bytes]]:
    """What the device publishes for ``item``, head first, made by the device's own Sender."""
    sender = Sender(Topics(f"doorstep/{DEVICE}/"), Sealing(party.device, party.inbox.public_key),
                    chunk_bytes=chunk_bytes, in_flight=64, receipt_timeout=30.0,
                    require_receipt=True)
    sender.on_connect()
    sender.add(item)
    out: list[tuple[str, bytes]] = []
    while pubs := sender.next_publishes(0.0):
        for pub in pubs:
            out.append((pub.topic, sender.payload(pub)))
            sender.on_puback(pub, 0.0)
    return out


def device_outbox(root: Path, party: Party, quota_bytes: int = 64 * 1024 * 1024) -> Outbox:
    return Outbox(root, device=DEVICE, key=party.device, quota_bytes=quota_bytes)


def device_uplink(box: Outbox, party: Party, port: int, *, receipts: bool = True,
                  status: Callable[[], dict[str, Any]] | None = None,
                  on_command: Callable[[bytes], None] | None = None,
                  **mqtt: Any) -> Uplink:
    """The device's uplink over ``box``; ``mqtt`` overrides MqttConfig fields."""
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": port, "tls": False,
                                "chunk_bytes": 16384,
                                "chunks_in_flight": 2, "receipt_timeout_seconds": 2.0,
                                "keepalive": 5, **mqtt}
    uplink = Uplink(MqttConfig(**settings), Topics(f"doorstep/{DEVICE}/"), box,
                    client_id=f"doorstep-{DEVICE}",
                    sealing=Sealing(party.device, party.inbox.public_key),
                    require_receipt=receipts,
                    status=status or (lambda: {"outbox": box.stats()}),
                    on_command=on_command)
    box.on_commit = uplink.notify
    return uplink


def put_event(box: Outbox, party: Party, kind: str = "ring", priority: int = 0) -> Item:
    body = json.dumps({"v": 1, "type": kind, "time": time.time()}).encode()
    return box.put("event", encrypt(body, [party.owner.recipient]), priority=priority)


def put_clip(box: Outbox, party: Party, size: int, priority: int = 3) -> Item:
    """A sealed clip-sized artifact (random plaintext: these tests check transport only)."""
    return box.put("clip", encrypt(os.urandom(size), [party.owner.recipient]),
                   priority=priority)
