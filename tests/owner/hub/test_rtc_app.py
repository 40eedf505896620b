"""Live view and talk over WebRTC (docs/rtc.md) in the owner's app, in headless Chromium with
fake media devices: the page signs an offer, the hub relays it to the agent as a command, the
agent's signed answer is checked in the page, and then the doorbell's own H.264 packets play in
the page while the browser's (fake) microphone plays on the doorbell's (file) speaker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest

from tests.agent.rtcpeer import dominant_hz, tone
from tests.owner.hub.rig import console, fake_media, have_chromium, looping_doorbell, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_chromium(), reason="needs Debian's chromium and "
                                 "chromium-driver (make setup installs them)")]


@pytest.fixture
def home(tmp_path: Any) -> Iterator[dict[str, Any]]:
    mic = tone(tmp_path / "mic.wav", 1000)
    voice = tone(tmp_path / "voice.wav", 440)
    speaker = tmp_path / "speaker.wav"
    # idle_seconds = 4: the call below outlasts it only if Chromium's RTCP reports arrive
    with looping_doorbell(tmp_path, (
            f'\n[rtc]\nmicrophone = "file:{mic}"\nspeaker = "file:{speaker}"\n'
            'idle_seconds = 4\n'), fake_media(voice)) as home:
        yield {**home, "speaker": speaker}


def video_state(driver: Any) -> dict[str, Any]:
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const v = document.getElementById('rtc-video-demo');
        import('/static/js/rtc.js').then(async (m) => {
            const s = m.session('demo');
            let codec = '', decoded = 0;
            if (s && s.pc) {
                const stats = await s.pc.getStats();
                stats.forEach((r) => {
                    if (r.type === 'inbound-rtp' && r.kind === 'video') {
                        decoded = r.framesDecoded || 0;
                        const c = stats.get(r.codecId);
                        codec = c ? c.mimeType : '';
                    }
                });
            }
            done({width: v.videoWidth, height: v.videoHeight, decoded, codec,
                  state: document.getElementById('rtc-demo').dataset.state || '',
                  status: document.getElementById('rtc-status-demo').textContent});
        }).catch((e) => done({error: String(e)}));
    """)


def test_the_app_sees_live_video_and_talks_to_the_doorbell(home: dict[str, Any]) -> None:
    house, driver, service = home["house"], home["driver"], home["service"]
    driver.get(house.url + "#devices")
    # the one Live button: the direct path (WebRTC) connects on loopback, and says so
    wait_for(lambda: driver.find_elements("id", "live-demo"), 60, "the Live button")
    driver.find_element("id", "live-demo").click()
    state = wait_for(lambda: (lambda s: s if s.get("decoded", 0) >= 30 else None)(
        video_state(driver)), 60, f"30 decoded frames in the page: {console(driver)}")
    assert (state["width"], state["height"]) == (768, 576), state
    assert state["codec"] == "video/H264" and state["state"] == "connected", state
    wait_for(lambda: driver.find_element("id", "watch").get_attribute("data-path") == "webrtc",
             10, "the page to name the direct path")
    assert driver.find_element("id", "live-path").text.startswith("Direct (WebRTC)")
    # Talk puts the browser's microphone on the call already made (no new offer)
    driver.find_element("id", "live-talk").click()
    wait_for(lambda: driver.find_element("id", "live-talk").get_attribute("aria-pressed")
             == "true", 20, f"talk to turn on: {console(driver)}")
    rtc = service.rtc
    assert rtc is not None and len(rtc.sessions) == 1
    (session,) = rtc.sessions.values()
    wait_for(lambda: rtc._sink is not None and rtc._sink.frames >= 250, 30,
             "5 s of the browser's voice at the doorbell's speaker")
    assert session.id in rtc.sessions, rtc.ended
    driver.find_element("id", "live-hangup").click()
    wait_for(lambda: rtc.ended, 20, "the doorbell to end the session")
    assert rtc.ended[-1] == (session.id, "the owner hung up") and not rtc.sessions
    service.stop_event.set()
    home["runner"].join(60)
    with av.open(str(home["speaker"])) as played:
        samples = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0]
                                  for f in played.decode(audio=0)])
    assert abs(dominant_hz(samples[-48000:]) - 440) < 20
