"""Live view in the app, in a real headless Chromium, through the real hub, a real Mosquitto and
the real agent: the Live button starts a session with a command the browser signs, the hub
relays the doorbell's sealed segments as they are, and the page opens, checks and plays them
with Media Source Extensions. Leaving the page stops the session."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.agent.service import Service
from doorstep.config import parse_config
from tests.owner.hub.rig import Household, chromium, have_chromium, household, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_chromium(), reason="needs Debian's chromium and "
                                 "chromium-driver (make setup installs them)")]


def running_agent(house: Household) -> tuple[Service, threading.Thread]:
    from gpiozero.pins.mock import MockFactory

    from doorstep.agent.wiring import build

    # WebRTC off on this doorbell: the Live button falls back to the broker at once, the path
    # tested here (the direct one is test_rtc_app's, the fallback on a timeout test_watch_app's)
    text = house.config_text.replace("realtime = false", "realtime = true\nloop = true") + \
        "\n[rtc]\nenabled = false\n"
    service = build(parse_config(text), pin_factory=MockFactory())
    runner = threading.Thread(target=lambda: service.run(connect_timeout=10.0), daemon=True)
    runner.start()
    return service, runner


@pytest.fixture()
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("live")
    house = household(root / "house")
    driver = chromium(root / "profile")
    service, runner = running_agent(house)
    try:
        house.enrol(driver)
        yield {"house": house, "driver": driver, "service": service}
    finally:
        service.stop_event.set()
        runner.join(30)
        driver.quit()
        house.close()


def stats(driver: Any) -> dict[str, Any]:
    got = driver.execute_script("""
        const s = window.__liveStats, v = document.getElementById('live-player');
        return s ? {segments: s.segments, refused: s.refused, time: v ? v.currentTime : 0,
                    width: v ? v.videoWidth : 0, stopped: s.stopped,
                    status: document.getElementById('live-status').textContent} : null;""")
    return got or {}


def test_the_live_button_plays_the_doorbell_live_and_leaving_stops_it(
        home: dict[str, Any]) -> None:
    house: Household = home["house"]
    driver, service = home["driver"], home["service"]
    assert service.live is not None
    # a watcher on the broker, to replay what passed (anyone with broker access could)
    seen: list[tuple[str, bytes]] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, m: seen.append((m.topic, bytes(m.payload)))
    watcher.connect("127.0.0.1", house.broker.port)
    watcher.subscribe("doorstep/demo/live/+", qos=0)
    watcher.loop_start()
    driver.get(house.url + "#devices")
    button = wait_for(lambda: driver.find_elements("id", "live-demo"), 60, "the Live button")
    button[0].click()
    wait_for(lambda: stats(driver).get("segments", 0) >= 20, 60,
             "20 live segments played in the page")
    # the page names the path in use, and why it is not the direct one
    assert driver.find_element("id", "watch").get_attribute("data-path") == "broker"
    assert driver.find_element("id", "live-path").text.startswith("Through the broker")
    assert "The direct connection did not work (demo refused: rtc_offer: live view and talk " \
        "over WebRTC are off on this doorbell (rtc.enabled))" in \
        driver.find_element("id", "live-why").text
    s = wait_for(lambda: (s := stats(driver)).get("time", 0) > 1.0 and s, 30,
                 "playback to move on")
    assert s["width"] == 768, s                   # the doorbell's picture, decoded
    assert not s["refused"], s
    assert service.live.active == [driver.execute_script("return window.__liveStats.session")]
    assert house.hub.hub.feeds.relayed >= 20      # the hub relayed them, sealed as they came
    # a replayed segment and a forged one, published on the session's topic: both refused
    topic, first = seen[0]
    watcher.publish(topic, first, qos=0).wait_for_publish(5)
    watcher.publish(topic, b"DS2V" + bytes(2000), qos=0).wait_for_publish(5)
    refused = wait_for(lambda: len(r := stats(driver)["refused"]) >= 2 and r, 30,
                       "the page to refuse both")
    assert any("replayed" in r for r in refused), refused
    assert any("does not open" in r for r in refused), refused
    watcher.loop_stop()
    watcher.disconnect()
    driver.execute_script("location.hash = '#timeline'")   # leaving the page stops it
    wait_for(lambda: not service.live.active, 30, "the session to stop")
