"""Issue 2's end-to-end check: a real clip through the agent with a (mock) doorbell press, a real
Mosquitto, the owner's inbox, the real `age` CLI and PyAV decoding of what arrived."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import av
import pytest
from gpiozero.pins.mock import MockFactory

from doorstep.agent.wiring import build
from doorstep.config import parse_config
from doorstep.demo import BUNDLED_CLIP, demo_config, print_summary, run_demo, serve
from doorstep.protocol.age import decrypt
from doorstep.protocol.manifest import open_envelope, verify_chain
from tests.conftest import Keys, press_bell

pytestmark = pytest.mark.slow


def test_demo_pipeline_delivers_ring_and_clips(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = Path("demo")                  # relative, as `make demo` gives it
    old_umask = os.umask(0o022)         # as in a shell: files are 0644 unless made otherwise
    try:
        result = run_demo(out, press_at=3.0, realtime=False)
    finally:
        os.umask(old_umask)
    print_summary(result, out)
    # plaintext and ciphertext alike are the owner's only (issue 13 item 12)
    decrypted = sorted((out / "decrypted").iterdir())
    assert decrypted and all(p.stat().st_mode & 0o077 == 0 for p in decrypted), decrypted
    assert (out / "decrypted").stat().st_mode & 0o077 == 0
    assert "clips received" in capsys.readouterr().out
    assert result.outbox_left == 0
    types = [e["type"] for e in result.events]
    assert "ring" in types
    ring = next(e for e in result.events if e["type"] == "ring")
    assert ring["count"] == 1
    assert result.ring_latency_ms is not None and result.ring_latency_ms > 0
    assert result.snapshots >= 1
    assert result.clips

    store = out / "inbox" / "demo"
    device_pub = (store / "device.pub").read_text().strip()
    from doorstep.protocol.keys import parse_public_key
    public = parse_public_key(device_pub)
    manifests = [open_envelope(p.read_bytes(), public) for p in sorted(store.glob("*.env"))]
    assert verify_chain(manifests) == []
    assert [m.seq for m in manifests] == list(range(1, len(manifests) + 1))

    for clip in result.clips:
        # the demo stores clips as segments (clip.segment_seconds = 2, the default): each
        # segment opens with the real age CLI and plays alone; the demo joined them
        assert len(clip["segments"]) >= 2, clip
        for seq in clip["segments"]:
            alone = subprocess.run(["age", "-d", "-i", str(out / "owner.key"),
                                    str(store / f"{seq:010d}.segment.age")],
                                   check=True, capture_output=True).stdout
            assert alone[4:8] == b"ftyp"
        assert not list(store.glob("*.clip.age"))
        mp4 = out / "decrypted" / clip["file"]
        with av.open(str(mp4)) as container:
            stream = container.streams.video[0]
            times = [fr.time for fr in container.decode(stream)]
        duration = max(times) - min(times) + 0.1
        # the configured 3 s of pre-roll (or all the video there was before the trigger),
        # and at most one 1 s GOP more, since a clip starts on a keyframe
        assert clip["preroll"] >= min(3.0, clip["trigger_pts"]) - 1e-6
        assert clip["preroll"] <= 3.0 + 1.0 + 1e-6
        assert duration >= clip["preroll"]
        assert abs(duration - clip["duration"]) < 0.25

    # `make demo` then serves what arrived with the hub: its store is the demo's inbox
    stop = threading.Event()
    served: list[int] = []
    hub = threading.Thread(target=lambda: served.append(serve(out, 0, stop)), daemon=True)
    hub.start()
    deadline = time.monotonic() + 60
    while "The hub is serving" not in capsys.readouterr().out and hub.is_alive():
        assert time.monotonic() < deadline, "the demo's hub did not start"
        time.sleep(0.1)
    stop.set()
    hub.join(30)
    assert served == [0]
    assert (out / "home" / "store" / "demo" / "device.pub").read_text() == \
        (store / "device.pub").read_text()


def test_nothing_plaintext_is_ever_written(tmp_path: Path, keys: Keys,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Record with no broker, so everything stays in the outbox, then scan every file the
    agent wrote (and its TMPDIR) for MP4 and JPEG signatures."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    data = tmp_path / "device"
    data.mkdir()
    keys.device.save(data / "device.key")
    text = demo_config(tmp_path, BUNDLED_CLIP, 1, str(keys.owner.recipient), "",
                       keys.inbox.public_text(), False, segment_seconds=2.0)
    text = text.replace(str(tmp_path / "device" / "device.key"), str(data / "device.key"))
    cfg = parse_config(text.replace('command_key = ""\n', ""))
    factory = MockFactory()
    service = build(cfg, pin_factory=factory, connect=False)
    pin = factory.pin(17)

    def on_frame(frame: object) -> None:
        if getattr(frame, "index", 0) == 40:
            press_bell(service, pin)

    service.run(on_frame=on_frame)
    files = [p for root in (data, tmpdir) for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".age" for p in files)
    for p in files:
        blob = p.read_bytes()
        # signatures long enough that random ciphertext will not hold them by chance
        assert b"ftypiso" not in blob and b"mfhd" not in blob and b"Lavf" not in blob, p
        assert b"\xff\xd8\xff\xe0\x00\x10JFIF" not in blob, p
        assert b'"pressed"' not in blob and b'"trigger"' not in blob, p   # event bodies
    # and what is there is the owner's to open: a clip segment decrypts to an MP4 PyAV reads
    clip = max((p for p in files if p.suffix == ".age" and
                json.loads(p.with_suffix(".env").read_text())["manifest"]["kind"] == "segment"),
               key=lambda p: p.stat().st_size)
    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(decrypt(clip.read_bytes(), [keys.owner]))
    with av.open(str(mp4)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 10
    assert os.listdir(tmpdir) == []
