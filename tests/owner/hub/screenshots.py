"""`make screenshots`: the app in headless Chromium against a real household (the rig), saved
as PNGs in docs/: the timeline, the player, a ring notification and the doorbell page.

Headless Chromium draws no system notifications, so the notification's picture is the
notification itself as the service worker registered it (its title, text and image, read
back with getNotifications()), drawn on a page the size of a phone's banner."""

from __future__ import annotations

import html
import sys
import tempfile
import threading
from pathlib import Path

from tests.owner.hub.rig import chromium, household, notifications, wait_for


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="doorstep-shots-"))
    house = household(root / "house")
    driver = chromium(root / "profile", 1000, 900)
    try:
        gate = threading.Event()
        service, _ = house.agent(press_at=4.0, gate=gate)
        runner = house.run(service)
        house.enrol(driver)
        gate.set()
        runner.join(180)
        ring = wait_for(lambda: [n for n in notifications(driver)
                                 if n["title"].startswith("Someone")], 60, "a ring")[0]
        driver.get(house.url + "#timeline")
        driver.refresh()
        wait_for(lambda: driver.find_elements("css selector", ".card.clip"), 60, "the timeline")
        driver.save_screenshot(str(out / "app-timeline.png"))
        driver.find_elements("css selector", ".card.clip")[0].click()
        wait_for(lambda: driver.find_elements("id", "player"), 60, "the player")
        driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const v = document.getElementById('player');
            v.addEventListener('seeked', () => done(), {once: true});
            const go = () => { v.currentTime = 3.0; };
            if (v.readyState >= 1) go();
            else v.addEventListener('loadedmetadata', go, {once: true});
        """)
        driver.save_screenshot(str(out / "app-player.png"))
        driver.get(house.url + "#devices")
        wait_for(lambda: driver.find_elements("css selector", ".device dd[data-done='1']"),
                 60, "the device page, its whole chain checked")
        driver.save_screenshot(str(out / "app-device.png"))
        driver.set_window_size(460, 420)
        driver.get("about:blank")
        driver.execute_script("document.documentElement.innerHTML = arguments[0];", f"""
            <body style="margin:0;background:#ccc;font:15px system-ui">
            <div style="margin:16px;background:#fff;border-radius:14px;box-shadow:0 2px 8px #0004;
                        overflow:hidden">
              <div style="padding:10px 14px;color:#555;font-size:12px">Doorstep · 127.0.0.1</div>
              <div style="padding:0 14px 6px"><b>{html.escape(ring['title'])}</b><br>
                {html.escape(ring['body'])}</div>
              <img src="{ring['image']}" style="width:100%;display:block"></div></body>""")
        driver.save_screenshot(str(out / "app-notification.png"))
    finally:
        driver.quit()
        house.close()
    for name in ("timeline", "player", "notification", "device"):
        print(f"wrote {out / f'app-{name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")))
