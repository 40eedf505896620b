"""The owner's inbox: shared subscriptions across workers, idempotent reassembly, a store of
ciphertext only, `doorstep inbox verify`, and survival of whatever arrives on its topics."""

from __future__ import annotations

import json
import os
import random
import threading
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.broker import Mosquitto
from doorstep.cli import main as doorstep_main
from doorstep.core.errors import SealError
from doorstep.owner.inbox import Inbox
from doorstep.owner.store import InboxStore
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.manifest import Chain, sign_manifest
from doorstep.protocol.seal import recipient_of
from doorstep.protocol.wire import Receipt, Transfer, pack_head, padded_body, plan_transfer
from doorstep.uplink.outbox import Item
from tests.faults.harness import (
    DEVICE,
    Party,
    check_store,
    device_outbox,
    device_uplink,
    make_party,
    partial_chunks,
    put_clip,
    put_event,
    running_inbox,
    stored_seqs,
    wait_for,
    wire_messages,
)

CHUNK = 4096


def clip_messages(item: Item, party: Party,
                  chunk_bytes: int = CHUNK) -> tuple[tuple[str, bytes], list[tuple[str, bytes]]]:
    """The head and the chunk messages (topic, payload) the device sends for a clip."""
    head, *chunks = wire_messages(item, party, chunk_bytes)
    return head, chunks


def store_for(tmp_path: Path, party: Party) -> InboxStore:
    return InboxStore(tmp_path / "store", {DEVICE: party.device.public_key})


def inbox_for(tmp_path: Path, party: Party) -> Inbox:
    """An inbox worker that is never started: ``handle`` is what it does with each message."""
    return Inbox(store_for(tmp_path, party), party.inbox, host="127.0.0.1", port=1)


@pytest.mark.slow
def test_two_workers_split_the_load_and_store_each_artifact_once(tmp_path: Path,
                                                                 broker: Mosquitto) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    for n in range(6):
        put_event(box, party)
        put_clip(box, party, 150_000 + 7_000 * n)
    last = box.stats()["last_seq"]
    handled = {"a": 0, "b": 0}
    store_dir = tmp_path / "store"
    with running_inbox(store_dir, party, broker.port, client_id="inbox-a") as a, \
            running_inbox(store_dir, party, broker.port, client_id="inbox-b") as b:
        assert all(t.startswith("$share/doorstep-inbox/doorstep/") for t in a.topics())
        for name, worker in (("a", a), ("b", b)):
            real = worker.handle

            def counting(topic: str, payload: bytes, name: str = name,
                         real: object = real) -> object:
                handled[name] += 1
                return real(topic, payload)  # type: ignore[operator]

            worker.handle = counting  # type: ignore[method-assign,assignment]
        uplink = device_uplink(box, party, broker.port, chunk_bytes=CHUNK, chunks_in_flight=8)
        uplink.start()
        wait_for(lambda: box.depth == 0, 60, "a receipt for every artifact")
        uplink.stop()
    assert handled["a"] > 0 and handled["b"] > 0, handled
    assert sorted(stored_seqs(store_dir)) == list(range(1, last + 1))
    assert check_store(store_dir, party, last_seq=last, decode=False) == {"event": 6, "clip": 6}
    assert not any((store_dir / ".partial").rglob("*[0-9]")), "chunks left behind"


def test_duplicates_are_harmless_and_a_half_received_clip_resumes(tmp_path: Path) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    clip = put_clip(box, party, 30_000)
    head, chunks = clip_messages(clip, party)
    inbox = inbox_for(tmp_path, party)
    assert inbox.handle(*head) is None
    for i in (0, 1, 1, 0, 2):                   # duplicates, out of order
        assert inbox.handle(*chunks[i]) is None
    # the inbox restarts; the device resumes from where its PUBACKs say it was
    inbox = inbox_for(tmp_path, party)
    assert inbox.handle(*head) is None
    results = [inbox.handle(*chunks[i]) for i in range(3, len(chunks))]
    stored = results[-1]
    assert stored is not None and not stored.duplicate
    assert stored.path.read_bytes() == clip.path.read_bytes()
    # everything again, as after a lost receipt: harmless, and answered as a duplicate
    again = inbox.handle(*head)
    assert again is not None and again.duplicate
    assert inbox.handle(*chunks[0]) is None
    assert stored_seqs(tmp_path / "store") == [clip.seq]
    assert not any((tmp_path / "store" / ".partial" / DEVICE).glob(f"{clip.seq}.*"))


def test_a_corrupted_chunk_is_discarded_and_the_resent_clip_stored(tmp_path: Path) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    clip = put_clip(box, party, 10_000)
    head, chunks = clip_messages(clip, party)
    inbox = inbox_for(tmp_path, party)
    inbox.handle(*head)
    inbox.handle(*chunks[0])
    inbox.handle(chunks[1][0], b"\x00" * len(chunks[1][1]))               # altered in transit
    assert inbox.handle(*chunks[2]) is None                                # hash fails: waits
    assert stored_seqs(tmp_path / "store") == []
    for chunk in chunks:                                                   # the device resends
        result = inbox.handle(*chunk)
    assert result is not None and result.path.read_bytes() == clip.path.read_bytes()


def test_store_holds_ciphertext_named_by_device_and_seq_with_an_index(tmp_path: Path) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    ring = put_event(box, party)
    inbox = inbox_for(tmp_path, party)
    [(topic, head)] = wire_messages(ring, party)
    assert topic == f"doorstep/{DEVICE}/a/1/m"
    stored = inbox.handle(topic, head)
    assert stored is not None
    root = tmp_path / "store" / DEVICE
    assert stored.path == root / "0000000001.event.age"
    assert stored.path.read_bytes() == ring.path.read_bytes()              # ciphertext as sealed
    assert (root / "0000000001.event.env").read_bytes() == ring.envelope
    line = json.loads((root / "index.jsonl").read_text())
    assert (line["seq"], line["kind"], line["file"]) == (1, "event", "0000000001.event.age")
    assert line["sha256"] == ring.manifest.sha256
    # it never holds a key that decrypts: no age identity anywhere in the store
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert b"AGE-SECRET-KEY" not in path.read_bytes()


def test_verify_reports_gaps_and_broken_links(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    items = [put_event(box, party) for _ in range(4)]
    inbox = inbox_for(tmp_path, party)
    for item in items:
        inbox.handle(*wire_messages(item, party)[0])
    root = tmp_path / "store"
    assert doorstep_main(["inbox", "verify", str(root)]) == 0
    assert f"{DEVICE}: 4 artifacts, last seq 4: OK" in capsys.readouterr().out

    for suffix in (".age", ".env"):                                          # seq 2 is lost
        (root / DEVICE / f"0000000002.event{suffix}").unlink()
    # and seq 4 is replaced by a properly signed manifest that does not link to seq 3 (a fork)
    m4 = items[3].manifest
    forked = Chain(DEVICE, 3, "0" * 64).next(kind="event", size=m4.size, sha256=m4.sha256,
                                             created=m4.created, clock_synced=True)
    (root / DEVICE / "0000000004.event.env").write_bytes(sign_manifest(party.device, forked))
    assert doorstep_main(["inbox", "verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert "missing seq 2" in out
    assert "seq 4: prev does not match seq 3 (broken link)" in out


def head_of(item: Item, party: Party, *, envelope: bytes | None = None,
            transfer: Transfer | None = None, signer: SigningKey | None = None,
            inline: bytes | None = None, to: SigningKey | None = None) -> bytes:
    """A head for ``item`` as the device would make it, with any one part replaced."""
    t = transfer or plan_transfer(DEVICE, item.seq, item.manifest.hash(), item.size,
                                  inline=True, chunk_bytes=CHUNK)
    body = inline if inline is not None else padded_body(item.path.read_bytes(), t.padded)
    return pack_head(envelope or item.envelope, t.sign(signer or party.device),
                     recipient_of((to or party.inbox).public_key), body if t.inline else b"")


def test_forged_or_altered_artifacts_are_refused(tmp_path: Path) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    ring = put_event(box, party)
    inbox = inbox_for(tmp_path, party)
    topic = f"doorstep/{DEVICE}/a/{ring.seq}/m"
    t = plan_transfer(DEVICE, ring.seq, ring.manifest.hash(), ring.size, inline=True,
                      chunk_bytes=CHUNK)
    body = padded_body(ring.path.read_bytes(), t.padded)
    altered = bytearray(body)
    altered[ring.size - 1] ^= 1
    impostor = SigningKey.generate()
    refused = {
        "altered": head_of(ring, party, inline=bytes(altered)),
        "padding is not zeros": head_of(ring, party, inline=body[:-1] + b"x"),
        "bytes in the head": head_of(ring, party, inline=body + bytes(1024)),
        "manifest .*signature": head_of(ring, party,
                                        envelope=sign_manifest(impostor, ring.manifest)),
        "chunking: .*signature": head_of(ring, party, signer=impostor),
        "another manifest": head_of(ring, party, transfer=replace(t, manifest="0" * 64)),
        "padded to": head_of(ring, party, transfer=replace(t, padded=t.padded + 512)),
        "cannot be opened": head_of(ring, party, to=impostor),      # sealed to another key
    }
    for reason, payload in refused.items():
        with pytest.raises(SealError, match=reason):
            inbox.handle(topic, payload)
    good = head_of(ring, party)
    with pytest.raises(SealError, match="arrived on the topic of seq"):
        inbox.handle(f"doorstep/{DEVICE}/a/{ring.seq + 1}/m", good)
    with pytest.raises(SealError, match="unknown device"):
        inbox.handle(f"doorstep/stranger/a/{ring.seq}/m", good)
    other = Inbox(InboxStore(tmp_path / "s2", {"other": party.device.public_key}), party.inbox,
                  host="127.0.0.1", port=1)
    with pytest.raises(SealError, match="names device"):
        other.handle(f"doorstep/other/a/{ring.seq}/m", good)
    clip = put_clip(box, party, 100)
    with pytest.raises(SealError, match="cannot come whole"):
        inbox.handle(f"doorstep/{DEVICE}/a/{clip.seq}/m", head_of(clip, party))
    assert stored_seqs(tmp_path / "store") == []
    assert inbox.handle(topic, good) is not None                  # the genuine one still goes


@pytest.mark.slow
def test_fuzz_on_every_topic_leaves_the_inbox_working(tmp_path: Path, broker: Mosquitto,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    seed = int(os.environ.get("DOORSTEP_FUZZ_SEED", random.randrange(1 << 32)))
    print(f"inbox fuzz: seed {seed} (rerun with DOORSTEP_FUZZ_SEED={seed})")
    rng = random.Random(seed)
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    sample = put_event(box, party)
    [(_, good)] = wire_messages(sample, party)
    topics = ["a/1/m", "a/1/16384/0", "a/7/16384/3", "a/x/m", "a/1/y", "a/-1/16384/0",
              "a/99999999999999999999/1/0", "receipt", "cmd", "status", "a", "a/1",
              "a/1/m/extra", "a/1/0/0", "event", "clip/1/m", "", "é/🦀"]
    store_dir = tmp_path / "store"
    with running_inbox(store_dir, party, broker.port) as inbox:
        fuzzer = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        fuzzer.connect("127.0.0.1", broker.port)
        fuzzer.loop_start()
        for _ in range(300):
            device = rng.choice([DEVICE, DEVICE, "stranger", ".."])
            topic = f"doorstep/{device}/{rng.choice(topics)}".rstrip("/")
            kind = rng.random()
            if kind < 0.4:
                payload = rng.randbytes(rng.choice([0, 1, 7, 64, 5000]))
            elif kind < 0.7:                       # a real message, bit-flipped
                flipped = bytearray(good)
                for _ in range(rng.randint(1, 4)):
                    flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
                payload = bytes(flipped)
            else:                                  # a real message, cut short or extended
                payload = good[:rng.randrange(len(good))] + rng.randbytes(rng.randint(0, 9))
            fuzzer.publish(topic, payload, qos=1).wait_for_publish(5)
        fuzzer.loop_stop()
        fuzzer.disconnect()
        wait_for(lambda: inbox._work.empty(), 30, "the inbox to work through the fuzz")
        assert inbox._thread is not None and inbox._thread.is_alive()
        # the inbox still does its job: a real device's artifacts arrive and are receipted
        receipts: list[bytes] = []
        done = threading.Event()
        listener = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

        def on_receipt(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            receipts.append(bytes(msg.payload))
            done.set()

        listener.on_message = on_receipt
        listener.connect("127.0.0.1", broker.port)
        listener.subscribe(f"doorstep/{DEVICE}/receipt", qos=1)
        listener.loop_start()
        clip = put_clip(box, party, 50_000)
        uplink = device_uplink(box, party, broker.port)
        uplink.start()
        wait_for(lambda: box.depth == 0, 60, "the good artifacts after the fuzz")
        uplink.stop()
        listener.loop_stop()
        listener.disconnect()
    assert inbox.dropped > 0
    assert "inbox: dropped a message" in caplog.text
    assert {Receipt.open(r, party.inbox.public_key).seq for r in receipts} >= {1, clip.seq}
    check_store(store_dir, party, last_seq=clip.seq, decode=False)


def test_unassembled_chunks_nobody_completes_expire(tmp_path: Path) -> None:
    """Chunks of a clip the device gave up on (evicted mid-upload) do not sit in the store
    for ever, and do not count against the device's allowance."""
    import os
    import time

    import doorstep.owner.store as store_mod

    party = make_party(tmp_path / "home")
    inbox = inbox_for(tmp_path, party)
    store = inbox.store
    box = device_outbox(tmp_path / "outbox", party)
    first, second = put_clip(box, party, 3 * CHUNK), put_clip(box, party, 3 * CHUNK)
    for item in (first, second):
        head, chunks = clip_messages(item, party)
        inbox.handle(*head)
        inbox.handle(*chunks[0])
    part1 = tmp_path / "store" / ".partial" / DEVICE / f"{first.seq}.{CHUNK}"
    part2 = tmp_path / "store" / ".partial" / DEVICE / f"{second.seq}.{CHUNK}"
    held = sum(f.stat().st_size for f in part2.iterdir())   # what is left after the sweep
    old = time.time() - store_mod.PARTIAL_TTL - 60
    for f in part1.iterdir():
        os.utime(f, (old, old))
    store._swept.clear()                      # as if a sweep interval had passed
    assert store._partial_bytes(DEVICE) == held
    assert not part1.exists()
    assert (part2 / "0").exists()


def test_nothing_unsigned_reaches_the_disk_and_a_flood_cannot_shut_the_device_out(
        tmp_path: Path) -> None:
    """Issue 13 item 3: unsigned chunks used to wait in .partial/ under a 4 GiB cap per device;
    filling it shut the genuine device out. Now a chunk is written only for a seq whose
    signed manifest is here, at its exact size; early ones wait in a bounded memory buffer."""
    import doorstep.owner.store as store_mod

    party = make_party(tmp_path / "home")
    inbox = inbox_for(tmp_path, party)
    store = inbox.store
    for seq in range(1, 3000):                # 3000 made-up seqs, 16 KiB and 0 bytes each
        inbox.handle(f"doorstep/{DEVICE}/a/{seq}/16384/0", b"z" * 16384)
        inbox.handle(f"doorstep/{DEVICE}/a/{seq}/16384/1", b"")
    assert not (tmp_path / "store" / ".partial").exists() or not any(
        p.is_file() for p in (tmp_path / "store" / ".partial").rglob("*"))
    held = store._early[DEVICE]
    assert sum(len(d) for d in held.values()) <= store_mod.EARLY_BYTES
    # the genuine clip still goes through, its chunks early or late
    box = device_outbox(tmp_path / "outbox", party)
    item = put_clip(box, party, 5 * CHUNK + 100)
    head, chunks = clip_messages(item, party)
    assert len(chunks) == 6
    inbox.handle(*chunks[4])                                     # before its head
    assert inbox.handle(*head) is None
    prefix = f"doorstep/{DEVICE}/a/{item.seq}/{CHUNK}"
    with pytest.raises(SealError, match="does not fit the signed chunking"):
        inbox.handle(f"{prefix}/1", b"x")                        # wrong size: refused
    with pytest.raises(SealError, match="does not fit the signed chunking"):
        inbox.handle(f"{prefix}/9", chunks[0][1])                # past the end: refused
    stored = None
    for i, chunk in enumerate(chunks):
        if i != 4:
            stored = inbox.handle(*chunk) or stored
    assert stored is not None and stored.path.read_bytes() == item.path.read_bytes()


def test_a_replayed_head_with_other_chunking_costs_no_genuine_chunk(tmp_path: Path) -> None:
    """Issue 13 item 4: the chunking was outside the signature, and a replayed manifest with
    other chunk_bytes/count made the inbox delete genuine chunks. Now the chunking is signed,
    only chunkings the device signed can be replayed, and each assembles in its own place."""
    party = make_party(tmp_path / "home")
    inbox = inbox_for(tmp_path, party)
    box = device_outbox(tmp_path / "outbox", party)
    item = put_clip(box, party, 9 * CHUNK)
    head, chunks = clip_messages(item, party)
    other_head, other_chunks = clip_messages(item, party, chunk_bytes=2 * CHUNK)
    for message in (head, *chunks[:-1]):            # all but the last chunk arrive
        inbox.handle(*message)
    inbox.handle(*other_head)                       # a genuine head of another chunking
    inbox.handle(*other_chunks[0])
    inbox.handle(*head)                             # and the first one again
    # a chunking nobody signed is refused, and nothing is deleted
    t = plan_transfer(DEVICE, item.seq, item.manifest.hash(), item.size, inline=False,
                      chunk_bytes=3 * CHUNK)
    forged = replace(t, chunk_bytes=CHUNK // 2, count=t.count)
    with pytest.raises(SealError, match=r"impossible|signature"):
        inbox.handle(head[0], pack_head(item.envelope, forged.sign(SigningKey.generate()),
                                        recipient_of(party.inbox.public_key)))
    assert partial_chunks(tmp_path / "store", item.seq) == len(chunks) - 1 + 1
    stored = inbox.handle(*chunks[-1])
    assert stored is not None and stored.path.read_bytes() == item.path.read_bytes()


def test_finding_a_stored_seq_never_lists_the_device_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13 item 8: the inbox listed the whole device folder for every chunk (195 ms a
    lookup at 100,000 artifacts). A lookup is now a few direct looks, whatever the size."""
    party = make_party(tmp_path / "home")
    inbox = inbox_for(tmp_path, party)
    store = inbox.store
    box = device_outbox(tmp_path / "outbox", party)
    item = put_event(box, party)
    inbox.handle(*wire_messages(item, party)[0])

    def no_listing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the device folder was listed")
    monkeypatch.setattr(Path, "glob", no_listing)
    monkeypatch.setattr(Path, "iterdir", no_listing)
    assert store.find(DEVICE, item.seq) is not None
    assert store.find(DEVICE, item.seq + 1) is None
    assert store.accept_chunk(DEVICE, item.seq, CHUNK, 0, b"late duplicate") is None


@pytest.mark.parametrize("level", ["-1", "1_000", "\uff11", "01", "+1", " 1", "1e3",
                                   "9" * 20, ""])
def test_chunk_topics_take_only_canonical_numbers(level: str) -> None:
    from doorstep.owner.inbox import canonical_int
    with pytest.raises(SealError, match="not a plain decimal number"):
        canonical_int(level, "chunk index", lo=0)


@pytest.mark.parametrize("topic", ["a/-1/16384/0", "a/1_000/m", "a/\uff11/16384/0",
                                   "a/01/16384/0", "a/1/16384/-0", "a/1/16384/00",
                                   "a/1/016384/0", "a/1/+16384/0"])
def test_the_inbox_refuses_a_chunk_topic_with_a_non_canonical_number(
        tmp_path: Path, topic: str) -> None:
    party = make_party(tmp_path / "home")
    inbox = Inbox(store_for(tmp_path, party), party.inbox, host="127.0.0.1", port=1)
    with pytest.raises(SealError, match="not a plain decimal number"):
        inbox.handle(f"doorstep/{DEVICE}/{topic}", b"\0" * 16)
    assert not (tmp_path / "store" / ".partial").exists() or \
        not any((tmp_path / "store" / ".partial").rglob("*"))


def test_canonical_numbers_are_read() -> None:
    from doorstep.owner.inbox import canonical_int
    assert canonical_int("0", "chunk index", lo=0) == 0
    assert canonical_int("1234567", "clip sequence", lo=1) == 1234567
    with pytest.raises(SealError):
        canonical_int("0", "clip sequence", lo=1)


def test_a_ring_head_is_handled_before_clip_chunks_queued_ahead_of_it(tmp_path: Path) -> None:
    """On loopback a doorbell hands the inbox a 2.5 MB clip's 150 chunks faster than it
    stores them; a ring's head that arrives after them is taken first, not after the clip."""
    party = make_party(tmp_path / "home")
    inbox = inbox_for(tmp_path, party)
    box = device_outbox(tmp_path / "outbox", party)
    clip = put_clip(box, party, 40 * CHUNK)
    ring = put_event(box, party)
    messages = clip_messages(clip, party)[1] + wire_messages(ring, party)

    def received(topic: str, payload: bytes) -> mqtt.MQTTMessage:
        msg = mqtt.MQTTMessage(topic=topic.encode())
        msg.payload = payload
        return msg

    for topic, payload in messages:                    # as paho's network thread hands them
        inbox._cb_message(inbox.client, None, received(topic, payload))
    first = inbox._work.get(timeout=1)
    assert first is not None and first.topic == f"doorstep/{DEVICE}/a/{ring.seq}/m"
    rest = [inbox._work.get(timeout=1) for _ in range(len(messages) - 1)]
    assert [m.topic for m in rest if m is not None] == [t for t, _ in messages[:-1]]
