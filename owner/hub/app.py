"""The hub's web server (aiohttp): the app's files, enrolment, sessions, and the rules every
request passes: a Host the hub answers to (no DNS rebinding), no path traversal, a same-origin
Origin on every request that changes anything (no cross-site requests), a valid session for
the API, a bounded body, and headers that keep the page to its own origin.

Routes that read and act on the store are in api.py; docs/app.md is the HTTP API."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from doorstep.core.errors import DoorstepError, KeyFileError, SealError
from doorstep.owner.hub import static
from doorstep.owner.hub.enrol import Codes, EnrolRefused
from doorstep.owner.hub.live import Bus, Relay
from doorstep.owner.hub.livefeed import LiveFeeds
from doorstep.owner.hub.members import Browser, Household, check_keys
from doorstep.owner.hub.push import Vapid
from doorstep.owner.hub.timeline import Timeline

log = logging.getLogger(__name__)

COOKIE = "ds_session"
MAX_BODY = 32 * 1024 * 1024          # the largest upload: a shared clip
MAX_JSON = 16 * 1024
OPEN = {("POST", "/api/enrol"), ("POST", "/api/session/challenge"), ("POST", "/api/session")}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "media-src 'self' blob:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Hub:
    """Everything a request handler may reach. Holds public keys and ciphertext only."""

    home: Path
    store: Path
    household: Household
    codes: Codes
    timeline: Timeline
    vapid: Vapid
    bus: Bus = field(default_factory=Bus)
    relay: Relay | None = None
    feeds: LiveFeeds = field(default_factory=LiveFeeds)      # live view (livefeed.py)
    hosts: set[str] = field(default_factory=set)     # Host headers we answer to
    tls: bool = False
    assets: dict[str, static.Asset] = field(default_factory=static.load)
    started: float = field(default_factory=time.time)

    @property
    def dir(self) -> Path:
        return self.home / "hub"

    def device_key(self, device: str) -> str | None:
        try:
            return (self.store / device / "device.pub").read_text().strip()
        except (OSError, ValueError):
            return None

    def settle(self) -> None:
        """Apply what `doorstep enroll` finished: doorbells' answers, and removals."""
        for browser_id, result in self.codes.results().items():
            if browser_id not in self.household.browsers:
                continue
            if result["removed"]:
                self.household.remove(browser_id)
            else:
                self.household.update(browser_id, devices=result["devices"])


HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
BROWSER: web.RequestKey[Browser] = web.RequestKey("browser", Browser)


def refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def browser_of(request: web.Request) -> Browser:
    return request[BROWSER]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    hub = request.app[HUB]
    if request.host not in hub.hosts:
        return refuse(421, f"this hub does not answer to the host {request.host[:64]!r}")
    raw = request.raw_path.split("?")[0].lower()
    if ".." in request.path.split("/") or "%2f" in raw or "%5c" in raw or "%2e%2e" in raw \
            or "\\" in request.path:
        return refuse(400, "path traversal refused")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        scheme = "https" if hub.tls else "http"
        origin = request.headers.get("Origin")
        if origin is None or origin != f"{scheme}://{request.host}":
            return refuse(403, "cross-site request refused (Origin is not this hub)")
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin",
                                                                        "none"):
            return refuse(403, "cross-site request refused (Sec-Fetch-Site)")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return refuse(413, f"upload too large: {request.content_length} bytes, at most "
                          f"{MAX_BODY}")
    if request.path.startswith("/api/") and (request.method, request.path) not in OPEN:
        browser = hub.household.session(request.cookies.get(COOKIE))
        if browser is None:
            return refuse(401, "no valid session: enrol this browser, or sign in again")
        request[BROWSER] = browser
    try:
        response = await handler(request)
    except web.HTTPRequestEntityTooLarge:
        response = refuse(413, f"upload too large (at most {MAX_BODY} bytes)")
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if hub.tls:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_length is None or request.content_length > MAX_JSON:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_JSON,
                                            actual_size=request.content_length or 0)
    try:
        doc = json.loads(await request.read())
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(text='{"error": "body is not JSON"}',
                                 content_type="application/json") from None
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(text='{"error": "body is not a JSON object"}',
                                 content_type="application/json")
    return doc


def set_session(response: web.Response, hub: Hub, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=hub.tls,
                        path="/", max_age=30 * 24 * 3600)


async def asset(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    found = hub.assets.get(request.path)
    if found is None:
        return refuse(404, "not found")
    if request.headers.get("If-None-Match") == found.etag:
        return web.Response(status=304)
    response = web.Response(body=found.body, content_type=found.content_type,
                            headers={"ETag": found.etag, "Cache-Control": "no-cache"})
    if request.path == "/sw.js":
        response.headers["Service-Worker-Allowed"] = "/"
    return response


async def enrol(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    doc = await read_json(request)
    recipient, key = str(doc.get("recipient", "")), str(doc.get("key", ""))
    label = str(doc.get("label", ""))[:64] or "browser"
    try:
        check_keys(recipient, key)          # before the code is spent
    except KeyFileError as exc:
        return refuse(400, f"bad public keys: {exc}")
    client = request.remote or "?"
    try:
        digest = hub.codes.redeem(str(doc.get("code", "")), client)
        browser = hub.household.add(label, recipient, key)
    except EnrolRefused as exc:
        return refuse(exc.status, str(exc))
    except KeyFileError as exc:
        return refuse(409, str(exc))
    hub.codes.fill(digest, {"browser": browser.id, "recipient": recipient, "key": key,
                            "label": label})
    log.info("hub: enrolled browser %s (%s) from %s", browser.id, label, client)
    response = web.json_response({"browser": browser.public(), **identity(hub)}, status=201)
    set_session(response, hub, hub.household.open_session(browser.id))
    return response


def identity(hub: Hub) -> dict[str, Any]:
    """What a browser pins: each doorbell's signing key, and the hub's push key."""
    return {"devices": {d: hub.device_key(d) for d in hub.timeline.devices()},
            "vapid": hub.vapid.public}


async def challenge(request: web.Request) -> web.Response:
    try:
        return web.json_response({"nonce": request.app[HUB].household.challenge()})
    except SealError as exc:
        return refuse(429, str(exc))


async def session(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    doc = await read_json(request)
    try:
        token = hub.household.answer(str(doc.get("browser", "")), str(doc.get("nonce", "")),
                                     str(doc.get("sig", "")))
    except DoorstepError as exc:
        return refuse(403, f"sign-in refused: {exc}")
    response = web.json_response({"ok": True})
    set_session(response, hub, token)
    return response


async def me(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    hub.settle()
    browser = hub.household.browsers.get(browser_of(request).id)
    if browser is None:
        return refuse(401, "this browser was removed from the household")
    return web.json_response({"browser": browser.public(), **identity(hub),
                              "household": [b.public() for b in
                                            hub.household.browsers.values()]})


def make_app(hub: Hub) -> web.Application:
    from doorstep.owner.hub import api, livefeed

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[HUB] = hub
    app.router.add_post("/api/enrol", enrol)
    app.router.add_post("/api/session/challenge", challenge)
    app.router.add_post("/api/session", session)
    app.router.add_get("/api/me", me)
    api.add_routes(app)
    livefeed.add_routes(app, hub.feeds, api.DEVICE)
    for path in hub.assets:
        app.router.add_get(path, asset)
    return app
