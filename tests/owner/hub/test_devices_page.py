"""The doorbell page in headless Chromium, against a hub serving a store as it is (no broker):
the browser checks the whole chain itself, page by page, and shows gaps, broken links and
forks plainly; a doorbell never seen online shows what is known of its modes (nothing), not
a guess."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doorstep.bench.hubstore import DEVICE, fill_store
from doorstep.owner.hub.enrol import new_code
from doorstep.owner.hub.server import HubConfig, HubServer
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.manifest import Manifest, open_envelope, sign_manifest
from tests.owner.hub.rig import chromium, have_chromium, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_chromium(), reason="needs Debian's chromium and "
                                 "chromium-driver (make setup installs them)")]

COUNT = 1200      # more than two pages of manifests, and far more than the last 200


def damage(folder: Path, key: SigningKey) -> None:
    """Seq 300 re-signed with a prev that is not seq 299's hash (a link the doorbell's key
    signed but that does not chain); seqs 700-702 gone; a fork recorded at seq 100."""
    (env,) = folder.glob("0000000300.*.env")
    doc = json.loads(env.read_bytes())
    m = Manifest(**{**doc["manifest"], "prev": "0" * 64})
    env.write_bytes(sign_manifest(key, m))
    lines = (folder / "index.jsonl").read_text().splitlines()
    kept = [x for x in lines if json.loads(x)["seq"] not in (700, 701, 702)]
    (folder / "index.jsonl").write_text("\n".join(kept) + "\n")
    for seq in (700, 701, 702):
        for p in folder.glob(f"{seq:010d}.*"):
            p.unlink()
    (folder / "conflicts").mkdir()
    (folder / "conflicts" / "0000000100.event.json").write_text("{}")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, HubServer]]:
    root = tmp_path_factory.mktemp("devices")
    key = SigningKey.generate()
    fill_store(root / "home" / "store", key, COUNT)
    damage(root / "home" / "store" / DEVICE, key)
    (env,) = (root / "home" / "store" / DEVICE).glob("0000000300.*.env")
    assert open_envelope(env.read_bytes(), key.public_key).prev == "0" * 64
    hub = HubServer(HubConfig(home=root / "home", devices={DEVICE: key.public_key},
                              inbox_key=SigningKey.generate(), port=0)).start()
    driver = chromium(root / "profile")
    try:
        code, _ = new_code(root / "home" / "hub" / "enrol")
        driver.get(f"{hub.url}#enrol={code}")
        wait_for(lambda: driver.find_elements("id", "enrol"), 30, "the enrolment form")
        driver.find_element("id", "enrol").click()
        wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), 30, "app")
        yield driver, hub
    finally:
        driver.quit()
        hub.stop()


def chain_text(driver: Any, url: str) -> str:
    driver.get(url + "#devices")
    driver.refresh()
    done = wait_for(lambda: driver.find_elements("css selector",
                                                 f"#chain-{DEVICE}[data-done='1']"), 120,
                    "the whole chain checked")
    return str(done[0].text)


def test_the_whole_chain_is_checked_with_gaps_and_forks_shown(page: tuple[Any, HubServer]
                                                              ) -> None:
    driver, hub = page
    text = chain_text(driver, hub.url)
    assert f"{COUNT - 3} artifacts to seq {COUNT}" in text
    assert f"checked all {COUNT - 3} signatures and links from seq 1" in text
    assert "seq 300: does not link to seq 299" in text          # far below the last 200
    assert "missing seq 700-702" in text
    assert "forks at seq 100" in text
    assert "bad" in driver.find_element("id", f"chain-{DEVICE}").get_attribute("class")
    # the next visit starts from what this browser already checked, and still says so
    again = chain_text(driver, hub.url)
    assert "seq 300: does not link to seq 299" in again and "missing seq 700-702" in again


def test_a_doorbell_never_seen_online_shows_no_guessed_modes(page: tuple[Any, HubServer]
                                                             ) -> None:
    driver, hub = page
    driver.get(hub.url + "#devices")
    modes = wait_for(lambda: driver.find_elements("id", f"modes-{DEVICE}"), 60, "the page")
    assert modes[0].text == "unknown: not seen online since the hub started"
    assert "never" in driver.find_element("css selector", f"#device-{DEVICE} dl").text
