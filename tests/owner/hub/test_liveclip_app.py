"""A clip of segments played in the owner's app while it still records (issue 15), in headless
Chromium: Media Source Extensions, the init once, then each segment as the hub stores it.

The first test runs the whole path: the doorbell agent (bundled clip in real time), a real
Mosquitto, the hub's inbox and the hub. The bad-input tests feed the hub's store directly, in
an order of our choosing, with segments the doorbell's key signs (the inbox's own store code,
then the hub's "stored" news, as the inbox does): a segment that comes late, one that never
comes, and one that is tampered with."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doorstep.owner.store import InboxStore
from doorstep.protocol.age import X25519Recipient, decrypt, encrypt, load_identities
from doorstep.protocol.manifest import Chain, Manifest, open_envelope, sign_manifest
from tests.owner.hub.rig import Household, chromium, console, have_chromium, household, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_chromium(), reason="needs Debian's chromium and "
                                 "chromium-driver (make setup installs them)")]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("liveclip")
    house = household(root / "house", segment_seconds=2.0)
    driver = chromium(root / "profile")
    try:
        yield {"house": house, "driver": driver}
    finally:
        driver.quit()
        house.close()


STATE = """
    const v = document.getElementById('player');
    return v ? {live: v.dataset.live || '', segments: Number(v.dataset.segments || 0),
                finished: v.dataset.finished || '', refused: v.dataset.refused || '',
                skipped: v.dataset.skipped || '', t: v.currentTime, ended: v.ended,
                duration: v.duration, mark: v.__mark || '',
                firstPlayed: window.__firstPlayed || null,
                status: (document.getElementById('live-status') || {}).textContent || '',
                notes: (document.getElementById('live-notes') || {}).textContent || ''}
             : {live: '', segments: 0, refused: '', ended: false, firstPlayed: null,
                page: (document.getElementById('main') || {}).textContent || ''};
"""

PLAY = """
    const v = document.getElementById('player');
    v.__mark = 'same element';
    v.addEventListener('timeupdate', () => {
        if (v.currentTime > 0 && !window.__firstPlayed) {
            window.__firstPlayed = {segments: Number(v.dataset.segments || 0),
                                    finished: v.dataset.finished || ''};
        }
    });
    v.play().catch((e) => { window.__playError = String(e); });
"""


def until(driver: Any, cond: Any, timeout: float, what: str) -> dict[str, Any]:
    """Wait for ``cond(state)``; the page's state and console when it does not come."""
    try:
        return wait_for(lambda: (lambda s: s if cond(s) else None)(state(driver)), timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {state(driver)}\n{console(driver)}") from None


def state(driver: Any) -> dict[str, Any]:
    got = driver.execute_script(STATE)
    assert isinstance(got, dict), console(driver)
    return got


def test_a_clip_plays_while_it_records_and_on_to_its_end(home: dict[str, Any]) -> None:
    house: Household = home["house"]
    driver = home["driver"]
    gate = threading.Event()
    service, _ = house.agent(press_at=4.0, gate=gate, realtime=True)
    runner = house.run(service)
    house.enrol(driver)
    driver.get(house.url + "#timeline")
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), 30, "the app")
    gate.set()
    # the clip's card comes with its first segment; the owner taps it at once
    wait_for(lambda: _tap(driver), 90, "a clip's card to tap")
    wait_for(lambda: (s := state(driver)) and s["live"] and s["segments"] >= 1, 30,
             "the live player's first segment")
    driver.execute_script(PLAY)
    wait_for(lambda: state(driver)["firstPlayed"], 30, "the clip to start playing")
    first = state(driver)["firstPlayed"]
    # it played while the doorbell was still recording: segments came after it started
    assert not first["finished"], first
    runner.join(180)
    assert not runner.is_alive()
    store = house.root / "home" / "store" / "demo"
    body = _clip_event(house, store)
    end = until(driver, lambda s: s["ended"] and s["finished"]
                and s["segments"] == len(body["segments"]), 120, "the clip to play to its end")
    assert end["finished"] == "1" and end["mark"] == "same element", end
    assert end["segments"] > first["segments"], (first, end)
    assert not end["skipped"] and not end["refused"], end
    assert "all" in end["status"] and "each signed and verified" in end["status"], end
    # the whole clip, as the doorbell listed it, played in the one <video> to its end
    assert len(body["segments"]) >= 3, body
    assert abs(end["duration"] - body["duration"]) < 0.5, (end, body)
    assert end["t"] >= body["duration"] - 0.5, (end, body)


def _tap(driver: Any) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException
    try:
        cards = driver.find_elements("css selector", ".card.clip")
        if cards:
            cards[0].click()
        return bool(cards)
    except StaleElementReferenceException:     # the timeline re-drew itself meanwhile
        return False


def _clip_event(house: Household, store: Path) -> dict[str, Any]:
    """The doorbell's own clip event (the first in the store; the later ones are the feed's)."""
    owner = load_identities(house.owner_key)
    for env in sorted(store.glob("*.event.env")):
        body = json.loads(decrypt(env.with_suffix(".age").read_bytes(), owner))
        if body.get("type") == "clip" and body.get("segments"):
            return dict(body)
    raise AssertionError("no clip event in the store")


class Feed:
    """Stores artifacts signed with the doorbell's key into the hub's store, continuing its
    chain, with the inbox's own store code, and tells the hub, as the inbox does."""

    def __init__(self, house: Household) -> None:
        self.house = house
        self.store = house.root / "home" / "store" / "demo"
        last = sorted(self.store.glob("*.env"))[-1]
        self.chain = Chain.after(open_envelope(last.read_bytes(), house.device_key.public_key))
        members = json.loads((house.root / "device" / "recipients.json").read_text())["members"]
        owner = load_identities(house.owner_key)
        self.owner = owner
        self.recipients = [owner[0].recipient,
                           *(X25519Recipient.parse(m["recipient"]) for m in members)]
        self.inbox = InboxStore(house.root / "home" / "store",
                                {"demo": house.device_key.public_key})

    def seal(self, kind: str, plain: bytes, parent: str = "") -> tuple[Manifest, bytes, bytes]:
        ct = encrypt(plain, self.recipients)
        m = self.chain.next(kind, len(ct), hashlib.sha256(ct).hexdigest(), created=time.time(),
                            clock_synced=True, priority=0, parent=parent)
        return m, sign_manifest(self.house.device_key, m), ct

    def put(self, sealed: tuple[Manifest, bytes, bytes], then: Any = None) -> None:
        m, env, ct = sealed
        self.inbox._store("demo", m, env, ct)
        if then is not None:
            then()
        hub = self.house.hub
        hub.loop.call_soon_threadsafe(hub.stored, "demo")

    def clip(self, plains: list[bytes]) -> tuple[list[tuple[Manifest, bytes, bytes]],
                                                  tuple[Manifest, bytes, bytes]]:
        """A clip of these segment plaintexts, sealed and signed in chain order, and its
        clip event (made from the doorbell's own last one)."""
        first = self.seal("segment", plains[0])
        rest = [self.seal("segment", p, parent=str(first[0].seq)) for p in plains[1:]]
        body = _clip_event(self.house, self.store)
        segs = [first[0].seq, *(s[0].seq for s in rest)]
        body.update(clip_seq=segs[0], segments=segs, segments_lost=[],
                    segment_count=len(segs), time=time.time())
        event = self.seal("event", json.dumps(body).encode())
        return [first, *rest], event


def _plains(house: Household) -> list[bytes]:
    """The doorbell's own clip (the first test's), as its segments' plaintexts."""
    store = house.root / "home" / "store" / "demo"
    body = _clip_event(house, store)
    owner = load_identities(house.owner_key)
    return [decrypt((store / f"{s:010d}.segment.age").read_bytes(), owner)
            for s in body["segments"]][:4]


def _open_live(driver: Any, house: Household, seq: int) -> None:
    driver.get("about:blank")
    driver.get(house.url + f"#clip/demo/{seq}")
    wait_for(lambda: (s := state(driver)) and s["live"] and s["segments"] >= 1, 30,
             f"the live player for seq {seq}: {console(driver)}")
    driver.execute_script(PLAY)


def test_a_segment_that_arrives_late_is_put_in_its_place(home: dict[str, Any]) -> None:
    house: Household = home["house"]
    driver = home["driver"]
    feed = Feed(house)
    segs, event = feed.clip(_plains(house))
    feed.put(segs[0])
    _open_live(driver, house, segs[0][0].seq)
    feed.put(segs[2])                    # the third before the second
    wait_for(lambda: state(driver)["segments"] >= 2, 30, "the third segment")
    time.sleep(1.0)
    feed.put(segs[1])
    for s in segs[3:]:
        feed.put(s)
    feed.put(event)
    end = until(driver, lambda s: s["ended"] and s["finished"], 90, "the clip's end")
    assert end["segments"] == len(segs) and end["finished"] == "1", end
    assert not end["skipped"] and not end["refused"], (end, console(driver))


def test_a_segment_missing_mid_clip_is_skipped_and_named(home: dict[str, Any]) -> None:
    house: Household = home["house"]
    driver = home["driver"]
    feed = Feed(house)
    segs, event = feed.clip(_plains(house))
    feed.put(segs[0])
    _open_live(driver, house, segs[0][0].seq)
    for s in segs[2:]:                   # the second never comes
        feed.put(s)
    feed.put(event)
    end = until(driver, lambda s: s["ended"] and s["finished"], 90, "the clip's end")
    assert end["skipped"], end           # the player jumped the gap rather than stall
    assert "A segment is missing: skipped from" in end["notes"], end
    assert end["segments"] == len(segs) - 1 and end["finished"] == "1", end
    assert f"seq {segs[1][0].seq} never arrived" in end["status"], end


def test_a_tampered_segment_is_refused_with_a_clear_message(home: dict[str, Any]) -> None:
    house: Household = home["house"]
    driver = home["driver"]
    feed = Feed(house)
    segs, _ = feed.clip(_plains(house))
    feed.put(segs[0])
    _open_live(driver, house, segs[0][0].seq)
    feed.put(segs[1])
    wait_for(lambda: state(driver)["segments"] >= 2, 30, "the second segment")
    m, _, ct = segs[2]
    bad = bytearray(ct)
    bad[-100] ^= 1                       # altered in the store after the inbox checked it
    feed.put(segs[2], then=lambda: (feed.store / f"{m.seq:010d}.segment.age").write_bytes(
        bytes(bad)))
    got = wait_for(lambda: (s := state(driver))["refused"] and s, 30, "the refusal")
    assert got["refused"] == str(m.seq), got
    assert got["status"].startswith(f"Tampered: segment seq {m.seq}"), got
    assert got["segments"] == 2, got     # nothing of it was played


def test_a_finished_clip_whose_segments_are_still_coming_plays_as_they_arrive(
        home: dict[str, Any]) -> None:
    """On a slow uplink the small clip event is stored before the clip's last segments (it goes
    ahead of video), and they keep coming for longer than the player's grace: the clip plays
    as they arrive and to its end, rather than "Cannot open" or an early end."""
    house: Household = home["house"]
    driver = home["driver"]
    feed = Feed(house)
    segs, event = feed.clip(_plains(house))
    feed.put(segs[0])
    feed.put(event)                      # finished recording; the rest is still uploading
    driver.get("about:blank")
    driver.get(house.url + "#timeline")
    card = f'a.card.clip[data-seq="{event[0].seq}"]'
    # the owner taps the clip's card once the app has opened its clip event ("Clip, 6.0 s")
    wait_for(lambda: driver.execute_script(
        f"const c = document.querySelector('{card}'); "
        "return c && /Clip, [0-9]/.test(c.textContent) && (c.click(), true)"), 30,
        f"the finished clip's card: {console(driver)}")
    until(driver, lambda s: s["live"] and s["segments"] >= 1, 30,
          "the player, on the segments already here")
    driver.execute_script(PLAY)
    for s in segs[1:]:
        time.sleep(2.5)                  # each later than the last, 4 s grace gone by the end
        feed.put(s)
    end = until(driver, lambda s: s["ended"] and s["finished"], 90, "the clip's end")
    assert end["segments"] == len(segs) and end["finished"] == "1", end
    assert "all" in end["status"] and "never arrived" not in end["status"], end
    assert not end["refused"], (end, console(driver))


def test_a_clip_with_sound_plays_its_segments_with_the_aac_track(
        home: dict[str, Any], tmp_path: Path) -> None:
    """clip.audio: each segment's init has the AAC track beside the video. The player gives
    MediaSource both codecs, the SourceBuffer takes every segment, and the <video> plays past
    the second segment to the clip's end, decoding sound as it goes."""
    from doorstep.core.fmp4 import split_init
    from tests.capture.test_segments_audio import packets, segment, tone_mic

    house: Household = home["house"]
    driver = home["driver"]
    plains = [s.data for s in segment(packets(75), 1.0, tone_mic(tmp_path, 10))]
    assert len(plains) >= 4 and b"mp4a" in split_init(plains[0])[0]
    feed = Feed(house)
    segs, event = feed.clip(plains)
    feed.put(segs[0])
    _open_live(driver, house, segs[0][0].seq)
    for s in segs[1:]:
        feed.put(s)
    feed.put(event)
    end = until(driver, lambda s: s["ended"] and s["finished"], 90, "the clip's end")
    assert end["segments"] == len(segs) and not end["refused"] and not end["skipped"], end
    assert end["t"] > 2.0 and end["duration"] == pytest.approx(5.0, abs=0.2), end
    got = driver.execute_script("""
        const v = document.getElementById('player');
        return {codecs: v.dataset.codecs, error: v.error && v.error.message,
                audio: v.webkitAudioDecodedByteCount, video: v.webkitVideoDecodedByteCount};
    """)
    assert got["codecs"].startswith('video/mp4; codecs="avc1.'), got
    assert got["codecs"].endswith(', mp4a.40.2"'), got
    assert got["error"] is None and got["audio"] > 0 and got["video"] > 0, got
