"""The outbox: atomic commits, recovery after a crash, quota eviction by priority, full disk."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from doorstep.core.errors import DiskFull
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.manifest import open_envelope, verify_chain
from doorstep.uplink.outbox import Outbox


def make(root: Path, key: SigningKey, quota: int = 10_000_000) -> Outbox:
    return Outbox(root, device="dev", key=key, quota_bytes=quota)


def test_commit_signs_and_chains(tmp_path: Path) -> None:
    key = SigningKey.generate()
    box = make(tmp_path, key)
    a = box.put("event", b"A" * 100, priority=0)
    b = box.put("clip", b"B" * 5000, priority=3)
    assert (a.seq, b.seq) == (1, 2)
    manifests = [open_envelope(i.envelope, key.public_key) for i in (a, b)]
    assert verify_chain(manifests) == []
    assert b.path.read_bytes() == b"B" * 5000
    assert [i.seq for i in box.items()] == [1, 2]


def test_restart_resumes_items_and_continues_the_sequence(tmp_path: Path) -> None:
    key = SigningKey.generate()
    box = make(tmp_path, key)
    box.put("event", b"x", priority=0)
    box.put("event", b"y", priority=0)
    box.remove(1)
    again = make(tmp_path, key)
    assert [i.seq for i in again.items()] == [2]
    assert again.put("event", b"z", priority=0).seq == 3


def test_torn_leftovers_are_removed_never_uploaded(tmp_path: Path) -> None:
    key = SigningKey.generate()
    box = make(tmp_path, key)
    box.put("event", b"ok", priority=0)
    pending = box.open("clip", priority=3)
    pending.write(b"half a clip")            # killed here: never committed
    (tmp_path / "ready" / "0000000009.age").write_bytes(b"no manifest")   # torn commit
    (tmp_path / "ready" / "0000000002.env").write_bytes(b"garbage")       # torn manifest
    again = make(tmp_path, key)
    assert [i.seq for i in again.items()] == [1]
    assert again.recovery.torn_removed == 3
    assert list((tmp_path / "tmp").iterdir()) == []
    assert again.put("event", b"next", priority=0).seq == 2


def test_quota_evicts_motion_before_ring_and_oldest_first(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    key = SigningKey.generate()
    box = make(tmp_path, key, quota=10_000)
    ring = box.put("clip", b"r" * 3000, priority=0)
    old_motion = box.put("clip", b"m" * 3000, priority=3)
    new_motion = box.put("clip", b"n" * 3000, priority=3)
    box.put("clip", b"o" * 3000, priority=3)     # needs room: the oldest motion clip goes
    seqs = [i.seq for i in box.items()]
    assert ring.seq in seqs and new_motion.seq in seqs and old_motion.seq not in seqs
    assert box.evictions == 1
    assert "quota of 10000 bytes reached; evicting clip seq 2" in caplog.text
    box.put("clip", b"R" * 6000, priority=0)     # a ring clip may evict every motion clip
    assert [i.manifest.priority for i in box.items()] == [0, 0]
    assert box.stats()["evictions"] == 3


def test_motion_clip_never_evicts_a_ring_clip(tmp_path: Path) -> None:
    key = SigningKey.generate()
    box = make(tmp_path, key, quota=5000)
    box.put("clip", b"r" * 4000, priority=0)
    with pytest.raises(DiskFull, match="quota"):
        box.put("clip", b"m" * 2000, priority=3)
    assert [i.seq for i in box.items()] == [1]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_enospc_evicts_then_reports_disk_full(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    key = SigningKey.generate()
    box = make(tmp_path, key)
    box.put("clip", b"m" * 1000, priority=3)
    pending = box.open("clip", priority=0)
    real_file = pending._file
    assert real_file is not None
    calls = {"n": 0}

    class FullOnce:
        def write(self, data: bytes) -> int:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_file.write(data)  # type: ignore[union-attr]

        def __getattr__(self, name: str) -> object:
            return getattr(real_file, name)

    monkeypatch.setattr(pending, "_file", FullOnce())
    pending.write(b"ring clip")                  # first write fails, eviction frees space
    item = pending.commit()
    assert item.path.read_bytes() == b"ring clip"
    assert [i.seq for i in box.items()] == [item.seq]   # the motion clip was evicted

    nothing_left = box.open("clip", priority=3)

    class AlwaysFull(FullOnce):
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nothing_left, "_file", AlwaysFull())
    with pytest.raises(DiskFull, match="disk is full"):
        nothing_left.write(b"more")
    monkeypatch.setattr(nothing_left, "_file", real_file)
    nothing_left.abort()


def test_progress_is_remembered(tmp_path: Path) -> None:
    key = SigningKey.generate()
    box = make(tmp_path, key)
    item = box.put("clip", b"c" * 100, priority=3)
    assert box.acked_chunks(item.seq) == 0
    box.set_acked_chunks(item.seq, 7)           # too little progress to be worth a write
    assert make(tmp_path, key).acked_chunks(item.seq) == 0
    box.set_acked_chunks(item.seq, 20)
    box.set_acked_chunks(item.seq, 21)
    assert make(tmp_path, key).acked_chunks(item.seq) == 20


def test_a_clip_cut_short_by_a_crash_is_salvaged_as_partial(tmp_path: Path) -> None:
    """kill -9 mid-recording: the whole age chunks already written are kept, signed as a
    partial clip, and the owner can open them; nothing unauthenticated is accepted."""
    import io

    from doorstep.protocol.age import AgeReader, AgeWriter, X25519Identity

    owner = X25519Identity.generate()
    key = SigningKey.generate()
    box = make(tmp_path, key)
    pending = box.open("clip", priority=3)
    writer = AgeWriter(pending, [owner.recipient])
    plaintext = bytes(range(256)) * 1024          # 256 KiB: four whole chunks
    writer.write(plaintext + b"tail not yet sealed")
    # the process dies here: no close(), no commit
    again = make(tmp_path, key)
    assert again.recovery.salvaged == 1
    (item,) = again.items()
    assert item.manifest.kind == "clip_partial"
    reader = AgeReader(io.BytesIO(item.path.read_bytes()), [owner], allow_truncated=True)
    assert reader.read() == plaintext
    assert reader.truncated
    from doorstep.core.errors import SealError
    from doorstep.protocol.age import decrypt
    with pytest.raises(SealError, match="truncated"):
        decrypt(item.path.read_bytes(), [owner])   # never mistaken for a whole clip


def test_a_clip_too_short_to_salvage_is_removed(tmp_path: Path) -> None:
    from doorstep.protocol.age import AgeWriter, X25519Identity

    key = SigningKey.generate()
    box = make(tmp_path, key)
    pending = box.open("clip", priority=3)
    AgeWriter(pending, [X25519Identity.generate().recipient]).write(b"less than a chunk")
    again = make(tmp_path, key)
    assert again.items() == [] and again.recovery.torn_removed == 1


def test_short_writes_are_completed_and_a_failed_write_gives_its_room_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = SigningKey.generate()
    box = make(tmp_path, key, quota=100_000)
    pending = box.open("clip", priority=0)
    real = pending._file
    assert real is not None

    class Short:
        def write(self, data: bytes) -> int:       # never more than 7 bytes at a time
            return int(real.write(bytes(data)[:7]))  # type: ignore[union-attr]

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    monkeypatch.setattr(pending, "_file", Short())
    pending.write(b"0123456789" * 10)
    monkeypatch.setattr(pending, "_file", real)
    item = pending.commit()
    assert item.path.read_bytes() == b"0123456789" * 10      # the manifest matches the file
    assert open_envelope(item.envelope, key.public_key).size == 100

    failing = box.open("clip", priority=3)
    used = box.bytes_used

    class Dead:
        def write(self, data: bytes) -> int:
            raise OSError(5, "Input/output error")

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    real_failing = failing._file
    monkeypatch.setattr(failing, "_file", Dead())
    with pytest.raises(OSError):
        failing.write(b"x" * 5000)
    monkeypatch.setattr(failing, "_file", real_failing)
    failing.abort()
    assert box.bytes_used == used        # nothing stays reserved for a write that failed


def test_a_failed_chain_file_write_takes_the_commit_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up just as chain.json is rewritten after a commit. The caller is told
    nothing was stored, and so it is (issue 18: the artifact used to stay on disk, unknown to
    the running agent, and its seq was used again after a restart); the next commit takes the
    number, and a restart finds exactly what the running outbox has."""
    import doorstep.uplink.outbox as outbox_module

    key = SigningKey.generate()
    box = make(tmp_path, key)
    first = box.put("event", b"first", priority=0)
    real_write = outbox_module.write_atomic

    def write_atomic(path: object, data: bytes, **kw: object) -> None:
        if str(path).endswith("chain.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(outbox_module, "write_atomic", write_atomic)
    with pytest.raises(DiskFull, match="nothing was stored"):
        box.put("event", b"lost", priority=1)      # a motion event: it may not evict a ring
    monkeypatch.undo()
    second = box.put("event", b"second", priority=0)
    assert second.seq == first.seq + 1
    again = make(tmp_path, key)
    found = {item.seq: item.path.read_bytes() for item in again.items()}
    assert found == {1: b"first", 2: b"second"}
    manifests = [open_envelope(i.envelope, key.public_key) for i in again.items()]
    assert verify_chain(manifests) == []


def test_outbox_files_are_the_owners_only_whatever_the_umask(tmp_path: Path) -> None:
    import os

    from tests.faults.harness import device_outbox, make_party, put_clip, put_event
    party = make_party(tmp_path / "home")
    old = os.umask(0o022)
    try:
        box = device_outbox(tmp_path / "outbox", party)
        put_event(box, party)
        put_clip(box, party, 100_000)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "outbox").rglob("*") if p.is_file()]
    assert any(p.suffix == ".age" for p in files)
    assert all(p.stat().st_mode & 0o077 == 0 for p in files), [
        (p.name, oct(p.stat().st_mode)) for p in files]


def test_a_lost_chain_json_never_numbers_from_one_again(tmp_path: Path) -> None:
    """Issue 13 item 12: chain.json deleted while the outbox was empty restarted the chain at
    seq 1 under the same key, and the inbox then refused everything after as forks."""
    from doorstep.owner.inbox import Inbox
    from doorstep.owner.store import InboxStore
    from doorstep.protocol.manifest import RESTART_PREV
    from tests.faults.harness import DEVICE, device_outbox, make_party, put_event, wire_messages

    party = make_party(tmp_path / "home")
    store = InboxStore(tmp_path / "store", {DEVICE: party.device.public_key})
    inbox = Inbox(store, party.inbox, host="127.0.0.1", port=1)
    root = tmp_path / "outbox"

    def deliver_all(box: Outbox) -> list[int]:
        seqs = []
        for item in box.items():
            stored = inbox.handle(*wire_messages(item, party)[0])
            assert stored is not None and not stored.duplicate
            seqs.append(item.seq)
            box.remove(item.seq)               # the receipt came: the outbox is empty again
        return seqs

    box = device_outbox(root, party)
    put_event(box, party)
    put_event(box, party)
    assert deliver_all(box) == [1, 2]
    # one copy gone: the mirror keeps the numbering
    (root / "chain.json").unlink()
    box = device_outbox(root, party)
    put_event(box, party)
    assert deliver_all(box) == [3]
    # both gone: a marked restart far above anything used, which the inbox still stores
    (root / "chain.json").unlink()
    (tmp_path / ".outbox-chain.json").unlink()
    box = device_outbox(root, party)
    put_event(box, party)
    (item,) = box.items()
    assert item.seq > 1_000_000_000 and item.manifest.prev == RESTART_PREV
    assert deliver_all(box) == [item.seq]
    put_event(box, party)
    assert deliver_all(box) == [item.seq + 1]


def test_a_clip_never_evicts_its_own_earlier_segments(tmp_path: Path) -> None:
    """Over quota, a clip's new segment pushes out older clips, oldest first, but never the
    clip's own earlier segments (its start holds the pre-roll and the trigger): when only
    those are left, the new segment is refused and the start is kept (issue 15)."""
    box = make(tmp_path / "outbox", SigningKey.generate(), quota=3000)
    older = box.put("segment", b"o" * 1000, priority=3)
    first = box.put("segment", b"a" * 1000, priority=3)
    second = box.put("segment", b"b" * 1000, priority=3, parent=str(first.seq))

    mine = [first.seq, second.seq]

    def next_segment() -> None:
        with box.open("segment", priority=3, parent=str(first.seq)) as pending:
            pending.spare = frozenset(mine)
            pending.write(b"c" * 1000)
            mine.append(pending.commit().seq)

    next_segment()              # room made by the older clip, not by this one's start
    assert box.get(older.seq) is None
    with pytest.raises(DiskFull, match="nothing is left to evict"):
        next_segment()
    assert all(box.get(seq) is not None for seq in mine) and len(mine) == 3
