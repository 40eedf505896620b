"""Row 10, the household's app (issue 14): a button press to the notification shown in a real
browser (headless Chromium with the app open), idle and while a clip uploads over the
2 Mbit/s link; tapping a clip to its first frame; and the hub's memory and CPU with 100,000
stored artifacts (bench/hubstore.py). Each figure has a baseline from the same run."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doorstep.bench.browser import chromium, grant_notifications, have_chromium
from doorstep.bench.link import Link
from doorstep.bench.report import Line, Row, Stat
from doorstep.bench.rig import Keys, config_text
from doorstep.bench.ring import LINK_BPS, _count, _ring_left, _rings_above, _wait, head_subscriber
from doorstep.core.errors import DoorstepError

if TYPE_CHECKING:
    from doorstep.bench.cli import Bench

log = logging.getLogger(__name__)

POSTROLL = 2.0
# the doorbell row 10 presses: known to the hub it runs, not to the bench's own inbox
APP_DEVICE = "hubbench"
FEED_CLIP_BYTES = 2 * 1024 * 1024


@dataclass
class Presses:
    shown_ms: list[float] = field(default_factory=list)      # press -> notification up
    mqtt_ms: list[float] = field(default_factory=list)       # press -> ring event at MQTT
    live_ms: list[float] = field(default_factory=list)       # hub's news -> notification up
    picture_ms: list[float] = field(default_factory=list)    # press -> notification with picture
    missed: int = 0


def _page_shown(driver: Any, tag: str, picture: bool = False) -> float | None:
    """When the page first showed ``tag``'s notification (``picture``: with the visitor's
    picture in it), in seconds since the epoch."""
    got = driver.execute_script("return (window.__shown || []).filter((s) => s.tag === "
                                "arguments[0] && (s.picture || !arguments[1]))"
                                ".map((s) => s.at)", tag, picture)
    return float(got[0]) / 1000 if got else None


def _enrol(driver: Any, hub: HubProcess, keys: Keys, broker_port: int) -> None:
    """Enrol the browser through the page while `doorstep enroll`'s side adds it to the
    running doorbell, as a person would."""
    from doorstep.owner.hub.enrol import new_code, wait_claim
    from doorstep.owner.hub.enroll import finish
    from doorstep.protocol.connect import Broker
    from doorstep.protocol.keys import SigningKey

    folder = hub.home / "hub" / "enrol"
    code, digest = new_code(folder)
    answer: dict[str, int] = {}

    def owner_side() -> None:
        claim = wait_claim(folder, digest, 60)
        if claim is not None:
            answer["rc"] = finish(hub.home, SigningKey.load(keys.dir / "owner-command.key"),
                                  Broker(host="127.0.0.1", port=broker_port),
                                  "doorstep/{device}/", claim, None)
    t = threading.Thread(target=owner_side, daemon=True)
    t.start()
    grant_notifications(driver, hub.url)
    driver.get(f"{hub.url}#enrol={code}")
    _wait(lambda: bool(driver.find_elements("id", "enrol")), 30, "the enrolment form")
    driver.find_element("id", "enrol").click()
    t.join(90)
    if answer.get("rc") != 0:
        raise DoorstepError(f"bench: the doorbell did not add the browser ({answer})")
    _open_app(driver, hub.url)


def _open_app(driver: Any, url: str) -> None:
    driver.get(url + "manifest.webmanifest")       # a fresh document each time
    driver.get(url + "#timeline")
    try:
        _wait(lambda: bool(driver.execute_script("return document.body.dataset.ready")), 60,
              "the app to start")
    except DoorstepError as exc:
        page = driver.execute_script("return document.body.innerText")[:300]
        said = " | ".join(e["message"][:200] for e in driver.get_log("browser")[-5:])
        raise DoorstepError(f"{exc}; the page shows {page!r}; its console: {said}") from None


def presses(driver: Any, hub: HubProcess, keys: Keys, broker_port: int, workdir: Path, source: Path,
            n: int, *, link_bps: float | None, upload: bool, enrol: bool,
            seed: int = 11) -> Presses:
    """Press the doorbell ``n`` times with the app open in ``driver``; each press is timed to
    the page's notification (the thumbnail verified and decrypted in the page) and, for the
    baseline, to the ring event's arrival at a subscriber on the broker."""
    from gpiozero.pins.mock import MockFactory

    from doorstep.agent.wiring import build
    from doorstep.config import parse_config
    from doorstep.protocol.kinds import Priority

    rng = random.Random(seed)
    out = Presses()
    with Link(broker_port, link_bps) as link:
        port = link.port if link_bps else broker_port
        cfg = parse_config(config_text(keys, workdir / "device", source, port, realtime=True,
                                       loop=True, motion=False, repeat_window=0.0,
                                       postroll=POSTROLL, device=APP_DEVICE),
                           source="bench app config")
        sub = head_subscriber(broker_port, keys, cfg.topic_prefix)
        factory = MockFactory()
        service = build(cfg, pin_factory=factory)
        pin = factory.pin(int(cfg.button.pin.removeprefix("GPIO")))
        runner = threading.Thread(target=service.run, name="bench-app-agent",
                                  kwargs={"connect_timeout": 10.0})
        runner.start()
        outbox = service.outbox
        try:
            _wait(lambda: service.uplink is not None and service.uplink.connected
                  and service.agent.frames > 0, 15, "the agent's first frame and connection")
            if enrol:
                _enrol(driver, hub, keys, broker_port)
            else:
                _open_app(driver, hub.url)

            def feed() -> None:
                if len([i for i in outbox.items() if i.manifest.kind == "clip"]) < 2:
                    pending = outbox.open("clip", priority=Priority.CLIP)
                    for _ in range(FEED_CLIP_BYTES // 65536):
                        pending.write(os.urandom(65536))
                    item = pending.commit()
                    if service.uplink is not None:
                        service.uplink.notify(item)

            if upload:
                feed()
                time.sleep(1.0)
            for _ in range(n):
                if upload:
                    feed()
                before = _count(service.agent, "ring")
                t0, w0 = time.monotonic(), time.time()
                pin.drive_low()
                time.sleep(0.05)
                pin.drive_high()
                try:
                    _wait(partial(_rings_above, service.agent, before), 10, "the ring event")
                except DoorstepError:
                    out.missed += 1
                    continue
                seq = [s for k, s in list(service.agent.events) if k == "ring"][before]
                got = sub.wait_for(seq, 30)
                tag = f"{APP_DEVICE}/{seq}"
                deadline = time.monotonic() + 30
                shown = _page_shown(driver, tag)
                while shown is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                    shown = _page_shown(driver, tag)
                if got is None or shown is None:
                    out.missed += 1
                    continue
                out.mqtt_ms.append((got[0] - t0) * 1000)
                out.shown_ms.append((shown - w0) * 1000)
                news = driver.execute_script("return (window.__news || {})[arguments[0]]", tag)
                if news:
                    out.live_ms.append((shown - float(news) / 1000) * 1000)
                pictured = _page_shown(driver, tag, picture=True)
                while pictured is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                    pictured = _page_shown(driver, tag, picture=True)
                if pictured is not None:
                    out.picture_ms.append((pictured - w0) * 1000)
                _wait(partial(_ring_left, outbox, seq), 60,
                      "the ring's event and snapshot to leave the outbox")
                time.sleep(POSTROLL + rng.uniform(0.5, 1.0))   # its clip ends before the next
        finally:
            service.stop_event.set()
            runner.join(60)
            sub.close()
    return out


TAP = """
const done = arguments[arguments.length - 1];
const cards = [...document.querySelectorAll('.card.clip')];
if (!cards.length) { done('no clip card'); return; }
window.__firstFrame = undefined;
const t = performance.now();
cards[cards.length - 1].click();
const poll = () => {
  if (window.__firstFrame !== undefined) done(window.__tapped - t + window.__firstFrame);
  else if (document.getElementById('refused')) done('refused');
  else setTimeout(poll, 2);
};
poll();
"""

FLOOR = """
const done = arguments[arguments.length - 1];
const v = document.createElement('video');
v.muted = true;
v.addEventListener('loadeddata', () => done(performance.now() - t), {once: true});
v.addEventListener('error', () => done('error'), {once: true});
const t = performance.now();
v.src = document.getElementById('player').src;
"""


def taps(driver: Any, url: str, n: int) -> tuple[list[float], list[float]]:
    """Tap the oldest clip in a freshly opened app (empty HTTP cache) to its first frame;
    then, in the same page, load the same decrypted MP4 from memory into a new <video>."""
    driver.set_script_timeout(120)
    figure, floor = [], []
    for _ in range(n):
        driver.execute_cdp_cmd("Network.clearBrowserCache", {})
        _open_app(driver, url)
        _wait(lambda: bool(driver.find_elements("css selector", ".card.clip")), 60, "a clip")
        got = driver.execute_async_script(TAP)
        if not isinstance(got, (int, float)):
            raise DoorstepError(f"bench: tapping a clip gave {got!r}")
        figure.append(float(got))
        base = driver.execute_async_script(FLOOR)
        if not isinstance(base, (int, float)):
            raise DoorstepError(f"bench: the decrypted clip did not load in a <video>: {base!r}")
        floor.append(float(base))
    return figure, floor


def _pcts(xs: list[float]) -> tuple[Stat, Stat]:
    import numpy as np

    if not xs:
        return Stat.of([]), Stat.of([])
    a = np.array(xs)
    return (Stat(float(np.median(a)), float(a.min()), float(a.max()), len(a)),
            Stat.of([float(np.percentile(a, 99))]))


class HubProcess:
    """`doorstep home` as its own process, as the owner runs it (not in the bench process,
    whose agent and browser driver would share its interpreter)."""

    def __init__(self, home: Path, keys: Keys, broker_port: int, log: Path, *,
                 device: str = APP_DEVICE) -> None:
        from doorstep.bench.child import doorstep_command
        from doorstep.protocol.keys import public_text

        self.home = home
        (home / "hub").mkdir(parents=True, exist_ok=True)
        url_file = home / "hub" / "url"
        url_file.unlink(missing_ok=True)
        self._out = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*doorstep_command(), "home", "--home", str(home), "--port", "0",
             "--host", "127.0.0.1", "--mqtt-port", str(broker_port),
             "--key", str(keys.inbox_key),
             "--device", f"{device}={public_text(keys.device_public)}"],
            stdout=self._out, stderr=self._out)
        _wait(lambda: url_file.exists() or self.proc.poll() is not None, 120, "the hub")
        if self.proc.poll() is not None:
            raise DoorstepError(f"doorstep home exited {self.proc.returncode}; see {log}")
        self.url = str(json.loads(url_file.read_text())["url"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


def app_row(bench: Bench) -> Row:
    from doorstep.bench.hubstore import hub_runs

    quick = bench.plan.quick
    count = 10_000 if quick else 100_000
    n_press = 3 if quick else min(bench.plan.presses, 20)
    n_tap = 2 if quick else 5
    lines: list[Line] = []
    describe = ""
    if have_chromium():
        work = bench.work / "app"
        source = bench.inputs.video["720p"]
        hub = HubProcess(work / "home", bench.keys, bench.port, bench.log)
        driver = chromium(work / "profile")
        try:
            idle = presses(driver, hub, bench.keys, bench.port, work, source, n_press,
                           link_bps=None, upload=False, enrol=True)
            tapped, floor = taps(driver, hub.url, n_tap)
            busy = presses(driver, hub, bench.keys, bench.port, work, source, n_press,
                           link_bps=LINK_BPS, upload=True, enrol=False)
        finally:
            driver.quit()
            hub.stop()
        for label, run, target in (("idle, loopback", idle, "< 1000 ms p99"),
                                   ("2 Mbit/s link, clip uploading", busy, "< 2000 ms p99")):
            (f50, f99), (b50, b99) = _pcts(run.shown_ms), _pcts(run.mqtt_ms)
            missed = f"; missed {run.missed}" if run.missed else ""
            lines.append(Line(f"press -> notification, {label}: p50", "ms", f50, b50,
                              note=f"{len(run.shown_ms)} presses{missed}"))
            lines.append(Line(f"press -> notification, {label}: p99", "ms", f99, b99,
                              target=target))
            lines.append(Line(f"  of which the hub's news -> notification, {label}", "ms",
                              Stat.of(run.live_ms), note="the page fetches the event's "
                              "manifest and ciphertext, verifies, decrypts, shows"))
            p50, p99 = _pcts(run.picture_ms)
            lines.append(Line(f"press -> the notification with the visitor's picture, {label}: "
                              "p50", "ms", p50, b50, note="shown again with the thumbnail, "
                              "which follows the event as its own artifact"))
            lines.append(Line(f"press -> the notification with the visitor's picture, {label}: "
                              "p99", "ms", p99, b99))
        lines.append(Line("tap a clip -> first frame", "ms", Stat.of(tapped), Stat.of(floor),
                          note="baseline: the same decrypted MP4, from memory, into a new "
                          "<video>"))
        describe = ("the hub (`doorstep home`, its own process) and headless Chromium with "
                    f"the app open; the agent plays {bench.inputs.describe('720p')} in real time "
                    f"(motion off), {n_press} mock presses per case, each a first ring; a "
                    "notification is up when the page's showNotification() resolves (the "
                    "event fetched over the live channel, verified and decrypted in the "
                    "page; its picture follows as its own artifact); baseline: the same "
                    "press's ring event at a subscriber on the broker (row 5's end point). "
                    "The upload case puts the agent behind bench/link.py at 2 Mbit/s with "
                    "2 MiB clips kept queued. Tap: a fresh page "
                    f"load with an empty HTTP cache, click the oldest clip, {n_tap} times, to "
                    "the <video>'s loadeddata. ")
    else:
        log.warning("bench: row 10's browser lines not measured: no chromium/chromedriver")
        describe = "no chromium (make setup installs it): browser lines not measured. "
    full, empty, wrote = hub_runs(bench.work, count, bench.plan.repeats, 5 if quick else 20,
                                  1.0 if quick else 5.0, bench.log)
    vs = f"{count:,} stored"

    def pick(attr: str, runs: list[Any]) -> Stat:
        return Stat.of([getattr(r, attr) for r in runs])

    lines += [
        Line(f"hub resident memory, {vs}", "MB", pick("rss_mb", full), pick("rss_mb", empty)),
        Line(f"hub peak memory, {vs}", "MB", pick("hwm_mb", full), pick("hwm_mb", empty)),
        Line(f"hub start-up, {vs}", "s", pick("startup_s", full), pick("startup_s", empty),
             note="process start -> serving"),
        Line(f"hub start-up CPU, {vs}", "s", pick("startup_cpu_s", full),
             pick("startup_cpu_s", empty)),
        Line(f"GET /api/devices, {vs}", "ms", pick("devices_ms", full),
             pick("devices_ms", empty)),
        Line(f"GET /api/timeline (60), {vs}", "ms", pick("timeline_ms", full),
             pick("timeline_ms", empty)),
        Line(f"whole timeline, per page of 500, {vs}", "ms", pick("pages_ms", full),
             pick("pages_ms", empty)),
        Line(f"hub idle CPU, {vs}", "% of a core",
             Stat.of([100 * r.idle_cpu_share for r in full]),
             Stat.of([100 * r.idle_cpu_share for r in empty]))]
    describe += (f"Hub lines: `doorstep home --no-mqtt` on a store of {count:,} artifacts of "
                 f"one doorbell (signed, chained; written directly in {wrote:.0f} s) against "
                 "the same hub on an empty store; VmRSS/VmHWM after a browser enrolled "
                 "through the API and the requests listed; CPU from /proc schedstat")
    return Row(10, "The household's app", "ring: the same press's ring event at an MQTT "
               "subscriber; tap: the decrypted MP4 from memory; hub: the same hub, empty store",
               describe, tuple(lines))
