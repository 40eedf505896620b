"""Clips stored as sealed segments (issue 15) in the owner's app, in headless Chromium: every
segment is verified and decrypted in the page and joined into one MP4 that plays and seeks; the
clip is shared whole, as one bundle the recipient verifies with the doorbell's key (and the hub
refuses one that leaves a segment out); a tampered segment keeps the whole clip from playing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from doorstep.cli import main
from doorstep.owner.shareclip import verify_bundle
from doorstep.protocol.age import X25519Identity
from tests.owner.hub.rig import (
    chromium,
    console,
    have_chromium,
    household,
    play_to,
    seek_to,
    wait_for,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_chromium(), reason="needs Debian's chromium and "
                                 "chromium-driver (make setup installs them)")]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("segments")
    house = household(root / "house", segment_seconds=2.0)
    driver = chromium(root / "profile")
    try:
        gate = threading.Event()
        service, _ = house.agent(press_at=4.0, gate=gate)
        runner = house.run(service)
        house.enrol(driver)
        gate.set()
        runner.join(180)
        assert not runner.is_alive(), "the agent did not finish"
        yield {"house": house, "driver": driver}
    finally:
        driver.quit()
        house.close()


def test_a_clip_of_segments_plays_joined_past_3_seconds_and_seeks(home: dict[str, Any]) -> None:
    house, driver = home["house"], home["driver"]
    store = house.root / "home" / "store" / "demo"
    assert len(list(store.glob("*.segment.age"))) >= 2 and not list(store.glob("*.clip.age"))
    driver.get(house.url + "#timeline")
    wait_for(lambda: driver.find_elements("css selector", ".card.clip"), 60, "a clip")[0].click()
    wait_for(lambda: driver.find_elements("id", "player"), 60, "the player")
    note = driver.find_element("id", "segments").text
    assert "segment(s), each signed and verified" in note and not note.startswith("1 "), note
    played = play_to(driver, 3.0)
    assert isinstance(played, float) and played >= 3.0, (played, console(driver))
    assert abs(seek_to(driver, 2.5) - 2.5) < 0.6


def test_a_clip_of_segments_is_shared_whole_and_the_recipient_verifies_it(
        home: dict[str, Any], tmp_path: Path) -> None:
    house, driver = home["house"], home["driver"]
    store = house.root / "home" / "store" / "demo"
    neighbour = X25519Identity.generate()
    driver.get(house.url + "#timeline")
    wait_for(lambda: driver.find_elements("css selector", ".card.clip"), 60, "a clip")[0].click()
    wait_for(lambda: driver.find_elements("id", "share"), 60, "the share form")
    driver.find_element("id", "share-to").send_keys(str(neighbour.recipient))
    driver.find_element("id", "share-note").send_keys("for the neighbour")
    driver.find_element("id", "share").click()
    said = wait_for(lambda: driver.find_element("id", "share-result").text, 60, "the answer")
    assert said.startswith("Shared."), (said, console(driver))
    line = driver.find_element("id", "audit-line").text
    audit = json.loads(line)
    assert audit["shared"].endswith(".share.tar") and "with its clip event" in audit["source"]
    bundle = house.root / "home" / "hub" / "shares" / audit["shared"]
    key = tmp_path / "neighbour.key"
    key.write_text(f"{neighbour}\n")
    mp4 = tmp_path / "clip.mp4"
    # the recipient's check: their own identity and the doorbell's public key
    assert main(["-q", "verify-share", str(bundle), "--identity", str(key), "--device-key",
                 house.device_key.public_text(), "--mp4", str(mp4)]) == 0
    clip, _ = verify_bundle(bundle, [neighbour], house.device_key.public_key)
    assert clip.complete and [m.seq for m in clip.segments] == clip.event["segments"]  # type: ignore[index]
    assert len(clip.segments) == len(list(store.glob("*.segment.age")))
    with av.open(str(mp4)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert frames / 10.0 >= clip.event["duration"] - 0.5  # type: ignore[index]
    # the hub refuses a bundle that leaves a segment out
    refused = driver.execute_async_script("""
        const [done, device, first, seqs, to] = [arguments[4], ...arguments];
        import("/static/js/shareclip.js").then(async (m) => {
            const body = await m.bundle(device, first, seqs, null, to);
            const q = new URLSearchParams({device, seq: first, to});
            const r = await fetch("/api/shares/clip?" + q, {method: "POST", body,
                credentials: "same-origin", headers: {"Content-Type": "application/octet-stream"}});
            done([r.status, (await r.json()).error]);
        }).catch((e) => done(String(e)));
    """, "demo", clip.first, [clip.first], str(neighbour.recipient))
    assert refused[0] == 400 and "leaves out segment(s) seq" in refused[1], refused


def test_a_tampered_segment_keeps_the_clip_from_playing(home: dict[str, Any]) -> None:
    house, driver = home["house"], home["driver"]
    store = house.root / "home" / "store" / "demo"
    later = sorted(store.glob("*.segment.age"))[-1]      # not the first: the join must check all
    data = bytearray(later.read_bytes())
    data[-100] ^= 1
    later.write_bytes(bytes(data))
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    driver.get("about:blank")
    driver.get(house.url + "#timeline")
    wait_for(lambda: driver.find_elements("css selector", ".card.clip"), 60, "a clip")[0].click()
    refused = wait_for(lambda: driver.find_elements("id", "refused"), 60, "the refusal")
    assert "Tampered" in refused[0].text
    assert not driver.find_elements("id", "player")
