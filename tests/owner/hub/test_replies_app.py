"""Quick replies and voicemail (docs/talk.md) in the owner's app, in headless Chromium with fake
media devices: the page records a reply from the (fake) microphone with MediaRecorder, signs
it, and the hub relays it sealed to the agent, which plays it on its (file) speaker on the
page's signed command and again by itself after a ring nobody answers; then the visitor's
voicemail, recorded from the doorbell's (file) microphone, is verified, decrypted and played in
the page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest

from doorstep.agent.run import RingPress
from tests.agent.rtcpeer import dominant_hz, tone
from tests.owner.hub.rig import (
    console,
    fake_media,
    have_chromium,
    looping_doorbell,
    notifications,
    wait_for,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_chromium(), reason="needs Debian's chromium and "
                                 "chromium-driver (make setup installs them)")]


@pytest.fixture
def home(tmp_path: Any) -> Iterator[dict[str, Any]]:
    mic = tone(tmp_path / "mic.wav", 700)           # the visitor, at the doorbell
    voice = tone(tmp_path / "voice.wav", 440)       # the owner, at the browser
    speaker = tmp_path / "speaker.wav"
    with looping_doorbell(tmp_path, (
            f'\n[voice]\nmicrophone = "file:{mic}"\nspeaker = "file:{speaker}"\n'
            'answer_seconds = 2\nvoicemail_seconds = 2\n'), fake_media(voice)) as home:
        yield {**home, "speaker": speaker}


def state(driver: Any) -> str:
    el = driver.find_elements("id", "replies-demo")
    return el[0].get_attribute("data-state") or "" if el else ""


def speaker_hz(path: Any) -> tuple[float, float]:
    """(seconds, dominant frequency) of what the doorbell's speaker played last."""
    with av.open(str(path)) as played:
        samples = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0]
                                  for f in played.decode(audio=0)])
    return len(samples) / 48000, dominant_hz(samples)


def test_a_reply_recorded_in_the_app_plays_at_the_door_and_voicemail_plays_in_the_app(
        home: dict[str, Any]) -> None:
    house, driver, service = home["house"], home["driver"], home["service"]
    driver.get(house.url + "#devices")
    wait_for(lambda: driver.find_elements("id", "reply-record-demo"), 60, "the record button")
    driver.find_element("id", "reply-record-demo").click()
    wait_for(lambda: state(driver) == "recording", 20, f"recording: {console(driver)}")
    time.sleep(2.5)
    driver.find_element("id", "reply-record-demo").click()
    wait_for(lambda: state(driver) == "recorded", 20, f"the take: {console(driver)}")
    driver.find_element("id", "reply-name-demo").send_keys("away")
    driver.find_element("id", "reply-label-demo").send_keys("We are out")
    driver.find_element("id", "reply-auto-demo").click()
    driver.find_element("id", "reply-send-demo").click()
    wait_for(lambda: state(driver) in ("stored", "failed"), 60, "the doorbell's answer")
    status = driver.find_element("id", "reply-status-demo").text
    assert state(driver) == "stored", status
    voice = service.voice
    assert voice is not None and voice.store.auto == "away"
    (stored,) = voice.store.list()
    assert stored.label == "We are out" and 2.0 < stored.seconds < 3.5
    # the owner plays it at the door from the app: the doorbell's speaker says 440 Hz
    wait_for(lambda: driver.find_elements("id", "reply-play-demo-away"), 20, "the play button")
    driver.find_element("id", "reply-play-demo-away").click()
    wait_for(lambda: state(driver) in ("played", "failed"), 60, "the play answer")
    assert state(driver) == "played", driver.find_element("id", "reply-status-demo").text
    wait_for(lambda: voice.played == 1, 20, "the reply to finish playing")
    seconds, hz = speaker_hz(home["speaker"])
    assert 2.0 < seconds < 3.5 and abs(hz - 440) < 15, (seconds, hz)
    # a ring nobody answers: the reply plays by itself, then the visitor leaves a voicemail
    service.press(RingPress(time.time(), time.monotonic(), 1, True))
    wait_for(lambda: voice.voicemails == 1 and voice.played == 2, 60, "the voicemail")
    # the app is open (the live channel): it says so too, once it has verified the message
    # (120 s: on a loaded machine the upload, the hub and the page's decryption take a while)
    wait_for(lambda: [n for n in notifications(driver) if n["title"] == "Voicemail from demo"],
             120, f"the voicemail's notification: {console(driver)}")
    driver.get(house.url + "#timeline")
    # on its ring's card (its signed parent), which opens it
    card = wait_for(lambda: driver.find_elements("css selector", ".card-group .vm-inline"), 60,
                    f"the voicemail on its ring's card: {console(driver)}")
    seq = int(card[0].get_attribute("data-voicemail"))
    driver.get(house.url + f"#voicemail/demo/{seq}")
    wait_for(lambda: driver.find_elements("id", "voicemail-audio"), 30,
             f"the voicemail player: {console(driver)}")
    # what the page decrypted is the doorbell's 2 s of 700 Hz, and it plays
    got = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const a = document.getElementById('voicemail-audio');
        import('/static/js/seal.js').then((m) => m.fetchOpen('demo', arguments[0]))
        .then(async ({ plain }) => {
            const buf = plain.buffer.slice(plain.byteOffset, plain.byteOffset + plain.length);
            const ctx = new OfflineAudioContext(1, 48000, 48000);
            const audio = await ctx.decodeAudioData(buf);
            const x = audio.getChannelData(0);
            let crossings = 0;
            for (let i = 1; i < x.length; i++) if (x[i - 1] < 0 && x[i] >= 0) crossings++;
            a.muted = true;
            await a.play();
            await new Promise((r) => setTimeout(r, 500));
            done({seconds: audio.duration, hz: crossings / audio.duration,
                  playing: a.currentTime > 0});
        }).catch((e) => done({error: String(e)}));
    """, seq)
    assert "error" not in got, got
    assert abs(got["seconds"] - 2.0) < 0.15 and abs(got["hz"] - 700) < 20, got
    assert got["playing"], got
