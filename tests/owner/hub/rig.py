"""A household on one machine, from real parts: a private Mosquitto, the hub (`doorstep home`
as HubServer), the doorbell agent wired as `doorstep run` wires it (on the bundled clip, with a
mock button), and headless Chromium (Debian's, through chromedriver) as the household's
browser. Used by the browser tests, `make screenshots` and the bench."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doorstep.agent.service import Service
from doorstep.bench.browser import chromium as chromium
from doorstep.bench.browser import grant_notifications
from doorstep.bench.browser import have_chromium as have_chromium
from doorstep.broker import Mosquitto
from doorstep.capture.frames import Frame
from doorstep.config import parse_config
from doorstep.demo import BUNDLED_CLIP, demo_config
from doorstep.owner.hub.enrol import new_code, wait_claim
from doorstep.owner.hub.enroll import finish
from doorstep.owner.hub.server import HubConfig, HubServer
from doorstep.owner.keys import make_owner, make_signing
from doorstep.protocol.connect import Broker
from doorstep.protocol.keys import SigningKey


def wait_for(what: Callable[[], Any], timeout: float = 60.0, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message or what}")
        time.sleep(0.05)


@dataclass
class Household:
    root: Path
    broker: Mosquitto
    hub: HubServer
    device_key: SigningKey
    command_key: Path
    owner_key: Path
    config_text: str
    enrolled: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.hub.url

    def enrol(self, driver: Any, label: str = "phone") -> dict[str, str]:
        """Enrol ``driver``'s browser through the page, as a person would, while
        `doorstep enroll`'s side adds it to the doorbell (which must be running)."""
        code, digest = new_code(self.root / "home" / "hub" / "enrol")
        answers: dict[str, Any] = {}

        def owner_side() -> None:
            claim = wait_claim(self.root / "home" / "hub" / "enrol", digest, 60)
            assert claim is not None, "the browser never redeemed the code"
            answers["rc"] = finish(self.root / "home", SigningKey.load(self.command_key),
                                   Broker(host="127.0.0.1", port=self.broker.port),
                                   "doorstep/{device}/", claim, None)
        t = threading.Thread(target=owner_side, daemon=True)
        t.start()
        grant_notifications(driver, self.url)
        driver.get(f"{self.url}#enrol={code}")
        wait_for(lambda: driver.find_elements("id", "enrol"), 30, "the enrolment form")
        driver.find_element("id", "label").clear()
        driver.find_element("id", "label").send_keys(label)
        driver.find_element("id", "enrol").click()
        t.join(90)
        assert answers.get("rc") == 0, f"the doorbell did not add the browser: {answers}"
        wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), 30,
                 "the app to start")
        return {"code": code}

    def agent(self, *, press_at: float | None, gate: threading.Event | None = None,
              realtime: bool = False) -> tuple[Service, dict[str, float]]:
        """The doorbell, built as `doorstep run` builds it, and a function that runs it:
        waits at the first frame until ``gate`` is set, presses the button at ``press_at``."""
        from gpiozero.pins.mock import MockFactory

        from doorstep.agent.wiring import build

        cfg = parse_config(self.config_text.replace("realtime = false",
                                                    f"realtime = {str(realtime).lower()}"))
        factory = MockFactory()
        service = build(cfg, pin_factory=factory)
        pin = factory.pin(17)
        pressed: dict[str, float] = {}

        def on_frame(frame: Frame) -> None:
            if gate is not None and not gate.is_set():
                gate.wait(120)
            if press_at is not None and "wall" not in pressed and frame.pts >= press_at:
                pressed["wall"] = time.time()
                pin.drive_low()
                pin.drive_high()
                time.sleep(0.05)     # the ring thread's moment, as between camera frames
        service._on_frame_hook = on_frame  # type: ignore[attr-defined]
        return service, pressed

    def run(self, service: Service) -> threading.Thread:
        t = threading.Thread(target=lambda: service.run(
            on_frame=service._on_frame_hook,  # type: ignore[attr-defined]
            connect_timeout=10.0, drain_timeout=60.0), daemon=True)
        t.start()
        return t

    def close(self) -> None:
        self.hub.stop()
        self.broker.stop()


def household(root: Path, *, clip: Path = BUNDLED_CLIP,
              segment_seconds: float = 0.0) -> Household:
    """``segment_seconds``: 0 (one-file clips) unless a test asks for segments (2, the
    shipped default): the browser tests of one-file clips (a clip cut short by a crash, which
    only one-file clips have) keep that path checked; the segment tests pass 2."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "device").mkdir(exist_ok=True)
    recipient, command = make_owner(root)
    device_key = make_signing(root / "device" / "device.key")
    inbox_key = make_signing(root / "inbox.key")
    broker = Mosquitto().start()
    hub = HubServer(HubConfig(home=root / "home", devices={"demo": device_key.public_key},
                              inbox_key=inbox_key, broker=Broker(host="127.0.0.1",
                                                                 port=broker.port),
                              port=0)).start()
    text = demo_config(root, clip, broker.port, recipient, command, inbox_key.public_text(),
                       realtime=False, segment_seconds=segment_seconds)
    return Household(root, broker, hub, device_key, root / "owner-command.key",
                     root / "owner.key", text)


def notifications(driver: Any) -> list[dict[str, Any]]:
    """The system notifications the app's service worker registration is showing."""
    got = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        navigator.serviceWorker.ready.then((r) => r.getNotifications()).then((ns) => done(
            ns.map((n) => ({title: n.title, body: n.body, tag: n.tag, image: n.image || '',
                            icon: n.icon || '', data: n.data})))).catch((e) => done(String(e)));
    """)
    assert isinstance(got, list), got
    return got


def play_to(driver: Any, seconds: float) -> Any:
    """Play the page's #player until ``seconds``: the time reached, or a text saying why not."""
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1], target = arguments[0];
        const v = document.getElementById('player');
        const go = () => { v.play().catch((e) => done('play: ' + e)); };
        v.addEventListener('timeupdate', () => {
            if (v.currentTime >= target) done(v.currentTime);
        });
        v.addEventListener('error', () => done('error ' + (v.error && v.error.message)));
        if (v.readyState >= 2) go(); else v.addEventListener('loadeddata', go, {once: true});
    """, seconds)


def seek_to(driver: Any, seconds: float) -> float:
    """Pause #player and seek it; where it landed."""
    return float(driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const v = document.getElementById('player');
        v.pause();
        v.addEventListener('seeked', () => done(v.currentTime), {once: true});
        v.currentTime = arguments[0];
    """, seconds))


def console(driver: Any) -> str:
    return "\n".join(e["message"] for e in driver.get_log("browser"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dumps(doc: Any) -> str:
    return json.dumps(doc)


def fake_media(voice: Path) -> tuple[str, ...]:
    """Chromium's fake camera and microphone, the microphone playing ``voice`` (the owner)."""
    return ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={voice}")


@contextlib.contextmanager
def looping_doorbell(root: Path, config: str = "",
                     browser: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """A household whose doorbell plays the bundled clip in a loop in real time, with
    ``config`` appended to its doorstep.toml, running, and a headless Chromium (``browser``:
    its extra flags) enrolled: what the app's live, talk and voice tests start from. Yields
    house, driver, service and runner; stops them all after."""
    house = household(root / "house")
    house.config_text = house.config_text.replace("realtime = false",
                                                  "realtime = false\nloop = true") + config
    driver = chromium(root / "profile", extra=browser)
    service = None
    try:
        service, _ = house.agent(press_at=None, realtime=True)
        runner = house.run(service)
        house.enrol(driver)
        yield {"house": house, "driver": driver, "service": service, "runner": runner}
    finally:
        if service is not None:
            service.stop_event.set()
        driver.quit()
        house.close()
