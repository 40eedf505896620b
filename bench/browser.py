"""Headless Chromium (Debian's `chromium`, through `chromedriver`) as the household's browser,
for row 10 of the bench and for the app's browser tests alike."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def have_chromium() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def chromium(profile: Path, width: int = 1100, height: int = 1000,
             extra: tuple[str, ...] = ()) -> Any:
    """Headless Chromium as CI runs it: root, no display, no network but loopback."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic",
                "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", *extra):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))


def grant_notifications(driver: Any, url: str) -> None:
    origin = url.rstrip("/")
    driver.execute_cdp_cmd("Browser.grantPermissions", {"origin": origin,
                                                        "permissions": ["notifications"]})
