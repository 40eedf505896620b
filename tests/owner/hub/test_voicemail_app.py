"""A visitor's voicemail reaches the owner (docs/talk.md, docs/app.md "Web Push"): the doorbell
signs it with its ring as ``parent``, the hub pushes it through a local push service (which sees
RFC 8291 ciphertext only) while the app is closed, the service worker verifies and decrypts it
and says "Voicemail", and the app plays it on the ring's own timeline card and from the
notification's target. Headless Chromium, the real hub, Mosquitto and the agent with a tone file
for its microphone."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from doorstep.agent.run import RingPress
from doorstep.protocol.reply import ReplyOffer
from tests.agent.rtcpeer import tone
from tests.agent.test_voice import opus
from tests.owner.hub.pushservice import PushService, to_service_worker
from tests.owner.hub.rig import (
    console,
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
    with looping_doorbell(tmp_path, (
            f'\n[voice]\nmicrophone = "file:{mic}"\nspeaker = "file:{tmp_path / "spk.wav"}"\n'
            'answer_seconds = 1\nvoicemail_seconds = 2\n')) as home:
        service = home["service"]
        # the owner's "we are out" reply, as the app stores it (tested in test_replies_app)
        audio = opus(tmp_path / "away.ogg", 440, 1.0)
        assert service.voice is not None
        service.voice.store.put(ReplyOffer("away", len(audio), hashlib.sha256(audio).hexdigest(),
                                           "We are out", True), audio, 1.0)
        yield home


def test_a_voicemail_is_pushed_and_plays_on_its_rings_card(home: dict[str, Any]) -> None:
    house, driver, service = home["house"], home["driver"], home["service"]
    push = PushService(to_service_worker(driver, house.url))
    try:
        driver.get(house.url + "#settings")
        wait_for(lambda: driver.find_elements("id", "save-notifications"), 60, "settings")
        assert driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/api/notifications', {method: 'POST', credentials: 'same-origin',
                headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({subscription: arguments[0]})}).then((r) => done(r.status));
        """, push.subscription) == 200
        driver.get(house.url + "manifest.webmanifest")     # the app is closed
        service.press(RingPress(time.time(), time.monotonic(), 1, True))
        voice = service.voice
        wait_for(lambda: voice.voicemails == 1, 60, "the voicemail to be recorded")

        def pushed() -> list[Any]:
            return [p for p in push.received if "plaintext" in p
                    and json.loads(p["plaintext"])["k"] == "voicemail"]

        (got,) = wait_for(pushed, 120, "the voicemail's push")
        # the push service saw ciphertext only; inside, which sealed file to fetch (or the
        # sealed file itself): never the Ogg audio in clear
        assert got["authorization"].startswith("vapid t=") and got["urgency"] == "high"
        assert b"OggS" not in got["ciphertext"] and b"OggS" not in got["plaintext"]
        msg = json.loads(got["plaintext"])
        vm_seq = msg["s"]
        shown = wait_for(lambda: [n for n in notifications(driver)
                                  if n["title"] == "Voicemail from demo"], 120,
                         "the voicemail's notification")
        assert shown[0]["data"]["open"] == f"#voicemail/demo/{vm_seq}"
        ring_seq = int(shown[0]["data"]["ring"])        # the signed parent, as the worker read it
        # the app: the ring's card carries the message, and plays it there
        driver.get(house.url + "#timeline")
        button = wait_for(lambda: driver.find_elements("id", f"voicemail-play-demo-{ring_seq}"),
                          60, f"the voicemail on the ring's card: {console(driver)}")
        group = driver.find_element("css selector", ".card-group")
        assert group.find_element("css selector", "a.card.ring").get_attribute("data-seq") \
            == str(ring_seq)
        assert not driver.find_elements("css selector", "a.card.voicemail")   # not twice
        driver.execute_script(
            "document.querySelectorAll('audio').forEach((a) => { a.muted = true; });")
        button[0].click()
        state = wait_for(lambda: driver.execute_script("""
            const a = document.getElementById(arguments[0]);
            return a && !a.hidden && a.currentTime > 0.3 ? {t: a.currentTime, d: a.duration} : null;
        """, f"voicemail-audio-demo-{ring_seq}"), 30, f"the voicemail to play: {console(driver)}")
        assert abs(state["d"] - 2.0) < 0.2, state
        # the notification's target: the message, with the ring it answers
        driver.get(house.url + shown[0]["data"]["open"])
        wait_for(lambda: driver.find_elements("id", "voicemail-audio"), 30,
                 f"the voicemail page: {console(driver)}")
        link = driver.find_element("id", "voicemail-ring").get_attribute("href")
        assert link.endswith(f"#event/demo/{ring_seq}")
    finally:
        push.close()
