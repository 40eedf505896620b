"""The hub's refusals, over real HTTP: a replayed, expired or wrong enrolment code, a request
without a valid session, a cross-site request, a path-traversal URL and an oversized upload
each get a clear refusal, and nothing changes (the household, the codes, the store)."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from doorstep.owner.hub.enrol import new_code
from doorstep.owner.hub.server import HubConfig, HubServer
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.wire import MAX_SIGNAL


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    device = SigningKey.generate()
    with HubServer(HubConfig(home=tmp_path / "home", devices={"porch": device.public_key},
                             inbox_key=SigningKey.generate(), port=0)) as server:
        yield server


def call(hub: HubServer, method: str, path: str, body: bytes | None = None, *,
         origin: str | None = "same", cookie: str = "", headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(hub.url.rstrip("/") + path, data=body, method=method)
    if origin == "same":
        req.add_header("Origin", hub.url.rstrip("/"))
    elif origin:
        req.add_header("Origin", origin)
    if cookie:
        req.add_header("Cookie", cookie)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            data, status, hdrs = r.read(), r.status, dict(r.headers)
    except urllib.error.HTTPError as exc:
        data, status, hdrs = exc.read(), exc.code, dict(exc.headers)
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {}
    return status, doc, hdrs


def keys() -> dict[str, str]:
    sign = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return {"recipient": str(X25519Identity.generate().recipient),
            "key": "ed25519:" + base64.b64encode(sign).decode()}


def enrol(hub: HubServer, code: str, **extra: str) -> tuple[int, dict[str, Any], str]:
    status, doc, headers = call(hub, "POST", "/api/enrol", json.dumps(
        {"code": code, "label": "phone", **keys(), **extra}).encode())
    return status, doc, headers.get("Set-Cookie", "").split(";")[0]


def snapshot(hub: HubServer) -> dict[str, str]:
    """Every file the hub keeps, and a hash of each: to show nothing changed."""
    root = hub.cfg.home
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_code_works_once_and_a_replay_is_refused(hub: HubServer) -> None:
    code, _ = new_code(hub.cfg.home / "hub" / "enrol")
    status, doc, cookie = enrol(hub, code)
    assert status == 201 and cookie.startswith("ds_session=")
    before = snapshot(hub)
    status, doc, cookie = enrol(hub, code)
    assert (status, doc["error"]) == (403, "unknown or already used enrolment code")
    assert cookie == "" and snapshot(hub) == before
    assert len(hub.hub.household.browsers) == 1


def test_an_expired_code_is_refused(hub: HubServer) -> None:
    code, _ = new_code(hub.cfg.home / "hub" / "enrol", seconds=-1)
    status, doc, cookie = enrol(hub, code)
    assert status == 410 and "expired" in doc["error"] and cookie == ""
    assert not hub.hub.household.browsers


def test_wrong_codes_are_rate_limited(hub: HubServer) -> None:
    good, _ = new_code(hub.cfg.home / "hub" / "enrol")
    statuses = [enrol(hub, "AAAA-BBBB-CCCC")[0] for _ in range(6)]
    assert statuses[:5] == [403] * 5 and statuses[5] == 429
    # while limited, even the right code waits: guessing gains nothing
    status, doc, _ = enrol(hub, good)
    assert status == 429 and "wait" in doc["error"]
    assert not hub.hub.household.browsers


def test_bad_keys_do_not_spend_the_code(hub: HubServer) -> None:
    code, _ = new_code(hub.cfg.home / "hub" / "enrol")
    status, doc, _ = enrol(hub, code, recipient="age1notakey")
    assert status == 400 and "bad public keys" in doc["error"]
    assert enrol(hub, code)[0] == 201


def test_no_session_no_api(hub: HubServer) -> None:
    for path in ("/api/timeline", "/api/devices", "/api/me", "/api/a/porch/1.age",
                 "/api/shares"):
        status, doc, _ = call(hub, "GET", path)
        assert status == 401 and "no valid session" in doc["error"], path
    status, doc, _ = call(hub, "GET", "/api/me", cookie="ds_session=forged")
    assert status == 401


def test_changes_without_a_valid_session_are_refused_and_change_nothing(hub: HubServer
                                                                      ) -> None:
    code, _ = new_code(hub.cfg.home / "hub" / "enrol")
    enrol(hub, code)
    before = snapshot(hub)
    for path, body in (("/api/notifications", b'{"quiet": "22:00-07:00"}'),
                       ("/api/devices/porch/command", b'{"body": {}}'),
                       ("/api/shares?device=porch&seq=1&to=age1x", b"x" * 100),
                       ("/api/session", b'{"browser": "x", "nonce": "y", "sig": "z"}')):
        for cookie in ("", "ds_session=forged"):
            status, doc, headers = call(hub, "POST", path, body, cookie=cookie)
            assert status in (401, 403), (path, cookie, status)
            assert "error" in doc and "Set-Cookie" not in headers, (path, doc)
    assert snapshot(hub) == before


def test_an_oversized_command_is_refused(hub: HubServer) -> None:
    code, _ = new_code(hub.cfg.home / "hub" / "enrol")
    _, _, cookie = enrol(hub, code)
    before = snapshot(hub)
    # a command may carry an SDP offer (docs/rtc.md), so the limit is MAX_SIGNAL, not 4 KiB
    status, doc, _ = call(hub, "POST", "/api/devices/porch/command",
                          b"{" + b" " * MAX_SIGNAL + b"}", cookie=cookie)
    assert status == 413 and "upload too large" in doc["error"], doc
    assert snapshot(hub) == before


def test_cross_site_requests_are_refused_and_change_nothing(hub: HubServer) -> None:
    code, _ = new_code(hub.cfg.home / "hub" / "enrol")
    _, _, cookie = enrol(hub, code)
    before = snapshot(hub)
    body = json.dumps({"quiet": "22:00-07:00"}).encode()
    for origin in ("http://evil.example", None):
        status, doc, _ = call(hub, "POST", "/api/notifications", body, origin=origin,
                              cookie=cookie)
        assert status == 403 and "cross-site request refused" in doc["error"]
    status, doc, _ = call(hub, "POST", "/api/notifications", body, cookie=cookie,
                          headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403
    assert snapshot(hub) == before
    # a Host the hub does not answer to (DNS rebinding)
    status, doc, _ = call(hub, "GET", "/", headers={"Host": "evil.example"})
    assert status == 421


@pytest.mark.parametrize("path", ["/static/../hub/browsers.json",
                                  "/static/..%2f..%2fhub%2fbrowsers.json",
                                  "/api/a/porch/..%2f..%2fhub%2fvapid.pem",
                                  "/static/%2e%2e/%2e%2e/inbox.key"])
def test_path_traversal_is_refused(hub: HubServer, path: str) -> None:
    code, _ = new_code(hub.cfg.home / "hub" / "enrol")
    _, _, cookie = enrol(hub, code)
    req = urllib.request.Request(hub.url.rstrip("/") + path, headers={"Cookie": cookie})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, data = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    assert status in (400, 404), (path, status)
    assert b"PRIVATE KEY" not in data and b"browsers" not in data


def test_an_oversized_upload_is_refused(hub: HubServer) -> None:
    code, _ = new_code(hub.cfg.home / "hub" / "enrol")
    _, _, cookie = enrol(hub, code)
    before = snapshot(hub)
    big = b"x" * (40 * 1024 * 1024)
    status, doc, _ = call(hub, "POST", "/api/shares?device=porch&seq=1&to=age1x", big,
                          cookie=cookie)
    assert status == 413 and "too large" in doc["error"]
    status, doc, _ = call(hub, "POST", "/api/notifications", b"{" + b" " * 20000 + b"}",
                          cookie=cookie)
    assert status == 413
    assert snapshot(hub) == before


def test_the_app_is_installable_and_kept_to_its_origin(hub: HubServer) -> None:
    status, manifest, headers = call(hub, "GET", "/manifest.webmanifest")
    assert status == 200 and manifest["display"] == "standalone"
    assert any(i["sizes"] == "512x512" for i in manifest["icons"])
    status, _, headers = call(hub, "GET", "/sw.js")
    assert status == 200 and headers["Service-Worker-Allowed"] == "/"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    # vendored modules are served with their bare imports pointed at the vendored copies
    req = urllib.request.Request(hub.url + "static/vendor/age-encryption/dist/index.js")
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    assert 'from "/static/vendor/@noble/hashes/hmac.js"' in text and '"@noble' not in text


def test_vendored_files_match_their_checksums() -> None:
    vendor = Path(__file__).resolve().parents[3] / "owner" / "hub" / "static" / "vendor"
    lines = (vendor / "SHA256SUMS").read_text().splitlines()
    assert len(lines) > 40
    for line in lines:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    pins = json.loads((vendor / "PINNED.json").read_text())
    assert pins["node_modules/age-encryption"]["version"] == "0.3.1"
    assert (vendor / "age-encryption" / "LICENSE").exists()
