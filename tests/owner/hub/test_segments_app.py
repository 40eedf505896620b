"""Clips stored as sealed segments (issue 15) in the owner's app, in headless Chromium: every
segment is verified and decrypted in the page and joined into one MP4 that plays and seeks; a
tampered segment keeps the whole clip from playing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

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
    assert driver.find_elements("id", "no-share")      # said plainly, not a one-segment share


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
